//! One validated `[[runners]]` entry and its conversion from the raw layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use executor_custom::CustomConfig;
use executor_docker::DockerConfig;
use executor_kubernetes::config::{KubernetesConfig, RawKubernetesConfig};
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
    /// Position of the entry in the file's `[[runners]]` list (and in `raw.runners`).
    pub index: usize,
    /// `name`: the runner's description, shown in logs and passed to jobs.
    pub name: String,
    /// `url`: the GitLab instance URL, checked to be http or https.
    pub url: String,
    /// `token`: the runner authentication token.
    pub token: Secret<String>,
    /// `tls-ca-file`, anchored at the config file's directory; `None` when unset or empty.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls-cert-file`, anchored at the config file's directory; `None` when unset or empty.
    pub tls_cert_file: Option<PathBuf>,
    /// `tls-key-file`, anchored at the config file's directory; `None` when unset or empty.
    pub tls_key_file: Option<PathBuf>,
    /// `limit`: most jobs of this runner at once; 0 means no limit of its own.
    pub limit: usize,
    /// Bytes.
    pub output_limit: u64,
    /// `request_concurrency`: most job requests in flight at once for this runner; at least 1.
    pub request_concurrency: usize,
    /// `strict_check_interval`: when true, a received job does not trigger an immediate re-request.
    pub strict_check_interval: bool,
    /// `unhealthy_requests_limit`: failed requests in a row before the runner is skipped (3).
    pub unhealthy_requests_limit: u32,
    /// `unhealthy_interval`: how long an unhealthy runner is skipped (1 hour).
    pub unhealthy_interval: Duration,
    /// `job_status_final_update_retry_limit`: attempts at sending the final job state; default 10.
    pub job_status_final_update_retry_limit: u32,
    /// `executor`: which executor runs this runner's jobs.
    pub executor: ExecutorKind,
    /// `[runners.ssh]`; `None` when the section is missing.
    pub ssh: Option<SshConfig>,
    /// The shared cache of `[runners.cache]`; `None` keeps the cache local.
    pub remote_cache: Option<RemoteCache>,
    /// `[runners.custom]`; `None` when the section is missing (jobs then fail as upstream's).
    pub custom: Option<CustomConfig>,
    /// `[runners.docker]`; `None` when the section is missing.
    pub docker: Option<DockerConfig>,
    /// `[runners.kubernetes]`, validated; the defaults when the section is missing.
    pub kubernetes: KubernetesConfig,
    /// `bash` or `sh`.
    pub shell: Option<String>,
    /// `builds_dir`; `None` (unset or empty) means the executor's default.
    pub builds_dir: Option<String>,
    /// `cache_dir`; `None` (unset or empty) means the executor's default.
    pub cache_dir: Option<String>,
    /// `clone_url`: base URL jobs clone from; empty means the GitLab `url`.
    pub clone_url: String,
    /// `environment`: `KEY=VALUE` entries added to every job's variables.
    pub environment: Vec<String>,
    /// The `pre_get_sources_script`, `post_get_sources_script`, `pre_build_script` and
    /// `post_build_script` hooks; empty strings when unset.
    pub hooks: runner_core::build::RunnerHooks,
    /// `prepare_timeout`; `None` leaves the prepare stage bounded by the job timeout only.
    pub prepare_timeout: Option<Duration>,
    /// `get_sources_timeout`; `None` leaves get_sources bounded by the job timeout only.
    pub get_sources_timeout: Option<Duration>,
    /// `debug_trace_disabled`: when true, jobs cannot turn on `CI_DEBUG_TRACE`.
    pub debug_trace_disabled: bool,
    /// `safe_directory_checkout`; `None` means the executor's default.
    pub safe_directory_checkout: Option<bool>,
    /// `clean_git_config`; `None` means on, except for the shell executor and `GIT_STRATEGY=none`.
    pub clean_git_config: Option<bool>,
    /// `[runners.custom_build_dir] enabled`; `None` means the executor's default.
    pub custom_build_dir_enabled: Option<bool>,
    /// `[runners.feature_flags]` entries this runner knows; unknown names were warned about.
    pub feature_flags: BTreeMap<runner_core::feature_flags::FeatureFlag, bool>,
    /// `[runners.artifact] upload_timeout`; `None` is upstream's 1 h.
    pub artifact_upload_timeout: Option<Duration>,
    /// `[runners.artifact] response_header_timeout`; `None` is upstream's 10 min.
    pub artifact_response_header_timeout: Option<Duration>,
    /// The global `labels` with this runner's `labels` on top, checked; sent as `info.labels`.
    pub labels: BTreeMap<String, String>,
    /// `graceful_kill_timeout`: SIGTERM-to-SIGKILL delay for a canceled stage; default 10 min.
    pub graceful_kill_timeout: Duration,
    /// `force_kill_timeout`: time to wait for SIGKILL to take effect; default 10 s.
    pub force_kill_timeout: Duration,
}

impl RunnerConfig {
    /// The short token for logs and directory names: known prefixes stripped, then 9 characters.
    pub fn short_token(&self) -> String {
        runner_core::dirs::short_token(self.token.expose())
    }
}

/// A `[[runners]]` entry this binary cannot run jobs for: an executor or a shell it does not
/// have. As upstream does with an executor it does not know, only this runner is out of
/// service (`run` says so, and asks GitLab for no jobs on its behalf); the other runners of the
/// file work, and `verify`, `unregister` and `list` still see it.
#[derive(Debug, Clone)]
pub struct UnavailableRunner {
    /// Position of the entry in the file's `[[runners]]` list.
    pub index: usize,
    /// `name`.
    pub name: String,
    /// `url`, checked as for any runner.
    pub url: String,
    /// `token`.
    pub token: Secret<String>,
    /// `tls-ca-file`, anchored at the config file's directory.
    pub tls_ca_file: Option<PathBuf>,
    /// `executor`, as written.
    pub executor: String,
    /// `unhealthy_interval`: how often `run` repeats that the runner is out of service.
    pub unhealthy_interval: Duration,
    /// Why no job can run: upstream's wording where upstream has one, for `run`'s log.
    pub reason: String,
}

impl UnavailableRunner {
    /// The short token for logs: known prefixes stripped, then 9 characters.
    pub fn short_token(&self) -> String {
        runner_core::dirs::short_token(self.token.expose())
    }
}

/// `[runners.artifact]`: the artifact uploader's timeouts, Go durations (`"1h30m"`).
#[derive(Debug, Default, serde::Deserialize)]
struct RawArtifact {
    #[serde(default)]
    upload_timeout: Option<String>,
    #[serde(default)]
    response_header_timeout: Option<String>,
}

/// Executors upstream GitLab Runner has and this binary does not (yet): a runner of one of them
/// is out of service here, with a load-time warning that says it is not an unknown name.
pub const UPSTREAM_ONLY_EXECUTORS: &[&str] = &[
    "docker+machine",
    "docker-autoscaler",
    "instance",
    "docker-windows",
    "parallels",
    "virtualbox",
];

/// What one `[[runners]]` entry turned into.
#[derive(Debug, Clone)]
pub enum RunnerEntry {
    /// The runner gets jobs.
    Ready(Box<RunnerConfig>),
    /// The runner is out of service; the rest of the file is unaffected.
    Unavailable(UnavailableRunner),
}

impl RunnerConfig {
    pub(super) fn from_raw(
        index: usize,
        raw: &RawRunner,
        file_raw: &super::RawConfig,
        file: &Path,
        base_dir: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<RunnerEntry, ConfigError> {
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
        let unavailable = |reason: String| {
            RunnerEntry::Unavailable(UnavailableRunner {
                index,
                name: raw.name.clone(),
                url: raw.url.clone(),
                token: Secret::new(raw.token.clone()),
                tls_ca_file: tls(&raw.tls_ca_file),
                executor: raw.executor.clone(),
                unhealthy_interval: duration(&key("unhealthy_interval"), &raw.unhealthy_interval)
                    .ok()
                    .flatten()
                    .unwrap_or(Duration::from_secs(60 * 60)),
                reason,
            })
        };
        let Some(executor) = ExecutorKind::parse(&raw.executor) else {
            if UPSTREAM_ONLY_EXECUTORS.contains(&raw.executor.as_str()) {
                warnings.push(format!(
                    "{} = {:?} in {}: gitlab-runner-rs has no {} executor yet (it has: {}); \
                     runner {:?} gets no jobs",
                    key("executor"),
                    raw.executor,
                    file.display(),
                    raw.executor,
                    ExecutorKind::names(),
                    raw.name
                ));
            }
            return Ok(unavailable(format!(
                "Executor {:?} is not known; marking Runner as unhealthy",
                raw.executor
            )));
        };
        if let Some(shell) = &raw.shell {
            if !matches!(shell.as_str(), "bash" | "sh") {
                return Ok(unavailable(format!(
                    "Shell {shell:?} is not supported by gitlab-runner-rs (it has: bash, sh); \
                     marking Runner as unhealthy"
                )));
            }
        }
        // Upstream skips an entry without `=` without a word; here the skip is said.
        for entry in raw.environment.iter().filter(|entry| !entry.contains('=')) {
            warnings.push(format!(
                "{} entry {entry:?} in {}: not KEY=VALUE; ignored",
                key("environment"),
                file.display()
            ));
        }
        // Kept for the round trip, not acted on yet; said, as every key nothing reads is.
        let unread = [
            ("referees", raw.referees.is_some()),
            ("monitoring", raw.monitoring.is_some()),
            ("machine", raw.machine.is_some()),
            ("autoscaler", raw.autoscaler.is_some()),
            ("instance", raw.instance.is_some()),
            ("parallels", raw.parallels.is_some()),
            ("virtualbox", raw.virtualbox.is_some()),
            ("experimental", raw.experimental.is_some()),
            ("proxy_exec", raw.proxy_exec.is_some()),
            ("use_slot_cgroups", raw.use_slot_cgroups.is_some()),
            ("slot_cgroup_template", raw.slot_cgroup_template.is_some()),
            ("step_runner_image", raw.step_runner_image.is_some()),
        ];
        for (name, present) in unread {
            if present {
                warnings.push(super::section::kept_key(&key(name), file));
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
        let labels =
            super::labels::computed_checked(&key("labels"), &file_raw.labels, &raw.labels)?;
        let artifact: RawArtifact = match &raw.artifact {
            Some(value) => section(&key("artifact"), value, file, warnings)?,
            None => RawArtifact::default(),
        };
        let artifact_key = |name: &str| format!("{}.{name}", key("artifact"));
        Ok(RunnerEntry::Ready(Box::new(Self {
            index,
            labels,
            artifact_upload_timeout: duration(
                &artifact_key("upload_timeout"),
                &artifact.upload_timeout,
            )?,
            artifact_response_header_timeout: duration(
                &artifact_key("response_header_timeout"),
                &artifact.response_header_timeout,
            )?,
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
            kubernetes: match &raw.kubernetes {
                Some(value) => {
                    section::<RawKubernetesConfig>(&key("kubernetes"), value, file, warnings)?
                        .validate(&key("kubernetes"))?
                }
                None => RawKubernetesConfig::default().validate(&key("kubernetes"))?,
            },
            remote_cache: match &raw.cache {
                Some(value) => remote_cache(&key, value, file, warnings)?,
                None => None,
            },
            shell: raw.shell.clone(),
            builds_dir: raw.builds_dir.clone().filter(|v| !v.is_empty()),
            cache_dir: raw.cache_dir.clone().filter(|v| !v.is_empty()),
            clone_url: raw.clone_url.clone().unwrap_or_default(),
            environment: raw
                .environment
                .iter()
                .filter(|entry| entry.contains('='))
                .cloned()
                .collect(),
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
        })))
    }
}
