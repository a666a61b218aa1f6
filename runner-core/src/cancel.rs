//! Why a job stops early, and the tokens that carry it.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// The first reason set wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// GitLab said `canceled` / `failed`, or answered 403/404: stop everything.
    RemoteAbort,
    /// GitLab said `canceling`: stop the script; after_script and uploads still run.
    RemoteCanceling,
    /// The runner is stopping forcefully (SIGTERM / SIGINT).
    RunnerShutdown,
}

/// A job's cancellation state, passed to every long-running call.
#[derive(Debug, Clone)]
pub struct JobCancel {
    /// Fires on abort and shutdown: nothing more runs but executor cleanup.
    abort: CancellationToken,
    /// Fires on a graceful cancel (`canceling`), and on abort.
    graceful: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
}

impl Default for JobCancel {
    fn default() -> Self {
        Self::new()
    }
}

impl JobCancel {
    /// A cancel state of its own, not tied to a runner's shutdown token.
    pub fn new() -> Self {
        Self::with_parent(&CancellationToken::new())
    }

    /// A job token that fires when the runner's root token fires (forceful shutdown).
    pub fn with_parent(root: &CancellationToken) -> Self {
        let abort = root.child_token();
        let graceful = abort.child_token();
        Self {
            abort,
            graceful,
            reason: Arc::new(OnceLock::new()),
        }
    }

    /// Stops the job now: only executor cleanup still runs. A reason set before is kept.
    pub fn abort(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.abort.cancel();
    }

    /// Requests a graceful cancel (`canceling`).
    pub fn cancel_gracefully(&self) {
        let _ = self.reason.set(CancelReason::RemoteCanceling);
        self.graceful.cancel();
    }

    /// The reason, if any. An abort caused by the parent (runner shutdown) reports `RunnerShutdown`.
    pub fn reason(&self) -> Option<CancelReason> {
        if let Some(reason) = self.reason.get() {
            return Some(*reason);
        }
        if self.abort.is_cancelled() {
            return Some(CancelReason::RunnerShutdown);
        }
        None
    }

    /// Fires on an abort and on runner shutdown.
    pub fn abort_token(&self) -> &CancellationToken {
        &self.abort
    }

    /// Fires on a graceful cancel and on an abort: what stops the user script.
    pub fn graceful_token(&self) -> &CancellationToken {
        &self.graceful
    }

    /// Whether the job was aborted or the runner is shutting down.
    pub fn is_aborted(&self) -> bool {
        self.abort.is_cancelled()
    }
}
