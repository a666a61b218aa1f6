//! The build driver: runs one job's stages in upstream order with upstream's failure branches,
//! timeouts and cancellation, and decides the final state and failure reason (2.2–2.5).
//!
//! [`context`]: what a build is made from and resolves to; `scope`: deadlines and cancels per
//! stage; `outcome`: the final state. The order of stages and who cancels what are in
//! `ARCHITECTURE.md` beside this file.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cancel::{CancelReason, JobCancel};
use crate::dirs::{compute_dirs, short_token, BuildDirs, DirOptions, ProjectIdentity};
use crate::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ExecutorErrorKind, ScriptExit,
};
use crate::failure::{BuildError, FailureReason};
use crate::feature_flags::{FeatureFlag, FeatureFlags};
use crate::job::{JobResponse, PolicyOptions};
use crate::log::{JobLog, ANSI_BOLD_CYAN, ANSI_RESET};
use crate::panic::{panic_message, CatchUnwind};
use crate::script::{ScriptError, ScriptGenerator, ShellCommand};
use crate::secret::Secret;
use crate::settings::{format_go_duration, BuildSettings, GitStrategy};
use crate::stage::Stage;
use crate::variables::{
    environment_variables, is_variable_name, runner_and_job_variables, JobVariable, Variables,
};

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

pub mod context;
mod outcome;
mod scope;

use context::interpolate_inputs;
pub use context::*;
use outcome::outcome_of;
pub use outcome::{BuildOutcome, RuntimeState};
use scope::{Limit, Scope, Stop};

/// Why a stage failed.
#[derive(Debug)]
enum StageError {
    Exit { code: i32, message: String },
    Executor(ExecutorError),
    Script(ScriptError),
    Stopped(Stop),
}

/// A stage that started: the executor's answer and, when the scope stopped the stage, why.
#[derive(Debug)]
struct StageRun {
    result: Result<ScriptExit, ExecutorError>,
    stopped: Option<Stop>,
}

impl StageRun {
    /// The executor's answer as a stage result, whatever stopped the stage.
    fn exit(self) -> Result<(), StageError> {
        match self.result {
            Ok(ScriptExit::Success) => Ok(()),
            Ok(ScriptExit::Failed { code, message }) => Err(StageError::Exit { code, message }),
            Err(error) => Err(StageError::Executor(error)),
        }
    }
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
    /// A driver running `executor`'s stages with `generator`'s scripts, writing to `log` and
    /// stopping when `cancel` fires.
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
                    // One `WARNING:` prefix, then one problem a line, as Go's `errors.Join`.
                    log.warning(&warnings.join("\n"));
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
        for _ in 0..PREPARATION_ATTEMPTS {
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
                    if error.kind() != ExecutorErrorKind::System {
                        return Err(JobError::Build(error.into_build_error()));
                    }
                    if let Some(stop) = scope.check(self.cancel) {
                        return Err(JobError::Stopped(stop));
                    }
                    self.log
                        .error(&format!("Preparation failed: {}", error.full_message()));
                    // Upstream announces and waits out a retry after every failed attempt, the
                    // last one too, and only then gives up.
                    self.log.info(&format!(
                        "Will be retried in {} ...",
                        format_go_duration(PREPARATION_RETRY_INTERVAL)
                    ));
                    last_error = Some(error);
                    tokio::select! {
                        // The retry pause ends early when the job is stopped.
                        stop = scope.wait(self.cancel) => return Err(JobError::Stopped(stop)),
                        _ = tokio::time::sleep(PREPARATION_RETRY_INTERVAL) => {}
                    }
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
        let run = self.run_stage(context, stage, scope).await?;
        if let Some(stop) = run.stopped {
            return Err(StageError::Stopped(stop));
        }
        run.exit()
    }

    /// [`Self::execute_stage`] up to the executor's answer, kept even when the scope stopped the
    /// stage. `Err` when the stage did not start: stopped before it, or no script.
    async fn run_stage(
        &mut self,
        context: &BuildContext,
        stage: Stage,
        scope: &Scope,
    ) -> Result<StageRun, StageError> {
        if let Some(stop) = scope.check(self.cancel) {
            return Err(StageError::Stopped(stop));
        }
        if stage == Stage::step("run") && !context.job.run.is_empty() {
            return self.run_steps_stage(context, stage, scope).await;
        }
        let script = match self.generator.generate(&stage, context) {
            Ok(Some(script)) => script,
            Ok(None) => {
                return Ok(StageRun {
                    result: Ok(ScriptExit::Success),
                    stopped: None,
                })
            }
            Err(error) => return Err(StageError::Script(error)),
        };
        let name = self.open_section(&stage);
        let log = self.log;
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
        self.close_section(&name, stopped);
        Ok(StageRun { result, stopped })
    }

    /// A stage's section and header line; its name.
    fn open_section(&self, stage: &Stage) -> String {
        let name = stage.name();
        self.log.section_start(&name);
        self.log.println(&format!(
            "{ANSI_BOLD_CYAN}{}{ANSI_RESET}",
            stage.description()
        ));
        name
    }

    /// The end of a stage's section, and upstream's warning when its deadline stopped it.
    fn close_section(&self, name: &str, stopped: Option<Stop>) {
        self.log.section_end(name);
        if let Some(Stop::Deadline(_)) = stopped {
            self.log.warning(&format!(
                "{name} could not run to completion because the timeout was exceeded. For more control over job and script timeouts see: {TIMEOUT_DOCS}"
            ));
        }
    }

    /// The `step_run` stage of a job with `run:`: its steps through the executor's Step Runner
    /// instead of a generated script.
    async fn run_steps_stage(
        &mut self,
        context: &BuildContext,
        stage: Stage,
        scope: &Scope,
    ) -> Result<StageRun, StageError> {
        let now = Instant::now();
        let mut request = match crate::executor::StepsRequest::new(
            context.job.id,
            &context.dirs.project_dir,
            &context.job.run,
            &context.variables,
        ) {
            Ok(request) => request,
            Err(error) => {
                return Ok(StageRun {
                    result: Err(error),
                    stopped: None,
                })
            }
        };
        request.timeout = scope
            .deadlines
            .iter()
            .map(|(deadline, _)| deadline.saturating_duration_since(now))
            .min();
        request.token_prefixes = context.job.features.token_mask_prefixes.clone();
        let name = self.open_section(&stage);
        let log = self.log;
        let token = CancellationToken::new();
        let (result, stopped) = {
            let run = self.executor.run_steps(&request, log, &token);
            run_until_stopped(run, scope, self.cancel, &token).await
        };
        self.close_section(&name, stopped);
        Ok(StageRun { result, stopped })
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
            .enabled(FeatureFlag::UseExponentialBackoffStageRetry)
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
        let mut downloading = false;
        if result.is_ok() {
            downloading = true;
            result = self
                .attempt_stage(
                    context,
                    Stage::DownloadArtifacts,
                    job_scope,
                    context.settings.artifact_download_attempts,
                    false,
                )
                .await;
        }
        let mut job_error: Option<JobError> = match result {
            Ok(()) => None,
            Err(StageError::Stopped(stop)) => return Err(JobError::Stopped(stop)),
            // The helper's "no such archive" exit: a dependency whose artifacts are gone. The
            // job fails with that reason, and the failure tail (cache and artifacts on failure,
            // the file-variable cleanup) still runs, as upstream's `executeScript`.
            Err(StageError::Exit { code, message })
                if downloading && code == crate::failure::MISSING_DEPENDENCY_EXIT_CODE =>
            {
                let mut error = BuildError::new(FailureReason::MissingDependencyFailure, message);
                error.exit_code = code;
                Some(JobError::Build(error))
            }
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
        self.print_policy_options(&context.job.policy_options);
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
        let after = match self
            .run_stage(context, Stage::AfterScript, &after_scope)
            .await
        {
            // Stopped at its own deadline, after_script ends with what the stopped script
            // returned (`exit status 143`, or success), as upstream's kill-and-wait hands back
            // the killed process's exit.
            Ok(run) if run.stopped == Some(Stop::Deadline(Limit::AfterScript)) => run.exit(),
            Ok(StageRun {
                stopped: Some(stop),
                ..
            }) => Err(StageError::Stopped(stop)),
            Ok(run) => run.exit(),
            Err(error) => Err(error),
        };
        match after {
            Ok(()) => Ok(job_error),
            Err(StageError::Stopped(Stop::Abort)) => Err(JobError::Stopped(Stop::Abort)),
            Err(StageError::Stopped(Stop::Deadline(Limit::Job))) => {
                Err(JobError::Stopped(Stop::Deadline(Limit::Job)))
            }
            Err(after_error) => {
                let after_error = match after_error {
                    // Stopped before it started: upstream's stage returns the context's error.
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

    /// `printPolicyOptions`: the pipeline execution policy that added the job, and whether the
    /// project's own variables may override the policy's.
    fn print_policy_options(&self, options: &PolicyOptions) {
        if !options.execution_policy_job {
            return;
        }
        self.log.info(&format!(
            "Job triggered by policy \"{}\".",
            options.policy_name
        ));
        let Some(allowed) = options.policy_variables_override_allowed else {
            self.log.info("Variables defined in the policy take precedence over matching user-defined CI/CD variables for this job.");
            return;
        };
        let verdict = if allowed { "allowed" } else { "ignored" };
        // The exceptions reverse the verdict for the variables they name. GitLab may send an
        // empty list, which upstream still prints (its check is for a missing list).
        let exceptions = match &options.policy_variables_override_exceptions {
            Some(names) => format!(" (except for {})", names.join(", ")),
            None => String::new(),
        };
        self.log.info(&format!(
            "User-defined CI/CD variables are {verdict} in this job{exceptions} according to the policy."
        ));
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
