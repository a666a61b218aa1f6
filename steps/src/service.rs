//! The `StepRunner` gRPC service: requests by id, each run in the background, its log and step
//! results followed by any number of clients, its status kept until a client closes it or the
//! pruner finds it stale; runaway requests are stopped by the pruner and every request's
//! deadline is enforced here, so a request whose client vanished still ends.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use runner_core::variables::{JobVariable, Variables};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status as GrpcStatus};

use crate::definition;
use crate::engine::{Failure, Runtime};
use crate::log_store::{Chunk, LogStore};
use crate::output::JobOutput;
use crate::proto::{
    self, status_error::ErrorKind, step_result::Status as StepStatus,
    step_runner_server::StepRunner,
};

/// How long things may take; every default is upstream's where upstream has one, else ours
/// (the README lists them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the pruner looks (30 s).
    pub prune_interval: Duration,
    /// A request that ended this long ago and was never closed is forgotten (1 h: long enough
    /// for a restarted runner to find it with `Status`).
    pub stale_after: Duration,
    /// A request without a timeout running this long is a runaway and is stopped (24 h).
    pub runaway_after: Duration,
    /// The grace period between SIGTERM and SIGKILL when the client gives none (upstream's
    /// exec `cancel_timeout` default: 5 s).
    pub grace: Duration,
    /// The most a client may ask for as its grace period (upstream's 30 s default).
    pub max_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prune_interval: Duration::from_secs(30),
            stale_after: Duration::from_secs(3600),
            runaway_after: Duration::from_secs(24 * 3600),
            grace: Duration::from_secs(5),
            max_grace: Duration::from_secs(30),
        }
    }
}

/// The longest timeout a request may have (a larger one, or a huge call deadline, is cut to
/// it rather than overflow the clock).
const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// File variables written for a request that is not started yet: removed if it fails.
struct FilesGuard(Vec<PathBuf>);

impl FilesGuard {
    fn keep(mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for FilesGuard {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Why a request was stopped before its steps ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancel,
    Timeout,
    Close,
}

#[derive(Debug, Default)]
struct JobState {
    status: i32,
    message: String,
    exit_code: i32,
    start_time: Option<SystemTime>,
    end_time: Option<SystemTime>,
    error: Option<proto::StatusError>,
    /// When it ended, on the service's clock (pruning).
    ended_at: Option<Instant>,
}

struct Job {
    id: String,
    output: JobOutput,
    state: Mutex<JobState>,
    stop: CancellationToken,
    reason: Mutex<Option<StopReason>>,
    ended: watch::Sender<bool>,
    results: watch::Sender<Vec<proto::StepResult>>,
    grace: Duration,
    created: Instant,
    deadline: Option<Instant>,
    /// The request's private directory, removed when the request is closed.
    temp: Mutex<Option<tempfile::TempDir>>,
    /// File variables written at the classic runner's paths, removed when it is closed.
    files: Vec<PathBuf>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Job {
    fn status(&self) -> proto::Status {
        let state = lock(&self.state);
        proto::Status {
            id: self.id.clone(),
            message: state.message.clone(),
            status: state.status,
            exit_code: state.exit_code,
            start_time: state.start_time.map(prost_types::Timestamp::from),
            end_time: state.end_time.map(prost_types::Timestamp::from),
            error: state.error.clone(),
            finished: state.ended_at.is_some(),
        }
    }

    /// Stops the run (once: the first reason is the one reported).
    fn stop(&self, reason: StopReason) {
        {
            let mut current = lock(&self.reason);
            if current.is_none() {
                *current = Some(reason);
            }
        }
        self.stop.cancel();
    }

    fn is_ended(&self) -> bool {
        *self.ended.borrow()
    }

    async fn wait_ended(&self, bound: Duration) -> bool {
        let mut ended = self.ended.subscribe();
        let waited = tokio::time::timeout(bound, ended.wait_for(|ended| *ended)).await;
        waited.is_ok()
    }

    /// Records how the run ended, then ends the log: a follower that sees the end finds the
    /// final status already there.
    fn finish(&self, outcome: Result<(), Failure>) {
        let reason = *lock(&self.reason);
        {
            let mut state = lock(&self.state);
            // Once: a close that gave up waiting and the task's own end must not both write.
            if state.ended_at.is_some() {
                return;
            }
            let (status, kind, message) = match (&outcome, reason) {
                (Ok(()), _) => (StepStatus::Success, None, String::new()),
                (Err(_), Some(StopReason::Timeout)) => (
                    StepStatus::Failure,
                    Some(ErrorKind::Timeout),
                    "timeout: the request ran past its deadline".to_string(),
                ),
                (Err(_), Some(StopReason::Cancel)) => (
                    StepStatus::Cancelled,
                    Some(ErrorKind::Cancelled),
                    "cancelled".to_string(),
                ),
                (Err(_), Some(StopReason::Close)) => (
                    StepStatus::Cancelled,
                    Some(ErrorKind::Cancelled),
                    "context canceled".to_string(),
                ),
                (Err(Failure::Internal(message)), None) => (
                    StepStatus::Failure,
                    Some(ErrorKind::Internal),
                    message.clone(),
                ),
                (Err(failure), None) => (
                    StepStatus::Failure,
                    Some(ErrorKind::StepFailure),
                    failure.message().to_string(),
                ),
            };
            state.status = status as i32;
            state.exit_code = match &outcome {
                Ok(()) => 0,
                Err(failure) => exit_status(failure.message()).unwrap_or(1),
            };
            state.message = message.clone();
            state.error = kind.map(|kind| proto::StatusError {
                message,
                kind: kind as i32,
            });
            state.end_time = Some(SystemTime::now());
            state.ended_at = Some(Instant::now());
        }
        self.output.close();
        self.ended.send_replace(true);
    }

    /// Forgets what the request made on disk.
    fn release(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        drop(lock(&self.temp).take());
    }
}

/// The number `N` of the last `exit status N` in a message (decimal or `0x` hex), as the
/// runner reads it.
pub fn exit_status(message: &str) -> Option<i32> {
    let at = message.rfind("exit status ")?;
    let rest = &message[at + "exit status ".len()..];
    let (digits, radix) = match rest.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None => (rest, 10),
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    i64::from_str_radix(&digits[..end], radix)
        .ok()
        .map(|n| n as i32)
}

struct Inner {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    settings: Settings,
    /// The service's own environment, the base of every request's.
    env: BTreeMap<String, String>,
}

/// The service; cheap to clone (every clone is the same service).
#[derive(Clone)]
pub struct StepService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StepService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepService").finish_non_exhaustive()
    }
}

/// The names of the job variables the runner put into this process's environment
/// (`RUNNER_JOB_VAR_NAMES`, base64 of gzip of `;`-joined names), which steps must not inherit:
/// job variables reach steps through the request only. Without gzip support here, a plain
/// (not compressed) list is taken too.
fn job_variable_names(encoded: &str) -> Vec<String> {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Vec::new();
    };
    let text = match flate2_decode(&bytes) {
        Some(text) => text,
        None => String::from_utf8_lossy(&bytes).to_string(),
    };
    text.split(';')
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

fn flate2_decode(bytes: &[u8]) -> Option<String> {
    use std::io::Read;
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return None;
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The service's environment as steps inherit it.
pub fn inherited_env() -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    if let Some(names) = env.remove("RUNNER_JOB_VAR_NAMES") {
        for name in job_variable_names(&names) {
            env.remove(&name);
        }
    }
    env.remove("_GITLAB_RUNNER_HELPER_NATIVE_STEPS_ARGV");
    env
}

/// A gRPC deadline header (`grpc-timeout`: digits and a unit H, M, S, m, u or n).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send>>;

impl StepService {
    /// A service with `settings`, whose requests inherit `env`.
    pub fn new(settings: Settings, env: BTreeMap<String, String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                jobs: Mutex::new(HashMap::new()),
                settings,
                env,
            }),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<String, Arc<Job>>> {
        lock(&self.inner.jobs)
    }

    fn job(&self, id: &str) -> Result<Arc<Job>, GrpcStatus> {
        self.jobs()
            .get(id)
            .cloned()
            .ok_or_else(|| GrpcStatus::not_found(format!("job {id:?} not found")))
    }

    /// Starts the request; a known id starts nothing.
    fn start(
        &self,
        request: proto::RunRequest,
        call_deadline: Option<Duration>,
    ) -> Result<(), GrpcStatus> {
        if request.id.is_empty() {
            return Err(GrpcStatus::invalid_argument("id: must not be empty"));
        }
        let mut jobs = self.jobs();
        if jobs.contains_key(&request.id) {
            return Ok(());
        }
        let definition = definition::parse(&request.steps, "steps")
            .map_err(|e| GrpcStatus::invalid_argument(e.0))?;
        let settings = &self.inner.settings;
        let job_request = request.job.clone().unwrap_or_default();
        let work_dir = if !job_request.build_dir.is_empty() {
            PathBuf::from(&job_request.build_dir)
        } else if !request.work_dir.is_empty() {
            PathBuf::from(&request.work_dir)
        } else {
            std::env::current_dir().map_err(|e| GrpcStatus::internal(format!("work dir: {e}")))?
        };
        create_private_dir(&work_dir)
            .map_err(|e| GrpcStatus::internal(format!("creating {}: {e}", work_dir.display())))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!("step-runner-output-{}-", sanitize(&request.id)))
            .tempdir()
            .map_err(|e| GrpcStatus::internal(format!("creating the request's directory: {e}")))?;
        // Job variables: file ones written where a classic job has them (next to the build
        // dir), or in the request's directory; every value expanded against the others.
        let file_dir = if job_request.build_dir.is_empty() {
            temp.path().to_path_buf()
        } else {
            PathBuf::from(format!(
                "{}.tmp",
                job_request.build_dir.trim_end_matches('/')
            ))
        };
        let variables = Variables::new(
            job_request
                .variables
                .iter()
                .map(|variable| {
                    let mut job_variable =
                        JobVariable::new(variable.key.clone(), variable.value.clone());
                    if variable.file {
                        job_variable = job_variable.file();
                    }
                    if variable.masked {
                        job_variable = job_variable.masked();
                    }
                    if variable.raw {
                        job_variable = job_variable.raw();
                    }
                    job_variable
                })
                .collect(),
        )
        .with_file_dir(file_dir.display().to_string());
        let mut files = FilesGuard(Vec::new());
        if variables.iter().any(|variable| variable.file) {
            create_private_dir(&file_dir).map_err(|e| {
                GrpcStatus::internal(format!("creating {}: {e}", file_dir.display()))
            })?;
        }
        for variable in variables.iter().filter(|variable| variable.file) {
            let path = file_dir.join(&variable.key);
            runner_core::dirs::write_private(&path, variable.value.as_bytes()).map_err(|e| {
                GrpcStatus::internal(format!("writing file variable {}: {e}", variable.key))
            })?;
            files.0.push(path);
        }
        let expanded = variables.expanded();
        let job_context: Map<String, Value> = expanded
            .iter()
            .map(|variable| {
                let value = if variable.file {
                    file_dir.join(&variable.key).display().to_string()
                } else {
                    variable.value.clone()
                };
                (variable.key.clone(), Value::String(value))
            })
            .collect();
        let masking = request.masking.clone().unwrap_or_default();
        let mut phrases = variables.masked_values();
        phrases.extend(masking.phrases.iter().cloned());
        let mut prefixes = job_request.token_prefixes.clone();
        prefixes.extend(masking.token_prefixes.iter().cloned());
        let token_prefixes = runner_core::log::token_prefixes(&prefixes, true);
        let store = Arc::new(
            LogStore::new().map_err(|e| GrpcStatus::internal(format!("creating the log: {e}")))?,
        );
        let output = JobOutput::new(store, phrases, token_prefixes);
        let mut env = self.inner.env.clone();
        env.extend(request.env.clone());
        let grace = match request.graceful_exit_timeout_seconds {
            seconds if seconds > 0 => Duration::from_secs(seconds as u64).min(settings.max_grace),
            _ => settings.grace,
        };
        let timeout = match request.timeout_seconds {
            seconds if seconds > 0 => Some(Duration::from_secs(seconds as u64)),
            _ => None,
        };
        let timeout = match (timeout, call_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|timeout| timeout.min(MAX_TIMEOUT));
        let now = Instant::now();
        let job = Arc::new(Job {
            id: request.id.clone(),
            output: output.clone(),
            state: Mutex::new(JobState::default()),
            stop: CancellationToken::new(),
            reason: Mutex::new(None),
            ended: watch::Sender::new(false),
            results: watch::Sender::new(Vec::new()),
            grace,
            created: now,
            deadline: timeout.map(|timeout| now + timeout),
            temp: Mutex::new(None),
            files: files.keep(),
            task: Mutex::new(None),
        });
        let results = job.results.clone();
        let mut runtime = Runtime::new(
            output,
            job.stop.clone(),
            grace,
            work_dir,
            env,
            job_context,
            temp.path().to_path_buf(),
            Box::new(move |result| results.send_modify(|all| all.push(result.clone()))),
        );
        runtime.masked = variables
            .iter()
            .filter(|variable| variable.masked)
            .map(|variable| variable.key.clone())
            .collect();
        *lock(&job.temp) = Some(temp);
        let task = tokio::spawn(execute(job.clone(), runtime, definition));
        *lock(&job.task) = Some(task);
        jobs.insert(request.id, job);
        Ok(())
    }

    /// Stops and forgets `id` (unknown: nothing to do): a running request is stopped and
    /// waited for (its grace period and half a second more), a request that never started
    /// is marked cancelled.
    async fn close(&self, id: &str) {
        let Some(job) = self.jobs().get(id).cloned() else {
            return;
        };
        if !job.is_ended() {
            job.stop(StopReason::Close);
            job.wait_ended(job.grace + Duration::from_millis(500)).await;
        }
        if !job.is_ended() {
            job.finish(Err(Failure::Stopped("context canceled".into())));
        }
        job.release();
        let mut jobs = self.jobs();
        if jobs.get(id).is_some_and(|known| Arc::ptr_eq(known, &job)) {
            jobs.remove(id);
        }
    }

    /// [`Self::close`] in a task of its own: a client that stops waiting does not leave the
    /// request half closed.
    async fn close_whole(&self, id: String) {
        let service = self.clone();
        let _ = tokio::spawn(async move { service.close(&id).await }).await;
    }

    /// One pass of the pruner: stale requests closed, runaway ones stopped.
    pub async fn prune(&self) {
        let now = Instant::now();
        let settings = &self.inner.settings;
        let jobs: Vec<Arc<Job>> = self.jobs().values().cloned().collect();
        for job in jobs {
            let ended_at = lock(&job.state).ended_at;
            match ended_at {
                Some(at) if now.duration_since(at) >= settings.stale_after => {
                    tracing::info!(id = %job.id, "pruning a request no client closed");
                    self.close(&job.id).await;
                }
                Some(_) => {}
                None => {
                    let runaway = match job.deadline {
                        Some(deadline) => now >= deadline + job.grace,
                        None => now.duration_since(job.created) >= settings.runaway_after,
                    };
                    if runaway {
                        tracing::warn!(id = %job.id, "stopping a runaway request");
                        job.stop(StopReason::Timeout);
                    }
                }
            }
        }
    }

    /// Runs the pruner every `prune_interval` until `shutdown`.
    pub async fn prune_until(&self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.inner.settings.prune_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => self.prune().await,
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Stops every request (as a cancel) and waits for them, within their grace periods.
    pub async fn stop_all(&self) {
        let jobs: Vec<Arc<Job>> = self.jobs().values().cloned().collect();
        for job in &jobs {
            if !job.is_ended() {
                job.stop(StopReason::Cancel);
            }
        }
        for job in &jobs {
            job.wait_ended(job.grace + Duration::from_millis(500)).await;
            // Its followers see the end of its log even if its processes did not stop.
            job.finish(Err(Failure::Stopped("the service stopped".into())));
            job.release();
        }
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The request's background task: the steps, then the final status, then the end of the log.
async fn execute(job: Arc<Job>, runtime: Runtime, definition: definition::Definition) {
    {
        let mut state = lock(&job.state);
        state.status = StepStatus::Running as i32;
        state.start_time = Some(SystemTime::now());
    }
    let deadline = job.deadline;
    let timer_job = job.clone();
    let timer = tokio::spawn(async move {
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline).await;
            timer_job.stop(StopReason::Timeout);
        }
    });
    let outcome = runtime.run(&definition).await;
    timer.abort();
    job.finish(outcome);
}

#[tonic::async_trait]
impl StepRunner for StepService {
    async fn run(
        &self,
        request: Request<proto::RunRequest>,
    ) -> Result<Response<proto::RunResponse>, GrpcStatus> {
        let deadline = grpc_timeout(request.metadata());
        self.start(request.into_inner(), deadline)?;
        Ok(Response::new(proto::RunResponse {}))
    }

    async fn close(
        &self,
        request: Request<proto::CloseRequest>,
    ) -> Result<Response<proto::CloseResponse>, GrpcStatus> {
        self.close_whole(request.into_inner().id).await;
        Ok(Response::new(proto::CloseResponse {}))
    }

    async fn finish(
        &self,
        request: Request<proto::FinishRequest>,
    ) -> Result<Response<proto::FinishResponse>, GrpcStatus> {
        self.close_whole(request.into_inner().id).await;
        Ok(Response::new(proto::FinishResponse {}))
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::CancelResponse>, GrpcStatus> {
        let id = request.into_inner().id;
        if let Some(job) = self.jobs().get(&id).cloned() {
            if !job.is_ended() {
                job.stop(StopReason::Cancel);
            }
        }
        Ok(Response::new(proto::CancelResponse {}))
    }

    type FollowLogsStream = Streamed<proto::FollowLogsResponse>;

    async fn follow_logs(
        &self,
        request: Request<proto::FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, GrpcStatus> {
        let request = request.into_inner();
        let job = self.job(&request.id)?;
        let mut offset = u64::try_from(request.offset)
            .map_err(|_| GrpcStatus::invalid_argument("offset: must not be negative"))?;
        let (sender, receiver) = mpsc::channel(4);
        let store = job.output.store().clone();
        tokio::spawn(async move {
            loop {
                let chunk = tokio::select! {
                    chunk = store.read_from(offset, 64 * 1024) => chunk,
                    () = sender.closed() => return,
                };
                match chunk {
                    Ok(Chunk::Data(data)) => {
                        offset += data.len() as u64;
                        if sender
                            .send(Ok(proto::FollowLogsResponse { data }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(Chunk::End) => return,
                    Err(error) => {
                        let _ = sender
                            .send(Err(GrpcStatus::internal(format!(
                                "reading the log: {error}"
                            ))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type FollowStepsStream = Streamed<proto::FollowStepsResponse>;

    async fn follow_steps(
        &self,
        request: Request<proto::FollowStepsRequest>,
    ) -> Result<Response<Self::FollowStepsStream>, GrpcStatus> {
        let job = self.job(&request.into_inner().id)?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut results = job.results.subscribe();
            let mut ended = job.ended.subscribe();
            let mut sent = 0;
            loop {
                let pending: Vec<proto::StepResult> = results.borrow_and_update()[sent..].to_vec();
                for result in pending {
                    sent += 1;
                    let response = proto::FollowStepsResponse {
                        result: Some(result),
                    };
                    if sender.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
                if *ended.borrow_and_update() && results.borrow().len() == sent {
                    return;
                }
                tokio::select! {
                    changed = results.changed() => if changed.is_err() { return },
                    changed = ended.changed() => if changed.is_err() { return },
                    () = sender.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, GrpcStatus> {
        let id = request.into_inner().id;
        let jobs = if id.is_empty() {
            let mut all: Vec<Arc<Job>> = self.jobs().values().cloned().collect();
            all.sort_by_key(|job| job.created);
            all.iter().map(|job| job.status()).collect()
        } else {
            vec![self.job(&id)?.status()]
        };
        Ok(Response::new(proto::StatusResponse { jobs }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_is_read_from_the_message_as_the_runner_reads_it() {
        assert_eq!(exit_status("step \"a\": exit status 42"), Some(42));
        assert_eq!(
            exit_status("exit status 0xc000013a"),
            Some(0xc000013a_u32 as i32)
        );
        assert_eq!(exit_status("signal: killed"), None);
    }

    #[test]
    fn grpc_deadlines_in_every_unit() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (text, want) in [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("10S", Duration::from_secs(10)),
            ("1500m", Duration::from_millis(1500)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            metadata.insert("grpc-timeout", text.parse().expect("ascii"));
            assert_eq!(grpc_timeout(&metadata), Some(want), "{text}");
        }
        metadata.insert("grpc-timeout", "10x".parse().expect("ascii"));
        assert_eq!(grpc_timeout(&metadata), None);
    }

    #[test]
    fn job_variable_names_come_plain_or_gzipped() {
        use base64::Engine;
        use std::io::Write;
        let plain = base64::engine::general_purpose::STANDARD.encode("A;B;");
        assert_eq!(job_variable_names(&plain), ["A", "B"]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"SECRET;CI_JOB_ID").expect("gzip");
        let gzipped = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
        assert_eq!(job_variable_names(&gzipped), ["SECRET", "CI_JOB_ID"]);
    }

    fn quick_env() -> BTreeMap<String, String> {
        BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())])
    }

    fn run_request(id: &str, dir: &Path, script: &str) -> Request<proto::RunRequest> {
        Request::new(proto::RunRequest {
            id: id.into(),
            work_dir: dir.display().to_string(),
            steps: serde_json::json!([{"name": "only", "script": script}]).to_string(),
            ..proto::RunRequest::default()
        })
    }

    async fn ended(service: &StepService, id: &str) {
        let job = service.job(id).expect("known");
        let mut ended = job.ended.subscribe();
        let _ = ended.wait_for(|ended| *ended).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_pruner_forgets_stale_requests_and_stops_runaway_ones() {
        let dir = tempfile::tempdir().expect("a dir");
        let service = StepService::new(Settings::default(), quick_env());
        service
            .run(run_request("quick", dir.path(), "true"))
            .await
            .expect("runs");
        service
            .run(run_request("runaway", dir.path(), "exec sleep 600"))
            .await
            .expect("runs");
        ended(&service, "quick").await;

        // Not yet stale, not yet runaway: both stay.
        tokio::time::advance(Duration::from_secs(1800)).await;
        service.prune().await;
        assert!(service.job("quick").is_ok());
        assert!(!service.job("runaway").expect("known").is_ended());

        // An hour after it ended, never closed: forgotten.
        tokio::time::advance(Duration::from_secs(1800)).await;
        service.prune().await;
        assert!(service.job("quick").is_err(), "stale");

        // A day without a timeout: stopped as a timeout, kept for a client to read.
        tokio::time::advance(Duration::from_secs(24 * 3600)).await;
        service.prune().await;
        ended(&service, "runaway").await;
        let status = service.job("runaway").expect("still known").status();
        assert_eq!(status.status, StepStatus::Failure as i32);
        assert_eq!(
            status.error.map(|error| error.kind),
            Some(ErrorKind::Timeout as i32)
        );
        tokio::time::advance(Duration::from_secs(3600)).await;
        service.prune().await;
        assert!(service.job("runaway").is_err(), "then stale in its turn");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_and_grace_is_a_runaway_even_if_its_timer_is_lost() {
        let dir = tempfile::tempdir().expect("a dir");
        let service = StepService::new(Settings::default(), quick_env());
        let mut request = run_request("late", dir.path(), "exec sleep 600");
        request.get_mut().timeout_seconds = 10;
        service.run(request).await.expect("runs");
        // The request's own timer fires at its deadline.
        ended(&service, "late").await;
        let status = service.job("late").expect("known").status();
        assert_eq!(
            status.error.map(|error| error.kind),
            Some(ErrorKind::Timeout as i32)
        );
    }
}
