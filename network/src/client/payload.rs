//! Reading what GitLab answered: a job payload (and, when it does not parse, the identity that
//! still lets the job be failed), and the `message` of an error body.

use std::time::Duration;

use reqwest::Response;
use runner_core::job::JobResponse;
use runner_core::secret::Secret;
use serde_json::Value;

use super::{error_chain, JobRequestResult};

/// The `message` of a JSON error body: a string, or field errors as `field: a, b; other: c`.
pub(super) fn message_from_body(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return String::new();
    };
    match value.get("message") {
        Some(Value::String(message)) => message.clone(),
        Some(Value::Object(fields)) => fields
            .iter()
            .map(|(field, errors)| {
                let list = match errors {
                    Value::Array(items) => items
                        .iter()
                        .map(|item| {
                            item.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| item.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                format!("{field}: {list}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::new(),
    }
}

/// The job of a 201 answer to `POST jobs/request`, read within `payload_timeout`.
pub(super) async fn parse_job(
    response: Response,
    correlation_id: String,
    payload_timeout: Duration,
) -> JobRequestResult {
    let is_json = response
        .headers()
        .get("Content-Type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().unwrap_or("").trim() == "application/json");
    let bytes = match tokio::time::timeout(payload_timeout, response.bytes()).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => return JobRequestResult::ClientError(error_chain(&error)),
        Err(_) => {
            return JobRequestResult::ClientError(format!(
                "reading the job payload: no complete answer within {}",
                runner_core::settings::format_go_duration(payload_timeout)
            ))
        }
    };
    match JobResponse::from_json(&bytes) {
        Ok(job) => JobRequestResult::Job {
            job: Box::new(job),
            correlation_id,
        },
        Err(error) => {
            let identity = runner_core::job::recover_identity(&bytes);
            let error = without_quoted_values(&error.to_string());
            let problem = if is_json {
                format!("invalid job payload: {error}")
            } else {
                format!("job payload is not JSON: {error}")
            };
            match (identity.id, identity.token) {
                (Some(id), Some(token)) => JobRequestResult::Malformed {
                    id,
                    token: Secret::new(token),
                    error: problem,
                },
                (id, _) => {
                    let missing = match id {
                        Some(id) => format!("job {id} has no readable token"),
                        None => "the payload has no readable integer id".to_string(),
                    };
                    JobRequestResult::Failed(format!(
                        "{problem}; the job cannot be failed ({missing}), so GitLab keeps it running until its timeout"
                    ))
                }
            }
        }
    }
}

/// A decoder message with the payload's string values left out: serde quotes the offending
/// value (`invalid type: string "…", expected i64`), and a token in a wrongly typed field would
/// otherwise reach the job log and the runner's log.
pub fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in message.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    quoted = false;
                    out.push_str("…\"");
                }
                _ => escaped = false,
            }
        } else {
            if c == '"' {
                quoted = true;
            }
            out.push(c);
        }
    }
    if quoted {
        out.push('…');
    }
    out
}
