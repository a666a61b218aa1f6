//! `[runners.docker]` as written, and its validation into [`DockerConfig`]. Keys of upstream's
//! that this executor does not read yet are not fields here: the loader warns about each one it
//! meets, so registered files load.

use std::collections::HashMap;

use runner_core::config_section::{InvalidValue, OneOrMany};
use serde::Deserialize;

use crate::{DockerConfig, PullPolicy, Resources};

/// `[runners.docker]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawDockerConfig {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    helper_image: Option<String>,
    #[serde(default)]
    pull_policy: Option<OneOrMany>,
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

fn pull_policies(key: &str, values: &[String]) -> Result<Vec<PullPolicy>, InvalidValue> {
    values
        .iter()
        .map(|value| {
            PullPolicy::parse(value).ok_or_else(|| {
                InvalidValue::new(key, value, "expected always, if-not-present or never")
            })
        })
        .collect()
}

impl RawDockerConfig {
    /// The typed section; `section` is the section's key in messages (`runners[0].docker`).
    pub fn validate(self, section: &str) -> Result<DockerConfig, InvalidValue> {
        validate(self, &|name| format!("{section}.{name}"))
    }
}

fn validate(
    raw: RawDockerConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<DockerConfig, InvalidValue> {
    let defaults = DockerConfig::default();
    let pull_policy = match raw.pull_policy.clone() {
        None => defaults.pull_policy.clone(),
        Some(policies) => pull_policies(&key("pull_policy"), &policies.into_vec())?,
    };
    let bytes = |name: &str, value: &Option<String>| -> Result<Option<i64>, InvalidValue> {
        match value.as_deref().filter(|text| !text.is_empty()) {
            None => Ok(None),
            Some(text) => docker_bytes(text).map(Some).ok_or_else(|| {
                InvalidValue::new(key(name), text, "expected a size such as 512m or 2g")
            }),
        }
    };
    let cpus = |name: &str, value: &Option<String>| -> Result<Option<i64>, InvalidValue> {
        match value.as_deref().filter(|text| !text.is_empty()) {
            None => Ok(None),
            Some(text) => text
                .parse::<f64>()
                .map(|cpus| Some((cpus * 1e9) as i64))
                .map_err(|_| InvalidValue::new(key(name), text, "expected a number such as 1.5")),
        }
    };
    let resources = Resources {
        memory: bytes("memory", &raw.memory)?,
        memory_swap: bytes("memory_swap", &raw.memory_swap)?,
        memory_reservation: bytes("memory_reservation", &raw.memory_reservation)?,
        nano_cpus: cpus("cpus", &raw.cpus)?,
        cpuset_cpus: raw.cpuset_cpus.clone().unwrap_or_default(),
        cpu_shares: raw.cpu_shares.filter(|shares| *shares > 0),
        cgroup_parent: raw.cgroup_parent.clone().unwrap_or_default(),
    };
    let service_resources = Resources {
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
                InvalidValue::new(
                    key(&format!("ulimit.{name}")),
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
            &key("allowed_pull_policies"),
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
