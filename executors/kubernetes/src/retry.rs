//! Which failed API requests are tried again, how often and after how long (upstream's
//! `retry.go` over `retry_limit`, `retry_limits` and `retry_backoff_max`): an error whose text
//! names one of the transient network or etcd conditions, or a `retry_limits` key, is retried;
//! the attempts are that key's count, else `retry_limit`; the waits start at 500 ms and double
//! up to `retry_backoff_max`, without jitter.
//!
//! Rust's errors do not read like Go's (`Connection refused (os error 111)`), so besides the
//! texts a request error is transient when an I/O error in its chain is of a transient kind,
//! and an API answer of 429 or 503 (which client-go, under upstream, retries by itself) is
//! too, as is an exec or attach upgrade refused with 429 or a 5xx (kube-rs drops the body that
//! would say `error dialing backend`). `retry_limits` keys still match the rendered error, as upstream's do.
//!
//! An answer that asks for a wait (a 429 or 5xx whose Status carries `retryAfterSeconds`, as
//! the `Retry-After` header of a throttling API server comes with) is tried again after that
//! wait, up to ten times in all as client-go does under upstream.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// The texts upstream treats as transient.
pub const TRANSIENT: &[&str] = &[
    "error dialing backend",
    "TLS handshake timeout",
    "read: connection timed out",
    "connect: connection timed out",
    "Timeout occurred",
    "etcdserver: request timed out",
    "http2: client connection lost",
    "connection refused",
    "tls: internal error",
    "unexpected EOF",
    "connection reset by peer",
    "software caused connection abort",
    "broken pipe",
];

/// How a failed request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `retry_limit`: attempts in all.
    pub limit: u32,
    /// `retry_limits`: attempts by a text the error contains.
    pub limits: BTreeMap<String, u32>,
    /// `retry_backoff_max`.
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// The attempts in all for a request that failed with `error`; `None` when it is not
    /// retried. A `retry_limits` text wins over the transient list.
    pub fn attempts_for(&self, error: &str) -> Option<u32> {
        if let Some(attempts) = self
            .limits
            .iter()
            .find(|(text, _)| error.contains(text.as_str()))
            .map(|(_, attempts)| *attempts)
        {
            return Some(attempts);
        }
        TRANSIENT
            .iter()
            .any(|text| error.contains(text))
            .then_some(self.limit)
    }

    /// The wait before attempt `attempt` (the second attempt is 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = Duration::from_millis(500)
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        doubled.min(self.backoff_max)
    }
}

/// The error with its causes, as one line.
pub fn render(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A request error as client-go's error reads: an API answer is its Status message
/// (`namespaces "x" not found`), anything else its chain of causes.
pub fn api_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => render(other),
    }
}

/// Whether a request error is one of the transient kinds: an I/O error of a network kind in
/// its chain, an API answer of 429 or 503, or one of upstream's texts (in any case).
pub fn is_transient(error: &kube::Error) -> bool {
    if let kube::Error::Api(status) = error {
        if matches!(status.code, 429 | 503) {
            return true;
        }
    }
    // A refused exec or attach upgrade: kube-rs keeps only the status code (the body with
    // upstream's `error dialing backend` is dropped), so a 429 or any 5xx counts.
    if let kube::Error::UpgradeConnection(kube::client::UpgradeConnectionError::ProtocolSwitch(
        code,
    )) = error
    {
        if code.as_u16() == 429 || code.is_server_error() {
            return true;
        }
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{
                BrokenPipe, ConnectionAborted, ConnectionRefused, ConnectionReset, TimedOut,
                UnexpectedEof,
            };
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | BrokenPipe
                    | TimedOut
                    | UnexpectedEof
            ) {
                return true;
            }
        }
        source = cause.source();
    }
    let text = render(error).to_lowercase();
    TRANSIENT
        .iter()
        .any(|transient| text.contains(&transient.to_lowercase()))
}

/// How often client-go, under upstream, retries an answer that asks for a retry later
/// (`maxRetries` of its request).
pub const RETRY_AFTER_ATTEMPTS: u32 = 10;

/// The longest `retryAfterSeconds` honoured; a server asking for more gets this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// The wait an API answer asks for: a 429 or 5xx whose Status carries `retryAfterSeconds`
/// (a throttled answer's `Retry-After` header is put there by [`crate::throttle`], as
/// kube-rs keeps no header of an error), at most [`RETRY_AFTER_MAX`].
pub fn retry_after(error: &kube::Error) -> Option<Duration> {
    let kube::Error::Api(status) = error else {
        return None;
    };
    if status.code != 429 && status.code < 500 {
        return None;
    }
    let seconds = status.details.as_ref()?.retry_after_seconds;
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)).min(RETRY_AFTER_MAX))
}

/// The attempts an answer that asks for a retry later gets at least (as client-go gives it);
/// 0 for every other error.
fn asked_attempts(error: &kube::Error) -> u32 {
    if retry_after(error).is_some() {
        RETRY_AFTER_ATTEMPTS
    } else {
        0
    }
}

impl RetryPolicy {
    /// The attempts in all for a request that failed with `error`; `None` when it is not
    /// retried.
    pub fn attempts_for_error(&self, error: &kube::Error) -> Option<u32> {
        let text = render(error);
        if let Some(attempts) = self
            .limits
            .iter()
            .find(|(key, _)| text.contains(key.as_str()))
            .map(|(_, attempts)| *attempts)
        {
            return Some(attempts);
        }
        is_transient(error).then_some(self.limit)
    }

    /// Runs `request` until it succeeds, fails in a way that is not retried, or has had its
    /// attempts; `what` names it in the debug log. Each call gets its attempt number (1 for
    /// the first), so a request can tell a retry.
    pub async fn run<T, F, Fut>(&self, what: &str, mut request: F) -> Result<T, kube::Error>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 1;
        loop {
            match request(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => match self.attempts_for_error(&error) {
                    Some(attempts) if attempt < attempts.max(asked_attempts(&error)) => {
                        let attempts = attempts.max(asked_attempts(&error));
                        let wait = retry_after(&error).unwrap_or_else(|| self.backoff(attempt));
                        tracing::debug!(
                            "{what} failed ({}); attempt {} of {attempts} in {wait:?}",
                            render(&error),
                            attempt + 1
                        );
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    _ => return Err(error),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            limit: 5,
            limits: BTreeMap::from([("exceeded quota".to_string(), 2)]),
            backoff_max: Duration::from_millis(2000),
        }
    }

    #[test]
    fn transient_errors_are_retried_and_others_are_not() {
        let policy = policy();
        assert_eq!(
            policy.attempts_for("dial tcp 10.0.0.1:6443: connect: connection refused"),
            Some(5)
        );
        assert_eq!(
            policy.attempts_for("etcdserver: request timed out"),
            Some(5)
        );
        assert_eq!(
            policy.attempts_for("pods \"x\" is forbidden: exceeded quota: compute"),
            Some(2)
        );
        assert_eq!(policy.attempts_for("pods \"x\" not found"), None);
    }

    #[test]
    fn waits_double_from_half_a_second_up_to_the_maximum() {
        let policy = policy();
        let waits: Vec<u128> = (1..=5)
            .map(|attempt| policy.backoff(attempt).as_millis())
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 2000, 2000]);
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn io_kinds_429_503_and_upstreams_texts_are_transient_in_rusts_wording_too() {
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )));
        assert!(is_transient(&refused));
        assert!(is_transient(&api_error(429, "too many requests")));
        assert!(is_transient(&api_error(503, "unavailable")));
        assert!(is_transient(&api_error(
            500,
            "etcdserver: request timed out"
        )));
        assert!(!is_transient(&api_error(404, "pods \"x\" not found")));
        assert!(!is_transient(&api_error(409, "already exists")));
        let refused = |code: u16| {
            kube::Error::UpgradeConnection(kube::client::UpgradeConnectionError::ProtocolSwitch(
                http::StatusCode::from_u16(code).unwrap(),
            ))
        };
        assert!(is_transient(&refused(500)));
        assert!(is_transient(&refused(429)));
        assert!(!is_transient(&refused(404)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_tried_again_until_it_works_or_its_attempts_are_used() {
        let policy = policy();
        let mut calls = Vec::new();
        let result = policy
            .run("get", |attempt| {
                calls.push(attempt);
                async move {
                    if attempt < 3 {
                        Err(api_error(503, "unavailable"))
                    } else {
                        Ok(attempt)
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(calls, [1, 2, 3]);
        let mut tries = 0;
        let result: Result<(), _> = policy
            .run("create", |_| {
                tries += 1;
                async { Err(api_error(403, "forbidden: exceeded quota: compute")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tries, 2, "retry_limits' count");
        let mut tries = 0;
        let result: Result<(), _> = policy
            .run("get", |_| {
                tries += 1;
                async { Err(api_error(404, "not found")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tries, 1);
    }

    /// A throttling answer as the API server's body reads.
    fn throttled(seconds: u32) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Too many requests, please try again later.",
            "reason": "TooManyRequests", "code": 429,
            "details": {"retryAfterSeconds": seconds}
        }))
        .unwrap();
        kube::Error::Api(status.boxed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_answer_waits_as_asked_and_gets_client_gos_ten_attempts() {
        let policy = policy();
        let started = tokio::time::Instant::now();
        let mut waited = Vec::new();
        let result: Result<(), _> = policy
            .run("list", |_| {
                waited.push(started.elapsed().as_secs());
                async { Err(throttled(3)) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(waited, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
        assert_eq!(retry_after(&throttled(600)), Some(RETRY_AFTER_MAX));
        assert_eq!(retry_after(&throttled(0)), None);
        assert_eq!(retry_after(&api_error(429, "no details")), None);
        // Without the server's wait, a 429 has the configured attempts and backoff.
        let mut tries = 0;
        let result: Result<(), _> = policy
            .run("get", |_| {
                tries += 1;
                async { Err(api_error(429, "too many requests")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tries, 5);
    }
}
