//! Native steps (`run:` jobs) in the Docker executor, as upstream: the helper copies itself
//! into a job volume (`steps bootstrap`), the build container's command becomes
//! `<that copy> steps serve <the usual shell>` (ordinary stages still get their script on
//! stdin; the wrapped shell starts at its first byte), and the `step_run` stage starts the
//! build container with nothing on its stdin, reads the socket from serve's
//! `step-runner is listening on socket <path>` line, and reaches the service through
//! `docker exec … steps proxy --socket <path>`: a new exec for every dial, so a dropped exec
//! is redialled and the log resumed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use runner_core::executor::ExecutorError;
use runner_core::log::StreamKind;
use runner_core::stage_runner::{Chunk, StageOutput};
use runner_steps::client::{Dialer, Transport};
use runner_steps::serve::LISTENING;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::system;

/// Where the job's copy of the helper lives in the build container.
pub(crate) const STEPS_DIR: &str = "/opt/gitlab-runner";
/// The job's copy of the helper.
pub(crate) const STEPS_HELPER: &str = "/opt/gitlab-runner/gitlab-runner-helper";

/// Runs `steps bootstrap` in a helper container with `volume` at [`STEPS_DIR`] (no network,
/// read-only root, removed after).
pub(crate) async fn bootstrap(
    docker: &Docker,
    helper_image: &str,
    volume: &str,
    labels: std::collections::HashMap<String, String>,
) -> Result<(), ExecutorError> {
    let failed = |what: String| system(format!("bootstrapping the step runner: {what}"));
    let random: u32 = rand::random();
    let name = format!("{volume}-bootstrap-{random:08x}");
    let body = ContainerCreateBody {
        image: Some(helper_image.to_string()),
        cmd: Some(vec![
            crate::HELPER_PATH.into(),
            "steps".into(),
            "bootstrap".into(),
            STEPS_HELPER.into(),
        ]),
        labels: Some(labels),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{volume}:{STEPS_DIR}")]),
            readonly_rootfs: Some(true),
            network_mode: Some("none".into()),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(|error| failed(error.to_string()))?;
    let outcome = async {
        docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|error| error.to_string())?;
        let mut wait = docker.wait_container(
            &created.id,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        let mut code = 0;
        while let Some(item) = wait.next().await {
            match item {
                Ok(response) => code = response.status_code,
                Err(bollard::errors::Error::DockerContainerWaitError { code: failed, .. }) => {
                    code = failed
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        if code == 0 {
            return Ok(());
        }
        let mut logs = docker.logs(
            &created.id,
            Some(
                bollard::query_parameters::LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let mut printed = String::new();
        while let Some(Ok(line)) = logs.next().await {
            printed.push_str(&String::from_utf8_lossy(&line.into_bytes()));
        }
        if printed.contains("unrecognized subcommand")
            || printed.contains("Command steps not found")
        {
            return Err(
                "helper does not contain CI Steps support: please upgrade the helper image".into(),
            );
        }
        Err(format!("exit code {code}: {}", printed.trim()))
    }
    .await;
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    outcome.map_err(failed)
}

/// The build container's command in a steps job: serve, wrapping `command`.
pub(crate) fn serve_command(command: Vec<String>) -> Vec<String> {
    let mut wrapped = vec![STEPS_HELPER.to_string(), "steps".into(), "serve".into()];
    wrapped.extend(command);
    wrapped
}

/// A build container's output with serve's own line left out: ordinary stages of a steps job
/// show only what their script prints.
pub(crate) struct WithoutListening<O> {
    inner: O,
    /// Stderr held until its first line is known not to be serve's.
    held: Option<Vec<u8>>,
}

impl<O> WithoutListening<O> {
    pub(crate) fn new(inner: O) -> Self {
        Self {
            inner,
            held: Some(Vec::new()),
        }
    }
}

impl<O: StageOutput> StageOutput for WithoutListening<O> {
    async fn next_chunk(&mut self) -> Option<Chunk> {
        loop {
            let Some(chunk) = self.inner.next_chunk().await else {
                // The end: what was held is output after all.
                return self
                    .held
                    .take()
                    .filter(|held| !held.is_empty())
                    .map(|data| Chunk {
                        kind: StreamKind::Stderr,
                        data,
                    });
            };
            let Some(held) = self.held.as_mut() else {
                return Some(chunk);
            };
            if chunk.kind != StreamKind::Stderr {
                return Some(chunk);
            }
            held.extend_from_slice(&chunk.data);
            let Some(end) = held.iter().position(|byte| *byte == b'\n') else {
                if held.len() > 4096
                    || !LISTENING
                        .as_bytes()
                        .starts_with(&held[..held.len().min(LISTENING.len())])
                {
                    let data = self.held.take().unwrap_or_default();
                    return Some(Chunk {
                        kind: StreamKind::Stderr,
                        data,
                    });
                }
                continue;
            };
            let mut data = self.held.take().unwrap_or_default();
            if data.starts_with(LISTENING.as_bytes()) {
                data.drain(..=end);
                if data.is_empty() {
                    continue;
                }
            }
            return Some(Chunk {
                kind: StreamKind::Stderr,
                data,
            });
        }
    }
}

/// One `docker exec … steps proxy` as a byte stream: its stdout is the service's bytes, its
/// stdin the client's; what it says on stderr is only logged for the operator.
struct ExecStream {
    output: BoxStream<'static, Result<LogOutput, bollard::errors::Error>>,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    pending: bytes::Bytes,
}

impl AsyncRead for ExecStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let take = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(take);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match self.output.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Ok(LogOutput::StdOut { message }))) => self.pending = message,
                Poll::Ready(Some(Ok(LogOutput::StdErr { message }))) => {
                    tracing::debug!(text = %String::from_utf8_lossy(&message), "steps proxy");
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Err(std::io::Error::other(error)))
                }
            }
        }
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.input.as_mut().poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.input.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.input.as_mut().poll_shutdown(cx)
    }
}

/// Dials the service in container `id` at `socket` with a new `docker exec` each time.
pub(crate) fn exec_dialer(docker: Docker, id: String, socket: String) -> Dialer {
    std::sync::Arc::new(move || {
        let docker = docker.clone();
        let id = id.clone();
        let socket = socket.clone();
        Box::pin(async move {
            let exec = docker
                .create_exec(
                    &id,
                    bollard::models::ExecConfig {
                        cmd: Some(vec![
                            STEPS_HELPER.into(),
                            "steps".into(),
                            "proxy".into(),
                            "--socket".into(),
                            socket,
                        ]),
                        attach_stdin: Some(true),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        tty: Some(false),
                        ..Default::default()
                    },
                )
                .await
                .map_err(std::io::Error::other)?;
            match docker
                .start_exec(&exec.id, None)
                .await
                .map_err(std::io::Error::other)?
            {
                bollard::exec::StartExecResults::Attached { output, input } => {
                    Ok(Box::new(ExecStream {
                        output: output.boxed(),
                        input,
                        pending: bytes::Bytes::new(),
                    }) as Box<dyn Transport>)
                }
                bollard::exec::StartExecResults::Detached => {
                    Err(std::io::Error::other("the proxy's exec started detached"))
                }
            }
        })
    })
}

/// Reads the attached build container's output until serve's line: the socket path.
pub(crate) async fn listening_socket(
    output: &mut (impl StageOutput + ?Sized),
) -> Result<String, ExecutorError> {
    let mut stderr = Vec::new();
    while let Some(chunk) = output.next_chunk().await {
        if chunk.kind != StreamKind::Stderr {
            continue;
        }
        stderr.extend_from_slice(&chunk.data);
        if let Some(path) = runner_steps::serve::advertised_socket(&stderr) {
            return Ok(path);
        }
        if stderr.len() > 64 * 1024 {
            break;
        }
    }
    Err(system(format!(
        "the step runner in the build container ended before it listened: {}",
        String::from_utf8_lossy(&stderr).trim()
    )))
}
