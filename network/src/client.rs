//! The runner API (`/api/v4/runners`, `/api/v4/jobs/...`) as upstream speaks it (1.1–1.8).
//!
//! This file holds the client itself (its HTTP transport, rebuilt when the TLS files change) and
//! the job calls: `POST jobs/request`, `PUT jobs/:id`, `PATCH jobs/:id/trace`. The calls'
//! values are in `wire`, reading answers (a job payload, an error body) in `payload`, and
//! registering and removing the runner in `registration`.

mod payload;
mod registration;
mod wire;

pub use payload::without_quoted_values;
pub use wire::*;

use payload::{message_from_body, parse_job};

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use reqwest::{Response, StatusCode};
use runner_core::secret::Secret;
use serde_json::{json, Value};

use crate::error::ClientError;
use crate::retry;

pub use runner_http::TlsOptions;

/// A random correlation id: a UUID v4 without dashes (32 hex characters).
pub fn correlation_id() -> String {
    let mut bytes: [u8; 16] = rand::thread_rng().gen();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A client for one GitLab instance.
#[derive(Debug)]
pub struct GitlabClient {
    transport: Mutex<Transport>,
    /// `connection_max_age`: the pool is replaced this often, so long-lived connections pick up
    /// rotated certificates and spread over load balancers again (upstream closes its idle
    /// connections); zero keeps it.
    connection_max_age: Duration,
    tls: TlsOptions,
    timeouts: Timeouts,
    base: String,
    user_agent: String,
    last_update: Mutex<Option<String>>,
}

/// Upstream's default `connection_max_age`: 15 minutes.
pub const DEFAULT_CONNECTION_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// `url` without a trailing `/` and `/ci`, plus `/api/v4/`.
pub fn api_base(url: &str) -> Result<String, ClientError> {
    let trimmed = url.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/ci").unwrap_or(trimmed);
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(ClientError::InvalidUrl(url.to_string()));
    }
    Ok(format!("{trimmed}/api/v4/"))
}

/// The HTTP client and the TLS file stamps it was built from.
#[derive(Debug)]
struct Transport {
    http: reqwest::Client,
    stamps: [Option<std::time::SystemTime>; 3],
    /// When `http` was built.
    built: std::time::Instant,
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
    /// A client for the GitLab at `url` (a trailing `/ci` is dropped) with upstream's timeouts,
    /// sending `user_agent` as `User-Agent`. Fails when `url` is not http(s) or a TLS file does
    /// not load.
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
                built: std::time::Instant::now(),
            }),
            connection_max_age: DEFAULT_CONNECTION_MAX_AGE,
            tls: tls.clone(),
            timeouts,
            base,
            user_agent: user_agent.to_string(),
            last_update: Mutex::new(None),
        })
    }

    /// Sets `connection_max_age` (zero: never replace the connection pool).
    pub fn with_connection_max_age(mut self, connection_max_age: Duration) -> Self {
        self.connection_max_age = connection_max_age;
        self
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
        let too_old = !self.connection_max_age.is_zero()
            && transport.built.elapsed() > self.connection_max_age;
        if too_old && stamps == transport.stamps {
            // A new pool: requests in flight keep the old one, which closes when they end.
            if let Ok(http) = build_http(&self.tls, &self.timeouts) {
                tracing::debug!(
                    elapsed_s = transport.built.elapsed().as_secs_f64(),
                    max_age_s = self.connection_max_age.as_secs_f64(),
                    "Closing idle connections"
                );
                transport.http = http;
            }
            transport.built = std::time::Instant::now();
        }
        if stamps != transport.stamps {
            transport.stamps = stamps;
            transport.built = std::time::Instant::now();
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
