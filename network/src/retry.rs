//! Upstream's generic API retry (`network/retry_requester.go`): 408, 429, 500, 502, 503, 504 and
//! any status from 512 up are retried, five attempts in all, honouring `RateLimit-ResetTime` and
//! `Retry-After`, otherwise exponential backoff from 100 ms to 60 s with jitter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::{RequestBuilder, Response, StatusCode};

/// How many times one request is sent at most, counting the first try.
pub const MAX_ATTEMPTS: u32 = 5;

/// Whether an answer with `status` is sent again: 408, 429, 500, 502, 503, 504, or 512 and above.
pub fn is_retriable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504) || status.as_u16() >= 512
}

/// Parses an RFC 1123 date (`Mon, 02 Jan 2006 15:04:05 GMT`) into seconds since the epoch.
pub fn parse_http_date(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u32 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|name| *name == parts[2])? as u32
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let time: Vec<i64> = parts[4].split(':').filter_map(|p| p.parse().ok()).collect();
    if time.len() != 3 {
        return None;
    }
    let days = runner_core::log::days_from_civil(year, month, day);
    let seconds = days * 86_400 + time[0] * 3600 + time[1] * 60 + time[2];
    u64::try_from(seconds).ok()
}

/// How long to wait before the next attempt.
pub fn retry_wait(response: &Response, attempt: u32) -> Duration {
    let headers = response.headers();
    if let Some(reset) = headers
        .get("RateLimit-ResetTime")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_http_date)
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if reset > now {
            return Duration::from_secs(reset - now);
        }
    }
    if let Some(seconds) = headers
        .get("Retry-After")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
    {
        return Duration::from_secs(seconds);
    }
    backoff(attempt)
}

/// Exponential backoff: 100 ms doubling up to 60 s, with up to 50% jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(2u32.saturating_pow(attempt));
    let base = base.min(Duration::from_secs(60));
    let jitter = rand::thread_rng().gen_range(0.0..0.5);
    base.mul_f64(1.0 + jitter).min(Duration::from_secs(60))
}

/// Sends the request built by `build`, retrying retriable statuses. The last retriable response
/// is returned as it is. Transport errors are not retried here.
pub async fn send(build: impl Fn() -> RequestBuilder) -> Result<(Response, bool), reqwest::Error> {
    let mut saw_retriable = false;
    let mut attempt = 0;
    loop {
        let response = build().send().await?;
        attempt += 1;
        if !is_retriable(response.status()) || attempt >= MAX_ATTEMPTS {
            return Ok((response, saw_retriable));
        }
        saw_retriable = true;
        let wait = retry_wait(&response, attempt - 1);
        tracing::debug!(status = %response.status(), ?wait, "retrying API request");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:10 GMT"), Some(10));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn retriable_statuses() {
        for code in [408, 429, 500, 502, 503, 504, 512, 599] {
            assert!(is_retriable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [200, 201, 204, 400, 403, 404, 409, 412, 416, 501, 505] {
            assert!(!is_retriable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn backoff_is_bounded() {
        assert!(backoff(0) >= Duration::from_millis(100));
        assert!(backoff(30) <= Duration::from_secs(60));
    }
}
