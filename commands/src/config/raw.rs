//! The raw serde layer: the file as GitLab Runner writes it, loaded and saved back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The raw file as GitLab Runner writes it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawConfig {
    #[serde(default)]
    pub concurrent: Option<i64>,
    #[serde(default)]
    pub check_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentry_dsn: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_server: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experimental: Option<toml::Value>,
    #[serde(default)]
    pub runners: Vec<RawRunner>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawRunner {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_obtained_at: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<toml::Value>,
    #[serde(
        default,
        rename = "tls-ca-file",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_ca_file: Option<String>,
    #[serde(
        default,
        rename = "tls-cert-file",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_cert_file: Option<String>,
    #[serde(
        default,
        rename = "tls-key-file",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_check_interval: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_requests_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status_final_update_retry_limit: Option<i64>,
    #[serde(default)]
    pub executor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builds_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_get_sources_script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_get_sources_script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_build_script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build_script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get_sources_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_trace_disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_directory_checkout: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_git_config: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_build_dir: Option<RawCustomBuildDir>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_flags: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// gitlab-runner-rs extension: seconds between SIGTERM and SIGKILL of a canceled stage
    /// (shell, ssh and docker executors; the custom executor reads `[runners.custom]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_kill_timeout: Option<i64>,
    /// gitlab-runner-rs extension: seconds to wait for SIGKILL to take effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_kill_timeout: Option<i64>,
    // Sections other executors and later features read; kept so files round-trip unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referees: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallels: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualbox: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experimental: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_exec: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_slot_cgroups: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_cgroup_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_runner_image: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawCustomBuildDir {
    #[serde(default)]
    pub enabled: Option<bool>,
}
