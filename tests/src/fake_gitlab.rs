//! A stateful fake GitLab: the runner endpoints with GitLab's semantics for job states, trace
//! offsets (`Content-Range`, 416 + `Range`), `Job-Status` (canceling / canceled) and the update
//! interval header. Tests drive it: queue jobs, cancel or abort them, read logs and updates.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{reply, serve_with_tls, tls_config, Received, Reply};

/// A job's state as GitLab sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Queued and not yet handed to a runner.
    Pending,
    /// Handed to a runner, which has not reported a final state.
    Running,
    /// The runner reported `success`.
    Success,
    /// The runner reported `failed`.
    Failed,
    /// A graceful cancel was requested (`Job-Status: canceling`).
    Canceling,
    /// Canceled or deleted: a state update is answered 200 with `Job-Status: canceled`, a trace
    /// `PATCH` is refused with 403.
    Canceled,
}

impl JobStatus {
    /// Whether the job reached a final state (a job still `Canceling` has not).
    pub fn finished(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Canceled)
    }
}

/// One `PUT /jobs/:id` the runner sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedUpdate {
    /// The reported `state`: `running`, `success` or `failed` (empty if it was missing).
    pub state: String,
    /// The `failure_reason` of a failed job, such as `script_failure`.
    pub failure_reason: Option<String>,
    /// The `exit_code` of the job's script, when the runner sent one.
    pub exit_code: Option<i64>,
    /// `output.checksum`: the runner's checksum of the whole trace it sent.
    pub checksum: Option<String>,
    /// `output.bytesize`: how many bytes of trace the runner says it sent.
    pub bytesize: Option<u64>,
}

#[derive(Debug)]
struct Job {
    id: i64,
    token: String,
    payload: Value,
    status: JobStatus,
    /// The final state the runner reported, even when the job had been canceled.
    final_update: Option<RecordedUpdate>,
    log: Vec<u8>,
    updates: Vec<RecordedUpdate>,
    patches: u32,
    /// Answer the next trace patches with 416 this many times (exercises offset recovery).
    range_mismatches: u32,
    timing: JobTiming,
    artifacts: Vec<UploadedArtifact>,
    /// Answer artifact uploads with this status instead of 201.
    artifact_status: Option<u16>,
}

/// One artifacts archive a job uploaded.
#[derive(Debug, Clone)]
pub struct UploadedArtifact {
    /// The file name of the upload's multipart `file` part.
    pub filename: String,
    /// The upload request's raw query string, such as `artifact_type=archive&...`.
    pub query: String,
    /// The archive's contents, as uploaded.
    pub bytes: Vec<u8>,
}

/// The `file` part of a `multipart/form-data` body: its file name and contents.
fn multipart_file(content_type: &str, body: &[u8]) -> Option<(String, Vec<u8>)> {
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    loop {
        let start = find(rest, delimiter.as_bytes())? + delimiter.len();
        rest = &rest[start..];
        if rest.starts_with(b"--") {
            return None;
        }
        let header_end = find(rest, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&rest[..header_end]).to_string();
        let content = &rest[header_end + 4..];
        let end = find(content, format!("\r\n{delimiter}").as_bytes())?;
        if headers.contains("name=\"file\"") {
            let filename = headers
                .split("filename=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string();
            return Some((filename, content[..end].to_vec()));
        }
        rest = &content[end + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// When the fake saw a job's milestones (for benchmarks).
#[derive(Debug, Clone, Copy)]
pub struct JobTiming {
    /// Queued by [`FakeGitlab::enqueue`].
    pub queued: Instant,
    /// Handed to a runner by `POST /jobs/request`.
    pub picked_up: Option<Instant>,
    /// The first `PUT` (the runner's `running` confirmation).
    pub confirmed: Option<Instant>,
    /// The `PUT` with the final state.
    pub finished: Option<Instant>,
}

#[derive(Debug)]
struct State {
    runner_token: String,
    /// Tokens handed out by `POST runners/reset_authentication_token`, oldest first; the last
    /// one replaced `runner_token` (GitLab then refuses the old one).
    token_resets: Vec<String>,
    next_id: i64,
    jobs: Vec<Job>,
    queue: VecDeque<i64>,
    requests: u32,
    request_bodies: Vec<Value>,
    update_interval: u32,
}

/// The fake server; dropping it stops the server.
pub struct FakeGitlab {
    address: SocketAddr,
    scheme: &'static str,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A handle to one queued job.
#[derive(Debug, Clone, Copy)]
pub struct JobControl {
    /// The job's id, as in `/jobs/:id` and `CI_JOB_ID`.
    pub id: i64,
}

fn header<'a>(received: &'a Received, name: &str) -> Option<&'a str> {
    received
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// A JSON answer, with its `Content-Type`.
fn json_reply(status: u16, body: Value) -> Reply {
    with_headers(
        reply(status, body.to_string()),
        &[("Content-Type", "application/json".into())],
    )
}

fn with_headers(mut response: Reply, headers: &[(&str, String)]) -> Reply {
    for (name, value) in headers {
        response.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes())
                .expect("the fake GitLab's response header name is valid"),
            value
                .parse()
                .expect("the fake GitLab's response header value is valid"),
        );
    }
    response
}

fn status_header(status: JobStatus) -> String {
    match status {
        JobStatus::Pending => "pending",
        JobStatus::Running => "running",
        JobStatus::Success => "success",
        JobStatus::Failed => "failed",
        JobStatus::Canceling => "canceling",
        JobStatus::Canceled => "canceled",
    }
    .to_string()
}

fn handle(state: &Mutex<State>, received: Received) -> Reply {
    let mut state = state
        .lock()
        .expect("a test thread panicked while holding the fake GitLab's state");
    let segments: Vec<&str> = received.path.trim_start_matches('/').split('/').collect();
    match (received.method.as_str(), segments.as_slice()) {
        ("POST", ["api", "v4", "jobs", "request"]) => {
            state.requests += 1;
            let body: Value = serde_json::from_slice(&received.body).unwrap_or(Value::Null);
            state.request_bodies.push(body.clone());
            if body["token"].as_str() != Some(state.runner_token.as_str())
                || header(&received, "RUNNER-TOKEN") != Some(state.runner_token.as_str())
            {
                return reply(403, r#"{"message":"403 Forbidden"}"#);
            }
            let Some(id) = state.queue.pop_front() else {
                return reply(204, "");
            };
            let job = state
                .jobs
                .iter_mut()
                .find(|job| job.id == id)
                .expect("every queued job id is among the fake GitLab's jobs");
            job.status = JobStatus::Running;
            job.timing.picked_up = Some(Instant::now());
            with_headers(
                reply(201, job.payload.to_string()),
                &[
                    ("Content-Type", "application/json".into()),
                    ("X-Request-Id", format!("{id:032x}")),
                ],
            )
        }
        ("POST", ["api", "v4", "runners", "reset_authentication_token"]) => {
            let body: Value = serde_json::from_slice(&received.body).unwrap_or(Value::Null);
            if body["token"].as_str() != Some(state.runner_token.as_str()) {
                return reply(403, r#"{"message":"403 Forbidden"}"#);
            }
            let token = format!("glrt-rotated{}", state.token_resets.len() + 1);
            state.token_resets.push(token.clone());
            state.runner_token = token.clone();
            json_reply(
                201,
                json!({"id": 4242, "token": token, "token_expires_at": "2099-01-01T00:00:00.000Z"}),
            )
        }
        ("POST", ["api", "v4", "runners", "verify"]) => {
            let body: Value = serde_json::from_slice(&received.body).unwrap_or(Value::Null);
            if body["token"].as_str() != Some(state.runner_token.as_str()) {
                return reply(403, r#"{"message":"403 Forbidden"}"#);
            }
            json_reply(
                200,
                json!({"id": 4242, "token": state.runner_token, "token_expires_at": null}),
            )
        }
        ("PUT", ["api", "v4", "jobs", id]) => {
            let Ok(id) = id.parse::<i64>() else {
                return reply(404, "");
            };
            let body: Value = serde_json::from_slice(&received.body).unwrap_or(Value::Null);
            let Some(job) = state.jobs.iter_mut().find(|job| job.id == id) else {
                return reply(404, "");
            };
            if header(&received, "JOB-TOKEN") != Some(job.token.as_str())
                || body["token"].as_str() != Some(job.token.as_str())
            {
                return reply(403, "");
            }
            let update = RecordedUpdate {
                state: body["state"].as_str().unwrap_or("").to_string(),
                failure_reason: body["failure_reason"].as_str().map(str::to_string),
                exit_code: body["exit_code"].as_i64(),
                checksum: body["output"]["checksum"].as_str().map(str::to_string),
                bytesize: body["output"]["bytesize"].as_u64(),
            };
            job.updates.push(update.clone());
            job.timing.confirmed.get_or_insert_with(Instant::now);
            let finished = matches!(update.state.as_str(), "success" | "failed");
            if finished {
                job.final_update = Some(update.clone());
                job.timing.finished.get_or_insert_with(Instant::now);
            }
            match job.status {
                JobStatus::Canceled => {
                    with_headers(reply(200, ""), &[("Job-Status", status_header(job.status))])
                }
                JobStatus::Canceling => {
                    if finished {
                        job.status = JobStatus::Canceled;
                    }
                    with_headers(reply(200, ""), &[("Job-Status", "canceling".into())])
                }
                JobStatus::Success | JobStatus::Failed => {
                    with_headers(reply(403, ""), &[("Job-Status", status_header(job.status))])
                }
                _ => {
                    job.status = match update.state.as_str() {
                        "success" => JobStatus::Success,
                        "failed" => JobStatus::Failed,
                        _ => JobStatus::Running,
                    };
                    with_headers(reply(200, ""), &[("Job-Status", status_header(job.status))])
                }
            }
        }
        ("POST", ["api", "v4", "jobs", id, "artifacts"]) => {
            let Some(job) = id
                .parse::<i64>()
                .ok()
                .and_then(|id| state.jobs.iter_mut().find(|job| job.id == id))
            else {
                return reply(404, "");
            };
            if header(&received, "JOB-TOKEN") != Some(job.token.as_str()) {
                return reply(403, r#"{"message":"403 Forbidden"}"#);
            }
            if let Some(status) = job.artifact_status {
                return reply(status, r#"{"message":"refused by the test"}"#);
            }
            let content_type = header(&received, "Content-Type").unwrap_or("").to_string();
            let Some((filename, bytes)) = multipart_file(&content_type, &received.body) else {
                return reply(400, r#"{"message":"400 Bad request - file is missing"}"#);
            };
            job.artifacts.push(UploadedArtifact {
                filename,
                query: received.query.clone(),
                bytes,
            });
            reply(201, "{}")
        }
        ("GET", ["api", "v4", "jobs", id, "artifacts"]) => {
            let Some(job) = id
                .parse::<i64>()
                .ok()
                .and_then(|id| state.jobs.iter().find(|job| job.id == id))
            else {
                return reply(404, r#"{"message":"404 Not Found"}"#);
            };
            if header(&received, "JOB-TOKEN") != Some(job.token.as_str()) {
                return reply(403, r#"{"message":"403 Forbidden"}"#);
            }
            match job.artifacts.iter().find(|artifact| {
                artifact.query.is_empty() || artifact.query.contains("artifact_type=archive")
            }) {
                Some(artifact) => reply(200, artifact.bytes.clone()),
                None => reply(404, r#"{"message":"404 Not Found"}"#),
            }
        }
        ("PATCH", ["api", "v4", "jobs", id, "trace"]) => {
            let interval = state.update_interval;
            let Ok(id) = id.parse::<i64>() else {
                return reply(404, "");
            };
            let Some(job) = state.jobs.iter_mut().find(|job| job.id == id) else {
                return reply(404, "");
            };
            if header(&received, "JOB-TOKEN") != Some(job.token.as_str()) {
                return reply(403, "");
            }
            if job.status == JobStatus::Canceled {
                return with_headers(reply(403, ""), &[("Job-Status", "canceled".into())]);
            }
            let Some((start, end)) = header(&received, "Content-Range")
                .and_then(|range| range.split_once('-'))
                .and_then(|(s, e)| Some((s.parse::<usize>().ok()?, e.parse::<usize>().ok()?)))
            else {
                return reply(400, "missing Content-Range");
            };
            if job.range_mismatches > 0
                || start != job.log.len()
                || end + 1 != start + received.body.len()
            {
                job.range_mismatches = job.range_mismatches.saturating_sub(1);
                let have = job.log.len();
                return with_headers(reply(416, ""), &[("Range", format!("0-{have}"))]);
            }
            job.log.extend_from_slice(&received.body);
            job.patches += 1;
            with_headers(
                reply(202, ""),
                &[
                    ("Job-Status", status_header(job.status)),
                    ("X-GitLab-Trace-Update-Interval", interval.to_string()),
                ],
            )
        }
        _ => reply(404, ""),
    }
}

impl FakeGitlab {
    /// Starts the fake over plain HTTP on a free 127.0.0.1 port; it accepts runners with
    /// `runner_token`.
    pub async fn start(runner_token: &str) -> Self {
        Self::start_with_tls(runner_token, None).await
    }

    /// The fake over HTTPS with the certificate chain and key in these PEM files; with
    /// `client_ca`, only clients presenting a certificate signed by it get through.
    pub async fn start_https(
        runner_token: &str,
        cert_pem: &Path,
        key_pem: &Path,
        client_ca: Option<&Path>,
    ) -> Self {
        Self::start_with_tls(runner_token, Some(tls_config(cert_pem, key_pem, client_ca))).await
    }

    async fn start_with_tls(
        runner_token: &str,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(Mutex::new(State {
            runner_token: runner_token.to_string(),
            token_resets: Vec::new(),
            next_id: 1000,
            jobs: Vec::new(),
            queue: VecDeque::new(),
            requests: 0,
            request_bodies: Vec::new(),
            update_interval: 1,
        }));
        let shared = state.clone();
        let (address, task) = serve_with_tls(
            move |received| {
                let state = shared.clone();
                async move { handle(&state, received) }
            },
            tls,
        )
        .await;
        Self {
            address,
            scheme,
            state,
            task,
        }
    }

    /// The base URL for a runner's `url`: `http(s)://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.address)
    }

    /// Queues a job; `payload` gets its `id` and `token` filled in, `CI_JOB_ID` among its
    /// variables, and `JOB_TOKEN` in `git_info.repo_url` is replaced by the job token, as GitLab
    /// embeds it.
    pub fn enqueue(&self, mut payload: Value) -> JobControl {
        let mut state = self
            .state
            .lock()
            .expect("a test thread panicked while holding the fake GitLab's state");
        state.next_id += 1;
        let id = state.next_id;
        let token = format!("glcbt-jobtoken{id}");
        payload["id"] = json!(id);
        payload["token"] = json!(token);
        if let Some(url) = payload["git_info"]["repo_url"].as_str() {
            payload["git_info"]["repo_url"] = json!(url.replace("JOB_TOKEN", &token));
        }
        // GitLab always sends the job's own id and token among the variables.
        if let Some(variables) = payload["variables"].as_array_mut() {
            if !variables.iter().any(|v| v["key"] == "CI_JOB_ID") {
                variables
                    .push(json!({"key": "CI_JOB_ID", "value": id.to_string(), "public": true}));
            }
            if !variables.iter().any(|v| v["key"] == "CI_JOB_TOKEN") {
                variables.push(
                    json!({"key": "CI_JOB_TOKEN", "value": token, "public": false, "masked": true}),
                );
            }
        }
        state.jobs.push(Job {
            id,
            token,
            payload,
            status: JobStatus::Pending,
            final_update: None,
            log: Vec::new(),
            updates: Vec::new(),
            patches: 0,
            range_mismatches: 0,
            artifacts: Vec::new(),
            artifact_status: None,
            timing: JobTiming {
                queued: Instant::now(),
                picked_up: None,
                confirmed: None,
                finished: None,
            },
        });
        state.queue.push_back(id);
        JobControl { id }
    }

    fn with_job<T>(&self, job: JobControl, f: impl FnOnce(&mut Job) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .expect("a test thread panicked while holding the fake GitLab's state");
        let job = state
            .jobs
            .iter_mut()
            .find(|j| j.id == job.id)
            .expect("known job");
        f(job)
    }

    /// The job's current state.
    pub fn status(&self, job: JobControl) -> JobStatus {
        self.with_job(job, |job| job.status)
    }

    /// The job's trace so far, as text (invalid UTF-8 replaced).
    pub fn log(&self, job: JobControl) -> String {
        self.with_job(job, |job| String::from_utf8_lossy(&job.log).to_string())
    }

    /// The job's trace so far, byte for byte.
    pub fn log_bytes(&self, job: JobControl) -> Vec<u8> {
        self.with_job(job, |job| job.log.clone())
    }

    /// Every `PUT /jobs/:id` the runner sent for the job, in order.
    pub fn updates(&self, job: JobControl) -> Vec<RecordedUpdate> {
        self.with_job(job, |job| job.updates.clone())
    }

    /// The update with the final state (`success` or `failed`), once the runner sent it.
    pub fn final_update(&self, job: JobControl) -> Option<RecordedUpdate> {
        self.with_job(job, |job| job.final_update.clone())
    }

    /// The artifacts archives the job uploaded.
    pub fn artifacts(&self, job: JobControl) -> Vec<UploadedArtifact> {
        self.with_job(job, |job| job.artifacts.clone())
    }

    /// Answers the job's artifact uploads with `status` (e.g. 413).
    pub fn refuse_artifacts(&self, job: JobControl, status: u16) {
        self.with_job(job, |job| job.artifact_status = Some(status));
    }

    /// When the fake saw the job's milestones.
    pub fn timing(&self, job: JobControl) -> JobTiming {
        self.with_job(job, |job| job.timing)
    }

    /// The job token the fake issued for the job (`CI_JOB_TOKEN`).
    pub fn token(&self, job: JobControl) -> String {
        self.with_job(job, |job| job.token.clone())
    }

    /// Requests a graceful cancel, as the Cancel button does.
    pub fn cancel(&self, job: JobControl) {
        self.with_job(job, |job| job.status = JobStatus::Canceling);
    }

    /// Cancels hard (or deletes) the job: GitLab refuses everything about it afterwards.
    pub fn abort(&self, job: JobControl) {
        self.with_job(job, |job| job.status = JobStatus::Canceled);
    }

    /// Changes a queued job's payload as served (a malformed or hostile one).
    pub fn edit_payload(&self, job: JobControl, edit: impl FnOnce(&mut Value)) {
        self.with_job(job, |job| edit(&mut job.payload));
    }

    /// Answers the next `count` trace patches with 416.
    pub fn inject_range_mismatches(&self, job: JobControl, count: u32) {
        self.with_job(job, |job| job.range_mismatches = count);
    }

    /// The runner tokens handed out by `POST runners/reset_authentication_token`, oldest first.
    pub fn token_resets(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("a test thread panicked while holding the fake GitLab's state")
            .token_resets
            .clone()
    }

    /// How many `POST /jobs/request` calls the fake received, from any runner.
    pub fn job_requests(&self) -> u32 {
        self.state
            .lock()
            .expect("a test thread panicked while holding the fake GitLab's state")
            .requests
    }

    /// The body of every `POST /jobs/request`, in order (`null` where it was not JSON).
    pub fn request_bodies(&self) -> Vec<Value> {
        self.state
            .lock()
            .expect("a test thread panicked while holding the fake GitLab's state")
            .request_bodies
            .clone()
    }

    /// Waits until the runner reported a final state, or panics after `timeout`.
    pub async fn wait_final(&self, job: JobControl, timeout: Duration) -> RecordedUpdate {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(update) = self.final_update(job) {
                return update;
            }
            assert!(
                Instant::now() < deadline,
                "job {} got no final update within {timeout:?}; log so far:\n{}",
                job.id,
                self.log(job)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the final state, asserts it is `success`, and returns the log.
    pub async fn wait_success(&self, job: JobControl, timeout: Duration) -> String {
        let update = self.wait_final(job, timeout).await;
        let log = self.log(job);
        assert_eq!(update.state, "success", "job {}:\n{log}", job.id);
        log
    }

    /// Waits for the final state, asserts it is `failed` for `reason`, and returns the log.
    pub async fn wait_failure(&self, job: JobControl, reason: &str, timeout: Duration) -> String {
        let update = self.wait_final(job, timeout).await;
        let log = self.log(job);
        assert_eq!(update.state, "failed", "job {}:\n{log}", job.id);
        assert_eq!(
            update.failure_reason.as_deref(),
            Some(reason),
            "job {}:\n{log}",
            job.id
        );
        log
    }

    /// Waits until the job log contains `text`.
    pub async fn wait_log(&self, job: JobControl, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log(job).contains(text) {
            assert!(
                Instant::now() < deadline,
                "job {} log never showed {text:?}; log so far:\n{}",
                job.id,
                self.log(job)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A job payload as GitLab sends it, with the fields the tests vary.
pub fn job_payload(
    repo_url: &str,
    sha: &str,
    script: &[&str],
    after_script: &[&str],
    variables: Value,
    timeout: i64,
) -> Value {
    let mut steps = vec![
        json!({"name": "script", "script": script, "timeout": timeout, "when": "on_success", "allow_failure": false}),
    ];
    if !after_script.is_empty() {
        steps.push(json!({"name": "after_script", "script": after_script, "timeout": timeout, "when": "always", "allow_failure": false}));
    }
    json!({
        "allow_git_fetch": false,
        "job_info": {"name": "test-job", "stage": "test", "project_id": 77, "project_name": "demo"},
        "git_info": {
            "repo_url": repo_url,
            "ref": "main",
            "sha": sha,
            "before_sha": "0000000000000000000000000000000000000000",
            "ref_type": "branch",
            "refspecs": ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"],
            "depth": 20
        },
        "runner_info": {"timeout": timeout, "runner_session_url": null},
        "variables": variables,
        "steps": steps,
        "image": null,
        "services": null,
        "artifacts": null,
        "cache": [],
        "credentials": [],
        "dependencies": [],
        "features": {"trace_sections": true, "failure_reasons": ["script_failure", "runner_system_failure", "job_execution_timeout", "unknown_failure", "runner_interrupted"]},
        "an_unknown_future_field": {"nested": true}
    })
}

/// Declares every failure reason the engine tests look for in the job's
/// `features.failure_reasons`, so the runner reports them rather than `unknown_failure`.
pub fn declare_failure_reasons(payload: &mut Value) {
    payload["features"]["failure_reasons"] = json!([
        "script_failure",
        "runner_system_failure",
        "job_execution_timeout",
        "image_pull_failure",
        "runner_configuration_error",
        "runner_external_dependency_failure"
    ]);
}
