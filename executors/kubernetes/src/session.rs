//! One job's running pod, as the attach strategy uses it: script files written by exec, one
//! attached stdin per container that stages are typed into, the `read-logs` stream that brings
//! their output back (reconnected from the offset it reached whenever it drops), and each
//! stage as a [`StageProcess`] for the stage runner: it ends on its nonce-checked exit marker,
//! when the pod goes away under it, or when a container dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, AttachedProcess};
use kube::Api;
use runner_core::executor::ExecutorError;
use runner_core::failure::FailureReason;
use runner_core::log::StreamKind;
use runner_core::stage_runner::{Chunk, StageOutput, StageProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::log_processor::{LogProcessor, StageEvent};
use crate::pod_status::died_under_stage;
use crate::stage_commands::{quote, write_file_command};

/// `read-logs`' code when the log file was deleted under it.
const LOG_FILE_DELETED: i32 = 100;
/// The first wait before reconnecting a dropped log stream; it doubles up to the maximum.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between reconnects (upstream's).
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Output buffered from one exec stream before kube-rs applies back pressure.
const STREAM_BUFFER: usize = 1024 * 1024;

fn system(message: impl Into<String>) -> ExecutorError {
    ExecutorError::system(message)
}

/// Where the running stage's output and exit go.
struct StageSink {
    output: mpsc::UnboundedSender<Vec<u8>>,
    exit: Option<oneshot::Sender<Result<i32, String>>>,
}

/// What the log stream task and the stages share.
#[derive(Default)]
struct StreamState {
    processor: LogProcessor,
    stage: Option<StageSink>,
}

/// The pod a job runs in, and its open streams.
pub struct Session {
    pods: Api<Pod>,
    pod: String,
    namespace: String,
    helper_command: String,
    log_file: String,
    poll_interval: Duration,
    state: Arc<Mutex<StreamState>>,
    log_task: Option<tokio::task::JoinHandle<()>>,
    /// The attached stdin of each container stages were typed into.
    attached: HashMap<String, AttachedProcess>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        for process in self.attached.values() {
            process.abort();
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

impl Session {
    /// A session on `pod`; nothing is opened until [`Self::start_log_stream`].
    pub fn new(
        pods: Api<Pod>,
        namespace: &str,
        pod: &str,
        helper_command: &str,
        log_file: &str,
        poll_interval: Duration,
    ) -> Self {
        Self {
            pods,
            pod: pod.to_string(),
            namespace: namespace.to_string(),
            helper_command: helper_command.to_string(),
            log_file: log_file.to_string(),
            poll_interval,
            state: Arc::new(Mutex::new(StreamState::default())),
            log_task: None,
            attached: HashMap::new(),
        }
    }

    /// Writes `content` to `path` in `container`, through an exec that reads exactly its
    /// length from stdin (so the end of stdin, which v4 streams cannot send alone, is not
    /// needed).
    pub async fn write_file(
        &self,
        container: &str,
        path: &str,
        content: &[u8],
    ) -> Result<(), ExecutorError> {
        let params = AttachParams::default()
            .container(container)
            .stdin(true)
            .stdout(true)
            .stderr(true);
        let mut process = self
            .pods
            .exec(&self.pod, write_file_command(path, content.len()), &params)
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
        let mut said = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            let _ = stdout.read_to_end(&mut said).await;
        }
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.read_to_end(&mut said).await;
        }
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        // Kept open until the status came: on v4 dropping stdin closes the whole stream.
        drop(stdin);
        let _ = process.join().await;
        match exec_status_code(status.as_ref()) {
            Ok(0) => Ok(()),
            Ok(code) => Err(system(format!(
                "writing {path} in container {container}: command terminated with exit code {code}: {}",
                String::from_utf8_lossy(&said).trim()
            ))),
            Err(error) => Err(system(format!(
                "writing {path} in container {container}: {error}"
            ))),
        }
    }

    /// Starts following the shared log file from offset 0, for the rest of the job.
    pub fn start_log_stream(&mut self) {
        let pods = self.pods.clone();
        let pod = self.pod.clone();
        let command = self.helper_command.clone();
        let log_file = self.log_file.clone();
        let state = self.state.clone();
        self.log_task = Some(tokio::spawn(follow_log(
            pods, pod, command, log_file, state,
        )));
    }

    /// Types `line` into `container`'s stdin, attaching first when not attached yet (or again
    /// when the attach broke).
    async fn type_line(&mut self, container: &str, line: &str) -> Result<(), ExecutorError> {
        let mut last_error = String::new();
        for _ in 0..2 {
            if !self.attached.contains_key(container) {
                let params = AttachParams::default()
                    .container(container)
                    .stdin(true)
                    .stdout(false)
                    .stderr(false);
                match self.pods.attach(&self.pod, &params).await {
                    Ok(process) => {
                        self.attached.insert(container.to_string(), process);
                    }
                    Err(error) => {
                        last_error = error.to_string();
                        continue;
                    }
                }
            }
            let Some(process) = self.attached.get_mut(container) else {
                continue;
            };
            let written = match process.stdin() {
                Some(mut stdin) => {
                    let written = stdin.write_all(line.as_bytes()).await;
                    let flushed = stdin.flush().await;
                    written.and(flushed).map_err(|error| error.to_string())
                }
                None => Err("the attach has no stdin".to_string()),
            };
            match written {
                Ok(()) => return Ok(()),
                Err(error) => {
                    last_error = error;
                    if let Some(process) = self.attached.remove(container) {
                        process.abort();
                    }
                }
            }
        }
        Err(system(format!(
            "attaching to container {container} of pod {}/{}: {last_error}",
            self.namespace, self.pod
        )))
    }

    /// Runs the stage script at `script` in `container`: its marker `nonce` is expected, the
    /// typed `line` starts it, and the returned stage ends on the marker.
    pub async fn start_stage(
        &mut self,
        container: &str,
        script: &str,
        nonce: &str,
        line: &str,
    ) -> Result<(StageRun, StageLog), ExecutorError> {
        let (output_tx, output_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        if let Ok(mut state) = self.state.lock() {
            state.processor.expect_stage(nonce);
            state.stage = Some(StageSink {
                output: output_tx,
                exit: Some(exit_tx),
            });
        }
        if let Err(error) = self.type_line(container, line).await {
            if let Ok(mut state) = self.state.lock() {
                state.stage = None;
            }
            return Err(error);
        }
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok((
            StageRun {
                pods: self.pods.clone(),
                pod: self.pod.clone(),
                namespace: self.namespace.clone(),
                container: container.to_string(),
                script: script.to_string(),
                exit: exit_rx,
                poll,
                killed: false,
            },
            StageLog { output: output_rx },
        ))
    }

    /// Forgets the running stage (it ended or was given up).
    pub fn stage_over(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.stage = None;
            state.processor.expect_stage("");
        }
    }
}

/// `gitlab-runner-helper read-logs`, again from the offset reached whenever it ends.
async fn follow_log(
    pods: Api<Pod>,
    pod: String,
    helper: String,
    log_file: String,
    state: Arc<Mutex<StreamState>>,
) {
    let mut backoff = RECONNECT_FIRST;
    loop {
        let offset = state
            .lock()
            .map(|state| state.processor.offset())
            .unwrap_or(0);
        let command = vec![
            helper.clone(),
            "read-logs".into(),
            "--path".into(),
            log_file.clone(),
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
        let ended = match pods.exec(&pod, command, &params).await {
            Ok(mut process) => {
                let status = process.take_status();
                let mut stderr = process.stderr();
                let stderr_task = tokio::spawn(async move {
                    let mut said = Vec::new();
                    if let Some(stderr) = stderr.as_mut() {
                        let _ = stderr.read_to_end(&mut said).await;
                    }
                    said
                });
                if let Some(mut stdout) = process.stdout() {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        match stdout.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(count) => {
                                backoff = RECONNECT_FIRST;
                                deliver(&state, &buffer[..count]);
                            }
                        }
                    }
                }
                let said = stderr_task.await.unwrap_or_default();
                let status = match status {
                    Some(status) => status.await,
                    None => None,
                };
                let _ = process.join().await;
                let code = exec_status_code(status.as_ref());
                if code == Ok(LOG_FILE_DELETED) {
                    fail_stage(
                        &state,
                        "Error processing the log file: output log file deleted, cannot continue"
                            .into(),
                    );
                    return;
                }
                format!(
                    "the log stream ended ({}): {}",
                    match code {
                        Ok(code) => format!("exit code {code}"),
                        Err(error) => error,
                    },
                    String::from_utf8_lossy(&said).trim()
                )
            }
            Err(error) => error.to_string(),
        };
        tracing::debug!(pod = %pod, "{ended}; reconnecting");
        if let Ok(mut state) = state.lock() {
            state.processor.reconnected();
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Hands a piece of stream to the processor and its results to the running stage.
fn deliver(state: &Mutex<StreamState>, data: &[u8]) {
    let Ok(mut state) = state.lock() else {
        return;
    };
    let processed = state.processor.feed(data);
    let Some(stage) = state.stage.as_mut() else {
        return;
    };
    if !processed.output.is_empty() {
        let _ = stage.output.send(processed.output);
    }
    for event in processed.events {
        if let StageEvent::Exited { code, .. } = event {
            if let Some(exit) = stage.exit.take() {
                let _ = exit.send(Ok(code));
            }
            // The output of the stage ends with its marker.
            state.stage = None;
            state.processor.expect_stage("");
            return;
        }
    }
}

fn fail_stage(state: &Mutex<StreamState>, message: String) {
    if let Ok(mut state) = state.lock() {
        if let Some(mut stage) = state.stage.take() {
            if let Some(exit) = stage.exit.take() {
                let _ = exit.send(Err(message));
            }
        }
    }
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
    pods: Api<Pod>,
    pod: String,
    namespace: String,
    container: String,
    script: String,
    exit: oneshot::Receiver<Result<i32, String>>,
    poll: tokio::time::Interval,
    killed: bool,
}

/// The program that signals a stage: every process whose last argument is the stage's
/// script (its shell) and that process's children. Its own last argument is this program
/// text, so it never matches itself.
pub fn signal_program(script: &str, signal: &str) -> Vec<String> {
    let program = format!(
        "script={}; for dir in /proc/[0-9]*; do last=$(tr '\\0' '\\n' < \"$dir/cmdline\" 2>/dev/null | tail -n 1); [ \"$last\" = \"$script\" ] || continue; pid=${{dir#/proc/}}; children=$(cat \"$dir\"/task/*/children 2>/dev/null); kill -{signal} $pid $children 2>/dev/null; done; exit 0",
        quote(script)
    );
    vec!["sh".into(), "-c".into(), program]
}

impl StageRun {
    async fn signal(&self, signal: &str) -> bool {
        let params = AttachParams::default()
            .container(self.container.as_str())
            .stdin(false)
            .stdout(true)
            .stderr(true);
        match self
            .pods
            .exec(&self.pod, signal_program(&self.script, signal), &params)
            .await
        {
            Ok(mut process) => {
                let status = process.take_status();
                if let Some(mut stdout) = process.stdout() {
                    let mut sink = Vec::new();
                    let _ = stdout.read_to_end(&mut sink).await;
                }
                if let Some(status) = status {
                    let _ = status.await;
                }
                let _ = process.join().await;
                true
            }
            Err(error) => {
                tracing::warn!(pod = %self.pod, "signalling the stage: {error}");
                false
            }
        }
    }

    /// One look at the pod: why the stage cannot go on, if it cannot.
    async fn check_pod(&self) -> Option<ExecutorError> {
        match self.pods.get_opt(&self.pod).await {
            Ok(None) => Some(system(format!("pods \"{}\" not found", self.pod))),
            Ok(Some(pod)) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    return Some(system(format!(
                        "pod \"{}/{}\" is being deleted",
                        self.namespace, self.pod
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
                (phase != "Running")
                    .then(|| system(format!("pod \"{}\" status is \"{phase}\"", self.pod)))
            }
            Err(error) => {
                tracing::warn!(pod = %self.pod, "Getting job pod status: {error}");
                None
            }
        }
    }
}

impl StageProcess for StageRun {
    type Exit = i32;

    async fn wait(&mut self) -> Result<i32, ExecutorError> {
        loop {
            if self.killed {
                return Ok(137);
            }
            tokio::select! {
                exit = &mut self.exit => {
                    return match exit {
                        Ok(Ok(code)) => Ok(code),
                        Ok(Err(message)) => Err(ExecutorError::with_reason(
                            FailureReason::RunnerSystemFailure,
                            message,
                        )),
                        Err(_) => Err(system("the log stream of the stage ended")),
                    };
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
        self.signal("KILL").await;
        self.killed = true;
    }
}
