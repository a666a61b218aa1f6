//! `[runners.custom]` as written, and its conversion into [`CustomConfig`]: the driver's
//! programs, their arguments and upstream's timeouts (integer seconds; unset or non-positive
//! means the default).

use std::time::Duration;

use serde::Deserialize;

use crate::CustomConfig;

/// `[runners.custom]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawCustomConfig {
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

impl RawCustomConfig {
    /// The typed section. Nothing in it can be refused: upstream takes any timeout, and a
    /// missing `run_exec` is reported when a job prepares, as upstream does.
    pub fn validate(self) -> CustomConfig {
        let defaults = CustomConfig::default();
        let seconds = |value: Option<i64>, default: Duration| match value {
            Some(value) if value > 0 => Duration::from_secs(value as u64),
            _ => default,
        };
        CustomConfig {
            config_exec: self.config_exec.unwrap_or_default(),
            config_args: self.config_args,
            config_exec_timeout: seconds(self.config_exec_timeout, defaults.config_exec_timeout),
            prepare_exec: self.prepare_exec.unwrap_or_default(),
            prepare_args: self.prepare_args,
            prepare_exec_timeout: seconds(self.prepare_exec_timeout, defaults.prepare_exec_timeout),
            run_exec: self.run_exec.unwrap_or_default(),
            run_args: self.run_args,
            cleanup_exec: self.cleanup_exec.unwrap_or_default(),
            cleanup_args: self.cleanup_args,
            cleanup_exec_timeout: seconds(self.cleanup_exec_timeout, defaults.cleanup_exec_timeout),
            graceful_kill_timeout: seconds(
                self.graceful_kill_timeout,
                defaults.graceful_kill_timeout,
            ),
            force_kill_timeout: seconds(self.force_kill_timeout, defaults.force_kill_timeout),
        }
    }
}
