//! How a build ended: the runtime state and failure GitLab receives, and the final log line.

use super::*;

/// The runtime state upstream reports (`BuildRuntimeState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeState {
    /// Every stage the job needed succeeded.
    Success,
    /// A script, the executor or the runner failed the job; the outcome's error says why.
    Failed,
    /// GitLab canceled the job, or its script was canceled from the UI or API.
    Canceled,
    /// The job timeout or `RUNNER_SCRIPT_TIMEOUT` ran out (`job_execution_timeout`).
    Timedout,
    /// The runner stopped the job while shutting down (`runner_interrupted`).
    Terminated,
}

impl RuntimeState {
    /// The state in lowercase, as upstream spells it; also the `CI_JOB_STATUS` after_script sees.
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
    /// The runtime state the build ended in.
    pub state: RuntimeState,
    /// Why the job failed, with the reason GitLab is told; `None` when it succeeded.
    pub error: Option<BuildError>,
}

impl BuildOutcome {
    pub(super) fn failed(error: BuildError) -> Self {
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
pub(super) fn outcome_of(
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
        // Upstream returns the script context's error as is (the job context is still alive),
        // so the job fails with `script timeout: context deadline exceeded`, not the job
        // timeout's text; after_script saw `CI_JOB_STATUS=timedout` all the same.
        Err(JobError::Stopped(Stop::Deadline(Limit::Script))) => {
            BuildOutcome::failed(BuildError::new(
                FailureReason::JobExecutionTimeout,
                "script timeout: context deadline exceeded",
            ))
        }
        Err(JobError::Stopped(Stop::Deadline(_))) => timed_out(),
    }
}
