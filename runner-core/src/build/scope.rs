//! A stage's scope, the equivalent of upstream's Go context: its deadlines (job, prepare,
//! get_sources, script, after_script) and whether a graceful cancel applies to it.

use super::*;

/// Which deadline fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    Job,
    Prepare,
    GetSources,
    Script,
    AfterScript,
}

/// Why a stage stopped before its script ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Deadline(Limit),
    Abort,
    /// A graceful cancel (`canceling`).
    Canceled,
}

/// The equivalent of a Go context for a stage: deadlines, and whether a graceful cancel applies.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    pub(super) deadlines: Vec<(Instant, Limit)>,
    pub(super) graceful: bool,
}

impl Scope {
    /// This scope with one more deadline, `timeout` after `from`. A timeout too long for the
    /// clock (the job's own `timeout` or a variable can be anything) sets no deadline.
    pub(super) fn limited(&self, from: Instant, timeout: Duration, limit: Limit) -> Self {
        let mut scope = self.clone();
        if let Some(deadline) = from.checked_add(timeout) {
            scope.deadlines.push((deadline, limit));
        }
        scope
    }

    pub(super) fn check(&self, cancel: &JobCancel) -> Option<Stop> {
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

    pub(super) async fn wait(&self, cancel: &JobCancel) -> Stop {
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
