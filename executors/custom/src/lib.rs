//! The custom executor: every stage runs through an administrator's driver executables
//! (`config_exec`, `prepare_exec`, `run_exec`, `cleanup_exec`), byte-compatible with upstream's
//! contract (`executors/custom`): the same argv, stage names (`step_script` passed as
//! `build_script`), environment (`CUSTOM_ENV_*`, `JOB_RESPONSE_FILE`, `BUILD_EXIT_CODE_FILE`,
//! `job_env`), exit-code classes and messages, timeouts and SIGTERM → SIGKILL of the driver's
//! process group.
//!
//! Main types: [`CustomProvider`] (the `ExecutorProvider`), [`CustomExecutor`], [`CustomConfig`]
//! (and [`RawCustomConfig`], the `[runners.custom]` section as written).
//!
//! Depends only on `runner-core`; it must not depend on `shells`, `network`, other executors or
//! `commands`.

mod driver_process;
mod raw_config;

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner_core::build::{BuildContext, Reconfigure};
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ExecutorProvider, FeaturesInfo,
    ScriptExit, ShellType, Unlimited,
};
use runner_core::failure::FailureReason;
use runner_core::log::JobLog;
use runner_core::script::ShellCommand;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use driver_process::{DriverExit, Output};
pub use raw_config::RawCustomConfig;

/// `BUILD_FAILURE_EXIT_CODE`: the user's script failed.
pub const BUILD_FAILURE_EXIT_CODE: i32 = 1;
/// `SYSTEM_FAILURE_EXIT_CODE`: the driver's backend failed.
pub const SYSTEM_FAILURE_EXIT_CODE: i32 = 2;

/// `[runners.custom]`, with upstream's defaults for unset or non-positive timeouts.
#[derive(Debug, Clone)]
pub struct CustomConfig {
    /// `config_exec`: run once before prepare; its JSON on stdout may set the builds and cache
    /// directories, host name, shell, `job_env` and driver info. Empty: not called.
    pub config_exec: String,
    /// Arguments given to `config_exec`.
    pub config_args: Vec<String>,
    /// How long `config_exec` may run (`config_exec_timeout`, seconds; default one hour).
    pub config_exec_timeout: Duration,
    /// `prepare_exec`: sets up the job's environment, its output in the job log. Empty: not called.
    pub prepare_exec: String,
    /// Arguments given to `prepare_exec`.
    pub prepare_args: Vec<String>,
    /// How long `prepare_exec` may run (`prepare_exec_timeout`, seconds; default one hour).
    pub prepare_exec_timeout: Duration,
    /// `run_exec`, called for every stage with the script's path and the stage name after
    /// `run_args`. Required: a job fails in prepare when it is empty.
    pub run_exec: String,
    /// Arguments given to `run_exec` before the script path and stage name.
    pub run_args: Vec<String>,
    /// `cleanup_exec`: called at the end of every job that got as far as configure, its output in
    /// the runner's log, never the job's. Empty: not called.
    pub cleanup_exec: String,
    /// Arguments given to `cleanup_exec`.
    pub cleanup_args: Vec<String>,
    /// How long `cleanup_exec` may run (`cleanup_exec_timeout`, seconds; default one hour). The
    /// job's cancellation does not cut it short.
    pub cleanup_exec_timeout: Duration,
    /// After SIGTERM to a stopped driver call's process group, how long before SIGKILL
    /// (`[runners.custom] graceful_kill_timeout`; default 10 minutes).
    pub graceful_kill_timeout: Duration,
    /// After SIGKILL, how long to wait for the call to end before giving up on it
    /// (`[runners.custom] force_kill_timeout`; default 10 seconds).
    pub force_kill_timeout: Duration,
}

impl Default for CustomConfig {
    fn default() -> Self {
        Self {
            config_exec: String::new(),
            config_args: Vec::new(),
            config_exec_timeout: Duration::from_secs(3600),
            prepare_exec: String::new(),
            prepare_args: Vec::new(),
            prepare_exec_timeout: Duration::from_secs(3600),
            run_exec: String::new(),
            run_args: Vec::new(),
            cleanup_exec: String::new(),
            cleanup_args: Vec::new(),
            cleanup_exec_timeout: Duration::from_secs(3600),
            graceful_kill_timeout: Duration::from_secs(600),
            force_kill_timeout: Duration::from_secs(10),
        }
    }
}

/// Creates custom executors. `None` is a runner without `[runners.custom]`.
#[derive(Debug, Clone)]
pub struct CustomProvider {
    config: Option<CustomConfig>,
}

impl CustomProvider {
    /// The provider for a runner with `executor = "custom"`; `None` when config.toml has no
    /// `[runners.custom]` section, which fails every job in prepare.
    pub fn new(config: Option<CustomConfig>) -> Self {
        Self { config }
    }
}

impl ExecutorProvider for CustomProvider {
    type Capacity = Unlimited;
    type Executor = CustomExecutor;

    fn name(&self) -> &'static str {
        "custom"
    }

    fn features(&self) -> FeaturesInfo {
        FeaturesInfo {
            variables: true,
            shared: true,
            service_variables: true,
            ..FeaturesInfo::default()
        }
    }

    fn default_shell(&self) -> &'static str {
        "bash"
    }

    fn defaults(&self) -> ExecutorDefaults {
        ExecutorDefaults {
            builds_dir: String::new(),
            cache_dir: String::new(),
            shared_builds_dir: false,
            custom_build_dir_enabled: false,
            safe_directory_checkout: false,
            shell_type: ShellType::Normal,
            runner_command: "gitlab-runner".into(),
            show_hostname: false,
            dirs_from_prepare: true,
            private_temporary_dir: false,
            switch_user: false,
            stage_markers: false,
        }
    }

    fn capacity(&self) -> &Unlimited {
        &Unlimited
    }

    fn create(&self, _reservation: ()) -> CustomExecutor {
        CustomExecutor {
            config: self.config.clone(),
            temp_dir: None,
            variables: Vec::new(),
            job_env: Vec::new(),
            driver: None,
        }
    }
}

/// `ConfigExecOutput`: every field optional, unknown ones ignored.
#[derive(Debug, Default, Deserialize)]
struct ConfigOutput {
    builds_dir: Option<String>,
    cache_dir: Option<String>,
    builds_dir_is_shared: Option<bool>,
    hostname: Option<String>,
    driver: Option<DriverInfo>,
    job_env: Option<std::collections::BTreeMap<String, String>>,
    shell: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DriverInfo {
    name: Option<String>,
    version: Option<String>,
}

/// Runs the stages of one job through the driver.
#[derive(Debug)]
pub struct CustomExecutor {
    config: Option<CustomConfig>,
    temp_dir: Option<tempfile::TempDir>,
    /// `CUSTOM_ENV_*` for every variable of the job, plus `CI_JOB_SERVICES`.
    variables: Vec<(String, String)>,
    /// `job_env` from config_exec, for the calls after it.
    job_env: Vec<(String, String)>,
    /// `driver` from config_exec, for prepare's first line.
    driver: Option<DriverInfo>,
}

/// One entry of `CUSTOM_ENV_CI_JOB_SERVICES`, fields in upstream's order.
#[derive(serde::Serialize)]
struct ServiceJson {
    name: String,
    alias: String,
    entrypoint: Option<Vec<String>>,
    command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variables: Option<std::collections::BTreeMap<String, String>>,
}

/// `CUSTOM_ENV_CI_JOB_SERVICES`: upstream's JSON, empty without services.
fn services_json(build: &BuildContext) -> String {
    if build.job.services.is_empty() {
        return String::new();
    }
    let list = |items: &Vec<String>| (!items.is_empty()).then(|| items.clone());
    let services: Vec<ServiceJson> = build
        .job
        .services
        .iter()
        .map(|service| ServiceJson {
            name: service.name.clone(),
            alias: service.aliases().first().copied().unwrap_or("").into(),
            entrypoint: list(&service.entrypoint),
            command: list(&service.command),
            variables: (!service.variables.is_empty()).then(|| {
                service
                    .variables
                    .iter()
                    .map(|variable| {
                        (
                            variable.key.clone(),
                            build.variables.expand(&variable.value),
                        )
                    })
                    .collect()
            }),
        })
        .collect();
    serde_json::to_string(&services).unwrap_or_default()
}

/// Go's names for the signals a driver dies of (`signal: killed`).
fn config_error(message: &str) -> ExecutorError {
    ExecutorError::with_reason(FailureReason::RunnerConfigurationError, message)
}

impl CustomExecutor {
    fn config(&self) -> Result<&CustomConfig, ExecutorError> {
        let config = self
            .config
            .as_ref()
            .ok_or_else(|| config_error("custom executor not configured"))?;
        if config.run_exec.is_empty() {
            return Err(config_error("custom executor is missing RunExec"));
        }
        Ok(config)
    }

    fn temp_path(&self) -> PathBuf {
        self.temp_dir
            .as_ref()
            .map(|dir| dir.path().to_path_buf())
            .unwrap_or_else(std::env::temp_dir)
    }

    /// The environment of every driver call after the runner's own (upstream's order).
    fn environment(&self, with_job_env: bool) -> Vec<(String, String)> {
        let temp = self.temp_path();
        let text = |path: &Path| path.to_string_lossy().into_owned();
        let mut env = vec![
            ("TMPDIR".into(), text(&temp)),
            (
                "BUILD_FAILURE_EXIT_CODE".into(),
                BUILD_FAILURE_EXIT_CODE.to_string(),
            ),
            (
                "SYSTEM_FAILURE_EXIT_CODE".into(),
                SYSTEM_FAILURE_EXIT_CODE.to_string(),
            ),
            (
                "BUILD_EXIT_CODE_FILE".into(),
                text(&temp.join("build_exit_code")),
            ),
            (
                "JOB_RESPONSE_FILE".into(),
                text(&temp.join("response.json")),
            ),
        ];
        if with_job_env {
            env.extend(self.job_env.iter().cloned());
        }
        env.extend(self.variables.iter().cloned());
        env
    }

    fn refresh_variables(&mut self, build: &BuildContext) {
        self.variables = build
            .variables
            .iter()
            .map(|variable| {
                (
                    format!("CUSTOM_ENV_{}", variable.key),
                    variable.value.clone(),
                )
            })
            .collect();
        self.variables
            .push(("CUSTOM_ENV_CI_JOB_SERVICES".into(), services_json(build)));
    }

    async fn call(
        &self,
        executable: &str,
        args: &[String],
        output: Output<'_>,
        cancel: &CancellationToken,
        with_job_env: bool,
    ) -> Result<DriverExit, ExecutorError> {
        let config = self.config()?;
        driver_process::run(
            executable,
            args,
            &self.temp_path(),
            &self.environment(with_job_env),
            output,
            cancel,
            config.graceful_kill_timeout,
            config.force_kill_timeout,
        )
        .await
    }

    /// Upstream's exit classes: 0 success, 1 build failure (exit code from
    /// `BUILD_EXIT_CODE_FILE`), 2 system failure, anything else an unknown failure.
    fn classify(&self, exit: DriverExit) -> Result<ScriptExit, ExecutorError> {
        match exit {
            DriverExit::Code(0) => Ok(ScriptExit::Success),
            DriverExit::Code(BUILD_FAILURE_EXIT_CODE) => {
                let file = self.temp_path().join("build_exit_code");
                match std::fs::read_to_string(&file) {
                    Err(_) => Ok(ScriptExit::Failed {
                        code: BUILD_FAILURE_EXIT_CODE,
                        message: "exit status 1".into(),
                    }),
                    Ok(text) => match text.lines().next().unwrap_or("").trim().parse::<i32>() {
                        Ok(code) => Ok(ScriptExit::Failed {
                            code,
                            message: format!("exit status {code}"),
                        }),
                        Err(error) => Err(ExecutorError::system(format!(
                            "unknown Custom executor executable exit code 2; executable execution terminated with: parsing {}: {error}",
                            file.display()
                        ))),
                    },
                }
            }
            DriverExit::Code(SYSTEM_FAILURE_EXIT_CODE) => {
                Err(ExecutorError::system("exit status 2"))
            }
            DriverExit::Code(code) => Err(ExecutorError::system(format!(
                "unknown Custom executor executable exit code {code}; executable execution terminated with: exit status {code}"
            ))),
            DriverExit::Signal(signal) => Err(ExecutorError::system(format!(
                "unknown Custom executor executable exit code -1; executable execution terminated with: signal: {}",
                runner_core::process::go_signal_name(signal)
            ))),
        }
    }

    /// A prepare-time call: success or an error (build failures become script failures).
    fn expect_success(&self, exit: DriverExit) -> Result<(), ExecutorError> {
        match self.classify(exit)? {
            ScriptExit::Success => Ok(()),
            ScriptExit::Failed { message, .. } => Err(ExecutorError::with_reason(
                FailureReason::ScriptFailure,
                message,
            )),
        }
    }

    async fn config_exec(
        &mut self,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<Reconfigure, ExecutorError> {
        let config = self.config()?.clone();
        let mut reconfigure = Reconfigure::default();
        self.driver = None;
        if !config.config_exec.is_empty() {
            let deadline = driver_process::Deadline::new(cancel, config.config_exec_timeout);
            let mut stdout = Vec::new();
            let exit = self
                .call(
                    &config.config_exec,
                    &config.config_args,
                    Output::Capture {
                        log,
                        stdout: &mut stdout,
                    },
                    deadline.token(),
                    false,
                )
                .await?;
            self.expect_success(exit)?;
            if !stdout.iter().all(u8::is_ascii_whitespace) {
                let output: ConfigOutput = serde_json::from_slice(&stdout).map_err(|error| {
                    ExecutorError::system("error while parsing JSON output").with_source(error)
                })?;
                let shell = match output.shell.filter(|shell| !shell.is_empty()) {
                    None => None,
                    Some(shell) if shell == "bash" || shell == "sh" => Some(ShellCommand {
                        name: shell.clone(),
                        program: shell,
                        args: Vec::new(),
                    }),
                    Some(other) => {
                        return Err(config_error(&format!(
                            "config_exec asked for the {other:?} shell; this runner supports bash and sh"
                        )))
                    }
                };
                reconfigure = Reconfigure {
                    builds_dir: output.builds_dir,
                    cache_dir: output.cache_dir,
                    builds_dir_is_shared: output.builds_dir_is_shared,
                    hostname: output.hostname,
                    shell,
                };
                if let Some(job_env) = output.job_env {
                    self.job_env = job_env.into_iter().collect();
                }
                self.driver = output.driver;
            }
        }
        Ok(reconfigure)
    }
}

impl Executor for CustomExecutor {
    /// The temporary directory with the job's `response.json`, then `config_exec`: its
    /// directories, host name and shell are the build's from here on.
    async fn configure(
        &mut self,
        build: &BuildContext,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<Reconfigure, ExecutorError> {
        let temp = tempfile::Builder::new()
            .prefix("custom-executor")
            .tempdir()
            .map_err(|error| ExecutorError::system("creating the temp dir").with_source(error))?;
        let response = temp.path().join("response.json");
        let mut payload = serde_json::to_vec(&build.job).unwrap_or_default();
        payload.push(b'\n');
        runner_core::dirs::write_private(&response, &payload).map_err(|error| {
            ExecutorError::system(format!(
                "creating job response file {:?}",
                response.display().to_string()
            ))
            .with_source(error)
        })?;
        self.temp_dir = Some(temp);
        self.job_env.clear();
        self.refresh_variables(build);

        self.config_exec(log, cancel).await
    }

    async fn prepare(
        &mut self,
        build: &mut BuildContext,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        let config = self.config()?.clone();
        match &self.driver {
            Some(DriverInfo {
                name: Some(name),
                version: Some(version),
            }) => log.println(&format!(
                "Using Custom executor with driver {name} {version}..."
            )),
            Some(DriverInfo {
                name: Some(name), ..
            }) => log.println(&format!("Using Custom executor with driver {name}...")),
            _ => log.println("Using Custom executor..."),
        }
        // The directories are final now; the driver sees the variables that name them.
        self.refresh_variables(build);

        if config.prepare_exec.is_empty() {
            return Ok(());
        }
        let deadline = driver_process::Deadline::new(cancel, config.prepare_exec_timeout);
        let exit = self
            .call(
                &config.prepare_exec,
                &config.prepare_args,
                Output::Log(log),
                deadline.token(),
                true,
            )
            .await?;
        if deadline.expired() {
            return Err(ExecutorError::system(format!(
                "prepare_exec timed out after {}s (prepare_exec_timeout)",
                config.prepare_exec_timeout.as_secs()
            )));
        }
        self.expect_success(exit)
    }

    async fn run(
        &mut self,
        command: ExecutorCommand<'_>,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let config = self.config()?.clone();
        let script_dir = tempfile::Builder::new()
            .prefix("script")
            .tempdir_in(self.temp_path())
            .map_err(|error| ExecutorError::system("creating the script dir").with_source(error))?
            .keep();
        let script = script_dir.join("script");
        write_script(&script, command.script.as_bytes()).map_err(|error| {
            ExecutorError::system("writing the stage script").with_source(error)
        })?;
        let mut stage = command.stage.name();
        if stage == "step_script" {
            log.warning("Starting with version 17.0 the 'build_script' stage will be replaced with 'step_script': https://gitlab.com/groups/gitlab-org/-/epics/6112");
            stage = "build_script".into();
        }
        // The exit code file belongs to this call alone.
        let _ = std::fs::remove_file(self.temp_path().join("build_exit_code"));
        let mut args = config.run_args.clone();
        args.push(script.to_string_lossy().into_owned());
        args.push(stage);
        let exit = self
            .call(&config.run_exec, &args, Output::Log(log), cancel, true)
            .await?;
        self.classify(exit)
    }

    async fn cleanup(&mut self, log: &JobLog) {
        if let Err(error) = self.config() {
            log.warning(error.message());
            return;
        }
        if self.temp_dir.is_none() {
            return;
        }
        match self.run_cleanup_exec().await {
            Ok(None | Some(DriverExit::Code(0))) => {}
            Ok(Some(exit)) => {
                let why = match self.classify(exit) {
                    Ok(ScriptExit::Failed { message, .. }) => message,
                    Ok(ScriptExit::Success) => String::new(),
                    Err(error) => error.full_message(),
                };
                tracing::warn!(error = %why, "Cleanup script failed");
            }
            Err(error) => tracing::warn!(error = %error.full_message(), "Cleanup script failed"),
        }
        // Removes the temp dir.
        self.temp_dir = None;
    }
}

impl CustomExecutor {
    /// Removes the per-job temp dir without calling the driver.
    pub fn discard_temp_dir(&mut self) {
        self.temp_dir = None;
    }

    /// Calls cleanup_exec (when configured) with its own deadline, never the job's
    /// cancellation; its output goes to the runner's log. `None` when there is none.
    pub async fn run_cleanup_exec(&self) -> Result<Option<DriverExit>, ExecutorError> {
        let config = self.config()?.clone();
        if config.cleanup_exec.is_empty() {
            return Ok(None);
        }
        let never = CancellationToken::new();
        let deadline = driver_process::Deadline::new(&never, config.cleanup_exec_timeout);
        self.call(
            &config.cleanup_exec,
            &config.cleanup_args,
            Output::RunnerLog,
            deadline.token(),
            true,
        )
        .await
        .map(Some)
    }
}

fn write_script(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)?;
    file.write_all(data)
}
