//! What the runner API's calls send and answer, as the client hands them out: job request
//! results, update and trace-patch results with what GitLab said about the job, registration
//! parameters and results.

use std::time::Duration;

use reqwest::Response;
use runner_core::executor::FeaturesInfo;
use runner_core::job::JobResponse;
use runner_core::secret::Secret;
use serde::{Deserialize, Serialize};

/// The `info` object sent with every runner request.
#[derive(Debug, Clone, Serialize, Default)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub revision: String,
    pub platform: String,
    pub architecture: String,
    pub executor: String,
    pub shell: String,
    pub features: FeaturesInfo,
}

/// What `POST jobs/request` gave.
#[derive(Debug)]
pub enum JobRequestResult {
    Job {
        job: Box<JobResponse>,
        /// The request's `X-Request-Id`.
        correlation_id: String,
    },
    /// A 201 whose payload does not parse: the job must still be failed so it does not hang.
    Malformed {
        id: i64,
        token: Secret<String>,
        error: String,
    },
    NoJob,
    Forbidden,
    Unavailable,
    Failed(String),
    ClientError(String),
    /// Whether any attempt saw a retriable status, for adaptive request concurrency.
    RetriableSeen(Box<JobRequestResult>),
}

impl JobRequestResult {
    /// Upstream's health rule: 403 and transport errors are unhealthy, everything else healthy.
    pub fn healthy(&self) -> bool {
        match self {
            Self::Forbidden | Self::ClientError(_) => false,
            Self::RetriableSeen(inner) => inner.healthy(),
            _ => true,
        }
    }
}

/// The internal state an update maps to (`createUpdateJobResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateState {
    Succeeded,
    /// 202: GitLab is still processing the trace; wait and retry.
    Accepted,
    /// 412: resend the whole log from offset 0.
    TraceValidationFailed,
    Abort,
    Failed,
}

/// What GitLab said in `Job-Status` and `X-GitLab-Trace-Update-Interval`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteJobState {
    pub cancel_requested: bool,
    pub aborted: bool,
    pub update_interval: Option<Duration>,
}

impl RemoteJobState {
    pub(super) fn from_response(response: &Response) -> Self {
        let status = response
            .headers()
            .get("Job-Status")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let update_interval = response
            .headers()
            .get("X-GitLab-Trace-Update-Interval")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<i64>().ok())
            .filter(|seconds| *seconds > 0)
            .map(|seconds| Duration::from_secs(seconds as u64).min(Duration::from_secs(15 * 60)));
        Self {
            cancel_requested: status == "canceling",
            aborted: matches!(status, "canceled" | "failed"),
            update_interval,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UpdateResult {
    pub state: UpdateState,
    pub remote: RemoteJobState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchState {
    Succeeded,
    NotFound,
    RangeMismatch,
    Abort,
    Failed,
}

#[derive(Debug, Clone, Copy)]
pub struct PatchResult {
    pub state: PatchState,
    /// The offset GitLab now has (the next byte to send).
    pub sent_offset: u64,
    pub remote: RemoteJobState,
}

/// The job states the runner reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Success,
    Failed,
}

/// One `PUT jobs/:id`.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub state: JobState,
    pub failure_reason: Option<String>,
    pub exit_code: i32,
    pub checksum: String,
    pub bytesize: u64,
}

/// What registering returned.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredRunner {
    #[serde(default)]
    pub id: i64,
    pub token: Secret<String>,
    #[serde(default)]
    pub token_expires_at: Option<String>,
}

/// Parameters of the legacy registration-token flow.
#[derive(Debug, Clone, Default)]
pub struct RegisterParameters {
    pub description: String,
    pub maintenance_note: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub locked: bool,
    pub access_level: String,
    pub maximum_timeout: i64,
    pub paused: bool,
}

/// How verifying a runner token ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyResult {
    Valid,
    /// 403: the token is invalid or the runner was removed.
    Invalid,
    /// Anything else: reported, not fatal.
    Unknown(String),
}
