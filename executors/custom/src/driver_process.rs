//! One driver call: the executable in its own process group with the driver environment, its
//! output where the call wants it, and upstream's stop: SIGTERM to the group when the call's
//! context ends, SIGKILL after `graceful_kill_timeout`, give up after `force_kill_timeout`.
//!
//! Unlike the shell executor's stages, nothing left in the group after a normal exit is killed:
//! a driver may start its backend in the background on purpose.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use runner_core::executor::ExecutorError;
use runner_core::log::{JobLog, StreamKind};
use runner_core::process::{pump, stop_group, KillTimeouts, ProcessError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Where a call's output goes.
pub enum Output<'a> {
    /// stdout and stderr to the job log (prepare_exec, run_exec).
    Log(&'a JobLog),
    /// stdout collected (config_exec's JSON), stderr to the job log.
    Capture {
        log: &'a JobLog,
        stdout: &'a mut Vec<u8>,
    },
    /// stdout to the runner's log at debug level, stderr at warning level (cleanup_exec).
    RunnerLog,
}

/// How the driver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverExit {
    Code(i32),
    Signal(i32),
}

/// A cancellation token that also fires after `timeout`; `expired` tells which.
pub struct Deadline {
    token: CancellationToken,
    timer: tokio::task::JoinHandle<()>,
    expired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Deadline {
    pub fn new(parent: &CancellationToken, timeout: Duration) -> Self {
        let token = parent.child_token();
        let expired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timer = {
            let token = token.clone();
            let expired = expired.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                expired.store(true, std::sync::atomic::Ordering::SeqCst);
                token.cancel();
            })
        };
        Self {
            token,
            timer,
            expired,
        }
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn expired(&self) -> bool {
        self.expired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// config_exec's stdout being collected, and where it goes when the call ends.
type Capture<'a> = Option<(tokio::task::JoinHandle<Vec<u8>>, &'a mut Vec<u8>)>;

async fn read_all(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = reader.read_to_end(&mut out).await;
    out
}

async fn pump_to_runner_log(mut reader: impl AsyncRead + Unpin, stderr: bool) {
    let mut text = Vec::new();
    let _ = reader.read_to_end(&mut text).await;
    for line in String::from_utf8_lossy(&text).lines() {
        if stderr {
            tracing::warn!(cleanup_std = "err", "{line}");
        } else {
            tracing::debug!(cleanup_std = "out", "{line}");
        }
    }
}

/// How long output may keep flowing after the driver exited (a background child holding the
/// pipes must not hold the job).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
pub async fn run(
    executable: &str,
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
    output: Output<'_>,
    cancel: &CancellationToken,
    graceful: Duration,
    force: Duration,
) -> Result<DriverExit, ExecutorError> {
    let mut command = Command::new(executable);
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| {
        ExecutorError::system(format!("failed to start command: {error}")).with_source(error)
    })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (capture, mut pumps): (Capture<'_>, Vec<_>) = match output {
        Output::Log(log) => (
            None,
            vec![
                tokio::spawn(pump(stdout, log.clone(), StreamKind::Stdout)),
                tokio::spawn(pump(stderr, log.clone(), StreamKind::Stderr)),
            ],
        ),
        Output::Capture { log, stdout: sink } => (
            Some((tokio::spawn(read_all(stdout)), sink)),
            vec![tokio::spawn(pump(stderr, log.clone(), StreamKind::Stderr))],
        ),
        Output::RunnerLog => (
            None,
            vec![
                tokio::spawn(pump_to_runner_log(stdout, false)),
                tokio::spawn(pump_to_runner_log(stderr, true)),
            ],
        ),
    };

    let status = tokio::select! {
        // The driver ended by itself.
        status = child.wait() => status,
        // The call's context ended: SIGTERM the group, then SIGKILL after the grace period.
        _ = cancel.cancelled() => match stop_group(&mut child, KillTimeouts { graceful, force }).await {
            Ok(status) => Ok(status),
            Err(ProcessError::Dormant { .. }) => {
                for pump in &pumps {
                    pump.abort();
                }
                return Err(ExecutorError::system(
                    "failed to kill process, likely process is dormant",
                ));
            }
            Err(other) => {
                return Err(ExecutorError::system("waiting for the driver").with_source(other))
            }
        },
    }
    .map_err(|error| ExecutorError::system("waiting for the driver").with_source(error))?;

    let deadline = tokio::time::Instant::now() + OUTPUT_GRACE;
    if let Some((reader, sink)) = capture {
        match tokio::time::timeout_at(deadline, reader).await {
            Ok(Ok(bytes)) => *sink = bytes,
            _ => tracing::warn!("config_exec's output did not end with the process"),
        }
    }
    for pump in pumps.iter_mut() {
        if tokio::time::timeout_at(deadline, &mut *pump).await.is_err() {
            pump.abort();
        }
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => DriverExit::Code(code),
        (None, Some(signal)) => DriverExit::Signal(signal),
        (None, None) => DriverExit::Code(-1),
    })
}
