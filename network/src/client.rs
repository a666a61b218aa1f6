//! The runner API (`/api/v4/runners`, `/api/v4/jobs/...`) as upstream speaks it (1.1–1.8).

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use reqwest::{Response, StatusCode};
use runner_core::executor::FeaturesInfo;
use runner_core::job::JobResponse;
use runner_core::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ClientError;
use crate::retry;

pub use runner_http::TlsOptions;

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

/// A random correlation id: a UUID v4 without dashes (32 hex characters).
pub fn correlation_id() -> String {
    let mut bytes: [u8; 16] = rand::thread_rng().gen();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
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
    fn from_response(response: &Response) -> Self {
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

/// A client for one GitLab instance.
#[derive(Debug)]
pub struct GitlabClient {
    transport: Mutex<Transport>,
    tls: TlsOptions,
    timeouts: Timeouts,
    base: String,
    user_agent: String,
    last_update: Mutex<Option<String>>,
}

/// `url` without a trailing `/` and `/ci`, plus `/api/v4/`.
pub fn api_base(url: &str) -> Result<String, ClientError> {
    let trimmed = url.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/ci").unwrap_or(trimmed);
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(ClientError::InvalidUrl(url.to_string()));
    }
    Ok(format!("{trimmed}/api/v4/"))
}

fn message_from_body(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return String::new();
    };
    match value.get("message") {
        Some(Value::String(message)) => message.clone(),
        Some(Value::Object(fields)) => fields
            .iter()
            .map(|(field, errors)| {
                let list = match errors {
                    Value::Array(items) => items
                        .iter()
                        .map(|item| {
                            item.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| item.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                format!("{field}: {list}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::new(),
    }
}

/// The HTTP client and the TLS file stamps it was built from.
#[derive(Debug)]
struct Transport {
    http: reqwest::Client,
    stamps: [Option<std::time::SystemTime>; 3],
}

/// How long a GitLab that stopped answering can hold a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (upstream's dialer timeout, 30 s).
    pub connect: Duration,
    /// Silence before the response headers or between two reads of a body: upstream's
    /// `ResponseHeaderTimeout` (10 min), which also covers a long-polled `jobs/request`.
    pub read: Duration,
    /// One request as a whole (upstream's client timeout, 60 min).
    pub request: Duration,
    /// The body of a `jobs/request` answer once its headers came (2 min): a stalled payload
    /// must not hold the runner's request slot for the whole read timeout.
    pub job_payload: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(10 * 60),
            request: Duration::from_secs(60 * 60),
            job_payload: Duration::from_secs(2 * 60),
        }
    }
}

fn build_http(tls: &TlsOptions, timeouts: &Timeouts) -> Result<reqwest::Client, ClientError> {
    runner_http::client_builder(tls)
        .map_err(|error| match error {
            runner_http::TlsError::File { path, source } => ClientError::TlsFile { path, source },
            runner_http::TlsError::Tls(error) => ClientError::Tls(error),
        })?
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .timeout(timeouts.request)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(30))
        .build()
        .map_err(ClientError::Tls)
}

impl GitlabClient {
    pub fn new(url: &str, tls: &TlsOptions, user_agent: &str) -> Result<Self, ClientError> {
        Self::with_timeouts(url, tls, user_agent, Timeouts::default())
    }

    /// A client with other [`Timeouts`] than upstream's (tests of a stalling GitLab).
    pub fn with_timeouts(
        url: &str,
        tls: &TlsOptions,
        user_agent: &str,
        timeouts: Timeouts,
    ) -> Result<Self, ClientError> {
        let base = api_base(url)?;
        let stamps = crate::tls::stamps(tls);
        Ok(Self {
            transport: Mutex::new(Transport {
                http: build_http(tls, &timeouts)?,
                stamps,
            }),
            tls: tls.clone(),
            timeouts,
            base,
            user_agent: user_agent.to_string(),
            last_update: Mutex::new(None),
        })
    }

    /// The TLS files this client uses.
    pub fn tls(&self) -> &TlsOptions {
        &self.tls
    }

    /// The HTTP client, rebuilt first when a TLS file changed since it was built (as upstream
    /// does, so renewed certificates apply without a restart). A file that no longer loads
    /// keeps the previous client and is reported.
    fn http(&self) -> reqwest::Client {
        let mut transport = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = crate::tls::stamps(&self.tls);
        if stamps != transport.stamps {
            transport.stamps = stamps;
            match build_http(&self.tls, &self.timeouts) {
                Ok(http) => {
                    tracing::info!("TLS files changed; reloaded the GitLab connection settings");
                    transport.http = http;
                }
                Err(error) => {
                    tracing::error!(%error, "TLS files changed but cannot be loaded; keeping the previous ones");
                }
            }
        }
        transport.http.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request carrying the headers every runner request has: `User-Agent` and the
    /// `X-Request-Id` correlation id.
    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        request_id: &str,
    ) -> reqwest::RequestBuilder {
        self.http()
            .request(method, url)
            .header("User-Agent", &self.user_agent)
            .header("X-Request-Id", request_id)
    }

    fn remember_last_update(&self, response: &Response) {
        if let Some(value) = response
            .headers()
            .get("X-GitLab-Last-Update")
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
        {
            *self.last_update.lock().unwrap_or_else(|e| e.into_inner()) = Some(value.to_string());
        }
    }

    fn last_update(&self) -> Option<String> {
        self.last_update
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn post_json(
        &self,
        path: &str,
        runner_token: Option<&str>,
        body: &Value,
        request_id: &str,
    ) -> Result<(Response, bool), reqwest::Error> {
        let url = self.url(path);
        retry::send(|| {
            let mut request = self
                .request(reqwest::Method::POST, &url, request_id)
                .header("Accept", "application/json")
                .json(body);
            if let Some(token) = runner_token {
                request = request.header("RUNNER-TOKEN", token);
            }
            request
        })
        .await
    }

    /// `POST jobs/request`.
    pub async fn request_job(
        &self,
        token: &Secret<String>,
        system_id: &str,
        info: &VersionInfo,
    ) -> JobRequestResult {
        let mut body = json!({
            "info": info,
            "token": token.expose(),
            "system_id": system_id,
        });
        if let Some(last_update) = self.last_update() {
            body["last_update"] = Value::String(last_update);
        }
        let request_id = correlation_id();
        let (response, retriable_seen) = match self
            .post_json("jobs/request", Some(token.expose()), &body, &request_id)
            .await
        {
            Ok(result) => result,
            Err(error) => return JobRequestResult::ClientError(error_chain(&error)),
        };
        self.remember_last_update(&response);
        let correlation = response
            .headers()
            .get("X-Request-Id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
            .unwrap_or(request_id);
        let result = match response.status() {
            StatusCode::CREATED => {
                parse_job(response, correlation, self.timeouts.job_payload).await
            }
            StatusCode::NO_CONTENT => JobRequestResult::NoJob,
            StatusCode::FORBIDDEN => JobRequestResult::Forbidden,
            StatusCode::SERVICE_UNAVAILABLE => JobRequestResult::Unavailable,
            other => {
                let body = response.text().await.unwrap_or_default();
                JobRequestResult::Failed(
                    format!("{other} {}", message_from_body(&body))
                        .trim()
                        .to_string(),
                )
            }
        };
        if retriable_seen {
            JobRequestResult::RetriableSeen(Box::new(result))
        } else {
            result
        }
    }

    /// `PUT jobs/:id`.
    pub async fn update_job(
        &self,
        job_id: i64,
        job_token: &Secret<String>,
        info: &VersionInfo,
        update: &JobUpdate,
    ) -> UpdateResult {
        let mut body = json!({
            "info": info,
            "token": job_token.expose(),
            "state": update.state,
            "checksum": update.checksum,
            "output": {"checksum": update.checksum, "bytesize": update.bytesize},
        });
        if let Some(reason) = &update.failure_reason {
            body["failure_reason"] = Value::String(reason.clone());
        }
        if update.exit_code != 0 {
            body["exit_code"] = json!(update.exit_code);
        }
        let url = self.url(&format!("jobs/{job_id}"));
        let request_id = correlation_id();
        let sent = retry::send(|| {
            self.request(reqwest::Method::PUT, &url, &request_id)
                .header("JOB-TOKEN", job_token.expose())
                .header("Accept", "application/json")
                .json(&body)
        })
        .await;
        let response = match sent {
            Ok((response, _)) => response,
            Err(error) => {
                tracing::warn!(job = job_id, error = %error_chain(&error), "updating job failed");
                return UpdateResult {
                    state: UpdateState::Abort,
                    remote: RemoteJobState::default(),
                };
            }
        };
        self.remember_last_update(&response);
        let remote = RemoteJobState::from_response(&response);
        let state = if remote.aborted || response.status() == StatusCode::FORBIDDEN {
            UpdateState::Abort
        } else {
            match response.status().as_u16() {
                200 => UpdateState::Succeeded,
                202 => UpdateState::Accepted,
                412 => UpdateState::TraceValidationFailed,
                404 => UpdateState::Abort,
                _ => UpdateState::Failed,
            }
        };
        UpdateResult { state, remote }
    }

    /// `PATCH jobs/:id/trace` with the bytes from `offset`.
    pub async fn patch_trace(
        &self,
        job_id: i64,
        job_token: &Secret<String>,
        content: Vec<u8>,
        offset: u64,
        debug_trace: bool,
    ) -> PatchResult {
        if content.is_empty() {
            return PatchResult {
                state: PatchState::Succeeded,
                sent_offset: offset,
                remote: RemoteJobState::default(),
            };
        }
        let end = offset + content.len() as u64 - 1;
        let url = self.url(&format!("jobs/{job_id}/trace?debug_trace={debug_trace}"));
        let request_id = correlation_id();
        let sent = retry::send(|| {
            self.request(reqwest::Method::PATCH, &url, &request_id)
                .header("JOB-TOKEN", job_token.expose())
                .header("Content-Range", format!("{offset}-{end}"))
                .header("Content-Type", "text/plain")
                .body(content.clone())
        })
        .await;
        let response = match sent {
            Ok((response, _)) => response,
            Err(error) => {
                // As upstream (`PatchFailed`): GitLab out of reach is no word on the job; the
                // next patch tries again, and the final update counts its attempts.
                tracing::warn!(job = job_id, error = %error_chain(&error), "appending trace failed");
                return PatchResult {
                    state: PatchState::Failed,
                    sent_offset: offset,
                    remote: RemoteJobState::default(),
                };
            }
        };
        let remote = RemoteJobState::from_response(&response);
        if remote.aborted || response.status() == StatusCode::FORBIDDEN {
            return PatchResult {
                state: PatchState::Abort,
                sent_offset: offset,
                remote,
            };
        }
        match response.status().as_u16() {
            202 => PatchResult {
                state: PatchState::Succeeded,
                sent_offset: end + 1,
                remote,
            },
            404 => PatchResult {
                state: PatchState::NotFound,
                sent_offset: offset,
                remote,
            },
            416 => {
                let server_has = response
                    .headers()
                    .get("Range")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|range| range.split_once('-'))
                    .and_then(|(_, end)| end.trim().parse::<u64>().ok());
                PatchResult {
                    state: PatchState::RangeMismatch,
                    sent_offset: server_has.unwrap_or(offset),
                    remote,
                }
            }
            _ => PatchResult {
                state: PatchState::Failed,
                sent_offset: offset,
                remote,
            },
        }
    }

    /// `POST runners` (legacy registration token).
    pub async fn register(
        &self,
        registration_token: &Secret<String>,
        parameters: &RegisterParameters,
        info: &VersionInfo,
    ) -> Result<RegisteredRunner, ClientError> {
        let mut body = json!({
            "description": parameters.description,
            "maintenance_note": parameters.maintenance_note,
            "tag_list": parameters.tags.join(","),
            "run_untagged": parameters.run_untagged,
            "locked": parameters.locked,
            "maximum_timeout": parameters.maximum_timeout,
            "paused": parameters.paused,
            "info": info,
            "token": registration_token.expose(),
        });
        if !parameters.access_level.is_empty() {
            body["access_level"] = Value::String(parameters.access_level.clone());
        }
        let (response, _) = self
            .post_json(
                "runners",
                Some(registration_token.expose()),
                &body,
                &correlation_id(),
            )
            .await
            .map_err(|error| ClientError::Transport(error_chain(&error)))?;
        match response.status() {
            StatusCode::CREATED => response
                .json::<RegisteredRunner>()
                .await
                .map_err(|error| ClientError::Decode(error_chain(&error))),
            StatusCode::FORBIDDEN => Err(ClientError::Status(
                403,
                "forbidden (check registration token)".into(),
            )),
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(ClientError::Status(
                    status.as_u16(),
                    message_from_body(&body),
                ))
            }
        }
    }

    /// `POST runners/verify`.
    pub async fn verify(
        &self,
        token: &Secret<String>,
        system_id: &str,
        info: &VersionInfo,
    ) -> VerifyResult {
        let body = json!({"info": info, "token": token.expose(), "system_id": system_id});
        match self
            .post_json(
                "runners/verify",
                Some(token.expose()),
                &body,
                &correlation_id(),
            )
            .await
        {
            Ok((response, _)) => match response.status().as_u16() {
                200 => VerifyResult::Valid,
                403 => VerifyResult::Invalid,
                other => VerifyResult::Unknown(format!("unexpected status {other}")),
            },
            Err(error) => VerifyResult::Unknown(error_chain(&error)),
        }
    }

    /// `DELETE runners`; `true` on 204.
    pub async fn unregister(&self, token: &Secret<String>) -> Result<bool, ClientError> {
        self.delete_runner("runners", token, json!({"token": token.expose()}))
            .await
    }

    /// `DELETE runners/managers`: unregisters only this machine's runner manager.
    pub async fn unregister_manager(
        &self,
        token: &Secret<String>,
        system_id: &str,
    ) -> Result<bool, ClientError> {
        self.delete_runner(
            "runners/managers",
            token,
            json!({"token": token.expose(), "system_id": system_id}),
        )
        .await
    }

    async fn delete_runner(
        &self,
        path: &str,
        token: &Secret<String>,
        body: Value,
    ) -> Result<bool, ClientError> {
        let url = self.url(path);
        let request_id = correlation_id();
        let (response, _) = retry::send(|| {
            self.request(reqwest::Method::DELETE, &url, &request_id)
                .header("RUNNER-TOKEN", token.expose())
                .json(&body)
        })
        .await
        .map_err(|error| ClientError::Transport(error_chain(&error)))?;
        Ok(response.status() == StatusCode::NO_CONTENT)
    }
}

async fn parse_job(
    response: Response,
    correlation_id: String,
    payload_timeout: Duration,
) -> JobRequestResult {
    let is_json = response
        .headers()
        .get("Content-Type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().unwrap_or("").trim() == "application/json");
    let bytes = match tokio::time::timeout(payload_timeout, response.bytes()).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => return JobRequestResult::ClientError(error_chain(&error)),
        Err(_) => {
            return JobRequestResult::ClientError(format!(
                "reading the job payload: no complete answer within {}",
                runner_core::settings::format_go_duration(payload_timeout)
            ))
        }
    };
    match JobResponse::from_json(&bytes) {
        Ok(job) => JobRequestResult::Job {
            job: Box::new(job),
            correlation_id,
        },
        Err(error) => {
            let identity = runner_core::job::recover_identity(&bytes);
            let error = without_quoted_values(&error.to_string());
            let problem = if is_json {
                format!("invalid job payload: {error}")
            } else {
                format!("job payload is not JSON: {error}")
            };
            match (identity.id, identity.token) {
                (Some(id), Some(token)) => JobRequestResult::Malformed {
                    id,
                    token: Secret::new(token),
                    error: problem,
                },
                (id, _) => {
                    let missing = match id {
                        Some(id) => format!("job {id} has no readable token"),
                        None => "the payload has no readable integer id".to_string(),
                    };
                    JobRequestResult::Failed(format!(
                        "{problem}; the job cannot be failed ({missing}), so GitLab keeps it running until its timeout"
                    ))
                }
            }
        }
    }
}

/// A decoder message with the payload's string values left out: serde quotes the offending
/// value (`invalid type: string "…", expected i64`), and a token in a wrongly typed field would
/// otherwise reach the job log and the runner's log.
pub fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in message.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    quoted = false;
                    out.push_str("…\"");
                }
                _ => escaped = false,
            }
        } else {
            if c == '"' {
                quoted = true;
            }
            out.push(c);
        }
    }
    if quoted {
        out.push('…');
    }
    out
}

pub use runner_core::failure::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_strips_ci_and_slashes() {
        assert_eq!(
            api_base("https://gitlab.example/").unwrap(),
            "https://gitlab.example/api/v4/"
        );
        assert_eq!(
            api_base("https://gitlab.example/ci").unwrap(),
            "https://gitlab.example/api/v4/"
        );
        assert_eq!(
            api_base("http://host:8080/sub/").unwrap(),
            "http://host:8080/sub/api/v4/"
        );
        assert!(api_base("ftp://host").is_err());
    }

    #[test]
    fn error_messages_from_json_bodies() {
        assert_eq!(
            message_from_body(r#"{"message": "403 Forbidden"}"#),
            "403 Forbidden"
        );
        assert_eq!(
            message_from_body(r#"{"message": {"token": ["is invalid", "expired"]}}"#),
            "token: is invalid, expired"
        );
    }

    #[test]
    fn correlation_ids_are_32_hex_characters() {
        let id = correlation_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
