//! Running one job received from GitLab: log, trace uploader, validation, the two-phase
//! `running` confirmation, the build driver, and the final state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use executor_custom::CustomProvider;
use executor_docker::DockerProvider;
use executor_kubernetes::KubernetesProvider;
use executor_shell::{ShellConfig, ShellProvider};
use executor_ssh::SshProvider;
use network::client::{JobState, JobUpdate, VersionInfo};
use network::{FinalState, GitlabClient, RemoteJob, TraceTarget, TraceUploader, UpdateState};
use runner_core::build::{BuildDriver, BuildInput, BuildOutcome, RunnerSettings, RunnerVersion};
use runner_core::cancel::{CancelReason, JobCancel};
use runner_core::executor::{Capacity, ExecutorProvider, FeaturesInfo, ReservationOf};
use runner_core::failure::FailureReason;
use runner_core::feature_flags::{FeatureFlag, FeatureFlags};
use runner_core::job::{JobResponse, EXIT_CODE_UNSUPPORTED_OPTIONS};
use runner_core::log::{token_prefixes, JobLog, LogOptions, MaskRules};
use runner_core::panic::{panic_message, CatchUnwind};
use runner_core::process::KillTimeouts;
use runner_core::secret::Secret;
use runner_core::variables::{runner_and_job_variables, Variables};
use shells::{BashShell, ShellKind};
use tracing::Instrument;

use crate::config::{ExecutorKind, RunnerConfig};

/// Evaluates `$body` with `$name` bound to the provider inside `$provider`, whatever its type.
macro_rules! with_provider {
    ($provider:expr, $name:ident => $body:expr) => {
        match $provider {
            Provider::Shell($name) => $body,
            Provider::Ssh($name) => $body,
            Provider::Custom($name) => $body,
            Provider::Docker($name) => $body,
            Provider::Kubernetes($name) => $body,
        }
    };
}

/// What `drive` needs of a received job besides the log and the cancel handle.
struct JobStart {
    job: JobResponse,
    correlation_id: String,
    concurrent_id: usize,
    concurrent_project_id: usize,
}

/// The executor providers this binary has: an explicit enum, no registry.
#[derive(Debug, Clone)]
pub enum Provider {
    /// `executor = "shell"`.
    Shell(ShellProvider),
    /// `executor = "ssh"`.
    Ssh(SshProvider),
    /// `executor = "custom"`.
    Custom(CustomProvider),
    /// `executor = "docker"`.
    Docker(DockerProvider),
    /// `executor = "kubernetes"`.
    Kubernetes(KubernetesProvider),
}

impl Provider {
    /// The provider for `runner`'s `executor`, with its kill timeouts (the shell executor runs in
    /// the current directory).
    pub fn for_runner(runner: &RunnerConfig) -> Self {
        // Every executor stops a canceled stage with the same timeouts; the custom executor
        // reads its own from `[runners.custom]`, as upstream.
        let kill_timeouts = KillTimeouts {
            graceful: runner.graceful_kill_timeout,
            force: runner.force_kill_timeout,
        };
        match runner.executor {
            ExecutorKind::Shell => Provider::Shell(ShellProvider::new(ShellConfig {
                working_dir: std::env::current_dir().unwrap_or_else(|_| "/".into()),
                kill_timeouts,
            })),
            ExecutorKind::Ssh => Provider::Ssh(
                SshProvider::new(runner.ssh.clone()).with_kill_timeouts(kill_timeouts),
            ),
            ExecutorKind::Custom => Provider::Custom(CustomProvider::new(runner.custom.clone())),
            ExecutorKind::Docker => Provider::Docker(
                DockerProvider::new(runner.docker.clone()).with_kill_timeouts(kill_timeouts),
            ),
            ExecutorKind::Kubernetes => Provider::Kubernetes(
                KubernetesProvider::new(runner.kubernetes.clone())
                    .with_kill_timeouts(kill_timeouts),
            ),
        }
    }

    /// The executor's name, as reported to GitLab in `info.executor` and in logs.
    pub fn name(&self) -> &'static str {
        with_provider!(self, provider => provider.name())
    }

    /// Reserves room for one job before GitLab is asked for it; `None` when there is none.
    pub async fn acquire(&self) -> Option<Reservation> {
        Some(match self {
            Provider::Shell(provider) => Reservation::Shell(provider.capacity().acquire().await?),
            Provider::Ssh(provider) => Reservation::Ssh(provider.capacity().acquire().await?),
            Provider::Custom(provider) => Reservation::Custom(provider.capacity().acquire().await?),
            Provider::Docker(provider) => Reservation::Docker(provider.capacity().acquire().await?),
            Provider::Kubernetes(provider) => {
                Reservation::Kubernetes(provider.capacity().acquire().await?)
            }
        })
    }

    /// Gives back a reservation no job used.
    pub fn release(&self, reservation: Reservation) {
        match (self, reservation) {
            (Provider::Shell(provider), Reservation::Shell(held)) => {
                provider.capacity().release(held)
            }
            (Provider::Ssh(provider), Reservation::Ssh(held)) => provider.capacity().release(held),
            (Provider::Custom(provider), Reservation::Custom(held)) => {
                provider.capacity().release(held)
            }
            (Provider::Docker(provider), Reservation::Docker(held)) => {
                provider.capacity().release(held)
            }
            (Provider::Kubernetes(provider), Reservation::Kubernetes(held)) => {
                provider.capacity().release(held)
            }
            (provider, reservation) => tracing::error!(
                provider = provider.name(),
                reservation = reservation.kind().as_str(),
                "a reservation was given back to another provider; dropping it"
            ),
        }
    }

    /// What the executor supports, reported to GitLab in `info.features`.
    pub fn features(&self) -> FeaturesInfo {
        with_provider!(self, provider => provider.features())
    }

    /// The shell used when the runner's `shell` key is unset.
    pub fn default_shell(&self) -> &'static str {
        with_provider!(self, provider => provider.default_shell())
    }
}

/// What [`Provider::acquire`] reserved, for the provider it came from.
#[derive(Debug)]
pub enum Reservation {
    /// Held by a shell provider.
    Shell(ReservationOf<ShellProvider>),
    /// Held by an ssh provider.
    Ssh(ReservationOf<SshProvider>),
    /// Held by a custom provider.
    Custom(ReservationOf<CustomProvider>),
    /// Held by a docker provider.
    Docker(ReservationOf<DockerProvider>),
    /// Held by a kubernetes provider.
    Kubernetes(ReservationOf<KubernetesProvider>),
}

impl Reservation {
    /// The executor whose provider made this reservation.
    fn kind(&self) -> ExecutorKind {
        match self {
            Reservation::Shell(_) => ExecutorKind::Shell,
            Reservation::Ssh(_) => ExecutorKind::Ssh,
            Reservation::Custom(_) => ExecutorKind::Custom,
            Reservation::Docker(_) => ExecutorKind::Docker,
            Reservation::Kubernetes(_) => ExecutorKind::Kubernetes,
        }
    }
}

/// The features every script shell adds (`AbstractShell.GetFeatures`).
pub fn shell_features() -> FeaturesInfo {
    FeaturesInfo {
        artifacts: true,
        upload_multiple_artifacts: true,
        upload_raw_artifacts: true,
        cache: true,
        fallback_cache_keys: true,
        refspecs: true,
        masking: true,
        raw_variables: true,
        artifacts_exclude: true,
        multi_build_steps: true,
        vault_secrets: false,
        return_exit_code: true,
        ..FeaturesInfo::default()
    }
}

/// `info` for requests made on behalf of `runner`.
pub fn version_info(runner: &RunnerConfig, provider: &Provider) -> VersionInfo {
    let version = RunnerVersion::default();
    let (platform, architecture) = version
        .platform
        .split_once('/')
        .map(|(os, arch)| (os.to_string(), arch.to_string()))
        .unwrap_or_default();
    VersionInfo {
        name: version.name,
        version: version.version,
        revision: version.revision,
        platform,
        architecture,
        executor: provider.name().into(),
        shell: runner
            .shell
            .clone()
            .unwrap_or_else(|| provider.default_shell().into()),
        features: provider
            .features()
            .union(shell_features())
            .union(network::network_features()),
        labels: runner.labels.clone(),
    }
}

/// (runner token, job id).
type RunningJob = (String, i64);
/// (concurrent id, project id, project concurrent id).
type AssignedIds = (usize, i64, usize);

/// `CI_CONCURRENT_ID` / `CI_CONCURRENT_PROJECT_ID`: the lowest ids not used by a running job.
#[derive(Debug, Default)]
pub struct ConcurrencyIds {
    running: Mutex<HashMap<RunningJob, AssignedIds>>,
}

impl ConcurrencyIds {
    /// Gives job `job_id` of runner `token` the lowest `CI_CONCURRENT_ID` free for that runner and
    /// the lowest `CI_CONCURRENT_PROJECT_ID` free for `project_id`; returns both.
    pub fn allocate(&self, token: &str, job_id: i64, project_id: i64) -> (usize, usize) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let lowest = |used: Vec<usize>| (0..).find(|id| !used.contains(id)).unwrap_or(0);
        let concurrent = lowest(
            running
                .iter()
                .filter(|((t, _), _)| t == token)
                .map(|(_, (id, _, _))| *id)
                .collect(),
        );
        let project = lowest(
            running
                .iter()
                .filter(|((t, _), (_, p, _))| t == token && *p == project_id)
                .map(|(_, (_, _, id))| *id)
                .collect(),
        );
        running.insert(
            (token.to_string(), job_id),
            (concurrent, project_id, project),
        );
        (concurrent, project)
    }

    /// Frees the ids of job `job_id` of runner `token` once the job is over.
    pub fn release(&self, token: &str, job_id: i64) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(token.to_string(), job_id));
    }
}

/// Shared by every job of one runner process.
pub struct JobEnvironment {
    /// The `[[runners]]` entry the jobs belong to.
    pub runner: Arc<RunnerConfig>,
    /// The executor provider built for that entry.
    pub provider: Provider,
    /// The GitLab API client of the entry's `url`.
    pub client: Arc<GitlabClient>,
    /// The process's `system_id` (`.runner_system_id`), sent in job requests and given to jobs.
    pub system_id: String,
    /// The global `user` that scripts run as, where the executor switches users.
    pub user: Option<String>,
    /// The concurrent-ID allocator, shared by every runner of the process.
    pub ids: Arc<ConcurrencyIds>,
}

fn log_options(runner: &RunnerConfig, job: &JobResponse) -> LogOptions {
    let variables = runner_and_job_variables(&runner.environment, &job.variables);
    let (flags, _) = FeatureFlags::resolve(&runner.feature_flags, &variables);
    LogOptions {
        timestamps: flags.enabled(FeatureFlag::Timestamps),
        trace_sections: job.features.trace_sections,
        output_limit: runner.output_limit,
        mask: MaskRules::new(
            variables.masked_values(),
            token_prefixes(
                &job.features.token_mask_prefixes,
                flags.enabled(FeatureFlag::MaskAllDefaultTokens),
            ),
        ),
    }
}

fn debug_trace(job: &JobResponse, runner: &RunnerConfig) -> bool {
    if runner.debug_trace_disabled {
        return false;
    }
    let variables = Variables::new(job.variables.clone());
    variables.bool("CI_DEBUG_TRACE").unwrap_or(false)
        || variables.bool("CI_DEBUG_SERVICES").unwrap_or(false)
}

/// How a received job ended, for the caller's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// GitLab dropped the job before it started (two-phase confirmation aborted).
    Dropped,
    /// The job ran (or was refused or canceled) and its final state was sent.
    Finished {
        /// Whether the job succeeded.
        success: bool,
        /// GitLab's `failure_reason` (such as `script_failure`); `None` on success.
        reason: Option<String>,
    },
}

impl JobEnvironment {
    fn runner_settings(&self) -> RunnerSettings {
        let runner = &self.runner;
        RunnerSettings {
            name: runner.name.clone(),
            token: runner.token.clone(),
            system_id: self.system_id.clone(),
            url: runner.url.clone(),
            clone_url: runner.clone_url.clone(),
            environment: runner.environment.clone(),
            hooks: runner.hooks.clone(),
            builds_dir: runner.builds_dir.clone(),
            cache_dir: runner.cache_dir.clone(),
            custom_build_dir_enabled: runner.custom_build_dir_enabled,
            safe_directory_checkout: runner.safe_directory_checkout,
            clean_git_config: runner.clean_git_config,
            prepare_timeout: runner.prepare_timeout,
            get_sources_timeout: runner.get_sources_timeout,
            feature_flags: runner.feature_flags.clone(),
            debug_trace_disabled: runner.debug_trace_disabled,
            version: RunnerVersion::default(),
            server_tls: network::job_tls_data(self.client.tls()),
            remote_cache: runner.remote_cache.clone(),
            artifact_upload_timeout: runner.artifact_upload_timeout,
            artifact_response_header_timeout: runner.artifact_response_header_timeout,
        }
    }

    /// Fails a job whose payload could not be parsed, so it does not stay `running` forever.
    pub async fn fail_malformed(&self, id: i64, token: Secret<String>, error: &str) {
        tracing::error!(job = id, %error, "received a job payload that cannot be parsed");
        self.fail_before_start(id, &token, error).await;
    }

    /// Reports a job that failed before its build could start as `runner_system_failure`, with
    /// the error as its log when a log can be written.
    async fn fail_before_start(&self, id: i64, token: &Secret<String>, error: &str) {
        let info = version_info(&self.runner, &self.provider);
        // Nothing of the payload can be trusted here: mask the job token and every default
        // token prefix, whatever the payload's features say.
        let options = LogOptions {
            mask: MaskRules::new(vec![token.expose().clone()], token_prefixes(&[], true)),
            ..LogOptions::default()
        };
        let log = JobLog::new(options).ok();
        if let Some(log) = &log {
            log.error(&format!("Job failed (system failure): {error}"));
            log.finish();
            let content = log.contents();
            self.client.patch_trace(id, token, content, 0, false).await;
        }
        let update = JobUpdate {
            state: JobState::Failed,
            failure_reason: Some(FailureReason::RunnerSystemFailure.as_str().into()),
            exit_code: 0,
            checksum: log.as_ref().map(JobLog::checksum).unwrap_or_default(),
            bytesize: log.as_ref().map(JobLog::len).unwrap_or_default(),
        };
        self.client.update_job(id, token, &info, &update).await;
    }

    /// Runs one job to its final update. `root` fires on forceful shutdown.
    pub async fn run_job(
        &self,
        job: JobResponse,
        correlation_id: String,
        reservation: Reservation,
        root: &tokio_util::sync::CancellationToken,
    ) -> JobResult {
        let span = tracing::info_span!("job", job = job.id, project = job.job_info.project_id, runner = %self.runner.short_token());
        self.run_job_in_span(job, correlation_id, reservation, root)
            .instrument(span)
            .await
    }

    async fn run_job_in_span(
        &self,
        job: JobResponse,
        correlation_id: String,
        reservation: Reservation,
        root: &tokio_util::sync::CancellationToken,
    ) -> JobResult {
        // Until the executor takes it, the reservation goes back whenever this returns early.
        let mut reservation = ReservationGuard {
            provider: &self.provider,
            held: Some(reservation),
        };
        let job_id = job.id;
        let token = job.token.clone();
        tracing::info!("received job");
        let log = match JobLog::new(log_options(&self.runner, &job)) {
            Ok(log) => log,
            Err(error) => {
                tracing::error!(%error, "cannot create the job log");
                self.fail_before_start(job_id, &token, &format!("creating the job log: {error}"))
                    .await;
                return JobResult::Finished {
                    success: false,
                    reason: Some("runner_system_failure".into()),
                };
            }
        };
        let cancel = JobCancel::with_parent(root);
        let info = version_info(&self.runner, &self.provider);
        let uploader = TraceUploader::start(
            TraceTarget {
                client: self.client.clone(),
                job_id,
                job_token: token.clone(),
                info: info.clone(),
                debug_trace: debug_trace(&job, &self.runner),
                final_update_retry_limit: self.runner.job_status_final_update_retry_limit,
            },
            log.clone(),
        );
        // GitLab's answers to the uploader decide about the job here: `canceling` cancels it
        // gracefully, a job GitLab no longer runs is aborted.
        let _follower = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(follow_remote(
            uploader.remote(),
            cancel.clone(),
        )));
        let supported = job.features.failure_reasons.clone();

        let native_steps = self.provider.features().native_steps_integration;
        if let Err(error) = job.validate(native_steps) {
            log.error(&error.to_string());
            let reason = FailureReason::RunnerSystemFailure;
            log.error(&format!("Job failed (system failure): {error}"));
            let state = FinalState {
                success: false,
                failure_reason: Some(reason.for_gitlab(&supported).into()),
                exit_code: EXIT_CODE_UNSUPPORTED_OPTIONS,
            };
            uploader.finish(&state).await;
            return JobResult::Finished {
                success: false,
                reason: state.failure_reason,
            };
        }

        let mut job = job;
        job.use_native_steps();

        // Two-phase commit: confirm the job before running it.
        let confirmation = self
            .client
            .update_job(
                job_id,
                &token,
                &info,
                &JobUpdate {
                    state: JobState::Running,
                    failure_reason: None,
                    exit_code: 0,
                    checksum: log.checksum(),
                    bytesize: log.len(),
                },
            )
            .await;
        if confirmation.state == UpdateState::Abort {
            tracing::warn!("GitLab dropped the job before it started");
            uploader.abandon().await;
            return JobResult::Dropped;
        }
        if confirmation.remote.cancel_requested {
            log.error("Job failed: canceled");
            let state = FinalState {
                success: false,
                failure_reason: Some(FailureReason::JobCanceled.for_gitlab(&supported).into()),
                exit_code: 0,
            };
            uploader.finish(&state).await;
            return JobResult::Finished {
                success: false,
                reason: state.failure_reason,
            };
        }

        let (concurrent_id, concurrent_project_id) =
            self.ids
                .allocate(self.runner.token.expose(), job_id, job.job_info.project_id);
        let start = JobStart {
            job,
            correlation_id,
            concurrent_id,
            concurrent_project_id,
        };
        let drive = match (&self.provider, reservation.take()) {
            (Provider::Shell(provider), Some(Reservation::Shell(held))) => {
                CatchUnwind::new(self.drive(provider, held, start, &log, &cancel)).await
            }
            (Provider::Ssh(provider), Some(Reservation::Ssh(held))) => {
                CatchUnwind::new(self.drive(provider, held, start, &log, &cancel)).await
            }
            (Provider::Custom(provider), Some(Reservation::Custom(held))) => {
                CatchUnwind::new(self.drive(provider, held, start, &log, &cancel)).await
            }
            (Provider::Docker(provider), Some(Reservation::Docker(held))) => {
                CatchUnwind::new(self.drive(provider, held, start, &log, &cancel)).await
            }
            (Provider::Kubernetes(provider), Some(Reservation::Kubernetes(held))) => {
                CatchUnwind::new(self.drive(provider, held, start, &log, &cancel)).await
            }
            (provider, held) => {
                if let Some(held) = held {
                    provider.release(held);
                }
                Err(Box::new(format!(
                    "the job's reservation does not belong to the {} executor",
                    provider.name()
                )) as Box<dyn std::any::Any + Send>)
            }
        };
        // The build driver contains its own panics; this catches one outside it (choosing the
        // executor, acquiring it), so the job still gets its final state.
        let outcome = drive.unwrap_or_else(|payload| {
            let message = panic_message(payload.as_ref());
            tracing::error!(panic = %message, "the job panicked outside the build");
            let outcome = BuildOutcome::internal_error(&message);
            outcome.write_final_line(&log);
            outcome
        });
        self.ids.release(self.runner.token.expose(), job_id);
        let state = final_state(&outcome, &supported);
        tracing::info!(state = outcome.state.as_str(), reason = ?state.failure_reason, "job finished");
        uploader.finish(&state).await;
        JobResult::Finished {
            success: state.success,
            reason: state.failure_reason,
        }
    }

    async fn drive<P: ExecutorProvider>(
        &self,
        provider: &P,
        reservation: ReservationOf<P>,
        start: JobStart,
        log: &JobLog,
        cancel: &JobCancel,
    ) -> BuildOutcome {
        let JobStart {
            job,
            correlation_id,
            concurrent_id,
            concurrent_project_id,
        } = start;
        let shell_name = self
            .runner
            .shell
            .clone()
            .unwrap_or_else(|| provider.default_shell().to_string());
        let kind = ShellKind::from_name(&shell_name).unwrap_or(ShellKind::Bash);
        let generator = BashShell::new(kind);
        let defaults = provider.defaults();
        // The global `user` (scripts run through `su`), where the executor honours it.
        let user = defaults
            .switch_user
            .then_some(self.user.as_deref())
            .flatten();
        let shell = generator.command(defaults.shell_type, user);
        let mut executor = provider.create(reservation);
        let input = BuildInput {
            concurrent_id,
            concurrent_project_id,
            correlation_id,
            ..BuildInput::for_provider(provider, job, self.runner_settings(), defaults, shell)
        };
        BuildDriver::new(&mut executor, &generator, log, cancel)
            .run(input)
            .await
    }
}

/// Acts on what GitLab says about the running job until it is gone or the uploader stops.
async fn follow_remote(mut remote: tokio::sync::watch::Receiver<RemoteJob>, cancel: JobCancel) {
    loop {
        let said = *remote.borrow_and_update();
        match said {
            RemoteJob::Running => {}
            RemoteJob::Canceling => cancel.cancel_gracefully(),
            RemoteJob::Gone => {
                cancel.abort(CancelReason::RemoteAbort);
                return;
            }
        }
        if remote.changed().await.is_err() {
            return;
        }
    }
}

/// A reservation not yet handed to an executor: released when dropped.
struct ReservationGuard<'a> {
    provider: &'a Provider,
    held: Option<Reservation>,
}

impl ReservationGuard<'_> {
    fn take(&mut self) -> Option<Reservation> {
        self.held.take()
    }
}

impl Drop for ReservationGuard<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            self.provider.release(held);
        }
    }
}

/// The update GitLab receives for an outcome (2.5, 1.12).
pub fn final_state(outcome: &BuildOutcome, supported: &[String]) -> FinalState {
    match &outcome.error {
        None => FinalState {
            success: true,
            failure_reason: None,
            exit_code: 0,
        },
        Some(error) => FinalState {
            success: false,
            failure_reason: Some(error.reason.for_gitlab(supported).into()),
            exit_code: error.exit_code,
        },
    }
}
