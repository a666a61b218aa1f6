//! The legacy exec strategy (`FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY`): each stage is
//! one exec in the build or helper container running the shell detection, the stage script
//! on its stdin, its stdout and stderr the stage's output and the exec's status its exit
//! code. No markers, no log file: a dropped stream ends the stage (why upstream made attach
//! the default).
//!
//! The script is followed by an `exit` line, so the shell ends without the end of stdin
//! (which kube-rs can only send on `v5.channel.k8s.io`; on v4 it closes the whole stream and
//! the status is lost), and stdin stays open until the status came. A canceled stage has no
//! graceful stop here: its stream is closed (upstream's "build aborted").

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
use crate::session::exec_status_code;

/// The exit code a killed stage reports (its stream closed by the runner).
const KILLED: i32 = 137;

type StatusFuture = Pin<Box<dyn Future<Output = Option<Status>> + Send>>;

/// A stage running as one exec.
pub struct ExecStage {
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

/// Starts `script` in `container` of `pod` as one exec, the script on its stdin.
pub async fn start(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    script: &str,
    retry: &RetryPolicy,
) -> Result<(ExecStage, ExecOutput), ExecutorError> {
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
        let mut text = script.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("exit\n");
        // A shell that exits before reading it all closes the pipe; its status tells.
        let _ = writer.write_all(text.as_bytes()).await;
        let _ = writer.flush().await;
    }
    Ok((
        ExecStage {
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
        if self.ended.is_none() {
            self.ended = Some((&mut self.status).await);
            self.stdin = None;
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
