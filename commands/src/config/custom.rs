//! `[runners.custom]`: the custom executor's programs, arguments and timeouts.

use std::time::Duration;

use executor_custom::CustomConfig;
use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[runners.custom]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustom {
    #[serde(default)]
    config_exec: Option<String>,
    #[serde(default)]
    config_args: Vec<String>,
    #[serde(default)]
    config_exec_timeout: Option<i64>,
    #[serde(default)]
    prepare_exec: Option<String>,
    #[serde(default)]
    prepare_args: Vec<String>,
    #[serde(default)]
    prepare_exec_timeout: Option<i64>,
    #[serde(default)]
    run_exec: Option<String>,
    #[serde(default)]
    run_args: Vec<String>,
    #[serde(default)]
    cleanup_exec: Option<String>,
    #[serde(default)]
    cleanup_args: Vec<String>,
    #[serde(default)]
    cleanup_exec_timeout: Option<i64>,
    #[serde(default)]
    graceful_kill_timeout: Option<i64>,
    #[serde(default)]
    force_kill_timeout: Option<i64>,
}

/// Upstream's timeouts: integer seconds, unset or non-positive means the default.
pub(super) fn custom_config(
    key: &dyn Fn(&str) -> String,
    raw: &toml::Value,
) -> Result<CustomConfig, ConfigError> {
    let raw: RawCustom = raw
        .clone()
        .try_into()
        .map_err(|error: toml::de::Error| invalid(key("custom"), "", error.message()))?;
    let defaults = CustomConfig::default();
    let seconds = |value: Option<i64>, default: Duration| match value {
        Some(value) if value > 0 => Duration::from_secs(value as u64),
        _ => default,
    };
    Ok(CustomConfig {
        config_exec: raw.config_exec.unwrap_or_default(),
        config_args: raw.config_args,
        config_exec_timeout: seconds(raw.config_exec_timeout, defaults.config_exec_timeout),
        prepare_exec: raw.prepare_exec.unwrap_or_default(),
        prepare_args: raw.prepare_args,
        prepare_exec_timeout: seconds(raw.prepare_exec_timeout, defaults.prepare_exec_timeout),
        run_exec: raw.run_exec.unwrap_or_default(),
        run_args: raw.run_args,
        cleanup_exec: raw.cleanup_exec.unwrap_or_default(),
        cleanup_args: raw.cleanup_args,
        cleanup_exec_timeout: seconds(raw.cleanup_exec_timeout, defaults.cleanup_exec_timeout),
        graceful_kill_timeout: seconds(raw.graceful_kill_timeout, defaults.graceful_kill_timeout),
        force_kill_timeout: seconds(raw.force_kill_timeout, defaults.force_kill_timeout),
    })
}
