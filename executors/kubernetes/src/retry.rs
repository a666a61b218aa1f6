//! Which failed API requests are tried again, how often and after how long (upstream's
//! `retry.go` over `retry_limit`, `retry_limits` and `retry_backoff_max`): an error whose text
//! names one of the transient network or etcd conditions, or a `retry_limits` key, is retried;
//! the attempts are that key's count, else `retry_limit`; the waits start at 500 ms and double
//! up to `retry_backoff_max`, without jitter.

use std::collections::BTreeMap;
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
}
