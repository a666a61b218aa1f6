//! One job's running pod, as the attach strategy uses it: script files written by exec, one
//! attached stdin per container that stages are typed into, the `read-logs` stream that brings
//! their output back (reconnected from the offset it reached whenever it drops), and each
//! stage as a [`StageProcess`] for the stage runner: it ends on its nonce-checked exit marker,
//! when the pod goes away under it, or when a container dies.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, AttachedProcess};
use kube::Api;
use runner_core::executor::ExecutorError;
use runner_core::failure::FailureReason;
use runner_core::log::StreamKind;
use runner_core::stage_runner::{Chunk, StageOutput, StageProcess};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::log_processor::{LogProcessor, StageEvent};
use crate::pod_status::{died_under_stage, disrupted};
use crate::retry::RetryPolicy;
use crate::stage_commands::{quote, write_file_command};

/// `read-logs`' code when the log file was deleted under it.
const LOG_FILE_DELETED: i32 = 100;
/// The first wait before reconnecting a dropped log stream; it doubles up to the maximum.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between reconnects (upstream's).
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Output buffered from one exec stream before kube-rs applies back pressure.
const STREAM_BUFFER: usize = 1024 * 1024;
/// How long a typed stage line gets to show its start marker before it is typed again (the
/// line is guarded, so a second copy does not run the stage twice).
const START_WAIT: Duration = Duration::from_secs(5);
/// After a failed attempt to type a stage line, the pause before the next.
const RETYPE_PAUSE: Duration = Duration::from_millis(500);
/// How many times a stage line is typed at most.
const TYPE_ATTEMPTS: usize = 3;
/// After a successful kill, how long the stage's fallback marker gets to come before the
/// stage counts as ended with 137.
const KILLED_MARKER_WAIT: Duration = Duration::from_secs(5);

fn system(message: impl Into<String>) -> ExecutorError {
    ExecutorError::system(message)
}

/// How a stage ended, as the log stream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageExit {
    /// The exit status from the stage's marker (100 when the log file was deleted).
    pub code: i32,
    /// A warning for the job log about how the stage ended.
    pub warning: Option<String>,
}

/// Where the running stage's output and exit go.
struct StageSink {
    output: mpsc::UnboundedSender<Vec<u8>>,
    exit: Option<oneshot::Sender<StageExit>>,
}

/// What the log stream task and the stages share.
struct StreamState {
    processor: LogProcessor,
    stage: Option<StageSink>,
    /// The nonce of the last stage whose start (or end) marker came.
    started: watch::Sender<String>,
}

impl Default for StreamState {
    fn default() -> Self {
        Self {
            processor: LogProcessor::default(),
            stage: None,
            started: watch::channel(String::new()).0,
        }
    }
}

/// An attach to a container's stdin, kept for the next stages.
struct Attached {
    process: AttachedProcess,
    stdin: Pin<Box<dyn AsyncWrite + Send + Sync>>,
}

/// What an API stream is opened for, in the wording of upstream's check before it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StreamPurpose {
    Exec,
    Attach,
}

/// The pod a job runs in, and its open streams.
pub struct Session {
    pods: Api<Pod>,
    pod: String,
    namespace: String,
    helper_command: String,
    log_file: String,
    poll_interval: Duration,
    retry: RetryPolicy,
    state: Arc<Mutex<StreamState>>,
    log_task: Option<tokio::task::JoinHandle<()>>,
    /// The attached stdin of each container stages were typed into.
    attached: HashMap<String, Attached>,
    /// Ended services said in the job log.
    services: ServiceWatch,
}

/// The service containers already reported as ended, and the log they are reported in.
#[derive(Clone, Default)]
struct ServiceWatch {
    log: Option<runner_core::log::JobLog>,
    reported: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl ServiceWatch {
    /// Says each service of `pod` that ended and was not said yet.
    fn report(&self, pod: &Pod) {
        let Some(log) = &self.log else {
            return;
        };
        let Ok(mut reported) = self.reported.lock() else {
            return;
        };
        for (name, message) in crate::pod_status::ended_services(pod) {
            if reported.insert(name) {
                log.warning(&format!("Service container ended: {message}"));
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        for attached in self.attached.values() {
            attached.process.abort();
        }
    }
}

/// The exit status in an exec's final status: 0 for `Success`, the `ExitCode` cause's
/// number for `NonZeroExitCode`, else the status's message as an error.
pub fn exec_status_code(
    status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> Result<i32, String> {
    let Some(status) = status else {
        return Err("the exec stream ended without a status".into());
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let code = status
        .details
        .as_ref()
        .and_then(|details| details.causes.as_ref())
        .into_iter()
        .flatten()
        .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
        .and_then(|cause| cause.message.as_deref())
        .and_then(|message| message.parse::<i32>().ok());
    match code {
        Some(code) => Ok(code),
        None => Err(status
            .message
            .clone()
            .unwrap_or_else(|| "exec failed".into())),
    }
}

/// How a script write ended when its exec ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The file is in place.
    Done,
    /// The writing command exited non-zero (upstream: a build error with that code).
    Exited {
        /// Its exit status.
        code: i32,
        /// What it printed.
        said: String,
    },
}

impl Session {
    /// A session on `pod`; nothing is opened until [`Self::start_log_stream`].
    pub fn new(
        pods: Api<Pod>,
        namespace: &str,
        pod: &str,
        helper_command: &str,
        log_file: &str,
        poll_interval: Duration,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            pods,
            pod: pod.to_string(),
            namespace: namespace.to_string(),
            helper_command: helper_command.to_string(),
            log_file: log_file.to_string(),
            poll_interval,
            retry,
            state: Arc::new(Mutex::new(StreamState::default())),
            log_task: None,
            attached: HashMap::new(),
            services: ServiceWatch::default(),
        }
    }

    /// Upstream's look before every exec and attach: the pod must be running, else the
    /// stream would fail with an upgrade error that says nothing.
    async fn ensure_running(&self, kind: StreamPurpose) -> Result<(), ExecutorError> {
        ensure_running(&self.pods, &self.namespace, &self.pod, kind, &self.retry).await
    }

    /// Writes `content` to `path` in `container`, through an exec that reads exactly its
    /// length from stdin (so the end of stdin, which v4 streams cannot send alone, is not
    /// needed).
    pub async fn write_file(
        &self,
        container: &str,
        path: &str,
        content: &[u8],
    ) -> Result<Written, ExecutorError> {
        self.ensure_running(StreamPurpose::Exec).await?;
        let params = AttachParams::default()
            .container(container)
            .stdin(true)
            .stdout(true)
            .stderr(true);
        let command = write_file_command(path, content.len());
        let mut process = self
            .retry
            .run("opening the script write", |_| {
                self.pods.exec(&self.pod, command.clone(), &params)
            })
            .await
            .map_err(|error| system(format!("writing {path} in container {container}: {error}")))?;
        let status = process.take_status();
        let mut stdin = process.stdin();
        let mut stdout = process.stdout();
        let mut stderr = process.stderr();
        if let Some(stdin) = stdin.as_mut() {
            stdin
                .write_all(content)
                .await
                .map_err(|error| system(format!("writing {path}: {error}")))?;
            let _ = stdin.flush().await;
        }
        // Both read at once: one left unread could fill its pipe and stall the other.
        let read_out = async {
            let mut said = Vec::new();
            if let Some(stdout) = stdout.as_mut() {
                let _ = stdout.read_to_end(&mut said).await;
            }
            said
        };
        let read_err = async {
            let mut said = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.read_to_end(&mut said).await;
            }
            said
        };
        let (mut said, errors) = tokio::join!(read_out, read_err);
        said.extend(errors);
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        // Kept open until the status came: on v4 dropping stdin closes the whole stream.
        drop(stdin);
        let _ = process.join().await;
        match exec_status_code(status.as_ref()) {
            Ok(0) => Ok(Written::Done),
            Ok(code) => Ok(Written::Exited {
                code,
                said: String::from_utf8_lossy(&said).trim().to_string(),
            }),
            Err(error) => Err(system(format!(
                "writing {path} in container {container}: {error}"
            ))),
        }
    }

    /// Starts following the shared log file from offset 0, for the rest of the job; what goes
    /// wrong with the stream is said in `log`.
    pub fn start_log_stream(&mut self, log: runner_core::log::JobLog) {
        self.services.log = Some(log.clone());
        let follower = LogFollower {
            retry: self.retry.clone(),
            pods: self.pods.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            helper: self.helper_command.clone(),
            log_file: self.log_file.clone(),
            state: self.state.clone(),
            log,
        };
        self.log_task = Some(tokio::spawn(follower.follow()));
    }

    /// Types `line` into `container`'s stdin once, attaching first when not attached yet (or
    /// no longer).
    async fn type_line(&mut self, container: &str, line: &str) -> Result<(), ExecutorError> {
        let failed = |error: String| {
            system(format!(
                "attaching to container {container} of pod {}/{}: {error}",
                self.namespace, self.pod
            ))
        };
        if !self.attached.contains_key(container) {
            self.ensure_running(StreamPurpose::Attach).await?;
            let params = AttachParams::default()
                .container(container)
                .stdin(true)
                .stdout(false)
                .stderr(false);
            let mut process = self
                .retry
                .run("attaching", |_| self.pods.attach(&self.pod, &params))
                .await
                .map_err(|error| failed(error.to_string()))?;
            let Some(stdin) = process.stdin() else {
                process.abort();
                return Err(failed("the attach has no stdin".into()));
            };
            self.attached.insert(
                container.to_string(),
                Attached {
                    process,
                    stdin: Box::pin(stdin),
                },
            );
        }
        let Some(attached) = self.attached.get_mut(container) else {
            return Err(failed("the attach is gone".into()));
        };
        let written = match attached.stdin.write_all(line.as_bytes()).await {
            Ok(()) => attached.stdin.flush().await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            if let Some(attached) = self.attached.remove(container) {
                attached.process.abort();
            }
            return Err(failed(error.to_string()));
        }
        Ok(())
    }

    /// Runs the stage script at `script` in `container`: its marker `nonce` is expected, the
    /// typed `line` starts it, and the returned stage ends on the marker. The line is typed
    /// again (through a new attach when the old one broke) while the stage's start marker
    /// has not come; the line runs its stage once however often it arrives.
    pub async fn start_stage(
        &mut self,
        container: &str,
        script: &str,
        nonce: &str,
        line: &str,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(StageRun, StageLog), ExecutorError> {
        let (output_tx, output_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let mut started = {
            let mut state = self
                .state
                .lock()
                .map_err(|_| system("the log stream state is poisoned"))?;
            state.processor.expect_stage(nonce);
            state.stage = Some(StageSink {
                output: output_tx,
                exit: Some(exit_tx),
            });
            state.started.subscribe()
        };
        let mut delivered = false;
        let mut last_error = None;
        for _ in 0..TYPE_ATTEMPTS {
            match self.type_line(container, line).await {
                Ok(()) => delivered = true,
                Err(error) => {
                    // The attach is dead (a refused write): no use waiting for the line's
                    // marker; the next try attaches afresh at once.
                    last_error = Some(error);
                    if let Some(attached) = self.attached.remove(container) {
                        attached.process.abort();
                    }
                    if started.borrow().as_str() == nonce {
                        delivered = true;
                        break;
                    }
                    // A short pause (not the whole START_WAIT): whatever failed, attaching
                    // or writing, is tried again soon, but not in a tight loop.
                    tokio::select! {
                        _ = tokio::time::sleep(RETYPE_PAUSE) => {}
                        _ = cancel.cancelled() => break,
                    }
                    continue;
                }
            }
            let seen = tokio::time::timeout(START_WAIT, started.wait_for(|seen| seen == nonce));
            let seen = tokio::select! {
                seen = seen => matches!(seen, Ok(Ok(_))),
                // Canceled meanwhile: no more tries; the stage runner stops what started.
                _ = cancel.cancelled() => break,
            };
            if seen {
                delivered = true;
                break;
            }
            // The line did not show: the attach may be half-open, so the next try opens a new
            // one (upstream attaches afresh for every stage).
            if let Some(attached) = self.attached.remove(container) {
                attached.process.abort();
            }
        }
        if !delivered {
            stage_over(&self.state);
            return Err(last_error.unwrap_or_else(|| system("the stage was not started")));
        }
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok((
            StageRun {
                services: self.services.clone(),
                retry: self.retry.clone(),
                pods: self.pods.clone(),
                pod: self.pod.clone(),
                namespace: self.namespace.clone(),
                container: container.to_string(),
                script: script.to_string(),
                state: self.state.clone(),
                exit: exit_rx,
                poll,
                killed_at: None,
            },
            StageLog { output: output_rx },
        ))
    }
}

/// Forgets the running stage (it ended or was given up); its late markers are hidden.
fn stage_over(state: &Mutex<StreamState>) {
    if let Ok(mut state) = state.lock() {
        state.stage = None;
        state.processor.expect_stage("");
    }
}

pub(crate) async fn ensure_running(
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
    kind: StreamPurpose,
    retry: &RetryPolicy,
) -> Result<(), ExecutorError> {
    let pod = retry
        .run("getting the pod", |_| pods.get(name))
        .await
        .map_err(|error| system(format!("couldn't get pod details: {error}")))?;
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.clone())
        .unwrap_or_default();
    if phase == "Running" {
        return Ok(());
    }
    // Upstream quotes the namespace differently for the two.
    let namespace = match kind {
        StreamPurpose::Attach => format!("\"{namespace}\""),
        StreamPurpose::Exec => format!("'{namespace}'"),
    };
    Err(system(format!(
        "pod \"{name}\" (on namespace {namespace}) is not running and cannot execute commands; current phase is \"{phase}\""
    )))
}

/// The task that follows the shared log file with `gitlab-runner-helper read-logs`, again
/// from the offset reached whenever the stream ends.
struct LogFollower {
    retry: RetryPolicy,
    pods: Api<Pod>,
    namespace: String,
    pod: String,
    helper: String,
    log_file: String,
    state: Arc<Mutex<StreamState>>,
    log: runner_core::log::JobLog,
}

/// How one `read-logs` stream ended.
enum StreamEnd {
    /// The log file was deleted under it (`read-logs` exit code 100).
    FileDeleted(String),
    /// `read-logs` exited 0 (upstream: a debug line only): it is opened again.
    Clean,
    /// Anything else: it is opened again, with a warning in the job log.
    Other(String),
}

impl LogFollower {
    /// Runs for the rest of the job. Unlike upstream, the wait before a reconnect starts
    /// again at one second once a stream brought data: a long job with an occasional drop
    /// does not wait 30 s for every later one.
    async fn follow(self) {
        let mut backoff = RECONNECT_FIRST;
        loop {
            let (ended, had_data) = self.stream_once().await;
            if had_data {
                backoff = RECONNECT_FIRST;
            }
            if let Ok(mut state) = self.state.lock() {
                state.processor.reconnected();
            }
            match ended {
                StreamEnd::FileDeleted(detail) => {
                    // The next stage's output starts a new file.
                    if let Ok(mut state) = self.state.lock() {
                        state.processor.restart_at(0);
                    }
                    let message = format!(
                        "Error processing the log file: output log file deleted, cannot continue {detail}"
                    );
                    if !end_stage(
                        &self.state,
                        StageExit {
                            code: LOG_FILE_DELETED,
                            warning: Some(message),
                        },
                    ) {
                        tracing::debug!(pod = %self.pod, "the log file was deleted between stages");
                    }
                }
                StreamEnd::Clean => tracing::debug!(pod = %self.pod, "the log stream ended"),
                StreamEnd::Other(error) => {
                    self.log.warning(&format!("Error {error}. Retrying..."));
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    /// One `read-logs` exec from the offset reached: how it ended, and whether it brought
    /// anything.
    async fn stream_once(&self) -> (StreamEnd, bool) {
        if let Err(error) = ensure_running(
            &self.pods,
            &self.namespace,
            &self.pod,
            StreamPurpose::Exec,
            &self.retry,
        )
        .await
        {
            return (StreamEnd::Other(error.to_string()), false);
        }
        let offset = self
            .state
            .lock()
            .map(|state| state.processor.offset())
            .unwrap_or(0);
        let command = vec![
            self.helper.clone(),
            "read-logs".into(),
            "--path".into(),
            self.log_file.clone(),
            "--offset".into(),
            offset.to_string(),
            "--wait-file-timeout".into(),
            "1m0s".into(),
        ];
        let params = AttachParams::default()
            .container(crate::pod::HELPER_CONTAINER)
            .stdin(false)
            .stdout(true)
            .stderr(true)
            .max_stdout_buf_size(STREAM_BUFFER)
            .max_stderr_buf_size(STREAM_BUFFER);
        let mut process = match self.pods.exec(&self.pod, command, &params).await {
            Ok(process) => process,
            Err(error) => return (StreamEnd::Other(error.to_string()), false),
        };
        let status = process.take_status();
        let mut stderr = process.stderr();
        let stderr_task = tokio::spawn(async move {
            let mut said = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.read_to_end(&mut said).await;
            }
            said
        });
        let mut had_data = false;
        if let Some(mut stdout) = process.stdout() {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match stdout.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(count) => {
                        had_data = true;
                        if let Some(between) = deliver(&self.state, &buffer[..count]) {
                            // Written while no stage runs (by what a stage left running):
                            // shown, as upstream shows every line.
                            self.log
                                .stream(runner_core::log::StreamId::SCRIPT, StreamKind::Stdout)
                                .write(&between);
                        }
                    }
                }
            }
        }
        let said = stderr_task.await.unwrap_or_default();
        let said = String::from_utf8_lossy(&said).trim().to_string();
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let _ = process.join().await;
        let ended = match exec_status_code(status.as_ref()) {
            Ok(LOG_FILE_DELETED) => StreamEnd::FileDeleted(said),
            Ok(0) => StreamEnd::Clean,
            Ok(code) => StreamEnd::Other(format!(
                "the log stream ended with exit code {code}: {said}"
            )),
            Err(error) => StreamEnd::Other(format!("the log stream ended: {error} {said}")),
        };
        (ended, had_data)
    }
}

/// Hands a piece of stream to the processor and its results to the running stage; what
/// came while no stage runs is returned.
fn deliver(state: &Mutex<StreamState>, data: &[u8]) -> Option<Vec<u8>> {
    let Ok(mut state) = state.lock() else {
        return None;
    };
    let processed = state.processor.feed(data);
    let nonce = state.processor.nonce().to_string();
    for event in &processed.events {
        if matches!(
            event,
            StageEvent::Started { .. } | StageEvent::Exited { .. }
        ) {
            state.started.send_replace(nonce.clone());
        }
    }
    let Some(stage) = state.stage.as_mut() else {
        return (!processed.output.is_empty()).then_some(processed.output);
    };
    if !processed.output.is_empty() {
        let _ = stage.output.send(processed.output);
    }
    for event in processed.events {
        if let StageEvent::Exited { code, .. } = event {
            if let Some(exit) = stage.exit.take() {
                let _ = exit.send(StageExit {
                    code,
                    warning: None,
                });
            }
            // The output of the stage ends with its marker.
            state.stage = None;
            state.processor.expect_stage("");
            return None;
        }
    }
    None
}

/// Ends the running stage with `exit`; `false` when no stage was running.
fn end_stage(state: &Mutex<StreamState>, exit: StageExit) -> bool {
    let Ok(mut state) = state.lock() else {
        return false;
    };
    let Some(mut stage) = state.stage.take() else {
        return false;
    };
    state.processor.expect_stage("");
    if let Some(sender) = stage.exit.take() {
        let _ = sender.send(exit);
    }
    true
}

/// A stage's output as the log stream brings it.
pub struct StageLog {
    output: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl StageOutput for StageLog {
    async fn next_chunk(&mut self) -> Option<Chunk> {
        self.output.recv().await.map(|data| Chunk {
            kind: StreamKind::Stdout,
            data,
        })
    }
}

/// A running stage, for the stage runner.
pub struct StageRun {
    /// Where an ended service is said, and which were said already (once per job).
    services: ServiceWatch,
    retry: RetryPolicy,
    pods: Api<Pod>,
    pod: String,
    namespace: String,
    container: String,
    script: String,
    state: Arc<Mutex<StreamState>>,
    exit: oneshot::Receiver<StageExit>,
    poll: tokio::time::Interval,
    /// When a kill signal reached the stage's processes.
    killed_at: Option<Instant>,
}

/// The program that signals a stage: every process whose last argument is the stage's
/// script (its shell) and that process's children. Its own last argument is this program
/// text, so it never matches itself.
pub fn signal_program(script: &str, signal: &str) -> Vec<String> {
    let program = format!(
        "script={}; {{ for dir in /proc/[0-9]*; do last=$(tr '\\0' '\\n' < \"$dir/cmdline\" | tail -n 1); [ \"$last\" = \"$script\" ] || continue; pid=${{dir#/proc/}}; children=$(cat \"$dir\"/task/*/children); kill -{signal} $pid $children; done; }} 2>/dev/null; exit 0",
        quote(script)
    );
    vec!["sh".into(), "-c".into(), program]
}

impl StageRun {
    /// Sends `signal` to the stage's processes; `true` when the signalling program ran to
    /// its end.
    async fn signal(&self, signal: &str) -> bool {
        // Only stdout, read to its end: an unread stderr could fill kube-rs's pipe and stall
        // the stream (the program sends its own stderr to /dev/null too).
        let params = AttachParams::default()
            .container(self.container.as_str())
            .stdin(false)
            .stdout(true)
            .stderr(false);
        let program = signal_program(&self.script, signal);
        let exec = self
            .retry
            .run("signalling the stage", |_| {
                self.pods.exec(&self.pod, program.clone(), &params)
            })
            .await;
        match exec {
            Ok(mut process) => {
                let status = process.take_status();
                if let Some(mut stdout) = process.stdout() {
                    let mut sink = Vec::new();
                    let _ = stdout.read_to_end(&mut sink).await;
                }
                let status = match status {
                    Some(status) => status.await,
                    None => None,
                };
                let _ = process.join().await;
                match exec_status_code(status.as_ref()) {
                    Ok(0) => true,
                    other => {
                        tracing::warn!(pod = %self.pod, "signalling the stage with {signal}: {other:?}");
                        false
                    }
                }
            }
            Err(error) => {
                tracing::warn!(pod = %self.pod, "signalling the stage with {signal}: {error}");
                false
            }
        }
    }

    /// One look at the pod: why the stage cannot go on, if it cannot; ended services are said.
    async fn check_pod(&self) -> Option<ExecutorError> {
        look_at_pod(&self.pods, &self.namespace, &self.pod, &|pod| {
            self.services.report(pod)
        })
        .await
    }
}

/// One look at a running stage's pod: why the stage cannot go on, if it cannot (gone, being
/// deleted, disrupted, its build or helper container dead, a phase other than Running).
pub(crate) async fn check_pod(
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
) -> Option<ExecutorError> {
    look_at_pod(pods, namespace, name, &|_| {}).await
}

/// [`check_pod`], showing the pod it got to `seen` first.
async fn look_at_pod(
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
    seen: &(dyn Fn(&Pod) + Sync),
) -> Option<ExecutorError> {
    match pods.get_opt(name).await {
        Ok(None) => Some(system(format!("pods \"{name}\" not found"))),
        Ok(Some(pod)) => {
            seen(&pod);
            if let Some(message) = disrupted(&pod, namespace) {
                return Some(system(message));
            }
            if pod.metadata.deletion_timestamp.is_some() {
                return Some(system(format!(
                    "pod {:?} is being deleted",
                    format!("{namespace}/{name}")
                )));
            }
            if let Some(problem) = died_under_stage(&pod) {
                return Some(ExecutorError::with_reason(problem.reason, problem.message));
            }
            let phase = pod
                .status
                .as_ref()
                .and_then(|status| status.phase.clone())
                .unwrap_or_default();
            let message = format!("pod \"{name}\" status is \"{phase}\"");
            match phase.as_str() {
                "Running" => None,
                "Failed" => Some(system(message)),
                // Upstream: a phase neither Running nor Failed is classified by context;
                // outside a timeout or cancel (which the stage runner handles) that is
                // an unknown failure.
                _ => Some(ExecutorError::with_reason(
                    FailureReason::UnknownFailure,
                    message,
                )),
            }
        }
        Err(error) => {
            tracing::warn!(pod = %name, "Getting job pod status: {error}");
            None
        }
    }
}

impl StageProcess for StageRun {
    type Exit = StageExit;

    async fn wait(&mut self) -> Result<StageExit, ExecutorError> {
        loop {
            let killed_wait = async {
                match self.killed_at {
                    Some(at) => tokio::time::sleep_until((at + KILLED_MARKER_WAIT).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                exit = &mut self.exit => {
                    return exit.map_err(|_| system("the log stream of the stage ended"));
                }
                // Killed, and even the fallback marker did not come: the kill's own status.
                _ = killed_wait => {
                    return Ok(StageExit { code: 137, warning: None });
                }
                _ = self.poll.tick() => {
                    if let Some(error) = self.check_pod().await {
                        return Err(error);
                    }
                }
            }
        }
    }

    async fn terminate(&mut self) -> bool {
        self.signal("TERM").await
    }

    async fn kill(&mut self) {
        if self.signal("KILL").await {
            self.killed_at = Some(Instant::now());
        }
    }

    async fn ended(&mut self, _stopped: bool) {
        // Whatever the log stream brings after this is not this stage's: its output channel
        // closes, so the stage runner does not wait for more.
        stage_over(&self.state);
    }
}
