//! The shell executor: each stage script runs in a local shell (`bash -l` by default) on the
//! runner's host, in its own process group, with SIGTERM → grace → SIGKILL on cancel or timeout.
//!
//! Main types: [`ShellProvider`] (the `ExecutorProvider`) and [`ShellExecutor`].
//!
//! A job's `run:` steps go to a Step Runner (`steps serve`, this binary) the executor starts
//! for the job on a private local socket.
//!
//! Depends on `runner-core` and `runner-steps` (the Step Runner's client); it must not depend
//! on `shells`, `network`, other executors or `commands` (the shell command line comes in
//! through the build context).

use std::path::{Path, PathBuf};

use runner_core::build::BuildContext;
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ExecutorProvider, FeaturesInfo,
    ScriptExit, ShellType, StepsRequest, Unlimited,
};
use runner_core::log::JobLog;
use runner_core::process::{
    go_signal_name, spawn_in_process_group, KillTimeouts, Leftovers, ProcessExit,
};
use runner_core::script::ShellCommand;
use runner_core::stage_runner::{run_stage, Ended};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// What the shell executor needs from `config.toml`.
#[derive(Debug, Clone, Default)]
pub struct ShellConfig {
    /// Made absolute against this directory when relative (the runner's working directory).
    pub working_dir: PathBuf,
    /// How a canceled or timed-out stage's process group is stopped: SIGTERM, SIGKILL after
    /// `[runners] graceful_kill_timeout`, then at most `force_kill_timeout` more for it to end.
    pub kill_timeouts: KillTimeouts,
}

/// Creates shell executors. Capacity is unlimited, so the reservation is empty.
#[derive(Debug, Clone)]
pub struct ShellProvider {
    config: ShellConfig,
}

impl ShellProvider {
    /// The provider for a runner with `executor = "shell"`.
    pub fn new(config: ShellConfig) -> Self {
        Self { config }
    }

    fn absolute(&self, dir: &str) -> String {
        let path = Path::new(dir);
        if path.is_absolute() {
            dir.to_string()
        } else {
            self.config
                .working_dir
                .join(path)
                .to_string_lossy()
                .to_string()
        }
    }
}

impl ExecutorProvider for ShellProvider {
    type Capacity = Unlimited;
    type Executor = ShellExecutor;

    fn name(&self) -> &'static str {
        "shell"
    }

    fn features(&self) -> FeaturesInfo {
        FeaturesInfo {
            variables: true,
            shared: true,
            native_steps_integration: true,
            ..FeaturesInfo::default()
        }
    }

    fn default_shell(&self) -> &'static str {
        "bash"
    }

    fn defaults(&self) -> ExecutorDefaults {
        ExecutorDefaults {
            builds_dir: self.absolute("builds"),
            cache_dir: self.absolute("cache"),
            shared_builds_dir: true,
            custom_build_dir_enabled: false,
            safe_directory_checkout: false,
            shell_type: ShellType::Login,
            show_hostname: false,
            dirs_from_prepare: false,
            private_temporary_dir: true,
            switch_user: true,
            stage_markers: false,
            runner_command: std::env::current_exe()
                .map(|path| path.to_string_lossy().to_string())
                .unwrap_or_else(|_| "gitlab-runner-rs".into()),
        }
    }

    fn capacity(&self) -> &Unlimited {
        &Unlimited
    }

    fn create(&self, _reservation: ()) -> ShellExecutor {
        ShellExecutor {
            shell: ShellCommand::default(),
            kill_timeouts: self.config.kill_timeouts,
            runner_command: self.defaults().runner_command,
        }
    }
}

/// Runs the stages of one job with a local shell.
#[derive(Debug)]
pub struct ShellExecutor {
    shell: ShellCommand,
    kill_timeouts: KillTimeouts,
    /// This binary, which serves the Step Runner for `run:` jobs.
    runner_command: String,
}

impl ShellExecutor {
    /// Sets the shell without a build context (tests run single stages).
    pub fn set_shell_for_tests(&mut self, shell: ShellCommand) {
        self.shell = shell;
    }
}

impl Executor for ShellExecutor {
    async fn prepare(
        &mut self,
        build: &mut BuildContext,
        log: &JobLog,
        _cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        log.println(&format!("Using Shell ({}) executor...", build.shell.name));
        if build.shell.program.is_empty() {
            return Err(ExecutorError::with_reason(
                runner_core::FailureReason::RunnerConfigurationError,
                "no shell defined",
            ));
        }
        self.shell = build.shell.clone();
        Ok(())
    }

    async fn run(
        &mut self,
        command: ExecutorCommand<'_>,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let mut process = Command::new(&self.shell.program);
        process.args(&self.shell.args);
        let started = spawn_in_process_group(process, true, Leftovers::Kill).map_err(|error| {
            ExecutorError::system(format!("running the {} stage", command.stage)).with_source(error)
        })?;
        run_stage(
            started,
            command.script.as_bytes(),
            log,
            cancel,
            self.kill_timeouts,
            shell_exit,
        )
        .await
    }

    async fn run_steps(
        &mut self,
        request: &StepsRequest,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        if self.shell.program == "su" {
            // The service would create the job's files as the runner's user, and the steps
            // would run as it.
            return Err(ExecutorError::with_reason(
                runner_core::FailureReason::RunnerConfigurationError,
                "the `run` keyword (CI steps) is not supported by the shell executor with `user` yet",
            ));
        }
        let server = StepServer::start(&self.runner_command).await?;
        let result = runner_steps::drive::run(
            runner_steps::client::unix(server.socket.clone()),
            request,
            log,
            cancel,
            self.kill_timeouts.graceful,
        )
        .await;
        server.stop().await;
        result
    }

    async fn cleanup(&mut self, _log: &JobLog) {}
}

/// A job's own Step Runner: `steps serve` on a socket in a private temporary directory
/// (`$TMPDIR/gitlab-runner-steps*/s.sock`, or under `/tmp` when that path would pass the
/// 100 bytes a socket path may have), stopped with SIGTERM after the job's steps.
struct StepServer {
    child: tokio::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl StepServer {
    async fn start(runner_command: &str) -> Result<Self, ExecutorError> {
        let failed =
            |what: String| ExecutorError::system(format!("starting the step runner: {what}"));
        let mut dir = tempfile::Builder::new()
            .prefix("gitlab-runner-steps")
            .tempdir()
            .map_err(|error| failed(error.to_string()))?;
        if dir.path().join("s.sock").as_os_str().len() > 100 {
            dir = tempfile::Builder::new()
                .prefix("gitlab-runner-steps")
                .tempdir_in("/tmp")
                .map_err(|error| failed(error.to_string()))?;
        }
        let socket = dir.path().join("s.sock");
        let mut child = Command::new(runner_command)
            .args(["steps", "serve", "--socket"])
            .arg(&socket)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|error| failed(format!("{runner_command}: {error}")))?;
        let Some(stderr) = child.stderr.take() else {
            return Err(failed("no stderr".into()));
        };
        let mut stderr = tokio::io::BufReader::new(stderr);
        let listening = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            runner_steps::drive::listening_socket(&mut stderr),
        )
        .await
        .map_err(|_| failed("it did not listen within 30s".into()))?
        .map_err(failed)?;
        // What it says later is the operator's, not the job's.
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = stderr.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(line, "step runner");
            }
        });
        Ok(Self {
            child,
            socket: listening,
            _dir: dir,
        })
    }

    /// SIGTERM, then as long as the service may take to stop its requests (their grace
    /// period and a margin), then SIGKILL.
    async fn stop(mut self) {
        self.terminate();
        let bound = runner_steps::drive::MAX_GRACE + std::time::Duration::from_secs(5);
        if tokio::time::timeout(bound, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            runner_core::process::signal_process(pid as i32, libc::SIGTERM);
        }
    }
}

impl Drop for StepServer {
    /// Dropped before [`StepServer::stop`] (the job was given up on): the service still
    /// stops its steps gracefully, where SIGKILL would leave them running.
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Upstream's wording of a local shell's exit (Go's `exec.ExitError`).
fn shell_exit(ended: Ended<ProcessExit>) -> Result<ScriptExit, ExecutorError> {
    Ok(match ended.exit {
        ProcessExit::Code(0) => ScriptExit::Success,
        ProcessExit::Code(code) => ScriptExit::Failed {
            code,
            message: format!("exit status {code}"),
        },
        ProcessExit::Signal(signal) => ScriptExit::Failed {
            code: -1,
            message: format!("signal: {}", go_signal_name(signal)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_worded_as_go_words_them() {
        let killed = shell_exit(Ended {
            exit: ProcessExit::Signal(libc::SIGKILL),
            stopped: true,
        });
        assert_eq!(
            killed.ok(),
            Some(ScriptExit::Failed {
                code: -1,
                message: "signal: killed".into()
            })
        );
    }
}
