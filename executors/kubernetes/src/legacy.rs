//! The legacy exec strategy (`FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY`): each stage is
//! one exec in the build or helper container running the shell detection, the stage script
//! on its stdin, its stdout and stderr the stage's output and the exec's status its exit
//! code. No markers, no log file: a dropped stream ends the stage (why upstream made attach
//! the default).
//!
//! The script is followed by an `exit` line, so the shell ends without the end of stdin
//! (which kube-rs can only send on `v5.channel.k8s.io`; on v4 it closes the whole stream and
//! the status is lost), and stdin stays open until the status came. Helper stages start with
//! `umask 0000` (upstream's `gitlab-runner-build`) unless
//! `FF_DISABLE_UMASK_FOR_KUBERNETES_EXECUTOR`. The pod is looked at every `poll_interval`
//! while a stage runs, as in the attach strategy. A canceled stage has no graceful stop here:
//! its stream is closed (upstream's "build aborted").

use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, AttachedProcess};
use kube::Api;
use runner_core::executor::ExecutorError;
use runner_core::log::StreamKind;
use runner_core::stage_runner::{Chunk, StageOutput, StageProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::pod::shell_command;
use crate::retry::RetryPolicy;
use crate::session::{check_pod, ensure_running, exec_status_code, StreamPurpose};

/// The exit code a killed stage reports (its stream closed by the runner).
const KILLED: i32 = 137;

type StatusFuture = Pin<Box<dyn Future<Output = Option<Status>> + Send>>;

/// A stage running as one exec.
pub struct ExecStage {
    pods: Api<Pod>,
    namespace: String,
    pod: String,
    /// The look at the pod while the stage runs (`poll_interval`).
    poll: tokio::time::Interval,
    process: AttachedProcess,
    status: StatusFuture,
    /// Kept open until the status came (dropping it ends a v4 stream).
    stdin: Option<Pin<Box<dyn AsyncWrite + Send + Sync>>>,
    killed: bool,
    /// The status once it came (the future is not polled again).
    ended: Option<Option<Status>>,
}

/// The stage's stdout and stderr, in the order they arrive.
pub struct ExecOutput {
    output: mpsc::UnboundedReceiver<Chunk>,
}

impl StageOutput for ExecOutput {
    async fn next_chunk(&mut self) -> Option<Chunk> {
        self.output.recv().await
    }
}

fn forward(
    reader: Option<impl AsyncRead + Unpin + Send + 'static>,
    kind: StreamKind,
    output: mpsc::UnboundedSender<Chunk>,
) {
    let Some(mut reader) = reader else {
        return;
    };
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => {
                    let chunk = Chunk {
                        kind,
                        data: buffer[..count].to_vec(),
                    };
                    if output.send(chunk).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Where a legacy stage runs.
pub struct Target<'a> {
    /// The job's pods.
    pub pods: &'a Api<Pod>,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod.
    pub pod: &'a str,
    /// `build` or `helper`.
    pub container: &'a str,
    /// `umask 0000` first (a helper stage without `FF_DISABLE_UMASK_FOR_KUBERNETES_EXECUTOR`,
    /// as upstream's `gitlab-runner-build`).
    pub umask: bool,
    /// How often the pod is looked at while the stage runs.
    pub poll_interval: std::time::Duration,
}

/// Starts `script` in the target's container as one exec, the script on its stdin.
pub async fn start(
    target: Target<'_>,
    script: &str,
    retry: &RetryPolicy,
) -> Result<(ExecStage, ExecOutput), ExecutorError> {
    let Target {
        pods,
        namespace,
        pod,
        container,
        umask,
        poll_interval,
    } = target;
    ensure_running(pods, namespace, pod, StreamPurpose::Exec, retry).await?;
    let params = AttachParams::default()
        .container(container)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .max_stdout_buf_size(1024 * 1024)
        .max_stderr_buf_size(1024 * 1024);
    let command = shell_command();
    let mut process = retry
        .run("starting the stage", |_| {
            pods.exec(pod, command.clone(), &params)
        })
        .await
        .map_err(|error| {
            ExecutorError::system(format!(
                "starting the stage in container {container}: {error}"
            ))
        })?;
    let status: StatusFuture = match process.take_status() {
        Some(status) => Box::pin(status),
        None => Box::pin(async { None }),
    };
    let (sender, receiver) = mpsc::unbounded_channel();
    forward(process.stdout(), StreamKind::Stdout, sender.clone());
    forward(process.stderr(), StreamKind::Stderr, sender);
    let mut stdin: Option<Pin<Box<dyn AsyncWrite + Send + Sync>>> =
        process.stdin().map(|stdin| Box::pin(stdin) as _);
    if let Some(writer) = stdin.as_mut() {
        let mut text = if umask {
            "umask 0000\n".to_string()
        } else {
            String::new()
        };
        text.push_str(script);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("exit\n");
        // A shell that exits before reading it all closes the pipe; its status tells.
        let _ = writer.write_all(text.as_bytes()).await;
        let _ = writer.flush().await;
    }
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Ok((
        ExecStage {
            pods: pods.clone(),
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            poll,
            process,
            status,
            stdin,
            killed: false,
            ended: None,
        },
        ExecOutput { output: receiver },
    ))
}

impl StageProcess for ExecStage {
    type Exit = i32;

    async fn wait(&mut self) -> Result<i32, ExecutorError> {
        if self.killed {
            return Ok(KILLED);
        }
        while self.ended.is_none() {
            tokio::select! {
                status = &mut self.status => {
                    self.ended = Some(status);
                    self.stdin = None;
                }
                // The pod gone, evicted or dead ends the stage as a system failure, not as the
                // stream's end.
                _ = self.poll.tick() => {
                    if let Some(error) = check_pod(&self.pods, &self.namespace, &self.pod).await {
                        return Err(error);
                    }
                }
            }
        }
        let status = self.ended.clone().flatten();
        exec_status_code(status.as_ref()).map_err(ExecutorError::system)
    }

    async fn terminate(&mut self) -> bool {
        false
    }

    async fn kill(&mut self) {
        self.process.abort();
        self.stdin = None;
        self.killed = true;
    }
}
