//! Streams a job's log to GitLab while it runs, then sends the final state (1.8, 1.9).

use std::sync::Arc;
use std::time::Duration;

use runner_core::log::JobLog;
use runner_core::secret::Secret;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{GitlabClient, JobState, JobUpdate, PatchState, UpdateState, VersionInfo};

/// At most this many bytes per `PATCH` (`DefaultTracePatchLimit`).
pub const TRACE_PATCH_LIMIT: usize = 1024 * 1024;
/// The first update interval, and the one the final update uses.
pub const DEFAULT_UPDATE_INTERVAL: Duration = Duration::from_secs(3);
/// A keep-alive update is sent when nothing succeeded for this long.
pub const FORCE_SEND_INTERVAL: Duration = Duration::from_secs(30);
/// Final update attempts (`job_status_final_update_retry_limit`).
pub const DEFAULT_FINAL_UPDATE_RETRY_LIMIT: u32 = 10;

/// Who the trace belongs to.
#[derive(Clone)]
pub struct TraceTarget {
    /// The client of the GitLab the job came from.
    pub client: Arc<GitlabClient>,
    /// The job's ID, as in `jobs/:id`.
    pub job_id: i64,
    /// The job's token, sent as `JOB-TOKEN` on every patch and update.
    pub job_token: Secret<String>,
    /// The runner's `info`, sent with every `PUT jobs/:id`.
    pub info: VersionInfo,
    /// Whether debug tracing is on (`CI_DEBUG_TRACE` or `CI_DEBUG_SERVICES`); sent as the
    /// `debug_trace` query parameter of each trace patch.
    pub debug_trace: bool,
    /// `job_status_final_update_retry_limit`: attempts at the final update (0 counts as 1).
    pub final_update_retry_limit: u32,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    sent: u64,
    interval: Duration,
}

/// What GitLab said about a running job in its answers to the trace uploader (`Job-Status`).
/// The uploader only reports it; the code that owns the job decides what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteJob {
    /// GitLab has said nothing against the job: it keeps running.
    #[default]
    Running,
    /// `Job-Status: canceling`: a graceful cancel was asked for (after_script still runs).
    Canceling,
    /// `canceled` / `failed`, or a 403: GitLab no longer runs the job. The uploader stops.
    Gone,
}

/// The running uploader of one job. Dropping it (its owner unwinding, say) stops the loop, so
/// no orphaned task keeps telling GitLab a finished job is still running.
pub struct TraceUploader {
    target: TraceTarget,
    log: JobLog,
    stop: CancellationToken,
    task: Option<JoinHandle<Progress>>,
    remote: watch::Receiver<RemoteJob>,
}

impl Drop for TraceUploader {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The final state to report.
#[derive(Debug, Clone)]
pub struct FinalState {
    /// Whether the job succeeded; sent as state `success` or `failed`.
    pub success: bool,
    /// GitLab's `failure_reason` (such as `script_failure`); `None` on success.
    pub failure_reason: Option<String>,
    /// The script's exit code; sent as `exit_code` only when it is not 0.
    pub exit_code: i32,
}

impl TraceUploader {
    /// Starts the incremental loop; [`TraceUploader::remote`] tells what GitLab says meanwhile.
    pub fn start(target: TraceTarget, log: JobLog) -> Self {
        let stop = CancellationToken::new();
        let (remote_sender, remote) = watch::channel(RemoteJob::Running);
        let task = tokio::spawn(incremental_loop(
            target.clone(),
            log.clone(),
            remote_sender,
            stop.clone(),
        ));
        Self {
            target,
            log,
            stop,
            task: Some(task),
            remote,
        }
    }

    /// GitLab's word on the job so far, updated as its answers come.
    pub fn remote(&self) -> watch::Receiver<RemoteJob> {
        self.remote.clone()
    }

    /// Stops the loop and waits for it; what it had sent.
    async fn stop_loop(&mut self) -> Progress {
        self.stop.cancel();
        let stopped = match self.task.take() {
            Some(task) => task.await.ok(),
            None => None,
        };
        stopped.unwrap_or(Progress {
            sent: 0,
            interval: DEFAULT_UPDATE_INTERVAL,
        })
    }

    /// Stops the loop without a final update (the job was dropped by GitLab).
    pub async fn abandon(mut self) {
        self.stop_loop().await;
    }

    /// Stops the loop, sends what is left and the final state, retrying as upstream does.
    /// Returns `false` when GitLab never acknowledged the final state.
    pub async fn finish(mut self, state: &FinalState) -> bool {
        let progress = self.stop_loop().await;
        self.log.finish();
        final_update(&self.target, &self.log, progress.sent, state).await
    }
}

async fn patch_once(target: &TraceTarget, log: &JobLog, sent: u64) -> crate::client::PatchResult {
    let content = log.read_at(sent, TRACE_PATCH_LIMIT).unwrap_or_default();
    target
        .client
        .patch_trace(
            target.job_id,
            &target.job_token,
            content,
            sent,
            target.debug_trace,
        )
        .await
}

fn running_update(log: &JobLog) -> JobUpdate {
    JobUpdate {
        state: JobState::Running,
        failure_reason: None,
        exit_code: 0,
        checksum: log.checksum(),
        bytesize: log.len(),
    }
}

async fn incremental_loop(
    target: TraceTarget,
    log: JobLog,
    remote: watch::Sender<RemoteJob>,
    stop: CancellationToken,
) -> Progress {
    // Canceling is said once; a job GitLab no longer runs stays gone.
    let report = |said: RemoteJob| {
        remote.send_if_modified(|state| {
            let news = *state != said && *state != RemoteJob::Gone;
            if news {
                *state = said;
            }
            news
        });
    };
    let mut progress = Progress {
        sent: 0,
        interval: DEFAULT_UPDATE_INTERVAL,
    };
    let mut last_success = Instant::now();
    loop {
        tokio::select! {
            // The job ended: the final update takes over from here.
            _ = stop.cancelled() => return progress,
            _ = tokio::time::sleep(progress.interval) => {}
        }
        let before = progress.sent;
        let result = patch_once(&target, &log, progress.sent).await;
        progress.sent = trusted_offset(result.sent_offset, progress.sent, &log);
        if let Some(interval) = result.remote.update_interval {
            progress.interval = interval;
        }
        if result.remote.cancel_requested {
            report(RemoteJob::Canceling);
        }
        match result.state {
            PatchState::Abort => {
                report(RemoteJob::Gone);
                return progress;
            }
            PatchState::Succeeded => {
                if result.sent_offset > before {
                    last_success = Instant::now();
                }
                if last_success.elapsed() >= FORCE_SEND_INTERVAL {
                    let update = target
                        .client
                        .update_job(
                            target.job_id,
                            &target.job_token,
                            &target.info,
                            &running_update(&log),
                        )
                        .await;
                    if update.remote.cancel_requested {
                        report(RemoteJob::Canceling);
                    }
                    if let Some(interval) = update.remote.update_interval {
                        progress.interval = interval;
                    }
                    match update.state {
                        UpdateState::Abort => {
                            report(RemoteJob::Gone);
                            return progress;
                        }
                        UpdateState::Succeeded | UpdateState::Accepted => {
                            last_success = Instant::now()
                        }
                        _ => {}
                    }
                }
            }
            PatchState::NotFound | PatchState::RangeMismatch | PatchState::Failed => {}
        }
    }
}

/// Where to go on from after a PATCH: GitLab's offset, unless it claims more than the log
/// holds. Such a claim is bogus (taken as is, it would skip the rest of the log and report a
/// log GitLab never got), so the offset stays where it was and the next PATCH tries again.
fn trusted_offset(answered: u64, before: u64, log: &JobLog) -> u64 {
    if answered > log.len() {
        before
    } else {
        answered
    }
}

async fn final_update(
    target: &TraceTarget,
    log: &JobLog,
    mut sent: u64,
    state: &FinalState,
) -> bool {
    // GitLab may ask for another interval in any answer (upstream lets "Rails override it").
    let mut interval = DEFAULT_UPDATE_INTERVAL;
    let mut backoff = Duration::from_secs(1);
    let update = JobUpdate {
        state: if state.success {
            JobState::Success
        } else {
            JobState::Failed
        },
        failure_reason: state.failure_reason.clone(),
        exit_code: state.exit_code,
        checksum: log.checksum(),
        bytesize: log.len(),
    };
    let mut attempt = 0;
    let limit = target.final_update_retry_limit.max(1);
    // 416 answers in a row: each moves the offset to where GitLab says its copy ends (unless
    // that is past the log), but a GitLab that keeps answering 416 must not keep the job from
    // its final state forever.
    let mut mismatches = 0;
    while attempt < limit {
        // Drain what GitLab does not have yet.
        let mut drained = true;
        while sent < log.len() {
            let result = patch_once(target, log, sent).await;
            sent = trusted_offset(result.sent_offset, sent, log);
            if let Some(asked) = result.remote.update_interval {
                interval = asked;
            }
            match result.state {
                PatchState::Succeeded => mismatches = 0,
                PatchState::RangeMismatch => {
                    mismatches += 1;
                    if mismatches >= limit {
                        tracing::warn!(
                            job = target.job_id,
                            "GitLab keeps refusing the trace's range; sending the final state without the rest of the log"
                        );
                        break;
                    }
                    tokio::time::sleep(interval).await;
                }
                PatchState::NotFound | PatchState::Abort => break,
                PatchState::Failed => {
                    drained = false;
                    break;
                }
            }
        }
        if !drained {
            attempt += 1;
            if attempt < limit {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60 * 60));
            }
            continue;
        }
        let result = target
            .client
            .update_job(target.job_id, &target.job_token, &target.info, &update)
            .await;
        if let Some(asked) = result.remote.update_interval {
            interval = asked;
        }
        match result.state {
            UpdateState::Succeeded => return true,
            UpdateState::Abort => return false,
            UpdateState::Accepted => {
                tokio::time::sleep(interval).await;
            }
            UpdateState::TraceValidationFailed => {
                // GitLab's copy of the log does not match: send it again from the start,
                // within the attempts, so a GitLab that never agrees cannot hold the job.
                sent = 0;
                attempt += 1;
                if attempt < limit {
                    tokio::time::sleep(interval).await;
                }
            }
            UpdateState::Failed => {
                attempt += 1;
                // No wait after the last attempt: the job is over, nothing is gained by it.
                if attempt < limit {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60 * 60));
                }
            }
        }
    }
    tracing::error!(job = target.job_id, "giving up on the final job update");
    false
}
