//! The Docker executor's port to the stage runner: a stage is the job's container started
//! again, attached, with the script on its stdin.
//!
//! The graceful stop runs upstream's SIGTERM script in the build container (every process but
//! the container's first gets SIGTERM, newest first); the helper container runs only the
//! runner's own scripts and is killed at once. The kill is `docker kill -s SIGKILL`.

use bollard::container::LogOutput;
use bollard::query_parameters::{KillContainerOptionsBuilder, WaitContainerOptionsBuilder};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use runner_core::executor::{ExecutorError, ScriptExit};
use runner_core::log::StreamKind;
use runner_core::stage_runner::{Chunk, Ended, StageOutput, StageProcess};

/// Sends SIGTERM to every process of the container but its first, newest first, waiting up to
/// 6 seconds for each to go (upstream's `ContainerSigTermScriptForLinux`, in portable sh).
const SIGTERM_SCRIPT: &str = r#"PIDS=""
for P in /proc/[0-9]*; do PIDS="${P#/proc/} $PIDS"; done
for P in $PIDS; do
  if [ "$P" -ne $$ ] && [ "$P" -ne 1 ] && kill -TERM "$P" 2>/dev/null; then
    ATTEMPTS=6
    while [ -e "/proc/$P" ] && [ "$ATTEMPTS" -gt 0 ]; do sleep 1; ATTEMPTS=$((ATTEMPTS-1)); done
  fi
done
"#;

/// One started container.
pub(crate) struct ContainerStage {
    pub(crate) docker: Docker,
    pub(crate) id: String,
    pub(crate) kind: &'static str,
}

/// The container's attach stream.
pub(crate) struct AttachOutput(
    pub(crate) BoxStream<'static, Result<LogOutput, bollard::errors::Error>>,
);

impl StageOutput for AttachOutput {
    async fn next_chunk(&mut self) -> Option<Chunk> {
        loop {
            let (kind, message) = match self.0.next().await? {
                Ok(LogOutput::StdOut { message }) => (StreamKind::Stdout, message),
                Ok(LogOutput::StdErr { message }) => (StreamKind::Stderr, message),
                // stdin echoes and console output do not occur without a TTY.
                Ok(_) => continue,
                // The attach connection broke: the output is over.
                Err(error) => {
                    tracing::debug!(%error, "the container's attach stream failed");
                    return None;
                }
            };
            return Some(Chunk {
                kind,
                data: message.to_vec(),
            });
        }
    }
}

impl StageProcess for ContainerStage {
    type Exit = i64;

    async fn wait(&mut self) -> Result<i64, ExecutorError> {
        let kind = self.kind;
        let mut wait = self.docker.wait_container(
            &self.id,
            Some(
                WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build(),
            ),
        );
        match wait.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(error)) => Err(ExecutorError::system(format!(
                "waiting for the {kind} container"
            ))
            .with_source(error)),
            None => Err(ExecutorError::system(format!(
                "the {kind} container vanished"
            ))),
        }
    }

    async fn terminate(&mut self) -> bool {
        if self.kind != "build" {
            return false;
        }
        if let Err(error) = self.sigterm_script().await {
            tracing::debug!(container = %self.id, %error, "sending SIGTERM to the container's processes");
        }
        true
    }

    async fn kill(&mut self) {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        if let Err(error) = self.docker.kill_container(&self.id, Some(options)).await {
            tracing::debug!(container = %self.id, %error, "killing the container");
        }
    }

    fn dormant(&self) -> ExecutorError {
        ExecutorError::system(format!(
            "the {} container did not stop after it was killed",
            self.kind
        ))
    }
}

impl ContainerStage {
    /// Runs the SIGTERM script in the container and waits for it to end.
    async fn sigterm_script(&self) -> Result<(), bollard::errors::Error> {
        let exec = self
            .docker
            .create_exec(
                &self.id,
                bollard::models::ExecConfig {
                    cmd: Some(vec!["sh".into(), "-c".into(), SIGTERM_SCRIPT.into()]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        if let bollard::exec::StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await?
        {
            while output.next().await.is_some() {}
        }
        Ok(())
    }
}

/// Upstream's wording of a container's exit (`exit code N`).
pub(crate) fn container_exit(ended: Ended<i64>) -> Result<ScriptExit, ExecutorError> {
    Ok(match ended.exit {
        0 => ScriptExit::Success,
        code => ScriptExit::Failed {
            code: i32::try_from(code).unwrap_or(-1),
            message: format!("exit code {code}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_exits_are_worded_as_upstream() {
        let word = |exit| {
            container_exit(Ended {
                exit,
                stopped: false,
            })
            .ok()
        };
        assert_eq!(word(0), Some(ScriptExit::Success));
        assert_eq!(
            word(137),
            Some(ScriptExit::Failed {
                code: 137,
                message: "exit code 137".into()
            })
        );
    }
}
