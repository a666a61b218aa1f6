//! `config.toml`: a raw serde layer that loads real GitLab Runner files unchanged (unknown keys
//! become warnings naming the key), then a validated layer with typed values. Bad values are
//! rejected at load time naming the key and the value.
//!
//! Layout: `raw` holds the serde layer, `runner` the validated `[[runners]]` entry, `cache` the
//! `[runners.cache]` section, `section` the one unknown-key policy every part of the file goes
//! through, and `values` the checks of counts and durations. Each executor's section is its own
//! crate's (`RawSshConfig`, `RawCustomConfig`, `RawDockerConfig`, validated there). This file keeps the error, the executor kinds and the
//! validated file ([`Config`]), and re-exports the rest of the public face.

mod cache;
pub mod labels;
mod raw;
mod runner;
mod section;
mod values;

pub use raw::{RawConfig, RawCustomBuildDir, RawRunner};
pub use runner::{RunnerConfig, RunnerEntry, UnavailableRunner, UPSTREAM_ONLY_EXECUTORS};
pub use values::MAX_COUNT;

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner_core::config_section::InvalidValue;
use values::count;

/// A config problem that stops loading.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML or a value has the wrong type; also raised when the raw layer
    /// cannot be serialized for saving.
    #[error("parsing {}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's (or serializer's) message.
        message: String,
    },
    /// A value failed validation; names the key, the value and the rule.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// Saving the file failed: creating its directory, writing the temporary file or renaming it.
    #[error("writing {}", path.display())]
    Write {
        /// The config file being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, value: impl ToString, reason: &str) -> ConfigError {
    ConfigError::Invalid(InvalidValue::new(key, value, reason))
}

/// Executors this runner implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// `shell`: scripts run on the runner's own host.
    Shell,
    /// `ssh`: scripts run on a remote host over SSH (`[runners.ssh]`).
    Ssh,
    /// `custom`: stages run by the driver executables of `[runners.custom]`.
    Custom,
    /// `docker`: scripts run in containers (`[runners.docker]`).
    Docker,
    /// `kubernetes`: each job in a pod (`[runners.kubernetes]`).
    Kubernetes,
}

impl ExecutorKind {
    /// Every executor this runner implements, in the order messages list them.
    pub const ALL: [ExecutorKind; 5] = [
        ExecutorKind::Shell,
        ExecutorKind::Ssh,
        ExecutorKind::Custom,
        ExecutorKind::Docker,
        ExecutorKind::Kubernetes,
    ];

    /// The executor named `name` in `config.toml`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The names of [`ExecutorKind::ALL`], `, `-separated.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// The name as written in the `executor` key of `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Shell => "shell",
            ExecutorKind::Ssh => "ssh",
            ExecutorKind::Custom => "custom",
            ExecutorKind::Docker => "docker",
            ExecutorKind::Kubernetes => "kubernetes",
        }
    }
}

/// Who a `[[runners]]` entry is to GitLab, whether this binary can run its jobs or not.
#[derive(Debug, Clone, Copy)]
pub struct RunnerCredentials<'a> {
    /// Position in the file's `[[runners]]` list (and in `raw.runners`).
    pub index: usize,
    /// `name`.
    pub name: &'a str,
    /// `url`.
    pub url: &'a str,
    /// `token`.
    pub token: &'a runner_core::secret::Secret<String>,
    /// `tls-ca-file`, anchored at the config file's directory.
    pub tls_ca_file: Option<&'a Path>,
    /// `executor`, as written.
    pub executor: &'a str,
}

impl RunnerCredentials<'_> {
    /// The short token for logs: known prefixes stripped, then 9 characters.
    pub fn short_token(&self) -> String {
        runner_core::dirs::short_token(self.token.expose())
    }
}

/// The validated file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from; `run` re-reads it on reload and keeps `.runner_system_id`
    /// beside it.
    pub path: PathBuf,
    /// `concurrent`: most jobs at once across all runners; 1 when unset.
    pub concurrent: usize,
    /// `check_interval`: pause between job-request rounds over all runners; 3 s when unset or ≤ 0.
    pub check_interval: Duration,
    /// `shutdown_timeout`: how long a forceful stop waits for aborted jobs; 30 s when unset or 0.
    pub shutdown_timeout: Duration,
    /// `log_level`, checked to be a level upstream knows; `None` means `info`.
    pub log_level: Option<String>,
    /// `log_format`, checked to be `runner`, `text` or `json`; `None` means `runner`.
    pub log_format: Option<String>,
    /// `connection_max_age`: how often the GitLab connection pool is replaced; 15 min when
    /// unset, zero never.
    pub connection_max_age: Duration,
    /// Global `user` that job scripts run as, where the executor switches users; `None` when unset
    /// or empty.
    pub user: Option<String>,
    /// The `[[runners]]` entries that get jobs, in file order (`index` says where each is).
    pub runners: Vec<RunnerConfig>,
    /// The entries this binary cannot run jobs for (an executor or shell it does not have).
    pub unavailable: Vec<UnavailableRunner>,
    /// The file as read, so `register` and `unregister` can save it back with unknown keys intact.
    pub raw: RawConfig,
    /// Messages about ignored keys and unknown feature flags, for the caller to log.
    pub warnings: Vec<String>,
    /// The keys nothing reads (typos, keys upstream does not have either), spelled as
    /// upstream's `lint` names them (`runners.frobnicate`).
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// Parses config text; `path` names the file in messages and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let deserializer = toml::Deserializer::new(text);
        let raw: RawConfig = serde_ignored::deserialize(deserializer, |ignored| {
            warnings.push(section::ignored_key(&section::key_of(&ignored), path));
        })
        .map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string().trim().to_string(),
        })?;
        let concurrent = match raw.concurrent {
            None => 1,
            Some(value) if value <= 0 => {
                return Err(invalid("concurrent", value, "must be at least 1"));
            }
            Some(value) => count("concurrent", Some(value), 1)?,
        };
        let check_interval = match raw.check_interval {
            Some(value) if value > 0 => Duration::from_secs(value as u64),
            _ => Duration::from_secs(3),
        };
        let shutdown_timeout = match raw.shutdown_timeout {
            Some(value) if value > 0 => Duration::from_secs(value as u64),
            Some(value) if value < 0 => {
                return Err(invalid("shutdown_timeout", value, "must not be negative"));
            }
            _ => Duration::from_secs(30),
        };
        if let Some(level) = &raw.log_level {
            crate::logging::parse_level(level)
                .map_err(|_| invalid("log_level", level, "expected debug, info, warn or error"))?;
        }
        if let Some(format) = &raw.log_format {
            crate::logging::LogFormat::parse(format)
                .map_err(|_| invalid("log_format", format, "expected runner, text or json"))?;
        }
        // Upstream keys this runner keeps (so the file round-trips) but does not act on yet: the
        // same warning as any other key nothing reads, so none is ignored silently.
        let unread = [
            ("listen_address", raw.listen_address.is_some()),
            ("sentry_dsn", raw.sentry_dsn.is_some()),
            ("session_server", raw.session_server.is_some()),
            ("machine", raw.machine.is_some()),
            ("experimental", raw.experimental.is_some()),
        ];
        for (key, present) in unread {
            if present {
                warnings.push(section::kept_key(key, path));
            }
        }
        labels::check("labels", &raw.labels)?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut runners = Vec::new();
        let mut unavailable = Vec::new();
        for (index, runner) in raw.runners.iter().enumerate() {
            match RunnerConfig::from_raw(index, runner, &raw, path, &base_dir, &mut warnings)? {
                RunnerEntry::Ready(runner) => runners.push(*runner),
                RunnerEntry::Unavailable(runner) => unavailable.push(runner),
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            concurrent,
            check_interval,
            shutdown_timeout,
            connection_max_age: values::duration("connection_max_age", &raw.connection_max_age)?
                .unwrap_or(network::client::DEFAULT_CONNECTION_MAX_AGE),
            log_level: raw.log_level.clone(),
            log_format: raw.log_format.clone(),
            user: raw.user.clone().filter(|user| !user.is_empty()),
            unknown_keys: warnings
                .iter()
                .filter_map(|warning| section::unknown_key_of(warning, path))
                .collect(),
            runners,
            unavailable,
            raw,
            warnings,
        })
    }

    /// The credentials of every `[[runners]]` entry, in file order, whether it gets jobs or not:
    /// what `verify`, `unregister` and `list` work with.
    pub fn credentials(&self) -> Vec<RunnerCredentials<'_>> {
        let mut all: Vec<RunnerCredentials<'_>> = self
            .runners
            .iter()
            .map(|runner| RunnerCredentials {
                index: runner.index,
                name: &runner.name,
                url: &runner.url,
                token: &runner.token,
                tls_ca_file: runner.tls_ca_file.as_deref(),
                executor: runner.executor.as_str(),
            })
            .chain(self.unavailable.iter().map(|runner| RunnerCredentials {
                index: runner.index,
                name: &runner.name,
                url: &runner.url,
                token: &runner.token,
                tls_ca_file: runner.tls_ca_file.as_deref(),
                executor: &runner.executor,
            }))
            .collect();
        all.sort_by_key(|credentials| credentials.index);
        all
    }

    /// Reads and parses the file at `path`; a missing file loads as an empty config (no runners).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(path, &text)
    }

    /// Writes the raw layer back (after register / unregister), with mode 0600.
    pub fn save_raw(path: &Path, raw: &RawConfig) -> Result<(), ConfigError> {
        use std::os::unix::fs::OpenOptionsExt;
        let text = toml::to_string_pretty(raw).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| ConfigError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let temporary = path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)?;
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            std::fs::rename(&temporary, path)
        };
        write().map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests;
