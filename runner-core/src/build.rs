//! The build driver: runs one job's stages in upstream order with upstream's failure branches,
//! timeouts and cancellation, and decides the final state and failure reason (2.2–2.5).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel::{CancelReason, JobCancel};
use crate::dirs::{compute_dirs, short_token, BuildDirs, DirOptions, ProjectIdentity};
use crate::executor::{Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ScriptExit};
use crate::failure::{BuildError, FailureReason};
use crate::feature_flags::FeatureFlags;
use crate::job::JobResponse;
use crate::log::{JobLog, ANSI_BOLD_CYAN, ANSI_RESET};
use crate::panic::{panic_message, CatchUnwind};
use crate::script::{ScriptError, ScriptGenerator, ShellCommand};
use crate::secret::Secret;
use crate::settings::{format_go_duration, BuildSettings, GitStrategy};
use crate::stage::Stage;
use crate::variables::{environment_variables, is_variable_name, JobVariable, Variables};

/// Attempts at preparing the executor (`PreparationRetries`).
pub const PREPARATION_ATTEMPTS: u32 = 3;
/// Pause between preparation attempts (`PreparationRetryInterval`).
pub const PREPARATION_RETRY_INTERVAL: Duration = Duration::from_secs(3);
/// How long to wait for a stopped stage to return (`WaitForBuildFinishTimeout`).
pub const WAIT_FOR_STAGE_FINISH: Duration = Duration::from_secs(5 * 60);
/// The deadline executor cleanup runs under, separate from the job's.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5 * 60);

const TIMEOUT_DOCS: &str =
    "https://docs.gitlab.com/ci/runners/configure_runners/#set-script-and-after_script-timeouts";

/// The runner-level hook scripts of `[[runners]]`.
#[derive(Debug, Clone, Default)]
pub struct RunnerHooks {
    pub pre_get_sources_script: String,
    pub post_get_sources_script: String,
    pub pre_build_script: String,
    pub post_build_script: String,
}

/// Who is running the job.
#[derive(Debug, Clone)]
pub struct RunnerVersion {
    pub name: String,
    pub version: String,
    pub revision: String,
    /// `<os>/<arch>` as Go spells it (`linux/amd64`).
    pub platform: String,
}

impl Default for RunnerVersion {
    fn default() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Self {
            name: "gitlab-runner-rs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            revision: option_env!("GITLAB_RUNNER_RS_REVISION")
                .unwrap_or("unknown")
                .into(),
            platform: format!("{}/{arch}", std::env::consts::OS),
        }
    }
}

/// The `[[runners]]` settings the build needs, already validated.
#[derive(Debug, Clone, Default)]
pub struct RunnerSettings {
    pub name: String,
    pub token: Secret<String>,
    pub system_id: String,
    pub url: String,
    pub clone_url: String,
    pub environment: Vec<String>,
    pub hooks: RunnerHooks,
    pub builds_dir: Option<String>,
    pub cache_dir: Option<String>,
    pub custom_build_dir_enabled: Option<bool>,
    pub safe_directory_checkout: Option<bool>,
    pub clean_git_config: Option<bool>,
    pub prepare_timeout: Option<Duration>,
    pub get_sources_timeout: Option<Duration>,
    pub feature_flags: BTreeMap<String, bool>,
    pub debug_trace_disabled: bool,
    pub version: RunnerVersion,
    /// The GitLab connection's TLS material, given to the job as file variables.
    pub server_tls: ServerTls,
    /// `[runners.cache]` with a presigned-URL adapter; `None` keeps the cache local.
    pub remote_cache: Option<crate::remote_cache::RemoteCache>,
}

/// What a job gets of the runner's TLS configuration (upstream's `TLSData`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerTls {
    /// `CI_SERVER_TLS_CA_FILE`: the CA certificates trusted for GitLab.
    pub ca_chain: Option<String>,
    /// `CI_SERVER_TLS_CERT_FILE` and `CI_SERVER_TLS_KEY_FILE`: set together or not at all.
    pub auth_cert: Option<String>,
    pub auth_key: Option<String>,
}

impl RunnerSettings {
    pub fn short_token(&self) -> String {
        short_token(self.token.expose())
    }
}

/// Interpolates `inputs` unless `FF_ENABLE_JOB_INPUTS_INTERPOLATION` is off (in
/// `[runners.feature_flags]`, else as a job variable).
fn interpolate_inputs(input: &mut BuildInput) -> Result<(), crate::inputs::InputError> {
    const FLAG: &str = "FF_ENABLE_JOB_INPUTS_INTERPOLATION";
    let enabled = match input.runner.feature_flags.get(FLAG) {
        Some(value) => *value,
        None => input
            .job
            .variables
            .iter()
            .rev()
            .find(|variable| variable.key == FLAG)
            .map(|variable| crate::variables::parse_bool(&variable.value).unwrap_or(true))
            .unwrap_or(true),
    };
    if !enabled {
        return Ok(());
    }
    crate::inputs::expand_job(&mut input.job)
}

/// Everything the driver needs to start a build.
#[derive(Debug, Clone)]
pub struct BuildInput {
    pub job: JobResponse,
    pub runner: RunnerSettings,
    pub executor_name: String,
    pub defaults: ExecutorDefaults,
    /// The executor's `shared` feature: a non-disposable environment.
    pub shared_environment: bool,
    pub shell: ShellCommand,
    pub concurrent_id: usize,
    pub concurrent_project_id: usize,
    /// The `X-Request-Id` of the job request, passed to Gitaly by git.
    pub correlation_id: String,
}

/// The resolved state of a build, shared with the executor and the script generator.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub job: JobResponse,
    pub runner: RunnerSettings,
    pub executor_name: String,
    pub defaults: ExecutorDefaults,
    pub shared_environment: bool,
    pub shell: ShellCommand,
    pub dirs: BuildDirs,
    /// Every variable of the job (`GetAllVariables`), unexpanded; file variables expand to paths.
    pub variables: Variables,
    pub settings: BuildSettings,
    pub flags: FeatureFlags,
    pub concurrent_id: usize,
    pub concurrent_project_id: usize,
    /// The host name the prepare script reports (`via <hostname>`); empty for the shell executor.
    pub hostname: String,
    pub safe_directory_checkout: bool,
    pub correlation_id: String,
    /// The script shell an executor switched to in prepare (custom executor's config_exec);
    /// the script generator uses it instead of its own.
    pub shell_override: Option<String>,
    /// What the context was made from, for [`BuildContext::reconfigure`].
    source: Box<BuildInput>,
}

/// What an executor's [`Executor::configure`] may change before prepare (the custom
/// executor's `config_exec` output); the default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigure {
    pub builds_dir: Option<String>,
    pub cache_dir: Option<String>,
    pub builds_dir_is_shared: Option<bool>,
    pub hostname: Option<String>,
    /// Another script shell (custom executor's config_exec `shell`).
    pub shell: Option<ShellCommand>,
}

/// Stands for a directory prepare has not given yet; never used once prepare succeeded.
const DIR_FROM_PREPARE: &str = "/builds-dir-from-prepare";

impl BuildContext {
    /// Recomputes directories and variables with `changes` applied, as upstream's custom
    /// executor does after `config_exec` (the build driver calls it with the result of
    /// [`Executor::configure`]). Fails with a configuration error when a directory is still
    /// missing.
    pub fn reconfigure(&mut self, changes: Reconfigure) -> Result<(), BuildError> {
        let mut input = (*self.source).clone();
        if let Some(dir) = changes.builds_dir.filter(|dir| !dir.is_empty()) {
            input.runner.builds_dir = Some(dir);
        }
        if let Some(dir) = changes.cache_dir.filter(|dir| !dir.is_empty()) {
            input.runner.cache_dir = Some(dir);
        }
        if let Some(shared) = changes.builds_dir_is_shared {
            input.defaults.shared_builds_dir = shared;
        }
        input.defaults.dirs_from_prepare = false;
        let shell_override = match changes.shell {
            Some(shell) => {
                let name = shell.name.clone();
                input.shell = shell;
                Some(name)
            }
            None => self.shell_override.clone(),
        };
        let hostname = changes
            .hostname
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| self.hostname.clone());
        let (mut fresh, _warnings) = BuildContext::new(input)?;
        fresh.hostname = hostname;
        fresh.shell_override = shell_override;
        *self = fresh;
        Ok(())
    }

    /// Resolves flags, settings, directories and variables. Fails with a configuration error
    /// when the directories cannot be computed.
    pub fn new(input: BuildInput) -> Result<(Self, Vec<String>), BuildError> {
        let source = Box::new(input.clone());
        let BuildInput {
            job,
            runner,
            executor_name,
            defaults,
            shared_environment,
            shell,
            concurrent_id,
            concurrent_project_id,
            correlation_id,
        } = input;
        let environment = environment_variables(&runner.environment);
        let mut job_variables: Vec<JobVariable> = job
            .variables
            .iter()
            .filter(|variable| !variable.key.starts_with("FF_"))
            .cloned()
            .collect();
        // A file variable's key becomes a path under the temporary directory and a word in
        // every stage script; a name no shell can export (`../x`, `F$(cmd)`) is refused
        // before a script is written (upstream writes it, and `../x` escapes the directory).
        let mut refused = Vec::new();
        job_variables.retain(|variable| {
            let usable = !variable.file || is_variable_name(&variable.key);
            if !usable {
                refused.push(format!("{:?}", variable.key));
            }
            usable
        });
        let mut for_flags = Variables::new(environment.clone());
        for_flags.extend(job.variables.iter().cloned());
        let (flags, mut warnings) = FeatureFlags::resolve(&runner.feature_flags, &for_flags);
        let settings = BuildSettings::from_variables(
            &for_flags,
            job.allow_git_fetch,
            job.git_info.depth,
            runner.debug_trace_disabled,
        );
        warnings.extend(settings.warnings.iter().cloned());
        if !refused.is_empty() {
            warnings.push(format!(
                "skipping file variables with invalid names (only letters, digits and _, not starting with a digit): {}",
                refused.join(" ")
            ));
        }

        let short = runner.short_token();
        let pending = |dir: String| {
            if dir.is_empty() && defaults.dirs_from_prepare {
                DIR_FROM_PREPARE.to_string()
            } else {
                dir
            }
        };
        let dir_options = DirOptions {
            builds_dir: pending(
                runner
                    .builds_dir
                    .clone()
                    .unwrap_or_else(|| defaults.builds_dir.clone()),
            ),
            cache_dir: pending(
                runner
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| defaults.cache_dir.clone()),
            ),
            shared_builds_dir: defaults.shared_builds_dir,
            custom_build_dir_enabled: runner
                .custom_build_dir_enabled
                .unwrap_or(defaults.custom_build_dir_enabled),
        };
        let dirs = compute_dirs(
            &dir_options,
            &ProjectIdentity {
                repo_url: job.git_info.repo_url.expose(),
                project_id: job.job_info.project_id,
                short_token: &short,
                concurrent_project_id,
                git_strategy_empty: settings.git_strategy == GitStrategy::Empty,
                git_clone_path: &settings.git_clone_path,
            },
        )?;

        let mut all = flags.variables();
        if !job.image.name.is_empty() {
            all.push(JobVariable::internal(
                "CI_JOB_IMAGE",
                job.image.name.clone(),
            ));
        }
        all.push(JobVariable::internal(
            "CI_RUNNER_SHORT_TOKEN",
            short.clone(),
        ));
        all.extend(environment);
        all.push(JobVariable::internal(
            "CI_BUILDS_DIR",
            dirs.builds_dir.clone(),
        ));
        all.push(JobVariable::internal(
            "CI_PROJECT_DIR",
            dirs.project_dir.clone(),
        ));
        all.push(JobVariable::internal(
            "CI_CONCURRENT_ID",
            concurrent_id.to_string(),
        ));
        all.push(JobVariable::internal(
            "CI_CONCURRENT_PROJECT_ID",
            concurrent_project_id.to_string(),
        ));
        all.push(JobVariable::internal("CI_SERVER", "yes"));
        all.push(JobVariable::internal("CI_JOB_STATUS", "running"));
        all.push(JobVariable::internal(
            "CI_JOB_TIMEOUT",
            job.runner_info.timeout_seconds().to_string(),
        ));
        let tls = &runner.server_tls;
        if let Some(ca_chain) = &tls.ca_chain {
            all.push(JobVariable::internal("CI_SERVER_TLS_CA_FILE", ca_chain.clone()).file());
        }
        if let (Some(cert), Some(key)) = (&tls.auth_cert, &tls.auth_key) {
            all.push(JobVariable::internal("CI_SERVER_TLS_CERT_FILE", cert.clone()).file());
            all.push(JobVariable {
                public: false,
                ..JobVariable::internal("CI_SERVER_TLS_KEY_FILE", key.clone()).file()
            });
        }
        all.extend(job_variables);
        if shared_environment {
            all.push(JobVariable::internal("CI_SHARED_ENVIRONMENT", "true"));
        } else {
            all.push(JobVariable::internal("CI_DISPOSABLE_ENVIRONMENT", "true"));
        }
        all.push(JobVariable::internal(
            "CI_RUNNER_VERSION",
            runner.version.version.clone(),
        ));
        all.push(JobVariable::internal(
            "CI_RUNNER_REVISION",
            runner.version.revision.clone(),
        ));
        all.push(JobVariable::internal(
            "CI_RUNNER_EXECUTABLE_ARCH",
            runner.version.platform.clone(),
        ));
        all.push(JobVariable::internal(
            "RUNNER_TEMP_PROJECT_DIR",
            dirs.tmp_dir(),
        ));
        if flags.enabled("FF_NETWORK_PER_BUILD") {
            all.push(JobVariable::internal(
                "CI_BUILD_NETWORK_NAME",
                crate::dirs::project_unique_short_name(
                    &short,
                    job.job_info.project_id,
                    concurrent_project_id,
                    job.id,
                ),
            ));
        }
        let variables = Variables::new(all).with_file_dir(dirs.tmp_dir());
        let safe_directory_checkout = runner
            .safe_directory_checkout
            .unwrap_or(defaults.safe_directory_checkout);
        let defaults_show_hostname = defaults.show_hostname;

        Ok((
            Self {
                job,
                runner,
                executor_name,
                defaults,
                shared_environment,
                shell,
                dirs,
                variables,
                settings,
                flags,
                concurrent_id,
                concurrent_project_id,
                hostname: if defaults_show_hostname {
                    crate::process::host_name()
                } else {
                    String::new()
                },
                safe_directory_checkout,
                correlation_id,
                shell_override: None,
                source,
            },
            warnings,
        ))
    }

    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job.runner_info.timeout_seconds() as u64)
    }

    fn set_job_status(&mut self, status: &str) {
        let mut list = std::mem::take(&mut self.variables).into_vec();
        match list.iter_mut().rev().find(|v| v.key == "CI_JOB_STATUS") {
            Some(variable) => variable.value = status.to_string(),
            None => list.push(JobVariable::internal("CI_JOB_STATUS", status)),
        }
        self.variables = Variables::new(list).with_file_dir(self.dirs.tmp_dir());
    }
}

/// The runtime state upstream reports (`BuildRuntimeState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeState {
    Success,
    Failed,
    Canceled,
    Timedout,
    Terminated,
}

impl RuntimeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Timedout => "timedout",
            Self::Terminated => "terminated",
        }
    }
}

/// How a build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    pub state: RuntimeState,
    pub error: Option<BuildError>,
}

impl BuildOutcome {
    fn failed(error: BuildError) -> Self {
        Self {
            state: RuntimeState::Failed,
            error: Some(error),
        }
    }

    /// A job ended by a panic (a bug) with `message`: a system failure.
    pub fn internal_error(message: &str) -> Self {
        Self::failed(BuildError::system(format!(
            "the runner hit an internal error (please report it): {message}"
        )))
    }

    /// The job log's last line for this outcome: `Job succeeded` or upstream's `ERROR: Job
    /// failed…` line.
    pub fn write_final_line(&self, log: &JobLog) {
        match &self.error {
            None => log.info("Job succeeded"),
            Some(error) if error.is_system_failure() => {
                log.error(&format!("Job failed (system failure): {error}"))
            }
            Some(error) => log.error(&format!("Job failed: {error}")),
        }
    }
}

/// Which deadline fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Job,
    Prepare,
    GetSources,
    Script,
    AfterScript,
}

/// Why a stage stopped before its script ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Deadline(Limit),
    Abort,
    /// A graceful cancel (`canceling`).
    Canceled,
}

/// The equivalent of a Go context for a stage: deadlines, and whether a graceful cancel applies.
#[derive(Debug, Clone)]
struct Scope {
    deadlines: Vec<(Instant, Limit)>,
    graceful: bool,
}

impl Scope {
    /// This scope with one more deadline, `timeout` after `from`. A timeout too long for the
    /// clock (the job's own `timeout` or a variable can be anything) sets no deadline.
    fn limited(&self, from: Instant, timeout: Duration, limit: Limit) -> Self {
        let mut scope = self.clone();
        if let Some(deadline) = from.checked_add(timeout) {
            scope.deadlines.push((deadline, limit));
        }
        scope
    }

    fn check(&self, cancel: &JobCancel) -> Option<Stop> {
        if cancel.is_aborted() {
            return Some(Stop::Abort);
        }
        if self.graceful && cancel.graceful_token().is_cancelled() {
            return Some(Stop::Canceled);
        }
        let now = Instant::now();
        self.deadlines
            .iter()
            .filter(|(deadline, _)| *deadline <= now)
            .min_by_key(|(deadline, _)| *deadline)
            .map(|(_, limit)| Stop::Deadline(*limit))
    }

    async fn wait(&self, cancel: &JobCancel) -> Stop {
        let earliest = self
            .deadlines
            .iter()
            .min_by_key(|(deadline, _)| *deadline)
            .copied();
        let deadline = async {
            match earliest {
                Some((deadline, limit)) => {
                    tokio::time::sleep_until(deadline).await;
                    limit
                }
                None => std::future::pending().await,
            }
        };
        let graceful = async {
            if self.graceful {
                cancel.graceful_token().cancelled().await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            // Abort is checked first: it also fires the graceful token.
            biased;
            _ = cancel.abort_token().cancelled() => Stop::Abort,
            _ = graceful => Stop::Canceled,
            limit = deadline => Stop::Deadline(limit),
        }
    }
}

/// Why a stage failed.
#[derive(Debug)]
enum StageError {
    Exit { code: i32, message: String },
    Executor(ExecutorError),
    Script(ScriptError),
    Stopped(Stop),
}

/// A job error on its way to becoming the final state.
#[derive(Debug)]
enum JobError {
    Build(BuildError),
    Stopped(Stop),
}

impl From<StageError> for JobError {
    fn from(error: StageError) -> Self {
        match error {
            StageError::Exit { code, message } => {
                JobError::Build(BuildError::script(message, code))
            }
            StageError::Executor(error) => JobError::Build(error.into_build_error()),
            StageError::Script(error) => JobError::Build(BuildError::system(error.0)),
            StageError::Stopped(stop) => JobError::Stopped(stop),
        }
    }
}

/// Runs one build from the first header line to the final `Job succeeded` / `ERROR: Job failed`.
pub struct BuildDriver<'a, E, G> {
    executor: &'a mut E,
    generator: &'a G,
    log: &'a JobLog,
    cancel: &'a JobCancel,
    /// False right after a failed prepare attempt was cleaned up: upstream cleans up once per
    /// failed attempt and not again at the end.
    needs_cleanup: bool,
}

impl<'a, E: Executor, G: ScriptGenerator> BuildDriver<'a, E, G> {
    pub fn new(
        executor: &'a mut E,
        generator: &'a G,
        log: &'a JobLog,
        cancel: &'a JobCancel,
    ) -> Self {
        Self {
            executor,
            generator,
            log,
            cancel,
            needs_cleanup: true,
        }
    }

    /// Runs the build. Executor cleanup always runs; the outcome's final log line is written.
    pub async fn run(mut self, mut input: BuildInput) -> BuildOutcome {
        let log = self.log;
        if let Err(error) = interpolate_inputs(&mut input) {
            self.cleanup().await;
            let outcome = BuildOutcome::failed(BuildError::new(
                FailureReason::RunnerConfigurationError,
                error.to_string(),
            ));
            outcome.write_final_line(log);
            return outcome;
        }
        let runner = &input.runner;
        log.println(&format!(
            "Running with {} {} ({})",
            runner.version.name, runner.version.version, runner.version.revision
        ));
        log.println(&format!(
            "  on {} {}, system ID: {}",
            runner.name,
            runner.short_token(),
            runner.system_id
        ));
        let context =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| BuildContext::new(input)));
        let outcome = match context {
            Ok(Ok((mut context, warnings))) => {
                let summary = context.flags.non_default_summary();
                if !summary.is_empty() {
                    log.println(&format!("  feature flags: {summary}"));
                }
                if !warnings.is_empty() {
                    log.warning(&warnings.join(", "));
                }
                match CatchUnwind::new(self.run_with_context(&mut context)).await {
                    Ok(outcome) => outcome,
                    Err(payload) => {
                        let message = panic_message(payload.as_ref());
                        self.after_panic(Some(&context), message).await
                    }
                }
            }
            Ok(Err(error)) => {
                // The executor was never prepared; still give it a chance to release anything.
                self.cleanup().await;
                BuildOutcome::failed(error)
            }
            Err(payload) => {
                self.after_panic(None, panic_message(payload.as_ref()))
                    .await
            }
        };
        outcome.write_final_line(log);
        outcome
    }

    /// A bug panicked in the middle of the build: the job still removes its file variables
    /// (often secrets) and gets executor cleanup, each under its own deadline and each
    /// contained too, and ends as a system failure.
    async fn after_panic(
        &mut self,
        context: Option<&BuildContext>,
        message: String,
    ) -> BuildOutcome {
        tracing::error!(panic = %message, "the build panicked; cleaning up and failing the job");
        if let Some(context) = context {
            let scope = Scope {
                deadlines: Vec::new(),
                graceful: false,
            }
            .limited(Instant::now(), CLEANUP_TIMEOUT, Limit::Job);
            let stage = self.execute_stage(context, Stage::Cleanup, &scope);
            if CatchUnwind::new(stage).await.is_err() {
                tracing::error!("removing the file variables after the panic panicked too");
            }
        }
        if CatchUnwind::new(self.cleanup()).await.is_err() {
            tracing::error!("executor cleanup after the panic panicked too");
        }
        BuildOutcome::internal_error(&message)
    }

    async fn cleanup(&mut self) {
        if tokio::time::timeout(CLEANUP_TIMEOUT, self.executor.cleanup(self.log))
            .await
            .is_err()
        {
            tracing::warn!("executor cleanup timed out");
        }
    }

    async fn run_with_context(&mut self, context: &mut BuildContext) -> BuildOutcome {
        if !context.job.secrets.is_empty() {
            self.cleanup().await;
            return BuildOutcome::failed(BuildError::new(
                FailureReason::RunnerConfigurationError,
                "resolving secrets: secret providers are not supported by this runner",
            ));
        }
        let job_timeout = context.job_timeout();
        let start = Instant::now();
        let job_scope = Scope {
            deadlines: Vec::new(),
            graceful: true,
        }
        .limited(start, job_timeout, Limit::Job);
        let prepare_timeout = self.bounded_timeout(
            context.runner.prepare_timeout,
            job_timeout,
            "prepare_timeout",
        );
        let prepare_scope = job_scope.limited(start, prepare_timeout, Limit::Prepare);

        let result = match self.prepare_executor(context, &prepare_scope).await {
            Ok(()) => {
                self.execute_script(context, &job_scope, &prepare_scope, job_timeout)
                    .await
            }
            Err(error) => Err(error),
        };
        let outcome = outcome_of(result, self.cancel, job_timeout, prepare_timeout, context);
        self.executor.finish(outcome.error.as_ref());
        if self.needs_cleanup {
            self.cleanup().await;
        }
        outcome
    }

    fn bounded_timeout(&self, configured: Option<Duration>, job: Duration, key: &str) -> Duration {
        match configured {
            None => job,
            Some(value) if value.is_zero() => {
                tracing::warn!(
                    "{key} ({}) must be greater than 0; using job timeout ({})",
                    format_go_duration(value),
                    format_go_duration(job)
                );
                job
            }
            Some(value) if value > job => {
                tracing::warn!(
                    "{key} ({}) exceeds job timeout ({}); using job timeout",
                    format_go_duration(value),
                    format_go_duration(job)
                );
                job
            }
            Some(value) => value,
        }
    }

    async fn prepare_executor(
        &mut self,
        context: &mut BuildContext,
        scope: &Scope,
    ) -> Result<(), JobError> {
        let log = self.log;
        let stage = Stage::PrepareExecutor.name();
        log.section_start(&stage);
        log.println(&format!(
            "{ANSI_BOLD_CYAN}Preparing the \"{}\" executor{ANSI_RESET}",
            context.executor_name
        ));
        let result = self.prepare_attempts(context, scope).await;
        log.section_end(&stage);
        result
    }

    async fn prepare_attempts(
        &mut self,
        context: &mut BuildContext,
        scope: &Scope,
    ) -> Result<(), JobError> {
        let mut last_error = None;
        for attempt in 0..PREPARATION_ATTEMPTS {
            if attempt > 0 {
                let wait = tokio::time::sleep(PREPARATION_RETRY_INTERVAL);
                tokio::select! {
                    // The retry pause ends early when the job is stopped.
                    stop = scope.wait(self.cancel) => return Err(JobError::Stopped(stop)),
                    _ = wait => {}
                }
            }
            let token = CancellationToken::new();
            self.needs_cleanup = true;
            let result = {
                let (executor, log) = (&mut *self.executor, self.log);
                let prepare = async {
                    let changes = executor.configure(context, log, &token).await?;
                    // Only a change (or directories still to come) rebuilds the context.
                    if changes != Reconfigure::default() || context.defaults.dirs_from_prepare {
                        context.reconfigure(changes).map_err(|error| {
                            ExecutorError::with_reason(error.reason, error.message)
                        })?;
                    }
                    executor.prepare(context, log, &token).await
                };
                run_until_stopped(prepare, scope, self.cancel, &token).await
            };
            match result {
                (Ok(()), None) => return Ok(()),
                (_, Some(stop)) => return Err(JobError::Stopped(stop)),
                (Err(error), None) => {
                    self.cleanup().await;
                    self.needs_cleanup = false;
                    if error.reason.is_some() {
                        return Err(JobError::Build(error.into_build_error()));
                    }
                    if let Some(stop) = scope.check(self.cancel) {
                        return Err(JobError::Stopped(stop));
                    }
                    self.log
                        .error(&format!("Preparation failed: {}", error.full_message()));
                    if attempt + 1 < PREPARATION_ATTEMPTS {
                        self.log.info(&format!(
                            "Will be retried in {} ...",
                            format_go_duration(PREPARATION_RETRY_INTERVAL)
                        ));
                    }
                    last_error = Some(error);
                }
            }
        }
        let error = last_error
            .map(ExecutorError::into_build_error)
            .unwrap_or_else(|| BuildError::system("preparation failed"));
        Err(JobError::Build(error))
    }

    /// `executeStage`: generate, print the header inside the section, run, interpret.
    async fn execute_stage(
        &mut self,
        context: &BuildContext,
        stage: Stage,
        scope: &Scope,
    ) -> Result<(), StageError> {
        if let Some(stop) = scope.check(self.cancel) {
            return Err(StageError::Stopped(stop));
        }
        let script = match self.generator.generate(&stage, context) {
            Ok(Some(script)) => script,
            Ok(None) => return Ok(()),
            Err(error) => return Err(StageError::Script(error)),
        };
        let name = stage.name();
        let log = self.log;
        log.section_start(&name);
        log.println(&format!(
            "{ANSI_BOLD_CYAN}{}{ANSI_RESET}",
            stage.description()
        ));
        let token = CancellationToken::new();
        let command = ExecutorCommand {
            script: &script,
            stage: &stage,
            predefined: stage.is_predefined(),
        };
        let (result, stopped) = {
            let run = self.executor.run(command, log, &token);
            run_until_stopped(run, scope, self.cancel, &token).await
        };
        log.section_end(&name);
        if let Some(Stop::Deadline(_)) = stopped {
            log.warning(&format!(
                "{name} could not run to completion because the timeout was exceeded. For more control over job and script timeouts see: {TIMEOUT_DOCS}"
            ));
        }
        if let Some(stop) = stopped {
            return Err(StageError::Stopped(stop));
        }
        match result {
            Ok(ScriptExit::Success) => Ok(()),
            Ok(ScriptExit::Failed { code, message }) => Err(StageError::Exit { code, message }),
            Err(error) => Err(StageError::Executor(error)),
        }
    }

    /// `attemptExecuteStage`: up to `attempts` tries with upstream's backoff between them.
    async fn attempt_stage(
        &mut self,
        context: &BuildContext,
        stage: Stage,
        scope: &Scope,
        attempts: u32,
        clear_worktree_on_retry: bool,
    ) -> Result<(), StageError> {
        let attempts = attempts.clamp(1, 10);
        let (mut backoff, max_backoff) = if context
            .flags
            .enabled("FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY")
        {
            (Duration::from_secs(5), Duration::from_secs(5 * 60))
        } else {
            (Duration::from_secs(1), Duration::from_secs(5))
        };
        let mut attempt = 0;
        loop {
            let mut result = Ok(());
            if attempt == 1 && clear_worktree_on_retry {
                result = self
                    .execute_stage(context, Stage::ClearWorktree, scope)
                    .await;
            }
            if result.is_ok() {
                result = self.execute_stage(context, stage.clone(), scope).await;
            }
            attempt += 1;
            match result {
                Ok(()) => return Ok(()),
                Err(StageError::Stopped(stop)) => return Err(StageError::Stopped(stop)),
                Err(error) if attempt >= attempts => return Err(error),
                Err(_) => {
                    self.log.warning("Retrying...");
                    tokio::select! {
                        // A stop during the pause ends the retries.
                        stop = scope.wait(self.cancel) => return Err(StageError::Stopped(stop)),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }

    /// `executeScript`: every stage after the executor is prepared.
    async fn execute_script(
        &mut self,
        context: &mut BuildContext,
        job_scope: &Scope,
        prepare_scope: &Scope,
        job_timeout: Duration,
    ) -> Result<(), JobError> {
        if let Err(error) = self
            .execute_stage(context, Stage::Prepare, prepare_scope)
            .await
        {
            return Err(match error {
                StageError::Stopped(stop) => JobError::Stopped(stop),
                other => match JobError::from(other) {
                    JobError::Build(mut error) => {
                        error.message = format!(
                            "prepare environment: {}. Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information",
                            error.message
                        );
                        JobError::Build(error)
                    }
                    stopped => stopped,
                },
            });
        }

        let get_sources_timeout = self.bounded_timeout(
            context.runner.get_sources_timeout,
            job_timeout,
            "get_sources_timeout",
        );
        let get_sources_scope =
            job_scope.limited(Instant::now(), get_sources_timeout, Limit::GetSources);
        let mut result = self
            .attempt_stage(
                context,
                Stage::GetSources,
                &get_sources_scope,
                context.settings.get_sources_attempts,
                true,
            )
            .await;
        if let Err(StageError::Stopped(stop)) = result {
            return Err(JobError::Stopped(stop));
        }
        if result.is_ok() {
            result = self
                .attempt_stage(
                    context,
                    Stage::RestoreCache,
                    job_scope,
                    context.settings.restore_cache_attempts,
                    false,
                )
                .await;
        }
        if result.is_ok() {
            result = self
                .attempt_stage(
                    context,
                    Stage::DownloadArtifacts,
                    job_scope,
                    context.settings.artifact_download_attempts,
                    false,
                )
                .await;
            // The helper's "no such archive" exit: a dependency whose artifacts are gone.
            if let Err(StageError::Exit { code, message }) = &result {
                if *code == crate::failure::MISSING_DEPENDENCY_EXIT_CODE {
                    let mut error =
                        BuildError::new(FailureReason::MissingDependencyFailure, message.clone());
                    error.exit_code = *code;
                    return Err(JobError::Build(error));
                }
            }
        }
        let mut job_error: Option<JobError> = match result {
            Ok(()) => None,
            Err(StageError::Stopped(stop)) => return Err(JobError::Stopped(stop)),
            Err(error) => Some(error.into()),
        };

        if job_error.is_none() {
            // A graceful cancel that arrived before the scripts cancels the whole build.
            if let Some(stop) = job_scope.check(self.cancel) {
                return Err(JobError::Stopped(stop));
            }
            job_error = self.execute_user_scripts(context, job_scope).await?;
        }

        // From here on a graceful cancel no longer stops stages: uploads still run.
        let tail_scope = Scope {
            deadlines: job_scope.deadlines.clone(),
            graceful: false,
        };
        let succeeded = job_error.is_none();
        let archive = self
            .execute_stage(
                context,
                if succeeded {
                    Stage::ArchiveOnSuccessCache
                } else {
                    Stage::ArchiveOnFailureCache
                },
                &tail_scope,
            )
            .await;
        let archive = stop_or_error(archive)?;
        let upload = self
            .execute_stage(
                context,
                if succeeded {
                    Stage::UploadOnSuccessArtifacts
                } else {
                    Stage::UploadOnFailureArtifacts
                },
                &tail_scope,
            )
            .await;
        let upload = stop_or_error(upload)?;
        let error = job_error.or(archive).or(upload);

        if let Err(error) = self
            .execute_stage(context, Stage::Cleanup, &tail_scope)
            .await
        {
            match error {
                StageError::Stopped(stop) => return Err(JobError::Stopped(stop)),
                other => {
                    tracing::warn!(error = ?other, "error while executing file based variables removal script")
                }
            }
        }
        match error {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }

    /// `executeUserScripts`: the steps under the script scope, then after_script.
    /// Returns the job error the scripts produced; `Err` only when the whole build must stop.
    async fn execute_user_scripts(
        &mut self,
        context: &mut BuildContext,
        job_scope: &Scope,
    ) -> Result<Option<JobError>, JobError> {
        let now = Instant::now();
        let job_remaining = job_scope
            .deadlines
            .iter()
            .find(|(_, limit)| *limit == Limit::Job)
            .map(|(deadline, _)| deadline.saturating_duration_since(now));
        let (script_timeout, after_script_timeout, warnings) =
            crate::settings::stage_timeouts(&context.settings, job_remaining);
        for warning in warnings {
            self.log.warning(&warning);
        }
        let mut script_scope = job_scope.clone();
        if let Some(timeout) = script_timeout {
            script_scope = script_scope.limited(now, timeout, Limit::Script);
        }
        let mut error: Option<StageError> = None;
        let steps: Vec<String> = context
            .job
            .steps
            .iter()
            .filter(|step| step.name != "after_script")
            .map(|step| step.name.clone())
            .collect();
        for step in steps {
            if let Err(stage_error) = self
                .execute_stage(context, Stage::step(&step), &script_scope)
                .await
            {
                error = Some(stage_error);
                break;
            }
        }
        let job_error = match error {
            None => None,
            Some(StageError::Stopped(Stop::Canceled)) => {
                self.log.warning("script canceled externally (UI, API)");
                Some(JobError::Stopped(Stop::Canceled))
            }
            Some(StageError::Stopped(Stop::Deadline(Limit::Script))) => {
                Some(JobError::Stopped(Stop::Deadline(Limit::Script)))
            }
            // The job deadline or an abort end the build right away.
            Some(StageError::Stopped(stop)) => return Err(JobError::Stopped(stop)),
            Some(other) => Some(other.into()),
        };

        let status = match &job_error {
            None => RuntimeState::Success,
            Some(JobError::Stopped(Stop::Canceled)) => RuntimeState::Canceled,
            Some(JobError::Stopped(Stop::Deadline(_))) => RuntimeState::Timedout,
            Some(_) => RuntimeState::Failed,
        };
        context.set_job_status(status.as_str());
        let mut after_scope = Scope {
            deadlines: job_scope.deadlines.clone(),
            graceful: false,
        };
        if let Some(timeout) = after_script_timeout {
            after_scope = after_scope.limited(Instant::now(), timeout, Limit::AfterScript);
        }
        let after = self
            .execute_stage(context, Stage::AfterScript, &after_scope)
            .await;
        match after {
            Ok(()) => Ok(job_error),
            Err(StageError::Stopped(Stop::Abort)) => Err(JobError::Stopped(Stop::Abort)),
            Err(StageError::Stopped(Stop::Deadline(Limit::Job))) => {
                Err(JobError::Stopped(Stop::Deadline(Limit::Job)))
            }
            Err(after_error) => {
                let after_error = match after_error {
                    StageError::Stopped(_) => JobError::Build(BuildError::new(
                        FailureReason::JobExecutionTimeout,
                        "context deadline exceeded",
                    )),
                    other => JobError::from(other),
                };
                if context.settings.after_script_ignore_errors {
                    let text = match &after_error {
                        JobError::Build(error) => error.message.clone(),
                        JobError::Stopped(_) => "canceled".into(),
                    };
                    self.log.warning(&format!(
                        "after_script failed, but job will continue unaffected: {text}"
                    ));
                    Ok(job_error)
                } else {
                    Ok(job_error.or(Some(after_error)))
                }
            }
        }
    }
}

/// Splits a tail-stage result into "stop the build" and "remember this error".
fn stop_or_error(result: Result<(), StageError>) -> Result<Option<JobError>, JobError> {
    match result {
        Ok(()) => Ok(None),
        Err(StageError::Stopped(stop)) => Err(JobError::Stopped(stop)),
        Err(error) => Ok(Some(error.into())),
    }
}

/// Drives `work` until it ends; when the scope stops, fires `token` and keeps waiting (bounded)
/// so the executor can terminate the script and flush its output.
async fn run_until_stopped<T>(
    work: impl Future<Output = T>,
    scope: &Scope,
    cancel: &JobCancel,
    token: &CancellationToken,
) -> (T, Option<Stop>)
where
    T: From<WaitTimedOut>,
{
    let mut work = pin!(work);
    let stop = tokio::select! {
        // The work finished on its own.
        output = &mut work => return (output, None),
        // The scope stopped first: ask the executor to end the script.
        stop = scope.wait(cancel) => stop,
    };
    token.cancel();
    match tokio::time::timeout(WAIT_FOR_STAGE_FINISH, work).await {
        Ok(output) => (output, Some(stop)),
        Err(_) => (T::from(WaitTimedOut), Some(stop)),
    }
}

/// The executor did not return within [`WAIT_FOR_STAGE_FINISH`] after being told to stop.
#[derive(Debug)]
struct WaitTimedOut;

impl From<WaitTimedOut> for Result<(), ExecutorError> {
    fn from(_: WaitTimedOut) -> Self {
        Err(ExecutorError::system(
            "timed out waiting for the build to finish",
        ))
    }
}

impl From<WaitTimedOut> for Result<ScriptExit, ExecutorError> {
    fn from(_: WaitTimedOut) -> Self {
        Err(ExecutorError::system(
            "timed out waiting for the build to finish",
        ))
    }
}

fn outcome_of(
    result: Result<(), JobError>,
    cancel: &JobCancel,
    job_timeout: Duration,
    prepare_timeout: Duration,
    context: &BuildContext,
) -> BuildOutcome {
    let timed_out = || BuildOutcome {
        state: RuntimeState::Timedout,
        error: Some(BuildError::new(
            FailureReason::JobExecutionTimeout,
            format!(
                "execution took longer than {} seconds",
                format_go_duration(job_timeout)
            ),
        )),
    };
    let canceled = || BuildOutcome {
        state: RuntimeState::Canceled,
        error: Some(BuildError::new(FailureReason::JobCanceled, "canceled")),
    };
    match result {
        Ok(()) => BuildOutcome {
            state: RuntimeState::Success,
            error: None,
        },
        Err(JobError::Build(error)) => BuildOutcome::failed(error),
        Err(JobError::Stopped(Stop::Abort)) => match cancel.reason() {
            Some(CancelReason::RunnerShutdown) => BuildOutcome {
                state: RuntimeState::Terminated,
                error: Some(BuildError::new(
                    FailureReason::RunnerInterrupted,
                    "aborted: terminated",
                )),
            },
            _ => canceled(),
        },
        Err(JobError::Stopped(Stop::Canceled)) => canceled(),
        Err(JobError::Stopped(Stop::Deadline(Limit::Prepare))) => {
            BuildOutcome::failed(BuildError::new(
                FailureReason::JobExecutionTimeout,
                format!(
                    "prepare timeout: exceeded timeout of {}",
                    format_go_duration(prepare_timeout)
                ),
            ))
        }
        Err(JobError::Stopped(Stop::Deadline(Limit::GetSources))) => {
            let timeout = context
                .runner
                .get_sources_timeout
                .filter(|timeout| !timeout.is_zero() && *timeout <= job_timeout)
                .unwrap_or(job_timeout);
            BuildOutcome::failed(BuildError::new(
                FailureReason::JobExecutionTimeout,
                format!(
                    "get sources timeout: exceeded timeout of {}",
                    format_go_duration(timeout)
                ),
            ))
        }
        Err(JobError::Stopped(Stop::Deadline(_))) => timed_out(),
    }
}
