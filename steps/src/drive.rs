//! The runner's side of a `run:` job: one client for every executor, which only brings the
//! byte stream (a local socket, `docker exec … steps proxy`, an SSH session, a pod exec).
//!
//! Upstream's sequence (Run, FollowLogs to its end, one Status, Close) and its result mapping,
//! plus what upstream lacks: when the transport drops, a new one is dialled and `FollowLogs`
//! resumes from the byte offset reached, so the job log has no gap and no repeat.

use std::path::PathBuf;
use std::time::Duration;

use runner_core::executor::{ExecutorError, ScriptExit, StepsRequest};
use runner_core::log::JobLog;
use runner_core::FailureReason;
use tokio::io::{AsyncBufReadExt, AsyncRead};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::client::{self, Dialer};
use crate::proto::{self, status_error::ErrorKind, step_result::Status as StepStatus};

/// How often a dropped transport is redialled in a row before the job gives up on it.
const REDIALS: u32 = 20;
/// The pause between two dials.
const REDIAL_PAUSE: Duration = Duration::from_millis(250);
/// How long `Cancel` and `Close` may take.
const CALL_BOUND: Duration = Duration::from_secs(5);
/// The most grace the service gives a request (what it cuts a longer one to).
pub const MAX_GRACE: Duration = Duration::from_secs(30);

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Reads `serve`'s stderr until its [`LISTENING`](crate::serve::LISTENING) line: the socket path it advertises.
pub async fn listening_socket(stderr: impl AsyncRead + Unpin) -> Result<PathBuf, String> {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|error| format!("reading the step runner's output: {error}"))?
    {
        if let Some(path) = crate::serve::socket_in_line(&line) {
            return Ok(PathBuf::from(path));
        }
        if seen.len() < 20 {
            seen.push(line);
        }
    }
    Err(format!(
        "the step runner ended before it listened{}",
        if seen.is_empty() {
            String::new()
        } else {
            format!(": {}", seen.join("; "))
        }
    ))
}

fn run_request(request: &StepsRequest, grace: Duration) -> proto::RunRequest {
    proto::RunRequest {
        id: request.id.clone(),
        work_dir: request.work_dir.clone(),
        env: Default::default(),
        masking: None,
        job: Some(proto::Job {
            variables: request
                .variables
                .iter()
                .map(|variable| proto::Variable {
                    key: variable.key.clone(),
                    value: variable.value.clone(),
                    file: variable.file,
                    masked: variable.masked,
                    raw: variable.raw,
                })
                .collect(),
            job_id: request.id.parse().unwrap_or_default(),
            pipeline_id: 0,
            build_dir: request.work_dir.clone(),
            token_prefixes: request.token_prefixes.clone(),
        }),
        steps: request.steps.clone(),
        timeout_seconds: request
            .timeout
            .map(|timeout| timeout.as_secs_f64().ceil() as i64)
            .unwrap_or_default(),
        graceful_exit_timeout_seconds: grace.as_secs().max(1) as i64,
    }
}

fn transport_error(what: &str, id: &str, status: &tonic::Status) -> ExecutorError {
    ExecutorError::system(format!(
        "executing steps request: {what} job {id:?}: {}",
        status.message()
    ))
}

/// Whether a call failed because the transport is (still) down, so a redial may help. A
/// transport that broke mid-stream shows as `Unknown` or `Internal` from hyper (`h2 protocol
/// error`); a handler's own `Internal` (a panic, a request the service could not set up) does
/// not: redialling would not change it.
fn redial_may_help(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled => true,
        Code::Internal => {
            status.message().contains("h2 protocol error")
                || status.message().contains("connection")
        }
        _ => false,
    }
}

/// A call's failure as the stage's: the service's own `Internal` is the job's problem (a
/// script failure, as upstream has it, so a job cannot forge a system failure); anything
/// else is the transport's.
fn call_error(what: &str, id: &str, status: &tonic::Status) -> ExecutorError {
    if status.code() == Code::Internal && !redial_may_help(status) {
        return ExecutorError::with_reason(
            FailureReason::ScriptFailure,
            format!(
                "executing steps request: {what} job {id:?}: {}",
                status.message()
            ),
        );
    }
    transport_error(what, id, status)
}

/// `exit status N` becomes `exit code N`, as upstream words a step's exit in the job log.
fn worded(message: &str) -> String {
    message.replace("exit status ", "exit code ")
}

/// Runs `request` through the service `dialer` reaches, its log into `log`. `cancel` sends
/// a `Cancel` (the steps get SIGTERM, then SIGKILL after `grace`) and follows the log to its
/// end all the same.
pub async fn run(
    dialer: Dialer,
    request: &StepsRequest,
    log: &JobLog,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<ScriptExit, ExecutorError> {
    let mut client = client::connect_lazy(dialer);
    let id = request.id.clone();
    let run = run_request(request, grace);
    // Wait for ready: the service may still be starting behind a fresh transport.
    let mut tries = 0;
    loop {
        match client.run(run.clone()).await {
            Ok(_) => break,
            Err(status)
                if redial_may_help(&status) && tries < REDIALS && !cancel.is_cancelled() =>
            {
                tries += 1;
                tokio::time::sleep(REDIAL_PAUSE).await;
            }
            Err(status) if status.code() == Code::InvalidArgument => {
                return Err(ExecutorError::with_reason(
                    FailureReason::ScriptFailure,
                    status.message().to_string(),
                ))
            }
            Err(status) => return Err(call_error("running", &id, &status)),
        }
    }
    let result = follow(&mut client, &id, log, cancel, grace).await;
    let status = match result {
        Ok(()) => status_of(&mut client, &id).await,
        Err(error) => Err(error),
    };
    let _ = tokio::time::timeout(
        CALL_BOUND,
        client.close(proto::CloseRequest { id: id.clone() }),
    )
    .await;
    let status = status?;
    result_of(&status)
}

async fn status_of(
    client: &mut crate::proto::step_runner_client::StepRunnerClient<tonic::transport::Channel>,
    id: &str,
) -> Result<proto::Status, ExecutorError> {
    let mut tries = 0;
    loop {
        match client
            .status(proto::StatusRequest { id: id.to_string() })
            .await
        {
            Ok(response) => {
                return response
                    .into_inner()
                    .jobs
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        ExecutorError::system(format!(
                            "executing steps request: no status of job {id:?}"
                        ))
                    })
            }
            Err(status) if redial_may_help(&status) && tries < REDIALS => {
                tries += 1;
                tokio::time::sleep(REDIAL_PAUSE).await;
            }
            Err(status) => return Err(call_error("status of", id, &status)),
        }
    }
}

/// Follows the log from where it is to its end, redialling a dropped transport.
async fn follow(
    client: &mut crate::proto::step_runner_client::StepRunnerClient<tonic::transport::Channel>,
    id: &str,
    log: &JobLog,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<(), ExecutorError> {
    let mut writer = log.prestamped();
    let mut offset: i64 = 0;
    let mut failures = 0;
    let mut canceled_at: Option<tokio::time::Instant> = None;
    loop {
        if let Some(at) = canceled_at {
            // After a cancel the service ends the log within the grace period; past that and
            // more, the transport is not coming back in time.
            if at.elapsed() > grace.min(MAX_GRACE) + CALL_BOUND * 2 {
                return Err(ExecutorError::system(format!(
                    "executing steps request: following job {id:?}: no end of the log after the cancel"
                )));
            }
        }
        let opened = client
            .follow_logs(proto::FollowLogsRequest {
                id: id.to_string(),
                offset,
            })
            .await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            Err(status) if redial_may_help(&status) && failures < REDIALS => {
                failures += 1;
                tokio::time::sleep(REDIAL_PAUSE).await;
                continue;
            }
            Err(status) => return Err(call_error("following", id, &status)),
        };
        loop {
            let deadline = canceled_at.map(|at| at + grace.min(MAX_GRACE) + CALL_BOUND * 2);
            let next = tokio::select! {
                next = stream.message() => next,
                () = sleep_until_some(deadline) => {
                    return Err(ExecutorError::system(format!(
                        "executing steps request: following job {id:?}: no end of the log after the cancel"
                    )));
                }
                () = cancel.cancelled(), if canceled_at.is_none() => {
                    canceled_at = Some(tokio::time::Instant::now());
                    let _ = tokio::time::timeout(
                        CALL_BOUND,
                        client.clone().cancel(proto::CancelRequest { id: id.to_string() }),
                    )
                    .await;
                    continue;
                }
            };
            match next {
                Ok(Some(message)) => {
                    failures = 0;
                    offset += message.data.len() as i64;
                    writer.write(&message.data);
                }
                Ok(None) => {
                    writer.finish();
                    return Ok(());
                }
                Err(status) if redial_may_help(&status) && failures < REDIALS => {
                    tracing::warn!(job = id, offset, error = %status.message(), "the step runner's transport dropped; resuming the log");
                    failures += 1;
                    tokio::time::sleep(REDIAL_PAUSE).await;
                    break;
                }
                Err(status) => return Err(call_error("following", id, &status)),
            }
        }
    }
}

/// Upstream's mapping of the final status onto the stage's result.
fn result_of(status: &proto::Status) -> Result<ScriptExit, ExecutorError> {
    if status.status == StepStatus::Success as i32 {
        return Ok(ScriptExit::Success);
    }
    let message = worded(&status.message);
    let kind = status
        .error
        .as_ref()
        .map(|error| error.kind)
        .unwrap_or(ErrorKind::Unknown as i32);
    match ErrorKind::try_from(kind).unwrap_or(ErrorKind::Unknown) {
        ErrorKind::StepFailure | ErrorKind::Internal => Ok(ScriptExit::Failed {
            code: crate::service::exit_status(&status.message).unwrap_or(status.exit_code),
            message,
        }),
        ErrorKind::Cancelled => Err(ExecutorError::with_reason(
            FailureReason::JobCanceled,
            "canceled",
        )),
        ErrorKind::Timeout => Err(ExecutorError::with_reason(
            FailureReason::JobExecutionTimeout,
            message,
        )),
        ErrorKind::Unknown => Err(ExecutorError::with_reason(
            FailureReason::UnknownFailure,
            message,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: StepStatus, kind: Option<ErrorKind>, message: &str) -> proto::Status {
        proto::Status {
            status: state as i32,
            message: message.into(),
            error: kind.map(|kind| proto::StatusError {
                message: message.into(),
                kind: kind as i32,
            }),
            ..proto::Status::default()
        }
    }

    #[test]
    fn final_states_map_as_upstream_maps_them() {
        assert_eq!(
            result_of(&status(StepStatus::Success, None, "")).ok(),
            Some(ScriptExit::Success)
        );
        assert_eq!(
            result_of(&status(
                StepStatus::Failure,
                Some(ErrorKind::StepFailure),
                "step \"release\": exit status 3"
            ))
            .ok(),
            Some(ScriptExit::Failed {
                code: 3,
                message: "step \"release\": exit code 3".into()
            })
        );
        let reason = |s: proto::Status| result_of(&s).err().map(|e| e.failure_reason());
        assert_eq!(
            reason(status(
                StepStatus::Cancelled,
                Some(ErrorKind::Cancelled),
                "cancelled"
            )),
            Some(FailureReason::JobCanceled)
        );
        assert_eq!(
            reason(status(
                StepStatus::Failure,
                Some(ErrorKind::Timeout),
                "timeout"
            )),
            Some(FailureReason::JobExecutionTimeout)
        );
        assert_eq!(
            reason(status(StepStatus::Failure, Some(ErrorKind::Unknown), "?")),
            Some(FailureReason::UnknownFailure)
        );
    }

    #[tokio::test]
    async fn the_listening_line_names_the_socket_and_an_early_end_says_what_was_printed() {
        let good: &[u8] = b"some noise\nstep-runner is listening on socket /tmp/x/s.sock\n";
        assert_eq!(
            listening_socket(good).await,
            Ok(PathBuf::from("/tmp/x/s.sock"))
        );
        let bad: &[u8] = b"opening socket: listen unix /x: bind: permission denied\n";
        let error = listening_socket(bad).await.expect_err("no line");
        assert!(error.contains("permission denied"), "{error}");
    }
}
