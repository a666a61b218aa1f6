//! The GitLab side of the runner: the runner API client ([`GitlabClient`]: register, verify,
//! unregister, job requests, job updates, trace patches, with upstream's retry policy) and the
//! trace uploader ([`TraceUploader`]) that streams a job's log and reports its final state.
//!
//! May use `runner-core`'s payload, log and cancellation types; it must never depend on
//! executors, `shells` or `commands`.

pub mod client;
pub mod error;
pub mod retry;
pub mod tls;
pub mod trace;

pub use client::{
    GitlabClient, JobRequestResult, JobState, JobUpdate, PatchState, RegisterParameters,
    ResetTokenResult, TlsOptions, UpdateState, VerifyResult, VersionInfo,
};
pub use error::ClientError;
pub use tls::job_tls_data;
pub use trace::{FinalState, RemoteJob, TraceTarget, TraceUploader};

use runner_core::executor::FeaturesInfo;

/// The features the network layer itself supports (`info.features`).
pub fn network_features() -> FeaturesInfo {
    FeaturesInfo {
        trace_reset: true,
        trace_checksum: true,
        trace_size: true,
        cancelable: true,
        cancel_gracefully: true,
        two_phase_job_commit: true,
        ..FeaturesInfo::default()
    }
}
