//! Checks shared by the file's counts and durations: not negative, within bounds, parseable.

use std::time::Duration;

use runner_core::settings::parse_go_duration;

use super::{invalid, ConfigError};

pub(super) fn positive(key: &str, value: Option<i64>, default: i64) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) if value < 0 => Err(invalid(key, value, "must not be negative")),
        Some(value) => Ok(value),
    }
}

/// The most jobs or requests a count may allow: far beyond any machine, and far below the
/// semaphore limit past which building the runner's state would panic.
pub const MAX_COUNT: i64 = 1_000_000;

/// A count such as `concurrent`, `limit` or `request_concurrency`: not negative and at most
/// [`MAX_COUNT`].
pub(super) fn count(key: &str, value: Option<i64>, default: i64) -> Result<usize, ConfigError> {
    let value = positive(key, value, default)?;
    if value > MAX_COUNT {
        return Err(invalid(key, value, &format!("must be at most {MAX_COUNT}")));
    }
    Ok(value as usize)
}

/// A retry or attempt count kept in a `u32`; 0 means the default.
pub(super) fn attempts(key: &str, value: Option<i64>, default: u32) -> Result<u32, ConfigError> {
    match positive(key, value, i64::from(default))? {
        0 => Ok(default),
        value => u32::try_from(value)
            .map_err(|_| invalid(key, value, &format!("must be at most {}", u32::MAX))),
    }
}

pub(super) fn duration(key: &str, value: &Option<String>) -> Result<Option<Duration>, ConfigError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => parse_go_duration(text)
            .map(Some)
            .ok_or_else(|| invalid(key, text, "expected a duration such as 30s, 10m or 1h")),
    }
}
