//! `[runners.ssh]` as written, and its validation into [`SshConfig`]: host, port, user and
//! credentials, with upstream's defaults for empty values.

use std::path::PathBuf;

use runner_core::config_section::{InvalidValue, TextOrNumber};
use runner_core::secret::Secret;
use serde::Deserialize;

use crate::SshConfig;

/// `[runners.ssh]` as written: upstream stores the port as a string; a number is taken too.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawSshConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<TextOrNumber>,
    #[serde(default)]
    identity_file: Option<String>,
    #[serde(default)]
    disable_strict_host_key_checking: Option<bool>,
    #[serde(default)]
    known_hosts_file: Option<String>,
}

impl RawSshConfig {
    /// The typed section; `section` is the section's key in messages (`runners[0].ssh`).
    pub fn validate(self, section: &str) -> Result<SshConfig, InvalidValue> {
        let defaults = SshConfig::default();
        let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
        let bad_port = |value: &dyn ToString| {
            InvalidValue::new(
                format!("{section}.port"),
                value.to_string(),
                "expected a TCP port, 1-65535",
            )
        };
        let port = match &self.port {
            None => defaults.port,
            Some(TextOrNumber::Text(text)) if text.is_empty() => defaults.port,
            Some(TextOrNumber::Text(text)) => text.parse().map_err(|_| bad_port(text))?,
            Some(TextOrNumber::Number(number)) => {
                u16::try_from(*number).map_err(|_| bad_port(number))?
            }
        };
        if port == 0 {
            return Err(bad_port(&0));
        }
        Ok(SshConfig {
            host: non_empty(self.host).unwrap_or(defaults.host.clone()),
            port,
            user: non_empty(self.user).unwrap_or(defaults.user.clone()),
            password: Secret::new(self.password.unwrap_or_default()),
            identity_file: non_empty(self.identity_file).map(PathBuf::from),
            disable_strict_host_key_checking: self
                .disable_strict_host_key_checking
                .unwrap_or(false),
            known_hosts_file: non_empty(self.known_hosts_file).map(PathBuf::from),
            ..defaults
        })
    }
}
