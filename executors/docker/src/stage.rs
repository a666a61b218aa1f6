//! The Docker executor's port to the stage runner: a stage is the job's container started
//! again, attached, with the script on its stdin.
//!
//! The graceful stop runs upstream's SIGTERM script in the build container (every process but
//! the container's first gets SIGTERM, newest first); the helper container runs only the
//! runner's own scripts and is killed at once. The kill is `docker kill -s SIGKILL`.
//!
//! A stage whose container is gone by the time it is attached or started is tried again in a
//! new container, up to `EXECUTOR_JOB_SECTION_ATTEMPTS` times (`Attempts`, upstream's
//! `runContainer`).

use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use runner_core::executor::{ExecutorError, ScriptExit};
use runner_core::log::{JobLog, StreamKind};
use runner_core::stage_runner::{Chunk, Ended, StageOutput, StageProcess, Started};

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

/// Attaching to or starting a stage's container failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The attach request failed.
    #[error("attaching to the {kind} container")]
    Attach {
        kind: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    /// The start request failed.
    #[error("starting the {kind} container")]
    Start {
        kind: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

impl StartError {
    /// The daemon no longer knows the container (removed since it was looked up): upstream's
    /// not-found, the one failure a stage is tried again for.
    pub(crate) fn vanished(&self) -> bool {
        let (Self::Attach { source, .. } | Self::Start { source, .. }) = self;
        is_not_found(source)
    }
}

impl From<StartError> for ExecutorError {
    fn from(error: StartError) -> Self {
        let message = error.to_string();
        let (StartError::Attach { source, .. } | StartError::Start { source, .. }) = error;
        ExecutorError::system(message).with_source(source)
    }
}

/// Docker's 404: no such container (or image, volume, network).
pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Attaches to the container `id` and starts it: a stage for the stage runner, the script to
/// go to its stdin. The attach comes first so that no output is lost.
pub(crate) async fn start(
    docker: Docker,
    id: String,
    kind: &'static str,
) -> Result<Started<ContainerStage, AttachOutput>, StartError> {
    let attach = docker
        .attach_container(
            &id,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdin(true)
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .build(),
            ),
        )
        .await
        .map_err(|source| StartError::Attach { kind, source })?;
    docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|source| StartError::Start { kind, source })?;
    Ok(Started {
        process: ContainerStage { docker, id, kind },
        output: AttachOutput(attach.output),
        stdin: Some(attach.input),
    })
}

/// The tries of one stage (`EXECUTOR_JOB_SECTION_ATTEMPTS`, upstream's `runContainer`): each
/// one asks for the stage's container (a new one when the last is gone) and starts it; one
/// whose container vanished before it started is tried again. The job log says so as
/// upstream does, `Will retry...` even after the last try.
pub(crate) struct Attempts<'a> {
    log: &'a JobLog,
    /// The stage's name, as `Retrying <stage>` names it.
    stage: String,
    max: u32,
    made: u32,
    /// Why the latest try failed, returned once none is left.
    vanished: Option<ExecutorError>,
}

impl<'a> Attempts<'a> {
    /// Up to `max` tries of `stage` (at least one).
    pub(crate) fn new(max: u32, stage: String, log: &'a JobLog) -> Self {
        Self {
            log,
            stage,
            max: max.max(1),
            made: 0,
            vanished: None,
        }
    }

    /// Begins the next try, if one is left; from the second on, the log says `Retrying`.
    pub(crate) fn next(&mut self) -> bool {
        if self.made >= self.max {
            return false;
        }
        self.made += 1;
        if self.made > 1 {
            self.log.info(&format!("Retrying {}", self.stage));
        }
        true
    }

    /// The try's container `id` was gone when it was attached or started.
    pub(crate) fn vanished(&mut self, id: &str, error: ExecutorError) {
        self.log.error(&format!(
            "Container {id:?} not found or removed. Will retry..."
        ));
        self.vanished = Some(error);
    }

    /// No try is left: the error of the last one (with more than one allowed, the log says
    /// they are used up).
    pub(crate) fn exhausted(self) -> ExecutorError {
        if self.max > 1 {
            self.log.error("Execution attempts exceeded");
        }
        self.vanished
            .unwrap_or_else(|| ExecutorError::system("the stage was not tried"))
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

    use runner_core::log::{LogOptions, ANSI_BOLD_GREEN, ANSI_BOLD_RED, ANSI_RESET};

    fn new_log() -> JobLog {
        JobLog::new(LogOptions {
            timestamps: false,
            ..LogOptions::default()
        })
        .unwrap()
    }

    fn log_text(log: &JobLog) -> String {
        String::from_utf8(log.contents()).unwrap()
    }

    fn gone() -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "No such container: 4b1d".into(),
        }
    }

    /// What `run` does with the tries, each attempt's start given by `starts` (`Ok` starts the
    /// stage, whose result ends it): the containers asked for, and the result.
    fn drive(
        max: u32,
        log: &JobLog,
        mut starts: Vec<Result<(), StartError>>,
    ) -> (Vec<String>, Result<ScriptExit, ExecutorError>) {
        starts.reverse();
        let mut asked = Vec::new();
        let mut attempts = Attempts::new(max, "step_script".into(), log);
        while attempts.next() {
            let id = format!("c{}", asked.len() + 1);
            asked.push(id.clone());
            match starts.pop().expect("a start for every try") {
                Ok(()) => return (asked, Ok(ScriptExit::Success)),
                Err(error) if error.vanished() => attempts.vanished(&id, error.into()),
                Err(error) => return (asked, Err(error.into())),
            }
        }
        (asked, Err(attempts.exhausted()))
    }

    #[test]
    fn only_a_missing_container_is_a_vanished_one() {
        let attach = StartError::Attach {
            kind: "build",
            source: gone(),
        };
        assert!(attach.vanished());
        let start = StartError::Start {
            kind: "predefined",
            source: gone(),
        };
        assert!(start.vanished());
        let conflict = StartError::Start {
            kind: "build",
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "container is marked for removal".into(),
            },
        };
        assert!(!conflict.vanished());
        let error = ExecutorError::from(start);
        assert_eq!(error.message(), "starting the predefined container");
        assert!(error.full_message().contains("No such container: 4b1d"));
    }

    #[test]
    fn a_vanished_container_is_retried_in_a_new_one() {
        let log = new_log();
        let (asked, result) = drive(
            3,
            &log,
            vec![
                Err(StartError::Attach {
                    kind: "build",
                    source: gone(),
                }),
                Ok(()),
            ],
        );
        assert_eq!(asked, ["c1", "c2"]);
        assert_eq!(result.unwrap(), ScriptExit::Success);
        assert_eq!(
            log_text(&log),
            format!(
                "{ANSI_BOLD_RED}ERROR: Container \"c1\" not found or removed. Will retry...{ANSI_RESET}\n\
                 {ANSI_BOLD_GREEN}Retrying step_script{ANSI_RESET}\n"
            )
        );
    }

    #[test]
    fn attempts_run_out_as_upstreams_do() {
        let vanished = || {
            Err(StartError::Start {
                kind: "build",
                source: gone(),
            })
        };
        let log = new_log();
        let (asked, result) = drive(2, &log, vec![vanished(), vanished()]);
        assert_eq!(asked, ["c1", "c2"]);
        let error = result.unwrap_err();
        assert_eq!(error.message(), "starting the build container");
        let text = log_text(&log);
        assert_eq!(
            text.matches("not found or removed. Will retry...").count(),
            2
        );
        assert_eq!(text.matches("Retrying step_script").count(), 1);
        assert!(text.ends_with(&format!(
            "{ANSI_BOLD_RED}ERROR: Execution attempts exceeded{ANSI_RESET}\n"
        )));

        // One attempt (the default): upstream still says it will retry, but not that the
        // attempts ran out.
        let log = new_log();
        let (asked, result) = drive(1, &log, vec![vanished()]);
        assert_eq!(asked, ["c1"]);
        assert!(result.is_err());
        assert_eq!(
            log_text(&log),
            format!("{ANSI_BOLD_RED}ERROR: Container \"c1\" not found or removed. Will retry...{ANSI_RESET}\n")
        );
    }

    #[test]
    fn other_start_failures_are_not_retried() {
        let log = new_log();
        let (asked, result) = drive(
            5,
            &log,
            vec![Err(StartError::Start {
                kind: "build",
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 500,
                    message: "OCI runtime create failed".into(),
                },
            })],
        );
        assert_eq!(asked, ["c1"]);
        assert_eq!(
            result.unwrap_err().message(),
            "starting the build container"
        );
        assert_eq!(log_text(&log), "");
    }

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
