//! `[runners.ssh]`: the SSH executor's host, port, user and credentials.

use std::path::PathBuf;

use executor_ssh::SshConfig;
use runner_core::secret::Secret;
use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[runners.ssh]` as written: upstream stores the port as a string; a number is taken too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<toml::Value>,
    #[serde(default)]
    identity_file: Option<String>,
    #[serde(default)]
    disable_strict_host_key_checking: Option<bool>,
    #[serde(default)]
    known_hosts_file: Option<String>,
}

pub(super) fn ssh_config(
    key: &dyn Fn(&str) -> String,
    raw: &toml::Value,
) -> Result<SshConfig, ConfigError> {
    let raw: RawSsh = raw
        .clone()
        .try_into()
        .map_err(|error: toml::de::Error| invalid(key("ssh"), "", error.message()))?;
    let defaults = SshConfig::default();
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    let port = match &raw.port {
        None => defaults.port,
        Some(toml::Value::String(text)) if text.is_empty() => defaults.port,
        Some(toml::Value::String(text)) => text
            .parse()
            .map_err(|_| invalid(key("ssh.port"), text, "expected a TCP port, 1-65535"))?,
        Some(toml::Value::Integer(number)) => u16::try_from(*number)
            .map_err(|_| invalid(key("ssh.port"), number, "expected a TCP port, 1-65535"))?,
        Some(other) => {
            return Err(invalid(
                key("ssh.port"),
                other,
                "expected a TCP port, 1-65535",
            ))
        }
    };
    if port == 0 {
        return Err(invalid(key("ssh.port"), 0, "expected a TCP port, 1-65535"));
    }
    Ok(SshConfig {
        host: non_empty(raw.host).unwrap_or(defaults.host),
        port,
        user: non_empty(raw.user).unwrap_or(defaults.user),
        password: Secret::new(raw.password.unwrap_or_default()),
        identity_file: non_empty(raw.identity_file).map(PathBuf::from),
        disable_strict_host_key_checking: raw.disable_strict_host_key_checking.unwrap_or(false),
        known_hosts_file: non_empty(raw.known_hosts_file).map(PathBuf::from),
        ..defaults
    })
}
