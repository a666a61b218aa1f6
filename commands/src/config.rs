//! `config.toml`: a raw serde layer that loads real GitLab Runner files unchanged (unknown keys
//! become warnings naming the key), then a validated layer with typed values. Bad values are
//! rejected at load time naming the key and the value.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use executor_custom::CustomConfig;
use executor_docker::{DockerConfig, PullPolicy};
use executor_ssh::SshConfig;
use runner_core::remote_cache::{RemoteCache, S3Settings};
use runner_core::secret::Secret;
use runner_core::settings::parse_go_duration;
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

/// A config problem that stops loading.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {value:?} ({reason})")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, value: impl ToString, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Executors this runner implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    Shell,
    Ssh,
    Custom,
    Docker,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Shell => "shell",
            ExecutorKind::Ssh => "ssh",
            ExecutorKind::Custom => "custom",
            ExecutorKind::Docker => "docker",
        }
    }
}

/// `[runners.cache]` as written (CamelCase keys, as upstream's file has them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawCache {
    #[serde(default, rename = "Type")]
    kind: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    max_uploaded_archive_size: Option<i64>,
    #[serde(default, rename = "s3")]
    s3: Option<RawS3>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawS3 {
    #[serde(default)]
    server_address: Option<String>,
    #[serde(default)]
    access_key: Option<String>,
    #[serde(default)]
    secret_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
    #[serde(default)]
    bucket_name: Option<String>,
    #[serde(default)]
    bucket_location: Option<String>,
    #[serde(default)]
    insecure: Option<bool>,
    #[serde(default)]
    path_style: Option<bool>,
    #[serde(default)]
    authentication_type: Option<String>,
    #[serde(default)]
    server_side_encryption: Option<String>,
    #[serde(default, rename = "ServerSideEncryptionKeyID")]
    server_side_encryption_key_id: Option<String>,
    #[serde(default, rename = "RoleARN")]
    role_arn: Option<String>,
    #[serde(default, rename = "UploadRoleARN")]
    upload_role_arn: Option<String>,
}

/// The shared cache of `[runners.cache]`, or `None` (local cache only). Adapters this runner
/// does not have keep the cache local with a warning, as upstream does for a broken adapter.
fn remote_cache(
    key: &dyn Fn(&str) -> String,
    raw: &toml::Value,
    warnings: &mut Vec<String>,
) -> Result<Option<RemoteCache>, ConfigError> {
    let raw: RawCache = raw
        .clone()
        .try_into()
        .map_err(|error: toml::de::Error| invalid(key("cache"), "", error.message()))?;
    let kind = raw.kind.clone().unwrap_or_default();
    match kind.as_str() {
        "" => return Ok(None),
        "s3" => {}
        other => {
            warnings.push(format!(
                "{}: cache type {other:?} is not supported by gitlab-runner-rs (supported: s3); the cache stays local",
                key("cache.Type")
            ));
            return Ok(None);
        }
    }
    let Some(s3) = raw.s3 else {
        warnings.push(format!(
            "{}: missing [runners.cache.s3]; the cache stays local",
            key("cache")
        ));
        return Ok(None);
    };
    let text = |value: Option<String>| value.unwrap_or_default();
    let authentication = s3.authentication_type.clone().unwrap_or_default();
    if authentication.eq_ignore_ascii_case("iam")
        || s3.role_arn.as_deref().is_some_and(|v| !v.is_empty())
        || s3.upload_role_arn.as_deref().is_some_and(|v| !v.is_empty())
    {
        warnings.push(format!(
            "{}: IAM credentials and RoleARN are not supported by gitlab-runner-rs; the cache stays local",
            key("cache.s3")
        ));
        return Ok(None);
    }
    let bucket_name = text(s3.bucket_name);
    if bucket_name.is_empty() {
        return Err(invalid(
            key("cache.s3.BucketName"),
            "",
            "a bucket name is required",
        ));
    }
    let max = raw.max_uploaded_archive_size.unwrap_or(0);
    if max < 0 {
        return Err(invalid(
            key("cache.MaxUploadedArchiveSize"),
            max,
            "must not be negative",
        ));
    }
    Ok(Some(RemoteCache {
        path: text(raw.path),
        shared: raw.shared.unwrap_or(false),
        max_uploaded_archive_size: max as u64,
        s3: S3Settings {
            server_address: text(s3.server_address),
            access_key: text(s3.access_key),
            secret_key: Secret::new(text(s3.secret_key)),
            session_token: Secret::new(text(s3.session_token)),
            bucket_name,
            bucket_location: text(s3.bucket_location),
            insecure: s3.insecure.unwrap_or(false),
            path_style: s3.path_style,
            server_side_encryption: text(s3.server_side_encryption),
            server_side_encryption_key_id: text(s3.server_side_encryption_key_id),
        },
    }))
}

/// `[runners.docker]` as written; keys of upstream's that this runner does not use yet are
/// warned about, not refused, so registered files load.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawDocker {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    helper_image: Option<String>,
    #[serde(default)]
    pull_policy: Option<toml::Value>,
    #[serde(default)]
    allowed_pull_policies: Vec<String>,
    #[serde(default)]
    allowed_images: Vec<String>,
    #[serde(default)]
    privileged: Option<bool>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    memory: Option<String>,
    #[serde(default)]
    cpus: Option<String>,
    #[serde(default)]
    network_mode: Option<String>,
    #[serde(default)]
    extra_hosts: Vec<String>,
    #[serde(default)]
    dns: Vec<String>,
    #[serde(default)]
    shm_size: Option<i64>,
    #[serde(default)]
    cap_add: Vec<String>,
    #[serde(default)]
    cap_drop: Vec<String>,
    #[serde(default)]
    security_opt: Vec<String>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    wait_for_services_timeout: Option<i64>,
    #[serde(default)]
    cache_dir: Option<String>,
    #[serde(default)]
    disable_cache: Option<bool>,
    #[serde(default)]
    services: Vec<RawDockerService>,
    #[serde(default)]
    services_limit: Option<i64>,
    #[serde(default)]
    allowed_services: Vec<String>,
    #[serde(default)]
    disable_entrypoint_overwrite: Option<bool>,
    #[serde(default)]
    allowed_users: Vec<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    memory_swap: Option<String>,
    #[serde(default)]
    memory_reservation: Option<String>,
    #[serde(default)]
    cpuset_cpus: Option<String>,
    #[serde(default)]
    cpuset_mems: Option<String>,
    #[serde(default)]
    cpu_shares: Option<i64>,
    #[serde(default)]
    cgroup_parent: Option<String>,
    #[serde(default)]
    oom_kill_disable: Option<bool>,
    #[serde(default)]
    oom_score_adjust: Option<i64>,
    #[serde(default)]
    dns_search: Vec<String>,
    #[serde(default)]
    group_add: Vec<String>,
    #[serde(default)]
    userns_mode: Option<String>,
    #[serde(default)]
    pid_mode: Option<String>,
    #[serde(default)]
    ipcmode: Option<String>,
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    device_cgroup_rules: Vec<String>,
    #[serde(default)]
    ulimit: HashMap<String, String>,
    #[serde(default)]
    tmpfs: HashMap<String, String>,
    #[serde(default)]
    services_tmpfs: HashMap<String, String>,
    #[serde(default)]
    sysctls: HashMap<String, String>,
    #[serde(default)]
    links: Vec<String>,
    #[serde(default)]
    volumes_from: Vec<String>,
    #[serde(default)]
    volume_driver: Option<String>,
    #[serde(default)]
    volume_driver_ops: HashMap<String, String>,
    #[serde(default)]
    volume_keep: Option<bool>,
    #[serde(default)]
    mac_address: Option<String>,
    #[serde(default)]
    container_labels: HashMap<String, String>,
    #[serde(default)]
    services_privileged: Option<bool>,
    #[serde(default)]
    allowed_privileged_images: Vec<String>,
    #[serde(default)]
    allowed_privileged_services: Vec<String>,
    #[serde(default)]
    services_security_opt: Vec<String>,
    #[serde(default)]
    service_memory: Option<String>,
    #[serde(default)]
    service_memory_swap: Option<String>,
    #[serde(default)]
    service_memory_reservation: Option<String>,
    #[serde(default)]
    service_cpuset_cpus: Option<String>,
    #[serde(default)]
    service_cpu_shares: Option<i64>,
    #[serde(default)]
    service_cpus: Option<String>,
    #[serde(default)]
    service_cgroup_parent: Option<String>,
    #[serde(default)]
    network_mtu: Option<i64>,
    #[serde(default)]
    enable_ipv6: Option<bool>,
    #[serde(default)]
    services_devices: HashMap<String, Vec<String>>,
    #[serde(default)]
    log_options: HashMap<String, String>,
    #[serde(default)]
    tls_cert_path: Option<String>,
    #[serde(default)]
    tls_verify: Option<bool>,
}

/// `[[runners.docker.services]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDockerService {
    name: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    entrypoint: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    environment: Vec<String>,
}

const DOCKER_KEYS: &[&str] = &[
    "host",
    "image",
    "helper_image",
    "pull_policy",
    "allowed_pull_policies",
    "allowed_images",
    "privileged",
    "user",
    "memory",
    "cpus",
    "network_mode",
    "extra_hosts",
    "dns",
    "shm_size",
    "cap_add",
    "cap_drop",
    "security_opt",
    "devices",
    "volumes",
    "wait_for_services_timeout",
    "cache_dir",
    "disable_cache",
    "services",
    "services_limit",
    "allowed_services",
    "disable_entrypoint_overwrite",
    "allowed_users",
    "hostname",
    "memory_swap",
    "memory_reservation",
    "cpuset_cpus",
    "cpuset_mems",
    "cpu_shares",
    "cgroup_parent",
    "oom_kill_disable",
    "oom_score_adjust",
    "dns_search",
    "group_add",
    "userns_mode",
    "pid_mode",
    "ipcmode",
    "runtime",
    "device_cgroup_rules",
    "ulimit",
    "tmpfs",
    "services_tmpfs",
    "sysctls",
    "links",
    "volumes_from",
    "volume_driver",
    "volume_driver_ops",
    "volume_keep",
    "mac_address",
    "container_labels",
    "services_privileged",
    "allowed_privileged_images",
    "allowed_privileged_services",
    "services_security_opt",
    "service_memory",
    "service_memory_swap",
    "service_memory_reservation",
    "service_cpuset_cpus",
    "service_cpu_shares",
    "service_cpus",
    "service_cgroup_parent",
    "network_mtu",
    "enable_ipv6",
    "services_devices",
    "log_options",
    "tls_cert_path",
    "tls_verify",
];

/// `512m`, `1g`, `1048576`: bytes, as docker's units.
fn docker_bytes(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(index) => text.split_at(index),
        None => (text.as_str(), ""),
    };
    let value: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * scale) as i64)
}

fn pull_policies(key: &str, values: &[String]) -> Result<Vec<PullPolicy>, ConfigError> {
    values
        .iter()
        .map(|value| {
            PullPolicy::parse(value)
                .ok_or_else(|| invalid(key, value, "expected always, if-not-present or never"))
        })
        .collect()
}

fn docker_config(
    key: &dyn Fn(&str) -> String,
    raw: &toml::Value,
    warnings: &mut Vec<String>,
) -> Result<DockerConfig, ConfigError> {
    if let Some(table) = raw.as_table() {
        for name in table.keys() {
            if !DOCKER_KEYS.contains(&name.as_str()) {
                warnings.push(format!(
                    "{}: not supported by gitlab-runner-rs yet, ignored",
                    key(&format!("docker.{name}"))
                ));
            }
        }
    }
    let raw: RawDocker = raw
        .clone()
        .try_into()
        .map_err(|error: toml::de::Error| invalid(key("docker"), "", error.message()))?;
    let defaults = DockerConfig::default();
    let pull_policy = match &raw.pull_policy {
        None => defaults.pull_policy.clone(),
        Some(toml::Value::String(one)) => {
            pull_policies(&key("docker.pull_policy"), std::slice::from_ref(one))?
        }
        Some(toml::Value::Array(list)) => pull_policies(
            &key("docker.pull_policy"),
            &list
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>(),
        )?,
        Some(other) => {
            return Err(invalid(
                key("docker.pull_policy"),
                other,
                "expected a policy or a list of policies",
            ))
        }
    };
    let bytes = |name: &str, value: &Option<String>| -> Result<Option<i64>, ConfigError> {
        match value.as_deref().filter(|text| !text.is_empty()) {
            None => Ok(None),
            Some(text) => docker_bytes(text).map(Some).ok_or_else(|| {
                invalid(
                    key(&format!("docker.{name}")),
                    text,
                    "expected a size such as 512m or 2g",
                )
            }),
        }
    };
    let cpus = |name: &str, value: &Option<String>| -> Result<Option<i64>, ConfigError> {
        match value.as_deref().filter(|text| !text.is_empty()) {
            None => Ok(None),
            Some(text) => text
                .parse::<f64>()
                .map(|cpus| Some((cpus * 1e9) as i64))
                .map_err(|_| {
                    invalid(
                        key(&format!("docker.{name}")),
                        text,
                        "expected a number such as 1.5",
                    )
                }),
        }
    };
    let resources = executor_docker::Resources {
        memory: bytes("memory", &raw.memory)?,
        memory_swap: bytes("memory_swap", &raw.memory_swap)?,
        memory_reservation: bytes("memory_reservation", &raw.memory_reservation)?,
        nano_cpus: cpus("cpus", &raw.cpus)?,
        cpuset_cpus: raw.cpuset_cpus.clone().unwrap_or_default(),
        cpu_shares: raw.cpu_shares.filter(|shares| *shares > 0),
        cgroup_parent: raw.cgroup_parent.clone().unwrap_or_default(),
    };
    let service_resources = executor_docker::Resources {
        memory: bytes("service_memory", &raw.service_memory)?,
        memory_swap: bytes("service_memory_swap", &raw.service_memory_swap)?,
        memory_reservation: bytes(
            "service_memory_reservation",
            &raw.service_memory_reservation,
        )?,
        nano_cpus: cpus("service_cpus", &raw.service_cpus)?,
        cpuset_cpus: raw.service_cpuset_cpus.clone().unwrap_or_default(),
        cpu_shares: raw.service_cpu_shares.filter(|shares| *shares > 0),
        cgroup_parent: raw.service_cgroup_parent.clone().unwrap_or_default(),
    };
    let mut ulimits = Vec::new();
    for (name, limits) in &raw.ulimit {
        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
        let parse = |text: &str| {
            text.trim().parse::<i64>().map_err(|_| {
                invalid(
                    key(&format!("docker.ulimit.{name}")),
                    limits,
                    "expected <soft>[:<hard>] numbers",
                )
            })
        };
        ulimits.push((name.clone(), parse(soft)?, parse(hard)?));
    }
    ulimits.sort();
    Ok(DockerConfig {
        host: raw.host.filter(|h| !h.is_empty()),
        tls_cert_path: raw.tls_cert_path.unwrap_or_default(),
        tls_verify: raw.tls_verify.unwrap_or(false),
        image: raw.image.unwrap_or_default(),
        helper_image: raw
            .helper_image
            .filter(|h| !h.is_empty())
            .unwrap_or(defaults.helper_image),
        pull_policy,
        allowed_pull_policies: pull_policies(
            &key("docker.allowed_pull_policies"),
            &raw.allowed_pull_policies,
        )?,
        allowed_images: raw.allowed_images,
        privileged: raw.privileged.unwrap_or(false),
        user: raw.user.unwrap_or_default(),
        allowed_users: raw.allowed_users,
        hostname: raw.hostname.unwrap_or_default(),
        resources,
        service_resources,
        cpuset_mems: raw.cpuset_mems.unwrap_or_default(),
        oom_kill_disable: raw.oom_kill_disable.unwrap_or(false),
        oom_score_adjust: raw.oom_score_adjust.filter(|adjust| *adjust != 0),
        dns_search: raw.dns_search,
        group_add: raw.group_add,
        userns_mode: raw.userns_mode.unwrap_or_default(),
        pid_mode: raw.pid_mode.unwrap_or_default(),
        ipc_mode: raw.ipcmode.unwrap_or_default(),
        runtime: raw.runtime.unwrap_or_default(),
        device_cgroup_rules: raw.device_cgroup_rules,
        ulimits,
        tmpfs: raw.tmpfs,
        services_tmpfs: raw.services_tmpfs,
        sysctls: raw.sysctls,
        links: raw.links,
        volumes_from: raw.volumes_from,
        volume_driver: raw.volume_driver.unwrap_or_default(),
        volume_driver_ops: raw.volume_driver_ops,
        volume_keep: raw.volume_keep.unwrap_or(false),
        mac_address: raw.mac_address.unwrap_or_default(),
        container_labels: raw.container_labels,
        services_privileged: raw.services_privileged,
        allowed_privileged_images: raw.allowed_privileged_images,
        allowed_privileged_services: raw.allowed_privileged_services,
        services_security_opt: raw.services_security_opt,
        network_mtu: raw.network_mtu.filter(|mtu| *mtu > 0),
        enable_ipv6: raw.enable_ipv6.unwrap_or(false),
        services_devices: {
            let mut devices: Vec<(String, Vec<String>)> =
                raw.services_devices.into_iter().collect();
            devices.sort();
            devices
        },
        log_options: raw.log_options,
        network_mode: raw.network_mode.unwrap_or_default(),
        extra_hosts: raw.extra_hosts,
        dns: raw.dns,
        shm_size: raw.shm_size.filter(|size| *size > 0),
        cap_add: raw.cap_add,
        cap_drop: raw.cap_drop,
        security_opt: raw.security_opt,
        devices: raw.devices,
        volumes: raw.volumes,
        cache_dir: raw.cache_dir.unwrap_or_default(),
        disable_cache: raw.disable_cache.unwrap_or(false),
        wait_for_services_timeout: raw
            .wait_for_services_timeout
            .unwrap_or(defaults.wait_for_services_timeout),
        services: raw
            .services
            .into_iter()
            .map(|service| runner_core::job::Image {
                name: service.name,
                alias: service.alias,
                command: service.command,
                entrypoint: service.entrypoint,
                variables: service
                    .environment
                    .iter()
                    .map(|entry| {
                        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
                        runner_core::variables::JobVariable::new(name, value)
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        // Upstream: a negative limit (the default -1) is no limit.
        services_limit: raw
            .services_limit
            .and_then(|limit| usize::try_from(limit).ok()),
        allowed_services: raw.allowed_services,
        disable_entrypoint_overwrite: raw.disable_entrypoint_overwrite.unwrap_or(false),
    })
}

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
fn custom_config(
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

fn ssh_config(key: &dyn Fn(&str) -> String, raw: &toml::Value) -> Result<SshConfig, ConfigError> {
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
    pub feature_flags: BTreeMap<String, bool>,
    pub graceful_kill_timeout: Duration,
    pub force_kill_timeout: Duration,
}

impl RunnerConfig {
    pub fn short_token(&self) -> String {
        runner_core::dirs::short_token(self.token.expose())
    }
}

/// The validated file.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub concurrent: usize,
    pub check_interval: Duration,
    pub shutdown_timeout: Duration,
    pub user: Option<String>,
    pub runners: Vec<RunnerConfig>,
    pub raw: RawConfig,
    pub warnings: Vec<String>,
}

fn positive(key: &str, value: Option<i64>, default: i64) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) if value < 0 => Err(invalid(key, value, "must not be negative")),
        Some(value) => Ok(value),
    }
}

/// The most jobs or requests a count may allow: far beyond any machine, and far below the
/// semaphore limit past which building the runner's state would panic.
pub const MAX_COUNT: i64 = 1_000_000;

/// A count such as `concurrent`, `limit` or `request_concurrency`: not negative and at most
/// [`MAX_COUNT`].
fn count(key: &str, value: Option<i64>, default: i64) -> Result<usize, ConfigError> {
    let value = positive(key, value, default)?;
    if value > MAX_COUNT {
        return Err(invalid(key, value, &format!("must be at most {MAX_COUNT}")));
    }
    Ok(value as usize)
}

/// A retry or attempt count kept in a `u32`; 0 means the default.
fn attempts(key: &str, value: Option<i64>, default: u32) -> Result<u32, ConfigError> {
    match positive(key, value, i64::from(default))? {
        0 => Ok(default),
        value => u32::try_from(value)
            .map_err(|_| invalid(key, value, &format!("must be at most {}", u32::MAX))),
    }
}

fn duration(key: &str, value: &Option<String>) -> Result<Option<Duration>, ConfigError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => parse_go_duration(text)
            .map(Some)
            .ok_or_else(|| invalid(key, text, "expected a duration such as 30s, 10m or 1h")),
    }
}

impl RunnerConfig {
    fn from_raw(
        index: usize,
        raw: &RawRunner,
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
        let executor = match raw.executor.as_str() {
            "shell" => ExecutorKind::Shell,
            "ssh" => ExecutorKind::Ssh,
            "custom" => ExecutorKind::Custom,
            "docker" => ExecutorKind::Docker,
            "" => return Err(invalid(key("executor"), "", "an executor is required")),
            other => {
                return Err(invalid(
                    key("executor"),
                    other,
                    "not supported by this runner (supported: shell, ssh, custom, docker)",
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
            ssh: raw
                .ssh
                .as_ref()
                .map(|value| ssh_config(&key, value))
                .transpose()?,
            custom: raw
                .custom
                .as_ref()
                .map(|value| custom_config(&key, value))
                .transpose()?,
            docker: match &raw.docker {
                Some(value) => Some(docker_config(&key, value, warnings)?),
                None => None,
            },
            remote_cache: match &raw.cache {
                Some(value) => remote_cache(&key, value, warnings)?,
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
            feature_flags: raw.feature_flags.clone(),
            graceful_kill_timeout: seconds(
                "graceful_kill_timeout",
                raw.graceful_kill_timeout,
                10 * 60,
            )?,
            force_kill_timeout: seconds("force_kill_timeout", raw.force_kill_timeout, 10)?,
        })
    }
}

impl Config {
    /// Parses config text; `path` names the file in messages and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let deserializer = toml::Deserializer::new(text);
        let raw: RawConfig = serde_ignored::deserialize(deserializer, |ignored| {
            warnings.push(format!("unknown key {ignored} in {}", path.display()));
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
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let runners = raw
            .runners
            .iter()
            .enumerate()
            .map(|(index, runner)| RunnerConfig::from_raw(index, runner, &base_dir, &mut warnings))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            concurrent,
            check_interval,
            shutdown_timeout,
            user: raw.user.clone().filter(|user| !user.is_empty()),
            runners,
            raw,
            warnings,
        })
    }

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
mod tests {
    use super::*;

    const REAL: &str = r#"
concurrent = 4
check_interval = 0
shutdown_timeout = 0

[session_server]
  session_timeout = 1800

[[runners]]
  name = "my-runner"
  url = "https://gitlab.example.com/"
  id = 12
  token = "glrt-t1_abcdefghijklmnopq"
  token_obtained_at = 2024-01-01T00:00:00Z
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "shell"
  limit = 2
  builds_dir = "/srv/builds"
  environment = ["A=1", "B=two"]
  prepare_timeout = "5m"
  frobnicate = true
  [runners.custom_build_dir]
    enabled = true
  [runners.cache]
    MaxUploadedArchiveSize = 0
  [runners.feature_flags]
    FF_TIMESTAMPS = false
"#;

    #[test]
    fn loads_a_real_gitlab_config_and_warns_on_unknown_keys() {
        let config = Config::parse(Path::new("/etc/gitlab-runner/config.toml"), REAL).unwrap();
        assert_eq!(config.concurrent, 4);
        assert_eq!(config.check_interval, Duration::from_secs(3));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
        let runner = &config.runners[0];
        assert_eq!(runner.limit, 2);
        assert_eq!(runner.short_token(), "abcdefghi");
        assert_eq!(runner.prepare_timeout, Some(Duration::from_secs(300)));
        assert_eq!(runner.custom_build_dir_enabled, Some(true));
        assert_eq!(runner.feature_flags.get("FF_TIMESTAMPS"), Some(&false));
        assert_eq!(runner.output_limit, 4096 * 1024);
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(config.warnings[0].contains("frobnicate"));
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let error = Config::parse(Path::new("c.toml"), "concurrent = 0").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid value for concurrent: \"0\" (must be at least 1)"
        );
        let text = REAL.replace("prepare_timeout = \"5m\"", "prepare_timeout = \"soon\"");
        let error = Config::parse(Path::new("c.toml"), &text).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("runners[0].prepare_timeout: \"soon\""),
            "{error}"
        );
        let text = REAL.replace("executor = \"shell\"", "executor = \"virtualbox\"");
        let error = Config::parse(Path::new("c.toml"), &text).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("runners[0].executor: \"virtualbox\""),
            "{error}"
        );
        let error = Config::parse(Path::new("c.toml"), "concurrent = \"x\"").unwrap_err();
        assert!(error.to_string().starts_with("parsing c.toml"), "{error}");
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_key_not_a_panic() {
        // Security probe finding 5: each of these panicked at start (exit 101 with a backtrace)
        // or, for output_limit, wrapped to a 0-byte log.
        let cases = [
            ("concurrent = 4", "concurrent = 9223372036854775807", "invalid value for concurrent: \"9223372036854775807\" (must be at most 1000000)"),
            ("limit = 2", "limit = 9223372036854775807", "invalid value for runners[0].limit: \"9223372036854775807\" (must be at most 1000000)"),
            ("limit = 2", "limit = 2\n  request_concurrency = 3000000000000000000", "invalid value for runners[0].request_concurrency: \"3000000000000000000\" (must be at most 1000000)"),
            ("limit = 2", "limit = 2\n  unhealthy_interval = \"99999999999999999999999h\"", "invalid value for runners[0].unhealthy_interval: \"99999999999999999999999h\" (expected a duration such as 30s, 10m or 1h)"),
            ("limit = 2", "limit = 2\n  output_limit = 18014398509481984", "invalid value for runners[0].output_limit: \"18014398509481984\" (is too large)"),
            ("limit = 2", "limit = 2\n  unhealthy_requests_limit = 4294967296", "invalid value for runners[0].unhealthy_requests_limit: \"4294967296\" (must be at most 4294967295)"),
        ];
        for (from, to, expected) in cases {
            let text = REAL.replace(from, to);
            assert_ne!(text, REAL);
            let error = Config::parse(Path::new("c.toml"), &text).unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
        let text = REAL.replace("limit = 2", "limit = 2\n  output_limit = 9007199254740991");
        let config = Config::parse(Path::new("c.toml"), &text).unwrap();
        assert_eq!(config.runners[0].output_limit, 9_007_199_254_740_991 * 1024);
    }

    #[test]
    fn the_ssh_section_takes_upstreams_keys_and_defaults() {
        let ssh_runner = REAL.replace("executor = \"shell\"", "executor = \"ssh\"");
        let with = |section: &str| format!("{ssh_runner}  [runners.ssh]\n{section}");
        let config = Config::parse(
            Path::new("c.toml"),
            &with("    host = \"build-host\"\n    port = \"2222\"\n    user = \"ci\"\n    password = \"pw\"\n    identity_file = \"/k\"\n    disable_strict_host_key_checking = true\n    known_hosts_file = \"/kh\"\n"),
        )
        .unwrap();
        let runner = &config.runners[0];
        assert_eq!(runner.executor, ExecutorKind::Ssh);
        let ssh = runner.ssh.as_ref().unwrap();
        assert_eq!(
            (ssh.host.as_str(), ssh.port, ssh.user.as_str()),
            ("build-host", 2222, "ci")
        );
        assert_eq!(ssh.password.expose(), "pw");
        assert_eq!(ssh.identity_file.as_deref(), Some(Path::new("/k")));
        assert!(ssh.disable_strict_host_key_checking);
        assert_eq!(ssh.known_hosts_file.as_deref(), Some(Path::new("/kh")));
        // Empty values fall back to upstream's defaults; a number is taken for the port.
        let config = Config::parse(
            Path::new("c.toml"),
            &with("    host = \"\"\n    port = 22\n"),
        )
        .unwrap();
        let ssh = config.runners[0].ssh.as_ref().unwrap();
        assert_eq!(
            (ssh.host.as_str(), ssh.port, ssh.user.as_str()),
            ("localhost", 22, "root")
        );
        assert!(!ssh.disable_strict_host_key_checking);
        // No section: jobs fail in prepare, as upstream's "missing SSH configuration".
        let config = Config::parse(Path::new("c.toml"), &ssh_runner).unwrap();
        assert!(config.runners[0].ssh.is_none());

        let error = Config::parse(Path::new("c.toml"), &with("    port = \"ssh\"\n")).unwrap_err();
        assert!(
            error.to_string().contains("runners[0].ssh.port: \"ssh\""),
            "{error}"
        );
        let error = Config::parse(Path::new("c.toml"), &with("    hots = \"x\"\n")).unwrap_err();
        assert!(error.to_string().contains("hots"), "{error}");
    }

    #[test]
    fn a_registered_docker_section_loads_with_warnings_for_what_is_not_used() {
        let docker = REAL.replace("executor = \"shell\"", "executor = \"docker\"")
            + "  [runners.docker]\n    image = \"debian:bookworm\"\n    tls_verify = false\n    gpus = \"all\"\n    disable_cache = false\n    volumes = [\"/cache\", \"/srv/data:/data:ro\"]\n    pull_policy = \"if-not-present\"\n    memory = \"512m\"\n    wait_for_services_timeout = 5\n    services_limit = 2\n    service_memory = \"128m\"\n    oom_kill_disable = false\n    network_mtu = 0\n    ulimit = { nofile = \"1024:2048\", core = \"0\" }\n    container_labels = { team = \"ci\" }\n    [[runners.docker.services]]\n      name = \"postgres:16\"\n      alias = \"db\"\n      environment = [\"POSTGRES_PASSWORD=pw\"]\n";
        let config = Config::parse(Path::new("c.toml"), &docker).unwrap();
        let runner = &config.runners[0];
        let settings = runner.docker.as_ref().unwrap();
        assert_eq!(settings.image, "debian:bookworm");
        assert_eq!(settings.pull_policy, vec![PullPolicy::IfNotPresent]);
        assert_eq!(settings.resources.memory, Some(512 * 1024 * 1024));
        let warnings = config.warnings.join("\n");
        assert!(!warnings.contains("tls_verify"), "{warnings}");
        assert!(warnings.contains("docker.gpus"), "{warnings}");
        for used in ["disable_cache", "/cache", "services"] {
            assert!(!warnings.contains(used), "{warnings}");
        }
        assert_eq!(settings.volumes, vec!["/cache", "/srv/data:/data:ro"]);
        assert_eq!(settings.services_limit, Some(2));
        assert_eq!(settings.service_resources.memory, Some(128 * 1024 * 1024));
        assert_eq!(
            settings.ulimits,
            vec![("core".into(), 0, 0), ("nofile".into(), 1024, 2048)]
        );
        assert_eq!(settings.network_mtu, None);
        assert_eq!(settings.container_labels["team"], "ci");
        for key in [
            "ulimit",
            "container_labels",
            "service_memory",
            "network_mtu",
        ] {
            assert!(!warnings.contains(key), "{warnings}");
        }
        assert_eq!(settings.services[0].name, "postgres:16");
        assert_eq!(settings.services[0].aliases(), vec!["db"]);
        assert_eq!(settings.services[0].variables[0].key, "POSTGRES_PASSWORD");
        assert_eq!(settings.services[0].variables[0].value, "pw");
        assert!(
            !warnings.contains("wait_for_services_timeout"),
            "{warnings}"
        );
        assert_eq!(settings.wait_for_services_timeout, 5);
        let bad_limit = docker.replace("\"1024:2048\"", "\"lots\"");
        let error = Config::parse(Path::new("c.toml"), &bad_limit).unwrap_err();
        assert!(
            error.to_string().contains("docker.ulimit.nofile: \"lots\""),
            "{error}"
        );
        let bad = docker.replace("\"if-not-present\"", "\"sometimes\"");
        let error = Config::parse(Path::new("c.toml"), &bad).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("docker.pull_policy: \"sometimes\""),
            "{error}"
        );
    }
}
