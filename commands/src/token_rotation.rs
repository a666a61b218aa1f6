//! Runner authentication tokens that expire: `run` resets each one before it does, as upstream's
//! `resetRunnerTokens` (at three quarters of the way from `token_obtained_at` to
//! `token_expires_at`), saves the new token and its dates into `config.toml`, and the running
//! loop picks the file up like any other edit. `FF_DISABLE_AUTOMATIC_TOKEN_ROTATION` in a
//! runner's `[runners.feature_flags]` turns this off for it, with upstream's warning instead.
//! `reset-token` does the same on demand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use network::ResetTokenResult;
use runner_core::secret::Secret;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RawConfig, RawRunner};

/// Upstream's `TokenResetIntervalFactor`: reset once this share of the token's life is over.
const RESET_AT_SHARE_OF_LIFE: f64 = 0.75;

/// How often the file is read again while nothing is due, so an edited expiry counts.
const RECHECK: Duration = Duration::from_secs(60);

/// How long a runner whose reset failed waits before the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5 * 60);

/// Parses an RFC 3339 / TOML date-time (`2026-12-01T10:00:00Z`, fractions and offsets
/// allowed, a space for the `T` too); Go's zero time (`0001-01-01…`) is `None`, as upstream's
/// `IsZero`.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if text.len() < 19 || text.starts_with("0001-01-01") {
        return None;
    }
    let bytes = text.as_bytes();
    let number =
        |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse::<i64>().ok() };
    if bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let mut scaled = fraction[..digits.min(9)].to_string();
        while scaled.len() < 9 {
            scaled.push('0');
        }
        nanos = scaled.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = runner_core::log::days_from_civil(year, month as u32, day as u32);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// `time` as a TOML date-time in UTC, whole seconds, for `token_obtained_at`.
pub fn toml_time(time: SystemTime) -> Option<toml::Value> {
    let stamp = runner_core::log::format_timestamp(time);
    // `YYYY-MM-DDTHH:MM:SS.ffffffZ` → whole seconds.
    toml_time_from_text(&format!("{}Z", stamp.get(..19)?))
}

/// A date-time GitLab wrote (`2026-12-01T10:00:00.000Z`) as a TOML date-time.
pub fn toml_time_from_text(text: &str) -> Option<toml::Value> {
    parse_time(text)?;
    text.parse::<toml::value::Datetime>()
        .ok()
        .map(toml::Value::Datetime)
}

fn time_of(value: &Option<toml::Value>) -> Option<SystemTime> {
    match value.as_ref()? {
        toml::Value::Datetime(datetime) => parse_time(&datetime.to_string()),
        toml::Value::String(text) => parse_time(text),
        _ => None,
    }
}

/// When `runner`'s token is due for a reset: `None` when it does not expire.
pub fn reset_time(runner: &RawRunner) -> Option<SystemTime> {
    let expires = time_of(&runner.token_expires_at)?;
    let obtained = time_of(&runner.token_obtained_at).unwrap_or(expires);
    let life = expires.duration_since(obtained).unwrap_or_default();
    Some(obtained + life.mul_f64(RESET_AT_SHARE_OF_LIFE))
}

/// The runner whose token is due first (its index in `raw.runners`), skipping tokens in `hold`
/// until their time there.
fn next_reset(
    raw: &RawConfig,
    hold: &HashMap<String, SystemTime>,
    now: SystemTime,
) -> Option<(usize, SystemTime)> {
    raw.runners
        .iter()
        .enumerate()
        .filter_map(|(index, runner)| {
            let at = reset_time(runner)?;
            let at = match hold.get(&runner.token) {
                Some(until) if *until > now => at.max(*until),
                _ => at,
            };
            Some((index, at))
        })
        .min_by_key(|(_, at)| *at)
}

fn rotation_disabled(runner: &RawRunner) -> bool {
    runner
        .feature_flags
        .get("FF_DISABLE_AUTOMATIC_TOKEN_ROTATION")
        .copied()
        .unwrap_or(false)
}

/// Resets the token of `raw.runners[index]` with GitLab and writes the new one, with its dates,
/// into `raw`. Logs upstream's `Resetting runner authentication token...` outcome lines.
pub async fn reset_one(
    raw: &mut RawConfig,
    index: usize,
    personal_access_token: Option<&Secret<String>>,
) -> bool {
    let runner = &raw.runners[index];
    let short = runner_core::dirs::short_token(&runner.token);
    let client = match crate::admin::client_for(
        &runner.url,
        runner.tls_ca_file.clone().map(PathBuf::from),
    ) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(runner = %short, "Resetting runner authentication token... failed: {error:#}");
            return false;
        }
    };
    let token = Secret::new(runner.token.clone());
    match client
        .reset_token(&token, runner.id, personal_access_token)
        .await
    {
        ResetTokenResult::Reset { token, expires_at } => {
            tracing::info!(runner = %short, "Resetting runner authentication token... succeeded");
            let runner = &mut raw.runners[index];
            runner.token = token.expose().clone();
            runner.token_obtained_at = toml_time(SystemTime::now());
            runner.token_expires_at = expires_at.as_deref().and_then(toml_time_from_text);
            true
        }
        ResetTokenResult::Forbidden(status) => {
            tracing::error!(runner = %short, status = %status, "Resetting runner authentication token... failed (check used token)");
            false
        }
        ResetTokenResult::ClientError(status) => {
            tracing::error!(runner = %short, status = %status, "Resetting runner authentication token... client error");
            false
        }
        ResetTokenResult::Failed(status) => {
            tracing::error!(runner = %short, status = %status, "Resetting runner authentication token... failed");
            false
        }
    }
}

/// Runs beside `run`'s loop until `stop`: resets each expiring token when it is due and saves
/// the file (the loop reloads it).
pub async fn rotate_tokens(path: PathBuf, system_id: String, stop: CancellationToken) {
    let mut hold: HashMap<String, SystemTime> = HashMap::new();
    loop {
        let now = SystemTime::now();
        let wait = match Config::load(&path) {
            Err(error) => {
                tracing::error!("Failed to load config (token reset): {error}");
                RECHECK
            }
            Ok(config) => match next_reset(&config.raw, &hold, now) {
                None => RECHECK,
                Some((_, at)) if at > now => {
                    at.duration_since(now).unwrap_or_default().min(RECHECK)
                }
                Some((index, _)) => {
                    rotate_due(&path, config.raw, index, &system_id, &mut hold).await;
                    Duration::ZERO
                }
            },
        };
        tokio::select! {
            // The runner is stopping: nothing more to rotate.
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn rotate_due(
    path: &Path,
    mut raw: RawConfig,
    index: usize,
    system_id: &str,
    hold: &mut HashMap<String, SystemTime>,
) {
    let runner = &raw.runners[index];
    if rotation_disabled(runner) {
        tracing::warn!(
            "Automatic token rotation is disabled for runner: {}-{system_id}. Your token is about to expire",
            runner_core::dirs::short_token(&runner.token)
        );
        // Said once per token: it is not asked about again until it changes.
        hold.insert(
            runner.token.clone(),
            SystemTime::now() + Duration::from_secs(u32::MAX.into()),
        );
        return;
    }
    let old_token = runner.token.clone();
    if !reset_one(&mut raw, index, None).await {
        hold.insert(old_token, SystemTime::now() + RETRY_AFTER_FAILURE);
        return;
    }
    if let Err(error) = Config::save_raw(path, &raw) {
        tracing::error!("Failed to save config: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_and_go_zero_is_none() {
        let at = parse_time("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(
            at.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_796_119_200
        );
        assert_eq!(
            parse_time("2026-12-01T12:00:00.500+02:00").unwrap(),
            at + Duration::from_millis(500)
        );
        assert_eq!(parse_time("2026-12-01 10:00:00Z"), Some(at));
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn the_reset_is_due_at_three_quarters_of_the_tokens_life() {
        let runner = RawRunner {
            token_obtained_at: toml_time_from_text("2026-12-01T00:00:00Z"),
            token_expires_at: toml_time_from_text("2026-12-05T00:00:00Z"),
            ..RawRunner::default()
        };
        assert_eq!(reset_time(&runner), parse_time("2026-12-04T00:00:00Z"));
        let never = RawRunner {
            token_expires_at: toml_time_from_text("0001-01-01T00:00:00Z"),
            ..RawRunner::default()
        };
        assert_eq!(reset_time(&never), None);
    }
}
