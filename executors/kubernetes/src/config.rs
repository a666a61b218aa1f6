//! `[runners.kubernetes]` as written, and its validation into [`KubernetesConfig`] with
//! upstream's defaults (`poll_interval` 3 s, `poll_timeout` 180 s, `cleanup_resources_timeout`
//! 5 m, `retry_limit` 5, `retry_backoff_max` 2 s with a 500 ms floor, warning events on).
//! Keys of upstream's that this executor does not read yet are not fields here, so the loader
//! warns about each one it meets.

use std::collections::BTreeMap;
use std::time::Duration;

use runner_core::config_section::{InvalidValue, OneOrMany};
use serde::Deserialize;

use crate::connect::ConnectionSettings;
use crate::overwrites::{OverwriteSettings, ResourceSettings};

/// A Go duration given as a string (`"5m"`) or as nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GoDuration {
    /// `"1h30m"`.
    Text(String),
    /// Nanoseconds.
    Nanoseconds(i64),
}

/// `[[runners.kubernetes.host_aliases]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RawHostAlias {
    /// The address.
    pub ip: String,
    /// The names it answers to.
    #[serde(default)]
    pub hostnames: Vec<String>,
}

/// `[runners.kubernetes]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawKubernetesConfig {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    bearer_token: Option<String>,
    #[serde(default)]
    bearer_token_overwrite_allowed: Option<bool>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    namespace_overwrite_allowed: Option<String>,
    #[serde(default)]
    namespace_per_job: Option<bool>,
    #[serde(default)]
    privileged: Option<bool>,
    #[serde(default)]
    allow_privilege_escalation: Option<bool>,
    #[serde(default)]
    cpu_limit: Option<String>,
    #[serde(default)]
    cpu_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    cpu_request: Option<String>,
    #[serde(default)]
    cpu_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    memory_limit: Option<String>,
    #[serde(default)]
    memory_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    memory_request: Option<String>,
    #[serde(default)]
    memory_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    ephemeral_storage_limit: Option<String>,
    #[serde(default)]
    ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    ephemeral_storage_request: Option<String>,
    #[serde(default)]
    ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    helper_cpu_limit: Option<String>,
    #[serde(default)]
    helper_cpu_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    helper_cpu_request: Option<String>,
    #[serde(default)]
    helper_cpu_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    helper_memory_limit: Option<String>,
    #[serde(default)]
    helper_memory_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    helper_memory_request: Option<String>,
    #[serde(default)]
    helper_memory_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    helper_ephemeral_storage_limit: Option<String>,
    #[serde(default)]
    helper_ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    helper_ephemeral_storage_request: Option<String>,
    #[serde(default)]
    helper_ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    service_cpu_limit: Option<String>,
    #[serde(default)]
    service_cpu_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    service_cpu_request: Option<String>,
    #[serde(default)]
    service_cpu_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    service_memory_limit: Option<String>,
    #[serde(default)]
    service_memory_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    service_memory_request: Option<String>,
    #[serde(default)]
    service_memory_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    service_ephemeral_storage_limit: Option<String>,
    #[serde(default)]
    service_ephemeral_storage_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    service_ephemeral_storage_request: Option<String>,
    #[serde(default)]
    service_ephemeral_storage_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    pod_cpu_limit: Option<String>,
    #[serde(default)]
    pod_cpu_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    pod_cpu_request: Option<String>,
    #[serde(default)]
    pod_cpu_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    pod_memory_limit: Option<String>,
    #[serde(default)]
    pod_memory_limit_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    pod_memory_request: Option<String>,
    #[serde(default)]
    pod_memory_request_overwrite_max_allowed: Option<String>,
    #[serde(default)]
    allowed_images: Vec<String>,
    #[serde(default)]
    allowed_services: Vec<String>,
    #[serde(default)]
    allowed_pull_policies: Vec<String>,
    #[serde(default)]
    pull_policy: Option<OneOrMany>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    node_selector_overwrite_allowed: Option<String>,
    #[serde(default)]
    node_tolerations: BTreeMap<String, String>,
    #[serde(default)]
    node_tolerations_overwrite_allowed: Option<String>,
    #[serde(default)]
    image_pull_secrets: Vec<String>,
    #[serde(default)]
    use_service_account_image_pull_secrets: Option<bool>,
    #[serde(default)]
    helper_image: Option<String>,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    service_account_overwrite_allowed: Option<String>,
    #[serde(default)]
    automount_service_account_token: Option<bool>,
    #[serde(default)]
    pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    pod_labels_overwrite_allowed: Option<String>,
    #[serde(default)]
    pod_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pod_annotations_overwrite_allowed: Option<String>,
    #[serde(default)]
    cap_add: Vec<String>,
    #[serde(default)]
    cap_drop: Vec<String>,
    #[serde(default)]
    host_aliases: Vec<RawHostAlias>,
    #[serde(default)]
    dns_policy: Option<String>,
    #[serde(default)]
    priority_class_name: Option<String>,
    #[serde(default)]
    scheduler_name: Option<String>,
    #[serde(default)]
    runtime_class_name: Option<String>,
    #[serde(default)]
    pod_termination_grace_period_seconds: Option<i64>,
    #[serde(default)]
    cleanup_grace_period_seconds: Option<i64>,
    #[serde(default)]
    cleanup_resources_timeout: Option<GoDuration>,
    #[serde(default)]
    poll_interval: Option<i64>,
    #[serde(default)]
    poll_timeout: Option<i64>,
    #[serde(default)]
    resource_availability_check_max_attempts: Option<i64>,
    #[serde(default)]
    retry_limit: Option<i64>,
    #[serde(default)]
    retry_backoff_max: Option<i64>,
    #[serde(default)]
    retry_limits: BTreeMap<String, i64>,
    #[serde(default)]
    logs_base_dir: Option<String>,
    #[serde(default)]
    scripts_base_dir: Option<String>,
    #[serde(default)]
    print_pod_warning_events: Option<bool>,
    #[serde(default)]
    pod_disruption_budget: Option<bool>,
    #[serde(default)]
    volumes: crate::volumes::UserVolumes,
}

/// The validated `[runners.kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Where the API is.
    pub connection: ConnectionSettings,
    /// What job variables may change, and the resources.
    pub overwrites: OverwriteSettings,
    /// `image`: the build image when the job names none.
    pub image: String,
    /// `namespace_per_job`: `ci-job-<id>` made and removed per job.
    pub namespace_per_job: bool,
    /// `privileged`.
    pub privileged: Option<bool>,
    /// `allow_privilege_escalation`.
    pub allow_privilege_escalation: Option<bool>,
    /// `allowed_images`.
    pub allowed_images: Vec<String>,
    /// `allowed_services`.
    pub allowed_services: Vec<String>,
    /// `allowed_pull_policies`, as Kubernetes spells them.
    pub allowed_pull_policies: Vec<String>,
    /// `pull_policy`, as Kubernetes spells them; empty: the cluster's default.
    pub pull_policy: Vec<String>,
    /// `image_pull_secrets`.
    pub image_pull_secrets: Vec<String>,
    /// `use_service_account_image_pull_secrets`: the pod gets no `imagePullSecrets`.
    pub use_service_account_image_pull_secrets: bool,
    /// `helper_image`; empty: the runner's own.
    pub helper_image: String,
    /// `automount_service_account_token`.
    pub automount_service_account_token: Option<bool>,
    /// `cap_add`.
    pub cap_add: Vec<String>,
    /// `cap_drop`.
    pub cap_drop: Vec<String>,
    /// `[runners.kubernetes.volumes]`.
    pub volumes: crate::volumes::UserVolumes,
    /// `host_aliases`, after the services' entry.
    pub host_aliases: Vec<(String, Vec<String>)>,
    /// `dnsPolicy` as Kubernetes spells it; empty: `ClusterFirst`.
    pub dns_policy: String,
    /// `priority_class_name`.
    pub priority_class_name: String,
    /// `scheduler_name`.
    pub scheduler_name: String,
    /// `runtime_class_name`.
    pub runtime_class_name: String,
    /// `pod_termination_grace_period_seconds`.
    pub pod_termination_grace_period_seconds: Option<i64>,
    /// `cleanup_grace_period_seconds`.
    pub cleanup_grace_period_seconds: Option<i64>,
    /// `cleanup_resources_timeout` (5 m).
    pub cleanup_resources_timeout: Duration,
    /// `poll_interval` (3 s).
    pub poll_interval: Duration,
    /// `poll_timeout` (180 s).
    pub poll_timeout: Duration,
    /// `resource_availability_check_max_attempts`: 0 is off (a file without the key).
    pub resource_availability_check_max_attempts: u32,
    /// `retry_limit`: attempts of a request that failed in a retryable way (5).
    pub retry_limit: u32,
    /// `retry_backoff_max` (2 s; at least 500 ms).
    pub retry_backoff_max: Duration,
    /// `retry_limits`: attempts by a substring of the error.
    pub retry_limits: BTreeMap<String, u32>,
    /// `logs_base_dir`.
    pub logs_base_dir: String,
    /// `scripts_base_dir`.
    pub scripts_base_dir: String,
    /// `print_pod_warning_events` (on).
    pub print_pod_warning_events: bool,
    /// `pod_disruption_budget`.
    pub pod_disruption_budget: bool,
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

/// Upstream's pull policy names (`always`, `if-not-present`, `never`) as Kubernetes spells them.
fn pull_policy(key: &str, value: &str) -> Result<String, InvalidValue> {
    crate::pull::kubernetes_name(value)
        .map(str::to_string)
        .map_err(|_| InvalidValue::new(key, value, "expected always, if-not-present or never"))
}

fn dns_policy(key: &str, value: &str) -> Result<String, InvalidValue> {
    Ok(match value {
        "" => "",
        "none" => "None",
        "default" => "Default",
        "cluster-first" => "ClusterFirst",
        "cluster-first-with-host-net" => "ClusterFirstWithHostNet",
        other => {
            return Err(InvalidValue::new(
                key,
                other,
                "expected none, default, cluster-first or cluster-first-with-host-net",
            ))
        }
    }
    .to_string())
}

fn seconds_or(value: Option<i64>, default: u64) -> Duration {
    Duration::from_secs(
        value
            .filter(|value| *value > 0)
            .map_or(default, |value| value as u64),
    )
}

impl RawKubernetesConfig {
    /// Validates the section; `key` is how the file spells it (`runners[0].kubernetes`).
    pub fn validate(self, key: &str) -> Result<KubernetesConfig, InvalidValue> {
        let raw = self;
        let at = |name: &str| format!("{key}.{name}");
        let cleanup_resources_timeout = match &raw.cleanup_resources_timeout {
            None => None,
            Some(GoDuration::Nanoseconds(nanos)) => {
                (*nanos > 0).then(|| Duration::from_nanos(*nanos as u64))
            }
            Some(GoDuration::Text(text)) => Some(
                runner_core::settings::parse_go_duration(text).ok_or_else(|| {
                    InvalidValue::new(
                        at("cleanup_resources_timeout"),
                        text,
                        "expected a duration such as 5m",
                    )
                })?,
            ),
        }
        .filter(|duration| !duration.is_zero())
        .unwrap_or(Duration::from_secs(300));
        let backoff_ms = match raw.retry_backoff_max {
            Some(ms) if ms > 0 => ms.max(500) as u64,
            _ => 2000,
        };
        let retry_limits = raw
            .retry_limits
            .iter()
            .map(|(text, attempts)| {
                u32::try_from(*attempts)
                    .map(|attempts| (text.clone(), attempts))
                    .map_err(|_| {
                        InvalidValue::new(
                            at("retry_limits"),
                            attempts,
                            "expected a number of attempts",
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let overwrites = OverwriteSettings {
            namespace: text(&raw.namespace),
            namespace_overwrite_allowed: text(&raw.namespace_overwrite_allowed),
            service_account: text(&raw.service_account),
            service_account_overwrite_allowed: text(&raw.service_account_overwrite_allowed),
            bearer_token: text(&raw.bearer_token),
            bearer_token_overwrite_allowed: raw.bearer_token_overwrite_allowed.unwrap_or(false),
            pod_labels: raw.pod_labels.clone(),
            pod_labels_overwrite_allowed: text(&raw.pod_labels_overwrite_allowed),
            pod_annotations: raw.pod_annotations.clone(),
            pod_annotations_overwrite_allowed: text(&raw.pod_annotations_overwrite_allowed),
            node_selector: raw.node_selector.clone(),
            node_selector_overwrite_allowed: text(&raw.node_selector_overwrite_allowed),
            node_tolerations: raw.node_tolerations.clone(),
            node_tolerations_overwrite_allowed: text(&raw.node_tolerations_overwrite_allowed),
            build: ResourceSettings {
                cpu_limit: text(&raw.cpu_limit),
                cpu_limit_max: text(&raw.cpu_limit_overwrite_max_allowed),
                cpu_request: text(&raw.cpu_request),
                cpu_request_max: text(&raw.cpu_request_overwrite_max_allowed),
                memory_limit: text(&raw.memory_limit),
                memory_limit_max: text(&raw.memory_limit_overwrite_max_allowed),
                memory_request: text(&raw.memory_request),
                memory_request_max: text(&raw.memory_request_overwrite_max_allowed),
                ephemeral_storage_limit: text(&raw.ephemeral_storage_limit),
                ephemeral_storage_limit_max: text(
                    &raw.ephemeral_storage_limit_overwrite_max_allowed,
                ),
                ephemeral_storage_request: text(&raw.ephemeral_storage_request),
                ephemeral_storage_request_max: text(
                    &raw.ephemeral_storage_request_overwrite_max_allowed,
                ),
            },
            helper: ResourceSettings {
                cpu_limit: text(&raw.helper_cpu_limit),
                cpu_limit_max: text(&raw.helper_cpu_limit_overwrite_max_allowed),
                cpu_request: text(&raw.helper_cpu_request),
                cpu_request_max: text(&raw.helper_cpu_request_overwrite_max_allowed),
                memory_limit: text(&raw.helper_memory_limit),
                memory_limit_max: text(&raw.helper_memory_limit_overwrite_max_allowed),
                memory_request: text(&raw.helper_memory_request),
                memory_request_max: text(&raw.helper_memory_request_overwrite_max_allowed),
                ephemeral_storage_limit: text(&raw.helper_ephemeral_storage_limit),
                ephemeral_storage_limit_max: text(
                    &raw.helper_ephemeral_storage_limit_overwrite_max_allowed,
                ),
                ephemeral_storage_request: text(&raw.helper_ephemeral_storage_request),
                ephemeral_storage_request_max: text(
                    &raw.helper_ephemeral_storage_request_overwrite_max_allowed,
                ),
            },
            service: ResourceSettings {
                cpu_limit: text(&raw.service_cpu_limit),
                cpu_limit_max: text(&raw.service_cpu_limit_overwrite_max_allowed),
                cpu_request: text(&raw.service_cpu_request),
                cpu_request_max: text(&raw.service_cpu_request_overwrite_max_allowed),
                memory_limit: text(&raw.service_memory_limit),
                memory_limit_max: text(&raw.service_memory_limit_overwrite_max_allowed),
                memory_request: text(&raw.service_memory_request),
                memory_request_max: text(&raw.service_memory_request_overwrite_max_allowed),
                ephemeral_storage_limit: text(&raw.service_ephemeral_storage_limit),
                ephemeral_storage_limit_max: text(
                    &raw.service_ephemeral_storage_limit_overwrite_max_allowed,
                ),
                ephemeral_storage_request: text(&raw.service_ephemeral_storage_request),
                ephemeral_storage_request_max: text(
                    &raw.service_ephemeral_storage_request_overwrite_max_allowed,
                ),
            },
            pod: ResourceSettings {
                cpu_limit: text(&raw.pod_cpu_limit),
                cpu_limit_max: text(&raw.pod_cpu_limit_overwrite_max_allowed),
                cpu_request: text(&raw.pod_cpu_request),
                cpu_request_max: text(&raw.pod_cpu_request_overwrite_max_allowed),
                memory_limit: text(&raw.pod_memory_limit),
                memory_limit_max: text(&raw.pod_memory_limit_overwrite_max_allowed),
                memory_request: text(&raw.pod_memory_request),
                memory_request_max: text(&raw.pod_memory_request_overwrite_max_allowed),
                ..ResourceSettings::default()
            },
        };
        Ok(KubernetesConfig {
            connection: ConnectionSettings {
                host: text(&raw.host),
                context: text(&raw.context),
                cert_file: text(&raw.cert_file),
                key_file: text(&raw.key_file),
                ca_file: text(&raw.ca_file),
                bearer_token: text(&raw.bearer_token),
            },
            overwrites,
            image: text(&raw.image),
            namespace_per_job: raw.namespace_per_job.unwrap_or(false),
            privileged: raw.privileged,
            allow_privilege_escalation: raw.allow_privilege_escalation,
            allowed_images: raw.allowed_images,
            allowed_services: raw.allowed_services,
            allowed_pull_policies: raw
                .allowed_pull_policies
                .iter()
                .map(|value| pull_policy(&at("allowed_pull_policies"), value))
                .collect::<Result<_, _>>()?,
            pull_policy: raw
                .pull_policy
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|value| pull_policy(&at("pull_policy"), value))
                .collect::<Result<_, _>>()?,
            image_pull_secrets: raw.image_pull_secrets,
            use_service_account_image_pull_secrets: raw
                .use_service_account_image_pull_secrets
                .unwrap_or(false),
            helper_image: text(&raw.helper_image),
            automount_service_account_token: raw.automount_service_account_token,
            cap_add: raw.cap_add,
            cap_drop: raw.cap_drop,
            volumes: raw.volumes.clone(),
            host_aliases: raw
                .host_aliases
                .into_iter()
                .map(|alias| (alias.ip, alias.hostnames))
                .collect(),
            dns_policy: dns_policy(&at("dns_policy"), &text(&raw.dns_policy))?,
            priority_class_name: text(&raw.priority_class_name),
            scheduler_name: text(&raw.scheduler_name),
            runtime_class_name: text(&raw.runtime_class_name),
            pod_termination_grace_period_seconds: raw.pod_termination_grace_period_seconds,
            cleanup_grace_period_seconds: raw.cleanup_grace_period_seconds,
            cleanup_resources_timeout,
            poll_interval: seconds_or(raw.poll_interval, 3),
            poll_timeout: seconds_or(raw.poll_timeout, 180),
            resource_availability_check_max_attempts: match raw
                .resource_availability_check_max_attempts
            {
                None => 0,
                Some(attempts) if attempts < 0 => 5,
                Some(attempts) => u32::try_from(attempts).unwrap_or(u32::MAX),
            },
            retry_limit: raw
                .retry_limit
                .filter(|limit| *limit > 0)
                .map_or(5, |limit| u32::try_from(limit).unwrap_or(u32::MAX)),
            retry_backoff_max: Duration::from_millis(backoff_ms),
            retry_limits,
            logs_base_dir: text(&raw.logs_base_dir),
            scripts_base_dir: text(&raw.scripts_base_dir),
            print_pod_warning_events: raw.print_pod_warning_events.unwrap_or(true),
            pod_disruption_budget: raw.pod_disruption_budget.unwrap_or(false),
        })
    }
}

impl KubernetesConfig {
    /// The API request retry policy of `retry_limit`, `retry_limits` and `retry_backoff_max`.
    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            limit: self.retry_limit,
            limits: self.retry_limits.clone(),
            backoff_max: self.retry_backoff_max,
        }
    }

    /// Attempts at waiting for the pod: `poll_timeout / poll_interval` (integer division),
    /// plus the first look, as upstream polls.
    pub fn poll_attempts(&self) -> u64 {
        self.poll_timeout.as_secs() / self.poll_interval.as_secs().max(1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KubernetesConfig, InvalidValue> {
        let raw: RawKubernetesConfig =
            serde_json::from_value(serde_json::to_value(toml_like(text)).unwrap()).unwrap();
        raw.validate("runners[0].kubernetes")
    }

    /// `key = value` lines, values as JSON: enough for these tests without a TOML parser.
    fn toml_like(text: &str) -> serde_json::Map<String, serde_json::Value> {
        text.lines()
            .filter_map(|line| line.split_once(" = "))
            .map(|(key, value)| {
                (
                    key.trim().to_string(),
                    serde_json::from_str(value.trim()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn an_empty_section_gets_upstreams_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.poll_interval, Duration::from_secs(3));
        assert_eq!(config.poll_timeout, Duration::from_secs(180));
        assert_eq!(config.poll_attempts(), 61);
        assert_eq!(config.cleanup_resources_timeout, Duration::from_secs(300));
        assert_eq!(config.retry_limit, 5);
        assert_eq!(config.retry_backoff_max, Duration::from_millis(2000));
        assert_eq!(config.resource_availability_check_max_attempts, 0);
        assert!(config.print_pod_warning_events);
        assert!(config.pull_policy.is_empty());
        assert_eq!(config.dns_policy, "");
    }

    #[test]
    fn values_are_read_with_upstreams_rules() {
        let config = parse(
            r#"host = "https://k8s.example:6443"
namespace = "ci"
namespace_overwrite_allowed = "ci-.*"
cpu_limit = "1"
cpu_limit_overwrite_max_allowed = "2"
helper_memory_request = "100Mi"
pod_cpu_request_overwrite_max_allowed = "4"
pull_policy = ["if-not-present", "always"]
dns_policy = "cluster-first-with-host-net"
poll_interval = 1
poll_timeout = 3
retry_backoff_max = 100
resource_availability_check_max_attempts = -1
cleanup_resources_timeout = "1m30s"
retry_limits = {"connection refused": 7}"#,
        )
        .unwrap();
        assert_eq!(config.connection.host, "https://k8s.example:6443");
        assert_eq!(config.overwrites.namespace, "ci");
        assert_eq!(config.overwrites.build.cpu_limit_max, "2");
        assert_eq!(config.overwrites.helper.memory_request, "100Mi");
        assert_eq!(config.overwrites.pod.cpu_request_max, "4");
        assert_eq!(config.pull_policy, ["IfNotPresent", "Always"]);
        assert_eq!(config.dns_policy, "ClusterFirstWithHostNet");
        assert_eq!(config.poll_attempts(), 4);
        assert_eq!(config.retry_backoff_max, Duration::from_millis(500));
        assert_eq!(config.resource_availability_check_max_attempts, 5);
        assert_eq!(config.cleanup_resources_timeout, Duration::from_secs(90));
        assert_eq!(config.retry_limits["connection refused"], 7);
    }

    #[test]
    fn bad_values_are_named() {
        let error = parse(r#"pull_policy = "sometimes""#).unwrap_err();
        assert_eq!(error.key, "runners[0].kubernetes.pull_policy");
        let error = parse(r#"dns_policy = "clusterfirst""#).unwrap_err();
        assert_eq!(error.key, "runners[0].kubernetes.dns_policy");
        let error = parse(r#"cleanup_resources_timeout = "soon""#).unwrap_err();
        assert_eq!(error.key, "runners[0].kubernetes.cleanup_resources_timeout");
    }
}
