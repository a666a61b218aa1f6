//! The executor traits: how a backend runs the stage scripts of one job.
//!
//! Roles mirror upstream (Prepare / Run / Finish / Cleanup; CanCreate / Create / Acquire / Release /
//! GetFeatures / GetDefaultShell) in async Rust: an associated reservation type instead of `any`,
//! results returned instead of out-parameters, cancellation passed as an argument.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::build::{BuildContext, Reconfigure};
use crate::failure::{BuildError, FailureReason};
use crate::log::JobLog;
use crate::stage::Stage;

/// `info.features` of the job request: what this runner supports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct FeaturesInfo {
    /// Job variables reach the scripts.
    pub variables: bool,
    /// The job's `image` is used.
    pub image: bool,
    /// The job's `services` are started.
    pub services: bool,
    /// Artifacts are uploaded, and those of `dependencies` downloaded.
    pub artifacts: bool,
    /// `cache` is restored and saved.
    pub cache: bool,
    /// `cache:fallback_keys` are tried when the cache key has no archive.
    pub fallback_cache_keys: bool,
    /// The environment is shared between jobs rather than disposable (shell executor).
    pub shared: bool,
    /// A job may upload several artifact archives (`artifacts:reports` besides
    /// `artifacts:paths`).
    pub upload_multiple_artifacts: bool,
    /// Artifacts may be uploaded as a single unarchived file (`artifact_format: raw`).
    pub upload_raw_artifacts: bool,
    /// The runner can serve an interactive session for the job (`runner_session_url`).
    pub session: bool,
    /// The session offers a web terminal into the job's environment.
    pub terminal: bool,
    /// get_sources fetches the payload's `git_info.refspecs`.
    pub refspecs: bool,
    /// Masked variables are hidden in the job log.
    pub masking: bool,
    /// The session can proxy requests to the job's services.
    pub proxy: bool,
    /// Variables marked `raw` are left unexpanded.
    pub raw_variables: bool,
    /// `artifacts:exclude` is honoured.
    pub artifacts_exclude: bool,
    /// Script steps other than `script` (such as `release`) are run.
    pub multi_build_steps: bool,
    /// The log upload resumes from the offset GitLab names when its copy does not line up (416).
    pub trace_reset: bool,
    /// The final update carries the log's CRC-32 checksum.
    pub trace_checksum: bool,
    /// The final update carries the log's size in bytes.
    pub trace_size: bool,
    /// `secrets` can be read from HashiCorp Vault.
    pub vault_secrets: bool,
    /// The job stops when GitLab reports it canceled.
    pub cancelable: bool,
    /// A failed script's exit code is reported in the final update.
    pub return_exit_code: bool,
    /// A service's own `variables` are given to that service.
    pub service_variables: bool,
    /// A service may have several aliases, comma- or space-separated.
    pub service_multiple_aliases: bool,
    /// The image's `executor_opts` (`image:docker:platform`, `user`) are honoured.
    pub image_executor_opts: bool,
    /// A service's `executor_opts` are honoured.
    pub service_executor_opts: bool,
    /// GitLab's `canceling` state stops the script but still runs after_script and uploads.
    pub cancel_gracefully: bool,
    /// The `run` keyword's CI steps are run natively.
    pub native_steps_integration: bool,
    /// A received job is confirmed as started in a second request, so GitLab may withdraw
    /// it in between.
    pub two_phase_job_commit: bool,
    /// The payload's `inputs` are interpolated into `${{ job.inputs.* }}`.
    pub job_inputs: bool,
}

impl FeaturesInfo {
    /// The OR of two feature sets (network client, executor provider and shell each add some).
    pub fn union(self, other: Self) -> Self {
        let mut left = serde_json::to_value(self).unwrap_or_default();
        let right = serde_json::to_value(other).unwrap_or_default();
        if let (Some(left), Some(right)) = (left.as_object_mut(), right.as_object()) {
            for (key, value) in right {
                if value.as_bool() == Some(true) {
                    left.insert(key.clone(), serde_json::Value::Bool(true));
                }
            }
        }
        serde_json::from_value(left).unwrap_or(self)
    }
}

/// Whether the shell runs as a login shell (`bash -l`): shell and ssh do, containers do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShellType {
    /// A plain shell (`bash`), as containers start it.
    #[default]
    Normal,
    /// A login shell (`bash -l`), which reads the user's profile.
    Login,
}

/// How an executor places builds, per upstream's table of executor defaults (4.1).
#[derive(Debug, Clone, Default)]
pub struct ExecutorDefaults {
    /// The builds root when `builds_dir` is not configured (`/builds` in containers).
    pub builds_dir: String,
    /// The local cache root when `cache_dir` is not configured (`/cache` in containers).
    pub cache_dir: String,
    /// Concurrent jobs share the builds root (shell, ssh): project directories get a
    /// `<short token>/<concurrent project id>/` prefix.
    pub shared_builds_dir: bool,
    /// Whether jobs may set `GIT_CLONE_PATH` when `[runners.custom_build_dir]` is
    /// not configured.
    pub custom_build_dir_enabled: bool,
    /// Whether get_sources adds the project directory to git's `safe.directory` when
    /// `safe_directory_checkout` is not configured.
    pub safe_directory_checkout: bool,
    /// Whether stage scripts run in a login shell.
    pub shell_type: ShellType,
    /// The helper binary the generated scripts call for cache and artifacts.
    pub runner_command: String,
    /// Upstream's `ShowHostname`: the prepare script says `Running on … via <runner host>...`.
    pub show_hostname: bool,
    /// The directories may come from the executor's [`Executor::configure`] (custom executor's
    /// `config_exec`): a build may start without `builds_dir` / `cache_dir`, and the driver
    /// fails it as a configuration error when configure did not supply them.
    pub dirs_from_prepare: bool,
    /// Every stage runs as one user on a host other accounts share (the shell executor): the
    /// project's temporary directory, with the file variables and the git config holding the
    /// job token, is created readable by that user only. Executors whose stages may run
    /// under different users (a custom driver) or in their own environment leave it off.
    pub private_temporary_dir: bool,
    /// The runner's global `user` applies: stage scripts run through `su` to it (upstream's
    /// shell executor alone).
    pub switch_user: bool,
    /// The executor learns a stage's exit status from its output (the Kubernetes attach
    /// strategy): each script prints upstream's JSON start line and, from an EXIT trap that
    /// exits 0, its exit line, both also carrying the nonce the executor passes in
    /// [`STAGE_NONCE_VARIABLE`], so that output which only looks like a marker is not one.
    pub stage_markers: bool,
}

/// The environment variable through which an executor with
/// [`ExecutorDefaults::stage_markers`] gives a stage script its marker nonce; the script
/// reads it and unsets it before anything else runs.
pub const STAGE_NONCE_VARIABLE: &str = "RUNNER_STAGE_NONCE";

/// One stage to run: the generated script and where it belongs.
#[derive(Debug, Clone, Copy)]
pub struct ExecutorCommand<'a> {
    /// The generated stage script.
    pub script: &'a str,
    /// The stage the script is for.
    pub stage: &'a Stage,
    /// Runs in the helper environment rather than the build environment.
    pub predefined: bool,
}

/// How a stage's script ended. A failing user script is a result, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptExit {
    /// The script exited with status 0.
    Success,
    /// The script exited non-zero; `message` is the executor's wording (`exit status 1`).
    Failed {
        /// The script's exit code, reported to GitLab with `script_failure`.
        code: i32,
        /// The executor's wording of the exit.
        message: String,
    },
}

/// What an [`ExecutorError`] means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorErrorKind {
    /// The runner's side failed (the Docker engine, the SSH connection, a driver's backend):
    /// the job fails with `runner_system_failure`, and prepare tries again first.
    System,
    /// The job cannot run as it is configured or as it asked (a refused image, a bad
    /// `config_exec` answer): it fails at once with this reason, no retry.
    Job(FailureReason),
}

/// An executor's failure: its kind, the executor's wording, and the error that caused it (kept
/// as a real `source`, so the job log's text carries the whole chain and callers can inspect the
/// cause). A failing user script is not one of these: it is a [`ScriptExit`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExecutorError {
    kind: ExecutorErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ExecutorError {
    /// A [`ExecutorErrorKind::System`] failure.
    pub fn system(message: impl Into<String>) -> Self {
        Self {
            kind: ExecutorErrorKind::System,
            message: message.into(),
            source: None,
        }
    }

    /// A [`ExecutorErrorKind::Job`] failure with `reason`.
    pub fn with_reason(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            kind: ExecutorErrorKind::Job(reason),
            message: message.into(),
            source: None,
        }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What the failure means for the job: a system failure or a given reason.
    pub fn kind(&self) -> ExecutorErrorKind {
        self.kind
    }

    /// The executor's wording, without the causes ([`Self::full_message`] has them).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The reason GitLab is told.
    pub fn failure_reason(&self) -> FailureReason {
        match self.kind {
            ExecutorErrorKind::System => FailureReason::RunnerSystemFailure,
            ExecutorErrorKind::Job(reason) => reason,
        }
    }

    /// The message with its causes, for the job log.
    pub fn full_message(&self) -> String {
        crate::failure::error_chain(self)
    }

    /// The same error with `hint` after its own message (before its causes).
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.message.push_str(hint);
        self
    }

    /// The job failure this becomes: its reason, and its message with the causes.
    pub fn into_build_error(self) -> BuildError {
        BuildError::new(self.failure_reason(), self.full_message())
    }
}

/// A job's `run:` steps as the runner hands them to a Step Runner in the job environment:
/// upstream's request (the job ID as the id, the project dir as work and build dir, every job
/// variable but `STEPS` and `FF_USE_NATIVE_STEPS`, and the steps as a two-document
/// definition: an empty spec, then `run:` with the job's steps).
#[derive(Debug, Clone)]
pub struct StepsRequest {
    /// The request id: the job ID in decimal.
    pub id: String,
    /// The project dir, where the steps run.
    pub work_dir: String,
    /// The job's variables.
    pub variables: Vec<crate::variables::JobVariable>,
    /// The definition text.
    pub steps: String,
    /// What is left of the job's time.
    pub timeout: Option<std::time::Duration>,
    /// Token prefixes to mask besides the masked variables.
    pub token_prefixes: Vec<String>,
}

impl StepsRequest {
    /// The request of `run` (the payload's JSON text of the steps array).
    pub fn new(
        job_id: i64,
        project_dir: &str,
        run: &str,
        variables: &crate::variables::Variables,
    ) -> Result<Self, ExecutorError> {
        let steps: serde_json::Value = serde_json::from_str(run).map_err(|error| {
            ExecutorError::with_reason(
                FailureReason::ScriptFailure,
                format!("parsing the job's run steps: {error}"),
            )
        })?;
        // YAML takes JSON: the definition document is the JSON of `{run: [...]}`.
        let steps = format!("{{}}\n---\n{}\n", serde_json::json!({ "run": steps }));
        Ok(Self {
            id: job_id.to_string(),
            work_dir: project_dir.to_string(),
            variables: variables
                .iter()
                .filter(|variable| variable.key != "STEPS" && variable.key != "FF_USE_NATIVE_STEPS")
                .cloned()
                .collect(),
            steps,
            timeout: None,
            token_prefixes: Vec::new(),
        })
    }
}

/// Runs the stages of one job on one backend.
pub trait Executor: Send {
    /// Asked before `prepare`, on every preparation attempt: what the build should use instead
    /// of the configured directories, host name or script shell (the custom executor's
    /// `config_exec`). The build driver applies it ([`BuildContext::reconfigure`]) before
    /// `prepare`, so prepare and every stage see the result. Most executors change nothing.
    fn configure(
        &mut self,
        _build: &BuildContext,
        _log: &JobLog,
        _cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Reconfigure, ExecutorError>> + Send {
        async { Ok(Reconfigure::default()) }
    }

    /// Sets the environment up (create a container, connect, ...). Logs what it does.
    fn prepare(
        &mut self,
        build: &mut BuildContext,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<(), ExecutorError>> + Send;

    /// Runs one stage script. When `cancel` fires the executor stops the script (SIGTERM, a
    /// grace period, then SIGKILL), keeps forwarding its output meanwhile, and returns.
    fn run(
        &mut self,
        command: ExecutorCommand<'_>,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<ScriptExit, ExecutorError>> + Send;

    /// Runs the job's `run:` steps through a Step Runner in the job environment (the
    /// `step_run` stage), its log into `log`; for executors whose provider advertises
    /// `native_steps_integration`. A failing step is `ScriptExit::Failed` with the exit code
    /// the Step Runner reports.
    fn run_steps(
        &mut self,
        _request: &StepsRequest,
        _log: &JobLog,
        _cancel: &CancellationToken,
    ) -> impl Future<Output = Result<ScriptExit, ExecutorError>> + Send {
        async {
            Err(ExecutorError::system(
                "the `run` keyword (CI steps) is not supported by this executor",
            ))
        }
    }

    /// Told the outcome before cleanup.
    fn finish(&mut self, _outcome: Option<&BuildError>) {}

    /// Releases everything `prepare` made. Always called, with its own deadline, never raced
    /// against the job's cancellation. Must be idempotent.
    fn cleanup(&mut self, log: &JobLog) -> impl Future<Output = ()> + Send;
}

/// How many more jobs a provider can take now. The poller asks before each job request and
/// skips the request when nothing can be reserved; a reservation goes into the executor made
/// for the job, or back through `release` when no job came.
pub trait Capacity: Send + Sync {
    /// Capacity held between `acquire` and the end of the job.
    type Reservation: Send;

    /// Reserves room for one job; `None` when there is none now (an autoscaler with no idle
    /// instance, say). A provider that fails to reserve logs why and returns `None`.
    fn acquire(&self) -> impl Future<Output = Option<Self::Reservation>> + Send;

    /// Gives back a reservation no job used.
    fn release(&self, reservation: Self::Reservation);
}

/// The capacity of executors that take any number of jobs (shell, ssh, custom, docker): the
/// reservation is empty and always granted. Limits come from `concurrent` and `limit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlimited;

impl Capacity for Unlimited {
    type Reservation = ();

    async fn acquire(&self) -> Option<()> {
        Some(())
    }

    fn release(&self, _reservation: ()) {}
}

/// What `P`'s capacity reserves.
pub type ReservationOf<P> = <<P as ExecutorProvider>::Capacity as Capacity>::Reservation;

/// Creates executors of one kind and holds their capacity.
pub trait ExecutorProvider: Send + Sync {
    /// Where this provider's capacity is counted ([`Unlimited`] for most).
    type Capacity: Capacity;
    /// The executor made for each job.
    type Executor: Executor;

    /// The executor name as configured (`shell`, `docker`, ...).
    fn name(&self) -> &'static str;

    /// Whether executors of this kind can be made at all (upstream's `CanCreate`); yes unless
    /// a provider says otherwise.
    fn can_create(&self) -> bool {
        true
    }

    /// What executors of this kind support, added to `info.features` of job requests.
    fn features(&self) -> FeaturesInfo;

    /// The script shell when `[[runners]] shell` is not set (`bash`).
    fn default_shell(&self) -> &'static str;

    /// Where builds go and how the shell starts on this executor.
    fn defaults(&self) -> ExecutorDefaults;

    /// The capacity jobs of this provider reserve from.
    fn capacity(&self) -> &Self::Capacity;

    /// An executor for one job, owning the reservation made for it.
    fn create(&self, reservation: ReservationOf<Self>) -> Self::Executor;
}
