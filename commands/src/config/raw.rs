//! The raw serde layer: the file as GitLab Runner writes it, loaded and saved back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The raw file as GitLab Runner writes it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawConfig {
    /// `concurrent`: most jobs at once across all runners; missing means 1, 0 or less is rejected.
    #[serde(default)]
    pub concurrent: Option<i64>,
    /// `check_interval`: seconds between job-request rounds; missing, 0 or less means 3.
    #[serde(default)]
    pub check_interval: Option<i64>,
    /// `log_level`: the runner log's level when no `--log-level` / `--debug` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// `log_format` (`runner`, `text`, `json`) when no `--log-format` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// `listen_address` (metrics server); kept so the file round-trips, not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_address: Option<String>,
    /// `user`: the account job scripts run as (through `su`) on executors that switch users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `shutdown_timeout`: seconds to wait for jobs on a forceful stop; missing or 0 means 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<i64>,
    /// `connection_max_age` (a duration): how often the GitLab connection pool is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_max_age: Option<String>,
    /// `sentry_dsn`; kept so the file round-trips, not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentry_dsn: Option<String>,
    /// Global `labels`; kept so the file round-trips, not read by this runner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `[session_server]`, kept as written; this runner has no session server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_server: Option<toml::Value>,
    /// Global `[machine]`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<toml::Value>,
    /// Global `[experimental]`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experimental: Option<toml::Value>,
    /// The `[[runners]]` entries, in file order.
    #[serde(default)]
    pub runners: Vec<RawRunner>,
}

/// One `[[runners]]` entry as written in the file, before validation.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRunner {
    /// `name`: the runner's description, shown in logs and passed to jobs.
    #[serde(default)]
    pub name: String,
    /// `url`: the GitLab instance URL (http or https); required.
    #[serde(default)]
    pub url: String,
    /// `id`: the runner's numeric ID on GitLab, 0 when unknown.
    #[serde(default)]
    pub id: i64,
    /// `token`: the runner authentication token; required.
    #[serde(default)]
    pub token: String,
    /// `token_obtained_at`, kept as GitLab Runner wrote it; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_obtained_at: Option<toml::Value>,
    /// `token_expires_at`, kept as GitLab Runner wrote it; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<toml::Value>,
    /// `tls-ca-file`: PEM file of CAs to trust for GitLab; relative to the config file's directory.
    #[serde(
        default,
        rename = "tls-ca-file",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_ca_file: Option<String>,
    /// `tls-cert-file`: PEM client certificate for GitLab; relative to the config file's directory.
    #[serde(
        default,
        rename = "tls-cert-file",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_cert_file: Option<String>,
    /// `tls-key-file`: PEM key of `tls-cert-file`; relative to the config file's directory.
    #[serde(
        default,
        rename = "tls-key-file",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_key_file: Option<String>,
    /// `limit`: most jobs this runner runs at once; missing or 0 means no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `output_limit`: job log size limit in KiB; missing or 0 means 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<i64>,
    /// `request_concurrency`: most job requests in flight for this runner; missing or 0 means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_concurrency: Option<i64>,
    /// `strict_check_interval`: when true, wait `check_interval` even after receiving a job.
    /// Missing means false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_check_interval: Option<bool>,
    /// `unhealthy_requests_limit`: failed job requests in a row before the runner is skipped for
    /// `unhealthy_interval`; missing or 0 means 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_requests_limit: Option<i64>,
    /// `unhealthy_interval`: how long an unhealthy runner is skipped (duration string); default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_interval: Option<String>,
    /// `job_status_final_update_retry_limit`: tries of the final job update; missing or 0 means 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status_final_update_retry_limit: Option<i64>,
    /// `executor`: `shell`, `ssh`, `custom` or `docker`; required.
    #[serde(default)]
    pub executor: String,
    /// `shell`: `bash` or `sh`; missing means the executor's default shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// `builds_dir`; missing or empty means the executor's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builds_dir: Option<String>,
    /// `cache_dir`; missing or empty means the executor's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// `clone_url`: base URL jobs clone from; missing or empty means the GitLab `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_url: Option<String>,
    /// `environment`: `KEY=VALUE` entries added to every job's variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    /// `pre_get_sources_script`: shell script run before fetching sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_get_sources_script: Option<String>,
    /// `post_get_sources_script`: shell script run after fetching sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_get_sources_script: Option<String>,
    /// `pre_build_script`: shell script run before the job's own script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_build_script: Option<String>,
    /// `post_build_script`: shell script run after the job's own script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build_script: Option<String>,
    /// `prepare_timeout`: a duration string such as `10m` bounding the prepare stage; missing or
    /// empty means only the job timeout applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_timeout: Option<String>,
    /// `get_sources_timeout`: a duration string bounding the get_sources stage; missing or empty
    /// means only the job timeout applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get_sources_timeout: Option<String>,
    /// `debug_trace_disabled`: when true, jobs cannot turn on `CI_DEBUG_TRACE`; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_trace_disabled: Option<bool>,
    /// `safe_directory_checkout`: mark the checkout as a git `safe.directory`; missing means the
    /// executor's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_directory_checkout: Option<bool>,
    /// `clean_git_config`: delete the checkout's git config and hooks before fetching; missing
    /// means on for every executor but shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_git_config: Option<bool>,
    /// `[runners.custom_build_dir]`: whether jobs may choose their directory via `GIT_CLONE_PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_build_dir: Option<RawCustomBuildDir>,
    /// `[runners.feature_flags]`: feature-flag name to on/off; unknown names are warned about.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_flags: BTreeMap<String, bool>,
    /// `labels` of this runner; kept so the file round-trips, not read by this runner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// gitlab-runner-rs extension: seconds between SIGTERM and SIGKILL of a canceled stage
    /// (shell, ssh and docker executors; the custom executor reads `[runners.custom]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_kill_timeout: Option<i64>,
    /// gitlab-runner-rs extension: seconds to wait for SIGKILL to take effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_kill_timeout: Option<i64>,
    // The sections below are kept as written, so a file round-trips unchanged through
    // `register` and token updates; each crate that reads one validates it at load.
    /// `[runners.cache]`: the shared cache; missing keeps caches local to the executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<toml::Value>,
    /// `[runners.artifact]`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<toml::Value>,
    /// `[runners.referees]`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referees: Option<toml::Value>,
    /// `[runners.monitoring]`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<toml::Value>,
    /// `[runners.ssh]`, validated by the ssh executor crate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<toml::Value>,
    /// `[runners.docker]`, validated by the docker executor crate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<toml::Value>,
    /// `[runners.kubernetes]`, validated by the kubernetes executor crate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<toml::Value>,
    /// `[runners.custom]`, validated by the custom executor crate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<toml::Value>,
    /// `[runners.machine]`, kept as written; this runner has no docker+machine executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<toml::Value>,
    /// `[runners.autoscaler]`, kept as written; this runner has no autoscaler executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<toml::Value>,
    /// `[runners.instance]`, kept as written; this runner has no instance executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<toml::Value>,
    /// `[runners.parallels]`, kept as written; this runner has no parallels executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallels: Option<toml::Value>,
    /// `[runners.virtualbox]`, kept as written; this runner has no virtualbox executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualbox: Option<toml::Value>,
    /// `[runners.experimental]`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experimental: Option<toml::Value>,
    /// `proxy_exec`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_exec: Option<toml::Value>,
    /// `use_slot_cgroups`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_slot_cgroups: Option<bool>,
    /// `slot_cgroup_template`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_cgroup_template: Option<String>,
    /// `step_runner_image`, kept as written; not read by this runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_runner_image: Option<String>,
}

/// `[runners.custom_build_dir]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawCustomBuildDir {
    /// `enabled`: whether jobs may set `GIT_CLONE_PATH`; missing means the executor's default.
    #[serde(default)]
    pub enabled: Option<bool>,
}
