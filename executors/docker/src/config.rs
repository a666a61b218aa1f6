//! `[runners.docker]`: the settings the executor reads, with upstream's defaults, and the pull
//! policies.

use std::collections::HashMap;

/// One pull policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "always" => Some(Self::Always),
            "if-not-present" => Some(Self::IfNotPresent),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::IfNotPresent => "if-not-present",
            Self::Never => "never",
        }
    }
}

/// Resource limits of a container: `memory`, `cpus`, ... for the build and helper containers,
/// `service_memory`, `service_cpus`, ... for services.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Bytes.
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpuset_cpus: String,
    pub cpu_shares: Option<i64>,
    pub cgroup_parent: String,
}

/// `[runners.docker]`, the keys this executor implements.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// `host`, else `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// Directory of `ca.pem`, `cert.pem`, `key.pem` for a TLS `host`.
    pub tls_cert_path: String,
    /// Talk TLS to a `tcp://` host.
    pub tls_verify: bool,
    pub image: String,
    /// The image with git and the helper at [`HELPER_PATH`].
    pub helper_image: String,
    /// Tried in order; empty: `always`.
    pub pull_policy: Vec<PullPolicy>,
    pub allowed_pull_policies: Vec<PullPolicy>,
    pub allowed_images: Vec<String>,
    pub privileged: bool,
    /// The build container's user; the job's `executor_opts` user only when this is empty.
    pub user: String,
    /// Users a job may ask for; empty: only `user` (or anyone when `user` is empty too).
    pub allowed_users: Vec<String>,
    /// Container host name instead of the project's unique name.
    pub hostname: String,
    pub resources: Resources,
    pub service_resources: Resources,
    pub cpuset_mems: String,
    pub oom_kill_disable: bool,
    pub oom_score_adjust: Option<i64>,
    pub dns_search: Vec<String>,
    pub group_add: Vec<String>,
    pub userns_mode: String,
    /// Build container only.
    pub pid_mode: String,
    pub ipc_mode: String,
    pub runtime: String,
    pub device_cgroup_rules: Vec<String>,
    /// (name, soft, hard).
    pub ulimits: Vec<(String, i64, i64)>,
    pub tmpfs: HashMap<String, String>,
    pub services_tmpfs: HashMap<String, String>,
    pub sysctls: HashMap<String, String>,
    pub links: Vec<String>,
    pub volumes_from: Vec<String>,
    pub volume_driver: String,
    pub volume_driver_ops: HashMap<String, String>,
    /// Keep containers' anonymous volumes at cleanup.
    pub volume_keep: bool,
    pub mac_address: String,
    /// Extra labels for every container (values expanded with the job's variables).
    pub container_labels: HashMap<String, String>,
    /// `None`: as `privileged`.
    pub services_privileged: Option<bool>,
    /// Images that may run privileged; empty: all.
    pub allowed_privileged_images: Vec<String>,
    pub allowed_privileged_services: Vec<String>,
    pub services_security_opt: Vec<String>,
    /// Devices for services whose image matches the pattern (`services_devices`).
    pub services_devices: Vec<(String, Vec<String>)>,
    /// `log_options` of the json-file log driver (upstream allows `env` and `labels`).
    pub log_options: HashMap<String, String>,
    /// MTU of the per-job network.
    pub network_mtu: Option<i64>,
    pub enable_ipv6: bool,
    pub network_mode: String,
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub shm_size: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub devices: Vec<String>,
    /// `host:container[:mode]` binds and cache volumes (a lone container path).
    pub volumes: Vec<String>,
    /// Host directory for cache volumes instead of named volumes.
    pub cache_dir: String,
    /// Cache volumes are temporary: removed after the job.
    pub disable_cache: bool,
    /// How long to wait for services' exposed ports; zero or negative does not wait.
    pub wait_for_services_timeout: i64,
    /// `[[runners.docker.services]]`, started before the job's own.
    pub services: Vec<runner_core::job::Image>,
    /// `None`: no limit.
    pub services_limit: Option<usize>,
    pub allowed_services: Vec<String>,
    /// The job's `image: entrypoint` is ignored (with a warning).
    pub disable_entrypoint_overwrite: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            tls_cert_path: String::new(),
            tls_verify: false,
            image: String::new(),
            helper_image: format!("gitlab-runner-rs/helper:{}", env!("CARGO_PKG_VERSION")),
            pull_policy: Vec::new(),
            allowed_pull_policies: Vec::new(),
            allowed_images: Vec::new(),
            privileged: false,
            user: String::new(),
            allowed_users: Vec::new(),
            hostname: String::new(),
            resources: Resources::default(),
            service_resources: Resources::default(),
            cpuset_mems: String::new(),
            oom_kill_disable: false,
            oom_score_adjust: None,
            dns_search: Vec::new(),
            group_add: Vec::new(),
            userns_mode: String::new(),
            pid_mode: String::new(),
            ipc_mode: String::new(),
            runtime: String::new(),
            device_cgroup_rules: Vec::new(),
            ulimits: Vec::new(),
            tmpfs: HashMap::new(),
            services_tmpfs: HashMap::new(),
            sysctls: HashMap::new(),
            links: Vec::new(),
            volumes_from: Vec::new(),
            volume_driver: String::new(),
            volume_driver_ops: HashMap::new(),
            volume_keep: false,
            mac_address: String::new(),
            container_labels: HashMap::new(),
            services_privileged: None,
            allowed_privileged_images: Vec::new(),
            allowed_privileged_services: Vec::new(),
            services_security_opt: Vec::new(),
            services_devices: Vec::new(),
            log_options: HashMap::new(),
            network_mtu: None,
            enable_ipv6: false,
            network_mode: String::new(),
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            shm_size: None,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            security_opt: Vec::new(),
            devices: Vec::new(),
            volumes: Vec::new(),
            cache_dir: String::new(),
            disable_cache: false,
            wait_for_services_timeout: 30,
            services: Vec::new(),
            services_limit: None,
            allowed_services: Vec::new(),
            disable_entrypoint_overwrite: false,
        }
    }
}
