//! One validated `[[runners]]` entry and its conversion from the raw layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use executor_custom::CustomConfig;
use executor_docker::DockerConfig;
use executor_ssh::SshConfig;
use runner_core::remote_cache::RemoteCache;
use runner_core::secret::Secret;

use executor_custom::RawCustomConfig;
use executor_docker::RawDockerConfig;
use executor_ssh::RawSshConfig;

use super::cache::remote_cache;
use super::section::{ignored_key, section};
use super::values::{attempts, count, duration, positive};
use super::{invalid, ConfigError, ExecutorKind, RawRunner};

/// One validated `[[runners]]` entry.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub name: String,
    pub url: String,
    pub token: Secret<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub limit: usize,
    /// Bytes.
    pub output_limit: u64,
    pub request_concurrency: usize,
    pub strict_check_interval: bool,
    pub unhealthy_requests_limit: u32,
    pub unhealthy_interval: Duration,
    pub job_status_final_update_retry_limit: u32,
    pub executor: ExecutorKind,
    /// `[runners.ssh]`; `None` when the section is missing.
    pub ssh: Option<SshConfig>,
    /// The shared cache of `[runners.cache]`; `None` keeps the cache local.
    pub remote_cache: Option<RemoteCache>,
    /// `[runners.custom]`; `None` when the section is missing (jobs then fail as upstream's).
    pub custom: Option<CustomConfig>,
    /// `[runners.docker]`; `None` when the section is missing.
    pub docker: Option<DockerConfig>,
    /// `bash` or `sh`.
    pub shell: Option<String>,
    pub builds_dir: Option<String>,
    pub cache_dir: Option<String>,
    pub clone_url: String,
    pub environment: Vec<String>,
    pub hooks: runner_core::build::RunnerHooks,
    pub prepare_timeout: Option<Duration>,
    pub get_sources_timeout: Option<Duration>,
    pub debug_trace_disabled: bool,
    pub safe_directory_checkout: Option<bool>,
    pub clean_git_config: Option<bool>,
    pub custom_build_dir_enabled: Option<bool>,
    pub feature_flags: BTreeMap<runner_core::feature_flags::FeatureFlag, bool>,
    pub graceful_kill_timeout: Duration,
    pub force_kill_timeout: Duration,
}

impl RunnerConfig {
    pub fn short_token(&self) -> String {
        runner_core::dirs::short_token(self.token.expose())
    }
}

impl RunnerConfig {
    pub(super) fn from_raw(
        index: usize,
        raw: &RawRunner,
        file: &Path,
        base_dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let key = |name: &str| format!("runners[{index}].{name}");
        if raw.url.is_empty() {
            return Err(invalid(key("url"), "", "the GitLab URL is required"));
        }
        network::client::api_base(&raw.url).map_err(|_| {
            invalid(
                key("url"),
                &raw.url,
                "only http and https URLs are supported",
            )
        })?;
        if raw.token.is_empty() {
            return Err(invalid(key("token"), "", "the runner token is required"));
        }
        let executor = match (raw.executor.as_str(), ExecutorKind::parse(&raw.executor)) {
            (_, Some(kind)) => kind,
            ("", None) => return Err(invalid(key("executor"), "", "an executor is required")),
            (other, None) => {
                return Err(invalid(
                    key("executor"),
                    other,
                    &format!(
                        "not supported by this runner (supported: {})",
                        ExecutorKind::names()
                    ),
                ))
            }
        };
        if let Some(shell) = &raw.shell {
            if !matches!(shell.as_str(), "bash" | "sh") {
                return Err(invalid(
                    key("shell"),
                    shell,
                    "supported shells are bash and sh",
                ));
            }
        }
        for entry in &raw.environment {
            if !entry.contains('=') {
                return Err(invalid(
                    key("environment"),
                    entry,
                    "entries must be KEY=VALUE",
                ));
            }
        }
        let request_concurrency =
            count(&key("request_concurrency"), raw.request_concurrency, 1)?.max(1);
        let output_limit_kib = positive(&key("output_limit"), raw.output_limit, 4096)?;
        let output_limit_kib = if output_limit_kib == 0 {
            4096
        } else {
            output_limit_kib
        };
        let output_limit = (output_limit_kib as u64)
            .checked_mul(1024)
            .ok_or_else(|| invalid(key("output_limit"), output_limit_kib, "is too large"))?;
        let tls = |value: &Option<String>| {
            value.as_ref().filter(|v| !v.is_empty()).map(|v| {
                let path = PathBuf::from(v);
                if path.is_absolute() {
                    path
                } else {
                    base_dir.join(path)
                }
            })
        };
        let seconds =
            |name: &str, value: Option<i64>, default: u64| -> Result<Duration, ConfigError> {
                match value {
                    None => Ok(Duration::from_secs(default)),
                    Some(v) if v <= 0 => Err(invalid(
                        key(name),
                        v,
                        "must be a positive number of seconds",
                    )),
                    Some(v) => Ok(Duration::from_secs(v as u64)),
                }
            };
        Ok(Self {
            name: raw.name.clone(),
            url: raw.url.clone(),
            token: Secret::new(raw.token.clone()),
            tls_ca_file: tls(&raw.tls_ca_file),
            tls_cert_file: tls(&raw.tls_cert_file),
            tls_key_file: tls(&raw.tls_key_file),
            limit: count(&key("limit"), raw.limit, 0)?,
            output_limit,
            request_concurrency,
            strict_check_interval: raw.strict_check_interval.unwrap_or(false),
            unhealthy_requests_limit: attempts(
                &key("unhealthy_requests_limit"),
                raw.unhealthy_requests_limit,
                3,
            )?,
            unhealthy_interval: duration(&key("unhealthy_interval"), &raw.unhealthy_interval)?
                .unwrap_or(Duration::from_secs(60 * 60)),
            job_status_final_update_retry_limit: attempts(
                &key("job_status_final_update_retry_limit"),
                raw.job_status_final_update_retry_limit,
                10,
            )?,
            executor,
            ssh: match &raw.ssh {
                Some(value) => Some(
                    section::<RawSshConfig>(&key("ssh"), value, file, warnings)?
                        .validate(&key("ssh"))?,
                ),
                None => None,
            },
            custom: match &raw.custom {
                Some(value) => Some(
                    section::<RawCustomConfig>(&key("custom"), value, file, warnings)?.validate(),
                ),
                None => None,
            },
            docker: match &raw.docker {
                Some(value) => Some(
                    section::<RawDockerConfig>(&key("docker"), value, file, warnings)?
                        .validate(&key("docker"))?,
                ),
                None => None,
            },
            remote_cache: match &raw.cache {
                Some(value) => remote_cache(&key, value, file, warnings)?,
                None => None,
            },
            shell: raw.shell.clone(),
            builds_dir: raw.builds_dir.clone().filter(|v| !v.is_empty()),
            cache_dir: raw.cache_dir.clone().filter(|v| !v.is_empty()),
            clone_url: raw.clone_url.clone().unwrap_or_default(),
            environment: raw.environment.clone(),
            hooks: runner_core::build::RunnerHooks {
                pre_get_sources_script: raw.pre_get_sources_script.clone().unwrap_or_default(),
                post_get_sources_script: raw.post_get_sources_script.clone().unwrap_or_default(),
                pre_build_script: raw.pre_build_script.clone().unwrap_or_default(),
                post_build_script: raw.post_build_script.clone().unwrap_or_default(),
            },
            prepare_timeout: duration(&key("prepare_timeout"), &raw.prepare_timeout)?,
            get_sources_timeout: duration(&key("get_sources_timeout"), &raw.get_sources_timeout)?,
            debug_trace_disabled: raw.debug_trace_disabled.unwrap_or(false),
            safe_directory_checkout: raw.safe_directory_checkout,
            clean_git_config: raw.clean_git_config,
            custom_build_dir_enabled: raw.custom_build_dir.as_ref().and_then(|c| c.enabled),
            feature_flags: {
                let (flags, unknown) = runner_core::feature_flags::from_config(&raw.feature_flags);
                warnings.extend(
                    unknown
                        .into_iter()
                        .map(|name| ignored_key(&format!("{}.{name}", key("feature_flags")), file)),
                );
                flags
            },
            graceful_kill_timeout: seconds(
                "graceful_kill_timeout",
                raw.graceful_kill_timeout,
                10 * 60,
            )?,
            force_kill_timeout: seconds("force_kill_timeout", raw.force_kill_timeout, 10)?,
        })
    }
}
