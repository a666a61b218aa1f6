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
    /// The runner's product name (`gitlab-runner-rs`).
    pub name: String,
    /// The runner's version (the crate version).
    pub version: String,
    /// The source revision the binary was built from, `unknown` when not recorded.
    pub revision: String,
    /// Operating system as Go spells it (`linux`).
    pub platform: String,
    /// CPU architecture as Go spells it (`amd64`, `arm64`).
    pub architecture: String,
    /// The executor's name (`shell`, `ssh`, `custom`, `docker`).
    pub executor: String,
    /// The shell jobs' scripts run in (`bash` or `sh`).
    pub shell: String,
    /// What the runner, its executor and shell support, so GitLab can hand out fitting jobs.
    pub features: FeaturesInfo,
    /// `labels`: the global ones with the runner's on top (upstream's computed labels);
    /// omitted when there are none.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What `POST jobs/request` gave.
#[derive(Debug)]
pub enum JobRequestResult {
    /// 201: GitLab handed out a job.
    Job {
        /// The job payload.
        job: Box<JobResponse>,
        /// The request's `X-Request-Id`.
        correlation_id: String,
    },
    /// A 201 whose payload does not parse: the job must still be failed so it does not hang.
    Malformed {
        /// The job's ID, recovered from the broken payload.
        id: i64,
        /// The job's token, recovered from the broken payload, to fail the job with.
        token: Secret<String>,
        /// What is wrong with the payload (quoted values removed, so no secret leaks into logs).
        error: String,
    },
    /// 204: no job for this runner now.
    NoJob,
    /// 403: GitLab refused the runner token.
    Forbidden,
    /// 503: GitLab is unavailable for now.
    Unavailable,
    /// Any other status: the status and GitLab's message, as one text.
    Failed(String),
    /// The request got no HTTP answer (connection, TLS or timeout error); holds the error chain.
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
    /// 200: GitLab took the update.
    Succeeded,
    /// 202: GitLab is still processing the trace; wait and retry.
    Accepted,
    /// 412: resend the whole log from offset 0.
    TraceValidationFailed,
    /// Stop the job: `Job-Status` is `canceled` or `failed`, a 403 or 404, or no HTTP answer.
    Abort,
    /// Any other answer; the update may be tried again.
    Failed,
}

/// What GitLab said in `Job-Status` and `X-GitLab-Trace-Update-Interval`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteJobState {
    /// `Job-Status: canceling`: GitLab asks for a graceful cancel.
    pub cancel_requested: bool,
    /// `Job-Status: canceled` or `failed`: GitLab no longer runs the job.
    pub aborted: bool,
    /// `X-GitLab-Trace-Update-Interval`: the interval GitLab asks for between trace updates,
    /// capped at 15 minutes; `None` when absent, unparsable or not positive.
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

/// What one `PUT jobs/:id` gave.
#[derive(Debug, Clone, Copy)]
pub struct UpdateResult {
    /// The outcome, mapped from the HTTP status and `Job-Status`.
    pub state: UpdateState,
    /// What GitLab's headers said about the job.
    pub remote: RemoteJobState,
}

/// The outcome of one `PATCH jobs/:id/trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchState {
    /// 202: GitLab appended the bytes (or there was nothing to send).
    Succeeded,
    /// 404: GitLab has no trace for the job; stop sending.
    NotFound,
    /// 416: GitLab's copy ends elsewhere; `sent_offset` is where it ends (its `Range` header).
    RangeMismatch,
    /// Stop the job: `Job-Status` is `canceled` or `failed`, or a 403.
    Abort,
    /// Any other status or no HTTP answer; the bytes are sent again later.
    Failed,
}

/// What one `PATCH jobs/:id/trace` gave.
#[derive(Debug, Clone, Copy)]
pub struct PatchResult {
    /// The outcome.
    pub state: PatchState,
    /// The offset GitLab now has (the next byte to send).
    pub sent_offset: u64,
    /// What GitLab's headers said about the job.
    pub remote: RemoteJobState,
}

/// The job states the runner reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// `running`: the job has started (the two-phase confirmation and keep-alives).
    Running,
    /// `success`: the job ended successfully.
    Success,
    /// `failed`: the job ended with a failure; see `failure_reason`.
    Failed,
}

/// One `PUT jobs/:id`.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    /// The state to report.
    pub state: JobState,
    /// GitLab's `failure_reason` (such as `script_failure`); omitted when `None`.
    pub failure_reason: Option<String>,
    /// The script's exit code; omitted from the request when 0.
    pub exit_code: i32,
    /// The log's checksum, `crc32:` and 8 lowercase hex digits.
    pub checksum: String,
    /// The log's length in bytes, as stored.
    pub bytesize: u64,
}

/// What registering returned.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredRunner {
    /// The runner's ID on GitLab; 0 when the answer has none.
    #[serde(default)]
    pub id: i64,
    /// The new runner authentication token, to store in `config.toml`.
    pub token: Secret<String>,
    /// When the token expires, as GitLab wrote it; `None` when it gave no date.
    #[serde(default)]
    pub token_expires_at: Option<String>,
}

/// Parameters of the legacy registration-token flow.
#[derive(Debug, Clone, Default)]
pub struct RegisterParameters {
    /// `description`: the runner's name on GitLab (`--name`).
    pub description: String,
    /// `maintenance_note`: free text for the runner's administrators.
    pub maintenance_note: String,
    /// Tags, sent comma-separated as `tag_list`.
    pub tags: Vec<String>,
    /// `run_untagged`: whether the runner takes jobs without tags.
    pub run_untagged: bool,
    /// `locked`: whether the runner stays with its current projects.
    pub locked: bool,
    /// `access_level` (`not_protected` or `ref_protected`); omitted when empty.
    pub access_level: String,
    /// `maximum_timeout`: the longest job timeout this runner accepts, in seconds; 0 for none.
    pub maximum_timeout: i64,
    /// `paused`: register the runner paused.
    pub paused: bool,
}

/// What `POST runners/reset_authentication_token` answered.
#[derive(Debug, Clone)]
pub enum ResetTokenResult {
    /// 201: the new token, and when it expires (`None`: never).
    Reset {
        /// The new runner authentication token.
        token: Secret<String>,
        /// `token_expires_at` as GitLab wrote it (RFC 3339), when it expires.
        expires_at: Option<String>,
    },
    /// 403: GitLab refused the token (or the personal access token).
    Forbidden(String),
    /// A 4xx other than 403: the request itself was wrong.
    ClientError(String),
    /// Anything else: no answer, a 5xx, a body that is not the expected JSON.
    Failed(String),
}

/// How verifying a runner token ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyResult {
    /// 200: the token is valid; GitLab's answer names the runner.
    Valid {
        /// The runner's ID on GitLab (`id`); 0 when the answer has none.
        id: i64,
        /// `token_expires_at` as GitLab wrote it; `None` when the token does not expire.
        token_expires_at: Option<String>,
    },
    /// 403: the token is invalid or the runner was removed.
    Invalid,
    /// Anything else: reported, not fatal.
    Unknown(String),
}
