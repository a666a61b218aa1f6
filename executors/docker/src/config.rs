//! `[runners.docker]`: the settings the executor reads, with upstream's defaults, and the pull
//! policies.

use std::collections::HashMap;

/// One pull policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull the image for every job, even when the daemon already has a copy.
    Always,
    /// Use the daemon's copy when there is one; pull only when the image is missing.
    IfNotPresent,
    /// Only use the daemon's copy; a missing image fails this policy and the next one is tried.
    Never,
}

impl PullPolicy {
    /// The policy a config.toml or `.gitlab-ci.yml` value names (`always`, `if-not-present`,
    /// `never`); `None` for any other text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "always" => Some(Self::Always),
            "if-not-present" => Some(Self::IfNotPresent),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    /// The policy's name as config.toml spells it, also used in job log messages.
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
    /// Memory plus swap limit in bytes (`memory_swap`); `-1` allows unlimited swap.
    pub memory_swap: Option<i64>,
    /// Soft memory limit in bytes (`memory_reservation`), enforced when the host runs short.
    pub memory_reservation: Option<i64>,
    /// CPU quota in billionths of a CPU, from the `cpus` number (`1.5` is 1 500 000 000).
    pub nano_cpus: Option<i64>,
    /// CPUs the container may run on, such as `0-3` or `0,2` (`cpuset_cpus`); empty: any.
    pub cpuset_cpus: String,
    /// Relative CPU weight (`cpu_shares`); `None` when unset or not positive.
    pub cpu_shares: Option<i64>,
    /// Parent cgroup of the container (`cgroup_parent`); empty: the daemon's default.
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
    /// Image (`image`) for jobs that name none; expanded with the job's variables, and always
    /// allowed whatever `allowed_images` says.
    pub image: String,
    /// The image with git and the helper at [`HELPER_PATH`](crate::HELPER_PATH).
    pub helper_image: String,
    /// Tried in order; empty: `always`.
    pub pull_policy: Vec<PullPolicy>,
    /// Policies that may take effect, asked for by the job or by `pull_policy`; empty: those of
    /// `pull_policy`. A job whose policies are all outside this list fails.
    pub allowed_pull_policies: Vec<PullPolicy>,
    /// Glob patterns a job's own `image` must match; empty: any image.
    pub allowed_images: Vec<String>,
    /// Run containers privileged: the helper, the build container when its image matches
    /// `allowed_privileged_images`, and services unless `services_privileged` decides otherwise.
    pub privileged: bool,
    /// The build container's user; the job's `executor_opts` user only when this is empty.
    pub user: String,
    /// Users a job may ask for; empty: only `user` (or anyone when `user` is empty too).
    pub allowed_users: Vec<String>,
    /// Container host name instead of the project's unique name.
    pub hostname: String,
    /// Limits of the build and helper containers (`memory`, `cpus`, `cpuset_cpus`, ...).
    pub resources: Resources,
    /// Limits of service containers (`service_memory`, `service_cpus`, ...).
    pub service_resources: Resources,
    /// NUMA memory nodes the build and helper containers may use, such as `0-1` (`cpuset_mems`).
    pub cpuset_mems: String,
    /// Keep the kernel's OOM killer off the build and helper containers (`oom_kill_disable`).
    pub oom_kill_disable: bool,
    /// OOM score adjustment of the build and helper containers (`oom_score_adjust`); `None` when
    /// unset or 0.
    pub oom_score_adjust: Option<i64>,
    /// DNS search domains of every container (`dns_search`).
    pub dns_search: Vec<String>,
    /// Extra groups of the build and helper containers' user (`group_add`).
    pub group_add: Vec<String>,
    /// User namespace mode of every container (`userns_mode`), such as `host`; empty: the daemon's.
    pub userns_mode: String,
    /// Build container only.
    pub pid_mode: String,
    /// IPC namespace of the build and helper containers (`ipcmode` in config.toml), such as `host`.
    pub ipc_mode: String,
    /// OCI runtime of every container (`runtime`), such as `nvidia`; empty: the daemon's default.
    pub runtime: String,
    /// Device cgroup rules of the build and helper containers (`device_cgroup_rules`), such as
    /// `c 1:3 mr`.
    pub device_cgroup_rules: Vec<String>,
    /// (name, soft, hard).
    pub ulimits: Vec<(String, i64, i64)>,
    /// tmpfs mounts of the build and helper containers (`tmpfs`): container path to mount options.
    pub tmpfs: HashMap<String, String>,
    /// tmpfs mounts of service containers (`services_tmpfs`): container path to mount options.
    pub services_tmpfs: HashMap<String, String>,
    /// Kernel parameters of the build and helper containers (`sysctls`): name to value.
    pub sysctls: HashMap<String, String>,
    /// Legacy Docker links of the build and helper containers (`links`), `container[:alias]`.
    pub links: Vec<String>,
    /// Containers whose volumes the build and helper containers mount (`volumes_from`),
    /// `name[:ro|rw]`.
    pub volumes_from: Vec<String>,
    /// Volume driver of the build and helper containers and of cache volumes (`volume_driver`);
    /// empty: the daemon's default.
    pub volume_driver: String,
    /// Driver options given when cache volumes are created (`volume_driver_ops`).
    pub volume_driver_ops: HashMap<String, String>,
    /// Keep containers' anonymous volumes at cleanup.
    pub volume_keep: bool,
    /// MAC address of the build and helper containers (`mac_address`); only applied on the per-job
    /// network or a user-defined `network_mode`.
    pub mac_address: String,
    /// Extra labels for every container (values expanded with the job's variables).
    pub container_labels: HashMap<String, String>,
    /// `None`: as `privileged`.
    pub services_privileged: Option<bool>,
    /// Images that may run privileged; empty: all.
    pub allowed_privileged_images: Vec<String>,
    /// Glob patterns of service images that may run privileged; empty: all.
    pub allowed_privileged_services: Vec<String>,
    /// Security options of service containers (`services_security_opt`).
    pub services_security_opt: Vec<String>,
    /// Devices for services whose image matches the pattern (`services_devices`).
    pub services_devices: Vec<(String, Vec<String>)>,
    /// `log_options` of the json-file log driver (upstream allows `env` and `labels`).
    pub log_options: HashMap<String, String>,
    /// MTU of the per-job network.
    pub network_mtu: Option<i64>,
    /// Create the per-job network with IPv6 (`enable_ipv6`).
    pub enable_ipv6: bool,
    /// Network of every container (`network_mode`): `bridge`, `host`, `none`, `container:<name>` or
    /// a user-defined network; empty: the per-job network if `FF_NETWORK_PER_BUILD`, else Docker's.
    pub network_mode: String,
    /// `host:ip` entries added to every container's `/etc/hosts` (`extra_hosts`).
    pub extra_hosts: Vec<String>,
    /// DNS servers of every container (`dns`); empty: the daemon's.
    pub dns: Vec<String>,
    /// Size of `/dev/shm` in bytes for build, helper and service containers (`shm_size`); `None`
    /// when unset or not positive: Docker's default.
    pub shm_size: Option<i64>,
    /// Linux capabilities added to the build and helper containers (`cap_add`).
    pub cap_add: Vec<String>,
    /// Linux capabilities dropped from the build and helper containers (`cap_drop`).
    pub cap_drop: Vec<String>,
    /// Security options of the build and helper containers (`security_opt`), such as
    /// `seccomp=unconfined`.
    pub security_opt: Vec<String>,
    /// Host devices of the build and helper containers, `host[:container[:permissions]]`
    /// (permissions `rwm` when left out).
    pub devices: Vec<String>,
    /// `host:container[:mode]` binds and cache volumes (a lone container path).
    pub volumes: Vec<String>,
    /// Host directory for cache volumes instead of named volumes.
    pub cache_dir: String,
    /// Cache volumes are temporary: removed after the job.
    pub disable_cache: bool,
    /// Seconds to wait for services' exposed ports: 0 means upstream's default of 30 s, a
    /// negative value does not wait.
    pub wait_for_services_timeout: i64,
    /// `[[runners.docker.services]]`, started before the job's own.
    pub services: Vec<runner_core::job::Image>,
    /// `None`: no limit.
    pub services_limit: Option<usize>,
    /// Glob patterns a job's own `services` must match; empty: any. The services of `services`
    /// above are always allowed.
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
