//! The Docker executor (first part): each job gets a build container from its image and a
//! helper container (git and the static `gitlab-runner-rs` helper) sharing a builds volume, as
//! upstream's `executors/docker`. Each container is created once per job and started again for
//! every stage, the stage script on its stdin; the shell is found by upstream's detection script.
//! Pull policies, `allowed_images`, labels on everything created, and cleanup on every path.
//!
//! Services start before the job; the job reaches them by their aliases: on a network of the
//! job's own with `FF_NETWORK_PER_BUILD`, else (upstream's default) on the default bridge
//! through `/etc/hosts` entries, as upstream's legacy links. They are waited for by a helper
//! container's health check.
//!
//! Volumes follow upstream's volume manager ([`volumes`]): binds, cache volumes kept across
//! jobs, the builds directory kept for `GIT_STRATEGY=fetch`. Pulls authenticate with upstream's
//! credential sources ([`auth`]) and report their progress in the job log. A canceled stage
//! first gets SIGTERM for every process of the build container, then, after
//! `graceful_kill_timeout`, the container is killed ([`stage`], through the stage runner).
//!
//! Main types: [`DockerProvider`], [`DockerExecutor`], [`DockerConfig`].
//!
//! Depends on `runner-core` and bollard; it must not depend on `shells`, `network`, other
//! executors or `commands`.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, DeviceMapping, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use runner_core::build::BuildContext;
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ExecutorProvider, FeaturesInfo,
    ScriptExit, ShellType, Unlimited,
};
use runner_core::failure::FailureReason;
use runner_core::log::JobLog;
use runner_core::process::KillTimeouts;
use runner_core::script::detect_shell_script;
use runner_core::stage_runner::{run_stage, Started};
use tokio_util::sync::CancellationToken;

pub mod auth;
mod services;
mod stage;
pub mod volumes;

pub use services::{split_name_and_version, ServiceName};

/// Pull attempts when the registry cannot be reached (upstream's `defaultPullMaxAttempts`).
const PULL_ATTEMPTS: u32 = 3;
/// Where upstream's helper image keeps the helper, and where scripts call it.
pub const HELPER_PATH: &str = "/usr/bin/gitlab-runner-helper";
/// Labels on everything the executor creates.
pub const LABEL_PREFIX: &str = "com.gitlab.gitlab-runner";

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

#[derive(Debug, Clone)]
pub struct DockerProvider {
    /// Shared by the provider's clones; each job gets its own copy.
    config: std::sync::Arc<DockerConfig>,
    kill_timeouts: KillTimeouts,
}

impl DockerProvider {
    pub fn new(config: Option<DockerConfig>) -> Self {
        Self {
            config: std::sync::Arc::new(config.unwrap_or_default()),
            kill_timeouts: KillTimeouts::default(),
        }
    }

    /// The stop of a canceled stage (`graceful_kill_timeout`, `force_kill_timeout`).
    pub fn with_kill_timeouts(mut self, kill_timeouts: KillTimeouts) -> Self {
        self.kill_timeouts = kill_timeouts;
        self
    }
}

impl ExecutorProvider for DockerProvider {
    type Capacity = Unlimited;
    type Executor = DockerExecutor;

    fn name(&self) -> &'static str {
        "docker"
    }

    fn features(&self) -> FeaturesInfo {
        FeaturesInfo {
            variables: true,
            image: true,
            services: true,
            service_variables: true,
            service_multiple_aliases: true,
            ..FeaturesInfo::default()
        }
    }

    fn default_shell(&self) -> &'static str {
        "bash"
    }

    fn defaults(&self) -> ExecutorDefaults {
        ExecutorDefaults {
            builds_dir: "/builds".into(),
            cache_dir: "/cache".into(),
            shared_builds_dir: false,
            custom_build_dir_enabled: true,
            safe_directory_checkout: true,
            shell_type: ShellType::Normal,
            runner_command: HELPER_PATH.into(),
            show_hostname: true,
            dirs_from_prepare: false,
            private_temporary_dir: false,
        }
    }

    fn capacity(&self) -> &Unlimited {
        &Unlimited
    }

    fn create(&self, _reservation: ()) -> DockerExecutor {
        DockerExecutor {
            config: (*self.config).clone(),
            docker: None,
            job: None,
            auth: auth::AuthSources::default(),
            kill_timeouts: self.kill_timeouts,
        }
    }
}

/// What prepare set up for the job.
#[derive(Debug)]
struct Job {
    image: String,
    /// The job's `image: entrypoint`, when it may replace the image's.
    entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` for every job variable (file variables as their path).
    env: Vec<String>,
    prefix: String,
    labels: HashMap<String, String>,
    /// Volumes removed at cleanup.
    temporary_volumes: Vec<String>,
    binds: Vec<String>,
    /// The build container's user (config, else the job's `executor_opts`), checked.
    user: String,
    /// The job's `executor_opts` platform.
    platform: String,
    /// The build image may run privileged (`allowed_privileged_images`).
    privileged_image: bool,
    /// `FF_USE_INIT_WITH_DOCKER_EXECUTOR`.
    init: bool,
    /// Container ids by kind (`predefined`, `build`), created on first use.
    containers: HashMap<&'static str, String>,
    hostname: String,
    /// The per-job network (`FF_NETWORK_PER_BUILD` without `network_mode`).
    network: Option<String>,
    /// `alias:ip` of the services, for the job's `/etc/hosts` when they share no network
    /// with names (upstream's legacy links on the default bridge).
    links: Vec<String>,
    /// Service container ids.
    services: Vec<String>,
    /// `CI_DEBUG_SERVICES` log followers, stopped at cleanup.
    log_followers: Vec<tokio::task::JoinHandle<()>>,
}

pub struct DockerExecutor {
    config: DockerConfig,
    docker: Option<Docker>,
    job: Option<Job>,
    /// Where pull credentials come from, set in prepare.
    auth: auth::AuthSources,
    kill_timeouts: KillTimeouts,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("job", &self.job)
            .finish()
    }
}

fn system(message: impl Into<String>) -> ExecutorError {
    ExecutorError::system(message)
}

fn list(items: &[String]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.to_vec())
}

fn text(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

fn map(items: &HashMap<String, String>) -> Option<HashMap<String, String>> {
    (!items.is_empty()).then(|| items.clone())
}

/// A container's address on its (first) network, if it has one.
fn container_ip(inspect: &bollard::models::ContainerInspectResponse) -> Option<String> {
    inspect
        .network_settings
        .as_ref()
        .and_then(|settings| settings.networks.as_ref())
        .and_then(|networks| networks.values().find_map(|n| n.ip_address.clone()))
        .filter(|ip| !ip.is_empty())
}

/// Where pull credentials come from for this job.
fn auth_sources(build: &BuildContext) -> auth::AuthSources {
    auth::AuthSources {
        docker_auth_config: build.variables.get("DOCKER_AUTH_CONFIG").to_string(),
        home: auth::home_dir(),
        payload: build
            .job
            .credentials
            .iter()
            .filter(|credential| credential.kind == "registry")
            .map(|credential| {
                (
                    credential.url.clone(),
                    credential.username.clone(),
                    credential.password.expose().clone(),
                )
            })
            .collect(),
    }
}

/// An image's (the job's or a service's) `executor_opts.docker.<name>` (a string or a
/// number), expanded.
fn executor_option(build: &BuildContext, image: &runner_core::job::Image, name: &str) -> String {
    let value = image
        .executor_opts
        .get("docker")
        .and_then(|opts| opts.get(name));
    let text = match value {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Number(number)) => number.to_string(),
        _ => String::new(),
    };
    build.variables.expand(&text)
}

/// `KEY=VALUE` for every job variable, expanded, file variables as their path (upstream sets
/// them as the containers' environment).
fn container_env(build: &BuildContext) -> Vec<String> {
    let file_dir = build.variables.file_dir();
    build
        .variables
        .iter()
        .map(|variable| match (file_dir, variable.file) {
            (Some(dir), true) => format!("{}={dir}/{}", variable.key, variable.key),
            _ => format!("{}={}", variable.key, build.variables.value(&variable.key)),
        })
        .collect()
}

/// Upstream's labeler: what every container, volume and network of the job carries.
fn job_labels(build: &BuildContext) -> HashMap<String, String> {
    let job = &build.job;
    let pipeline = if job.job_info.pipeline_id > 0 {
        job.job_info.pipeline_id.to_string()
    } else {
        build.variables.value("CI_PIPELINE_ID")
    };
    // The repository URL without credentials or `.git`, as upstream's JobURL.
    let repo = job.git_info.repo_url.expose();
    let clean = match repo.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
            format!(
                "{scheme}://{}",
                rest.split(['?', '#']).next().unwrap_or(rest)
            )
        }
        None => repo.clone(),
    };
    let url = format!(
        "{}/-/jobs/{}",
        clean.strip_suffix(".git").unwrap_or(&clean),
        job.id
    );
    [
        ("job.id", job.id.to_string()),
        ("job.url", url),
        ("job.sha", job.git_info.sha.clone()),
        ("job.before_sha", job.git_info.before_sha.clone()),
        ("job.ref", job.git_info.git_ref.clone()),
        (
            "job.timeout",
            runner_core::settings::format_go_duration(build.job_timeout()),
        ),
        ("project.id", job.job_info.project_id.to_string()),
        ("project.runner_id", build.concurrent_project_id.to_string()),
        ("pipeline.id", pipeline),
        ("runner.id", build.runner.short_token()),
        ("runner.local_id", build.concurrent_id.to_string()),
        ("runner.system_id", build.runner.system_id.clone()),
        ("managed", "true".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (format!("{LABEL_PREFIX}.{key}"), value))
    .collect()
}

/// Upstream's `IsUserAllowed`: the image's own user always; with neither `user` nor
/// `allowed_users` anyone; else `allowed_users`, which defaults to `user`.
fn user_allowed(config: &DockerConfig, user: &str) -> bool {
    if user.is_empty() || (config.allowed_users.is_empty() && config.user.is_empty()) {
        return true;
    }
    if config.allowed_users.is_empty() {
        return config.user == user;
    }
    config.allowed_users.iter().any(|allowed| allowed == user)
}

/// `host[:container[:permissions]]` device strings as Docker's mappings.
fn device_mappings(devices: &[String]) -> Option<Vec<DeviceMapping>> {
    (!devices.is_empty()).then(|| {
        devices
            .iter()
            .map(|device| {
                let mut parts = device.split(':');
                let host = parts.next().unwrap_or_default().to_string();
                let container = parts.next().unwrap_or(&host).to_string();
                let permissions = parts.next().unwrap_or("rwm").to_string();
                DeviceMapping {
                    path_on_host: Some(host),
                    path_in_container: Some(container),
                    cgroup_permissions: Some(permissions),
                }
            })
            .collect()
    })
}

/// Upstream's `GetLogConfig`: json-file, with only `env` and `labels` options allowed.
fn check_log_options(options: &HashMap<String, String>) -> Result<(), ExecutorError> {
    let mut invalid: Vec<&str> = options
        .keys()
        .map(String::as_str)
        .filter(|key| !["env", "labels"].contains(key))
        .collect();
    if invalid.is_empty() {
        return Ok(());
    }
    invalid.sort_unstable();
    let quoted: Vec<String> = invalid.iter().map(|key| format!("{key:?}")).collect();
    Err(ExecutorError::with_reason(
        FailureReason::RunnerConfigurationError,
        format!(
            "creating docker log configuration: invalid log options: only [\"env\" \"labels\"] are allowed, but found: [{}]",
            quoted.join(" ")
        ),
    ))
}

/// No patterns, or one that matches (upstream's `isInAllowedPrivilegedImages`, and the
/// pattern half of `VerifyAllowedImage`).
fn matches_any_or_none(patterns: &[String], image: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| pattern_matches(pattern.as_bytes(), image.as_bytes()))
}

/// A doublestar pattern of `allowed_images` / `allowed_services`: `**` matches anything, `*`
/// any run without `/`, `?` one character other than `/`.
fn pattern_matches(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern, text.first()) {
        ([], None) => true,
        ([b'*', b'*', rest @ ..], _) => {
            pattern_matches(rest, text)
                || (!text.is_empty() && pattern_matches(pattern, &text[1..]))
        }
        ([b'*', rest @ ..], _) => {
            pattern_matches(rest, text)
                || (text.first().is_some_and(|c| *c != b'/')
                    && pattern_matches(pattern, &text[1..]))
        }
        ([b'?', rest @ ..], Some(c)) if *c != b'/' => pattern_matches(rest, &text[1..]),
        ([p, rest @ ..], Some(t)) if p == t => pattern_matches(rest, &text[1..]),
        _ => false,
    }
}

/// Upstream's `VerifyAllowedImage`: allowed when a pattern matches, when the image is one the
/// runner itself configured, or when there are no patterns. A refusal lists the patterns in
/// the job log and is `disallowed image`.
fn verify_allowed(
    image: &str,
    option: &str,
    allowed: &[String],
    internal: &[String],
    log: &JobLog,
) -> Result<(), ExecutorError> {
    if matches_any_or_none(allowed, image) || internal.iter().any(|name| name == image) {
        return Ok(());
    }
    log.empty_line();
    log.error(&format!(
        "The {image:?} image is not present on list of allowed {option}:"
    ));
    for pattern in allowed {
        log.println(&format!("- {pattern}"));
    }
    log.empty_line();
    log.println(
        "Please check runner's allowed_images configuration: https://docs.gitlab.com/runner/configuration/advanced-configuration/",
    );
    Err(system("disallowed image"))
}

fn networking(network: &str, aliases: Vec<String>) -> bollard::models::NetworkingConfig {
    let mut endpoints = HashMap::new();
    endpoints.insert(
        network.to_string(),
        bollard::models::EndpointSettings {
            aliases: Some(aliases),
            ..Default::default()
        },
    );
    bollard::models::NetworkingConfig {
        endpoints_config: Some(endpoints),
    }
}

impl DockerExecutor {
    fn docker(&self) -> Result<&Docker, ExecutorError> {
        self.docker
            .as_ref()
            .ok_or_else(|| system("not connected to the Docker daemon"))
    }

    /// `host` (else `DOCKER_HOST`, else the local socket); a `tcp://` or `https://` host with
    /// `tls_verify` or a `tls_cert_path` (else `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`) is
    /// reached over TLS with `ca.pem`, `cert.pem` and `key.pem` of that directory (default
    /// `~/.docker`), as Docker's own client does.
    fn connect(&mut self) -> Result<(), ExecutorError> {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let host = self
            .config
            .host
            .clone()
            .or_else(|| env("DOCKER_HOST"))
            .filter(|host| !host.is_empty());
        let cert_path = Some(self.config.tls_cert_path.clone())
            .filter(|path| !path.is_empty())
            .or_else(|| env("DOCKER_CERT_PATH"));
        let verify = self.config.tls_verify || env("DOCKER_TLS_VERIFY").is_some();
        let docker = match host {
            Some(host)
                if (host.starts_with("tcp://") || host.starts_with("https://"))
                    && (verify || cert_path.is_some()) =>
            {
                let dir = cert_path
                    .map(std::path::PathBuf::from)
                    .or_else(|| auth::home_dir().map(|home| home.join(".docker")))
                    .ok_or_else(|| system("no tls_cert_path for the Docker host's TLS"))?;
                for file in ["ca.pem", "cert.pem", "key.pem"] {
                    if !dir.join(file).is_file() {
                        return Err(ExecutorError::with_reason(
                            FailureReason::RunnerConfigurationError,
                            format!(
                                "the Docker host {host} needs TLS, but {} is missing (tls_cert_path)",
                                dir.join(file).display()
                            ),
                        ));
                    }
                }
                Docker::connect_with_ssl(
                    &host,
                    &dir.join("key.pem"),
                    &dir.join("cert.pem"),
                    &dir.join("ca.pem"),
                    120,
                    bollard::API_DEFAULT_VERSION,
                )
            }
            Some(host) => Docker::connect_with_host(&host),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(|error| system(format!("creating the Docker client: {error}")))?;
        self.docker = Some(docker);
        Ok(())
    }

    async fn image_present(
        &self,
        image: &str,
    ) -> Result<Option<bollard::models::ImageInspect>, ExecutorError> {
        match self.docker()?.inspect_image(image).await {
            Ok(inspect) => Ok(Some(inspect)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(error) => Err(system(format!("inspecting image {image:?}: {error}"))),
        }
    }

    /// Pulls `image` (`:latest` when it names no tag or digest) with the credentials of its
    /// registry, with upstream's retries: a failure that is the registry's (network) is tried
    /// again, 3 attempts in all, 2 then 4 seconds apart; the error comes with its classified
    /// reason.
    async fn pull(
        &self,
        image: &str,
        platform: &str,
        log: &JobLog,
    ) -> Result<(), (String, FailureReason)> {
        let mut warnings = Vec::new();
        let sources = self.auth.clone();
        let name = image.to_string();
        let credentials = tokio::task::spawn_blocking(move || {
            let found = auth::for_image(&sources, &name, &mut warnings);
            (found, warnings)
        })
        .await
        .map_err(|error| (error.to_string(), FailureReason::RunnerSystemFailure))?;
        let (found, warnings) = credentials;
        for warning in warnings {
            log.warning(&warning);
        }
        let credentials = found.map(|found| {
            log.println(&format!(
                "Authenticating with credentials from {}",
                found.source
            ));
            bollard::auth::DockerCredentials {
                username: Some(found.username).filter(|u| !u.is_empty()),
                password: Some(found.password).filter(|p| !p.is_empty()),
                serveraddress: Some(found.server_address),
                identitytoken: Some(found.identity_token).filter(|t| !t.is_empty()),
                ..Default::default()
            }
        });
        if platform.is_empty() {
            log.println(&format!("Pulling docker image {image} ..."));
        } else {
            log.println(&format!(
                "Pulling docker image {image} for platform {platform} ..."
            ));
        }
        let last_segment = image.rsplit('/').next().unwrap_or(image);
        let reference = if last_segment.contains(':') || image.contains('@') {
            image.to_string()
        } else {
            format!("{image}:latest")
        };
        let mut attempt = 1;
        loop {
            match self
                .pull_once(&reference, platform, credentials.clone(), log)
                .await
            {
                Ok(()) => return Ok(()),
                Err(message) => {
                    let reason = runner_core::failure::classify_image_pull_failure(&message);
                    if attempt >= PULL_ATTEMPTS
                        || reason != FailureReason::RunnerExternalDependencyFailure
                    {
                        return Err((message, reason));
                    }
                    log.warning(&format!(
                        "Failed to pull image {image:?} (attempt #{attempt}), retrying: {message}"
                    ));
                    let backoff = std::time::Duration::from_secs(2 << (attempt - 1).min(2));
                    let jitter = std::time::Duration::from_millis(rand::random::<u64>() % 500);
                    tokio::time::sleep(backoff.min(std::time::Duration::from_secs(10)) + jitter)
                        .await;
                    attempt += 1;
                }
            }
        }
    }

    /// One pull, printing the layers' progress: each layer's start, a download line at most
    /// every 2 seconds, completion, and the daemon's digest and status lines.
    async fn pull_once(
        &self,
        reference: &str,
        platform: &str,
        credentials: Option<bollard::auth::DockerCredentials>,
        log: &JobLog,
    ) -> Result<(), String> {
        let mut options = CreateImageOptionsBuilder::default().from_image(reference);
        if !platform.is_empty() {
            options = options.platform(platform);
        }
        let options = options.build();
        let mut stream =
            self.docker()
                .map_err(|e| e.message)?
                .create_image(Some(options), None, credentials);
        let mut last_progress: HashMap<String, tokio::time::Instant> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|error| match error {
                bollard::errors::Error::DockerResponseServerError { message, .. } => {
                    format!("Error response from daemon: {message}")
                }
                bollard::errors::Error::DockerStreamError { error } => error,
                other => other.to_string(),
            })?;
            let Some(status) = info.status.as_deref() else {
                continue;
            };
            match info.id.as_deref() {
                Some(id) if status == "Downloading" => {
                    let now = tokio::time::Instant::now();
                    let due = last_progress.get(id).is_none_or(|last| {
                        now.duration_since(*last) >= std::time::Duration::from_secs(2)
                    });
                    if due {
                        last_progress.insert(id.to_string(), now);
                        let (current, total) = info
                            .progress_detail
                            .as_ref()
                            .map(|detail| (detail.current.unwrap_or(0), detail.total.unwrap_or(0)))
                            .unwrap_or((0, 0));
                        log.println(&format!(
                            "{id}: Downloading {} / {}",
                            human_bytes(current),
                            human_bytes(total)
                        ));
                    }
                }
                Some(id)
                    if matches!(
                        status,
                        "Pulling fs layer"
                            | "Already exists"
                            | "Download complete"
                            | "Pull complete"
                    ) =>
                {
                    log.println(&format!("{id}: {status}"))
                }
                Some(_) => {}
                None if status.starts_with("Digest:") || status.starts_with("Status:") => {
                    log.println(status)
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Upstream's pull manager: the policies in order, each failure logged and the next tried;
    /// the last failure's reason is the job's (none, a system failure, for `never` without the
    /// image, as upstream).
    async fn ensure_image(
        &self,
        image: &str,
        platform: &str,
        policies: &[PullPolicy],
        log: &JobLog,
    ) -> Result<bollard::models::ImageInspect, ExecutorError> {
        let names: Vec<&str> = policies.iter().map(|policy| policy.as_str()).collect();
        log.println(&format!(
            "Using effective pull policy of [{}] for container {image}",
            names.join(" ")
        ));
        let mut last = (String::new(), None);
        for (index, policy) in policies.iter().enumerate() {
            if index > 0 {
                log.info(&format!(
                    "Attempt #{}: Trying \"{}\" pull policy",
                    index + 1,
                    policy.as_str()
                ));
            }
            // `always` pulls whatever is there; only the others look first.
            let present = match policy {
                PullPolicy::Always => None,
                _ => self.image_present(image).await?,
            };
            let outcome = match (policy, present) {
                (PullPolicy::Never, Some(found)) => Ok(found),
                (PullPolicy::Never, None) => Err((
                    format!("Error response from daemon: No such image: {image}"),
                    None,
                )),
                (PullPolicy::IfNotPresent, Some(found)) => {
                    log.println(&format!(
                        "Using locally found image version due to \"{}\" pull policy",
                        policy.as_str()
                    ));
                    Ok(found)
                }
                _ => match self.pull(image, platform, log).await {
                    Ok(()) => match self.image_present(image).await? {
                        Some(found) => Ok(found),
                        None => Err((
                            format!("inspecting image {image:?} after pull: not found"),
                            Some(FailureReason::ImagePullFailure),
                        )),
                    },
                    Err((message, reason)) => Err((message, Some(reason))),
                },
            };
            match outcome {
                Ok(found) => return Ok(found),
                Err(failure) => {
                    log.warning(&format!(
                        "Failed to pull image with policy \"{}\": {}",
                        policy.as_str(),
                        failure.0
                    ));
                    last = failure;
                }
            }
        }
        let message = format!(
            "failed to pull image {image:?} with specified policies [{}]: {}",
            names.join(" "),
            last.0
        );
        Err(match last.1 {
            Some(reason) => ExecutorError::with_reason(reason, message),
            None => system(message),
        })
    }

    /// Upstream's `ComputeEffectivePullPolicies` for one image: the job's policies (else the
    /// configured ones, else `always`) that `allowed_pull_policies` (else the configured
    /// policies) allows, in order; none left is a configuration error.
    fn effective_policies(
        &self,
        image: &str,
        job_policies: &[String],
    ) -> Result<Vec<PullPolicy>, ExecutorError> {
        let job: Vec<PullPolicy> = job_policies
            .iter()
            .filter_map(|name| PullPolicy::parse(name))
            .collect();
        let configured = if self.config.pull_policy.is_empty() {
            vec![PullPolicy::Always]
        } else {
            self.config.pull_policy.clone()
        };
        let wanted = if job.is_empty() {
            configured.clone()
        } else {
            job.clone()
        };
        let allowed = if self.config.allowed_pull_policies.is_empty() {
            configured
        } else {
            self.config.allowed_pull_policies.clone()
        };
        let effective: Vec<PullPolicy> = wanted
            .iter()
            .copied()
            .filter(|policy| allowed.contains(policy))
            .collect();
        if !effective.is_empty() {
            return Ok(effective);
        }
        let source = if !job.is_empty() {
            "GitLab pipeline config"
        } else if !self.config.pull_policy.is_empty() {
            "Runner config"
        } else {
            "Runner config (default)"
        };
        let names = |policies: &[PullPolicy]| {
            policies
                .iter()
                .map(|policy| policy.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        Err(ExecutorError::with_reason(
            FailureReason::RunnerConfigurationError,
            format!(
                "invalid pull policy for image {image:?}: pull_policy ([{}]) defined in {source} is not one of the allowed_pull_policies ([{}])",
                names(&wanted),
                names(&allowed)
            ),
        ))
    }

    /// Upstream's `createHostConfig`: the build container's (`build`), which alone gets
    /// `pid_mode` and `--init`, or the helper's.
    fn host_config(&self, job: &Job, build: bool) -> HostConfig {
        let config = &self.config;
        HostConfig {
            privileged: Some(config.privileged && (!build || job.privileged_image)),
            cpuset_mems: text(&config.cpuset_mems),
            oom_kill_disable: config.oom_kill_disable.then_some(true),
            oom_score_adj: config.oom_score_adjust,
            device_cgroup_rules: list(&config.device_cgroup_rules),
            ulimits: (!config.ulimits.is_empty()).then(|| {
                config
                    .ulimits
                    .iter()
                    .map(|(name, soft, hard)| bollard::models::ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(*soft),
                        hard: Some(*hard),
                    })
                    .collect()
            }),
            devices: device_mappings(&config.devices),
            group_add: list(&config.group_add),
            cap_add: list(&config.cap_add),
            cap_drop: list(&config.cap_drop),
            security_opt: list(&config.security_opt),
            extra_hosts: list(&[config.extra_hosts.as_slice(), job.links.as_slice()].concat()),
            pid_mode: build.then(|| text(&config.pid_mode)).flatten(),
            init: (build && job.init).then_some(true),
            ipc_mode: text(&config.ipc_mode),
            links: list(&config.links),
            shm_size: config.shm_size,
            volume_driver: text(&config.volume_driver),
            volumes_from: list(&config.volumes_from),
            tmpfs: map(&config.tmpfs),
            sysctls: map(&config.sysctls),
            ..self.common_host_config(job, &config.resources)
        }
    }

    fn log_config(&self) -> bollard::models::HostConfigLogConfig {
        bollard::models::HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: map(&self.config.log_options),
        }
    }

    /// The containers' network: `network_mode`, else the per-job network, else Docker's
    /// default.
    fn network_mode(&self, job: &Job) -> Option<String> {
        text(&self.config.network_mode).or_else(|| job.network.clone())
    }

    /// The network on which containers are found by their aliases: the per-job one, or a
    /// user-defined `network_mode`; none on `bridge`, `host`, `none` or `container:<id>`,
    /// where services are reached through `/etc/hosts` entries instead.
    fn alias_network(&self, job: &Job) -> Option<String> {
        if job.network.is_some() {
            return job.network.clone();
        }
        let mode = self.config.network_mode.as_str();
        let builtin = ["", "bridge", "host", "none", "default"].contains(&mode)
            || mode.starts_with("container:");
        (!builtin).then(|| mode.to_string())
    }

    /// What build, helper and service containers share: resources, network, DNS, binds.
    fn common_host_config(&self, job: &Job, resources: &Resources) -> HostConfig {
        let config = &self.config;
        HostConfig {
            binds: Some(job.binds.clone()),
            memory: resources.memory,
            memory_swap: resources.memory_swap,
            memory_reservation: resources.memory_reservation,
            nano_cpus: resources.nano_cpus,
            cpuset_cpus: text(&resources.cpuset_cpus),
            cpu_shares: resources.cpu_shares,
            cgroup_parent: text(&resources.cgroup_parent),
            network_mode: self.network_mode(job),
            dns: list(&config.dns),
            dns_search: list(&config.dns_search),
            runtime: text(&config.runtime),
            userns_mode: text(&config.userns_mode),
            restart_policy: Some(bollard::models::RestartPolicy {
                name: Some(bollard::models::RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            log_config: Some(self.log_config()),
            ..HostConfig::default()
        }
    }

    /// Upstream's `createHostConfigForService`.
    fn service_host_config(&self, job: &Job, image: &str) -> HostConfig {
        let config = &self.config;
        let privileged = config.services_privileged.unwrap_or(config.privileged)
            && matches_any_or_none(&config.allowed_privileged_services, image);
        let devices: Vec<String> = config
            .services_devices
            .iter()
            .filter(|(pattern, _)| pattern_matches(pattern.as_bytes(), image.as_bytes()))
            .flat_map(|(_, devices)| devices.iter().cloned())
            .collect();
        HostConfig {
            privileged: Some(privileged),
            devices: device_mappings(&devices),
            security_opt: list(&config.services_security_opt),
            extra_hosts: list(&config.extra_hosts),
            shm_size: config.shm_size,
            tmpfs: map(&config.services_tmpfs),
            init: job.init.then_some(true),
            ..self.common_host_config(job, &config.service_resources)
        }
    }

    /// Containers labelled with this job and runner that cleanup would not know by id.
    async fn leftover_containers(&self, job: &Job) -> Vec<String> {
        let Ok(docker) = self.docker() else {
            return Vec::new();
        };
        let label = |key: &str| {
            let key = format!("{LABEL_PREFIX}.{key}");
            format!("{key}={}", job.labels.get(&key).map_or("", String::as_str))
        };
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                label("job.id"),
                label("runner.id"),
                label("runner.system_id"),
            ],
        )]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        match docker.list_containers(Some(options)).await {
            Ok(listed) => listed.into_iter().filter_map(|c| c.id).collect(),
            Err(error) => {
                tracing::warn!(%error, "listing the job's containers");
                Vec::new()
            }
        }
    }

    /// Upstream's `getBuildContainerUser`: the configured user wins; else the job's
    /// `executor_opts` user, which `allowed_users` must allow.
    fn build_user(&self, build: &BuildContext) -> Result<String, ExecutorError> {
        let user = if self.config.user.is_empty() {
            executor_option(build, &build.job.image, "user")
        } else {
            self.config.user.clone()
        };
        if user_allowed(&self.config, &user) {
            return Ok(user);
        }
        let allowed = if self.config.allowed_users.is_empty() {
            vec![self.config.user.clone()]
        } else {
            self.config.allowed_users.clone()
        };
        Err(system(format!(
            "user {user:?} is not an allowed user: [{}]",
            allowed.join(" ")
        )))
    }

    /// What the volume plan is made from; protected when the ref is, or when a cache key ends
    /// in `-protected` (upstream's rule).
    fn volume_settings(&self, build: &BuildContext, prefix: &str) -> volumes::VolumeSettings {
        let protected = build.job.git_info.protected.unwrap_or(false)
            || build.job.cache.iter().any(|cache| {
                cache.key.ends_with("-protected") && !cache.key.ends_with("-non_protected")
            });
        volumes::VolumeSettings {
            cache_dir: self.config.cache_dir.clone(),
            base_path: build.dirs.project_dir.clone(),
            unique_name: runner_core::dirs::project_real_unique_name(
                build.runner.token.expose(),
                &build.runner.system_id,
                build.job.job_info.project_id,
                build.concurrent_project_id,
            ),
            temporary_name: prefix.to_string(),
            disable_cache: self.config.disable_cache,
            protected,
        }
    }

    /// A job's `entrypoint`, unless `disable_entrypoint_overwrite` (then a warning).
    fn entrypoint(&self, entrypoint: &[String], log: &JobLog) -> Option<Vec<String>> {
        if entrypoint.is_empty() {
            None
        } else if self.config.disable_entrypoint_overwrite {
            log.warning("Entrypoint override disabled");
            None
        } else {
            Some(entrypoint.to_vec())
        }
    }

    /// The per-job network (upstream's `FF_NETWORK_PER_BUILD`), with `network_mtu` and
    /// `enable_ipv6`.
    async fn create_network(
        &mut self,
        prefix: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), ExecutorError> {
        let name = format!("{prefix}-network");
        let mut network_labels = labels.clone();
        network_labels.insert(format!("{LABEL_PREFIX}.type"), "network".into());
        let options = self.config.network_mtu.map(|mtu| {
            HashMap::from([("com.docker.network.driver.mtu".to_string(), mtu.to_string())])
        });
        self.docker()?
            .create_network(bollard::models::NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(network_labels),
                enable_ipv6: self.config.enable_ipv6.then_some(true),
                options,
                ..Default::default()
            })
            .await
            .map_err(|error| system(format!("creating the job network: {error}")))?;
        if let Some(job) = self.job.as_mut() {
            job.network = Some(name);
        }
        Ok(())
    }

    /// Creates the plan's named volumes that do not exist yet, labelled as upstream's cache
    /// volumes. When the build container runs as another user than root, the new ones are
    /// made world-writable by the helper's `cache-init` (upstream does this for every volume).
    async fn create_volumes(
        &self,
        plan: &volumes::VolumePlan,
        labels: &HashMap<String, String>,
        protected: bool,
        user: &str,
        image_user: &str,
    ) -> Result<(), ExecutorError> {
        let docker = self.docker()?;
        let mut fresh = Vec::new();
        for volume in &plan.volumes {
            if docker.inspect_volume(&volume.name).await.is_ok() {
                continue;
            }
            let mut volume_labels = labels.clone();
            for (key, value) in [
                ("type", "cache".to_string()),
                ("destination", volume.destination.clone()),
                ("protected", protected.to_string()),
                ("reusable", volume.reusable.to_string()),
            ] {
                volume_labels.insert(format!("{LABEL_PREFIX}.{key}"), value);
            }
            docker
                .create_volume(bollard::models::VolumeCreateRequest {
                    name: Some(volume.name.clone()),
                    labels: Some(volume_labels),
                    driver: text(&self.config.volume_driver),
                    driver_opts: map(&self.config.volume_driver_ops),
                    ..Default::default()
                })
                .await
                .map_err(|error| {
                    system(format!(
                        "adding cache volume: creating docker volume: {error}"
                    ))
                })?;
            fresh.push(volume.name.clone());
        }
        let effective = if user.is_empty() { image_user } else { user };
        let root = effective.is_empty()
            || ["root", "0"].contains(&effective.split(':').next().unwrap_or(""));
        if fresh.is_empty() || root {
            return Ok(());
        }
        let mut init_labels = labels.clone();
        init_labels.insert(format!("{LABEL_PREFIX}.type"), "cache-init".into());
        let mount = |index: usize| format!("/gitlab-runner-cache-init/{index}");
        let mut cmd = vec![HELPER_PATH.to_string(), "cache-init".to_string()];
        cmd.extend((0..fresh.len()).map(mount));
        let random: u32 = rand::random();
        let name = format!("{}-set-permission-{random:08x}", fresh[0]);
        let body = ContainerCreateBody {
            image: Some(self.config.helper_image.clone()),
            cmd: Some(cmd),
            labels: Some(init_labels),
            host_config: Some(HostConfig {
                binds: Some(
                    fresh
                        .iter()
                        .enumerate()
                        .map(|(index, volume)| format!("{volume}:{}", mount(index)))
                        .collect(),
                ),
                log_config: Some(bollard::models::HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: None,
                }),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|error| system(format!("set volume permissions: {error}")))?;
        let outcome = async {
            docker
                .start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await?;
            let mut wait = docker.wait_container(
                &created.id,
                None::<bollard::query_parameters::WaitContainerOptions>,
            );
            while let Some(item) = wait.next().await {
                item?;
            }
            Ok::<(), bollard::errors::Error>(())
        }
        .await;
        let _ = docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        outcome.map_err(|error| system(format!("set volume permissions: {error}")))
    }

    /// The container of `kind`, created on first use (a same-named leftover is removed first).
    async fn container(&mut self, kind: &'static str) -> Result<String, ExecutorError> {
        let job = self
            .job
            .as_ref()
            .ok_or_else(|| system("the job was not prepared"))?;
        if let Some(id) = job.containers.get(kind) {
            return Ok(id.clone());
        }
        let docker = self.docker()?;
        let name = format!("{}-{kind}", job.prefix);
        let _ = docker
            .remove_container(
                &name,
                Some(
                    RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
        let mut labels = job.labels.clone();
        labels.insert(format!("{LABEL_PREFIX}.type"), kind.to_string());
        let image = if kind == "build" {
            job.image.clone()
        } else {
            self.config.helper_image.clone()
        };
        // The helper works with umask 0000, so a build container running as another user can
        // write what the helper checked out or extracted (upstream's `gitlab-runner-build`).
        let detect = if kind == "build" {
            detect_shell_script(false)
        } else {
            format!("umask 0000\n{}", detect_shell_script(false))
        };
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(vec!["sh".into(), "-c".into(), detect]),
            entrypoint: if kind == "build" {
                job.entrypoint.clone()
            } else {
                None
            },
            env: Some(job.env.clone()),
            hostname: Some(job.hostname.clone()),
            user: (kind == "build").then(|| text(&job.user)).flatten(),
            labels: Some(labels),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(self.host_config(job, kind == "build")),
            networking_config: self.alias_network(job).map(|network| {
                let mut config = networking(&network, vec!["build".into(), name.clone()]);
                if let Some(endpoint) = config
                    .endpoints_config
                    .as_mut()
                    .and_then(|endpoints| endpoints.get_mut(&network))
                {
                    endpoint.mac_address = text(&self.config.mac_address);
                }
                config
            }),
            ..ContainerCreateBody::default()
        };
        let mut options = CreateContainerOptionsBuilder::default().name(&name);
        if kind == "build" && !job.platform.is_empty() {
            options = options.platform(&job.platform);
        }
        let created = docker
            .create_container(Some(options.build()), body)
            .await
            .map_err(|error| match error {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 400,
                    message,
                } => ExecutorError::with_reason(
                    FailureReason::RunnerConfigurationError,
                    format!("creating the {kind} container: {message}"),
                ),
                other => system(format!("creating the {kind} container: {other}")),
            })?;
        if let Some(job) = self.job.as_mut() {
            job.containers.insert(kind, created.id.clone());
        }
        Ok(created.id)
    }
}

impl Executor for DockerExecutor {
    async fn prepare(
        &mut self,
        build: &mut BuildContext,
        log: &JobLog,
        _cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        let default_image = build.variables.expand(&self.config.image);
        let image = if build.job.image.name.is_empty() {
            default_image.clone()
        } else {
            build.variables.expand(&build.job.image.name)
        };
        if image.is_empty() {
            return Err(ExecutorError::with_reason(
                FailureReason::RunnerConfigurationError,
                "no Docker image specified to run the build in",
            ));
        }
        check_log_options(&self.config.log_options)?;
        log.println(&format!("Using Docker executor with image {image} ..."));
        if !build.job.image.name.is_empty() {
            verify_allowed(
                &image,
                "images",
                &self.config.allowed_images,
                std::slice::from_ref(&default_image),
                log,
            )?;
        }
        self.cleanup(log).await;
        self.connect()?;
        self.auth = auth_sources(build);
        let policies = self.effective_policies(&image, &build.job.image.pull_policy)?;
        let platform = executor_option(build, &build.job.image, "platform");
        let user = self.build_user(build)?;
        let found = self.ensure_image(&image, &platform, &policies, log).await?;
        let id = found.id.clone().unwrap_or_default();
        match found
            .repo_digests
            .as_ref()
            .and_then(|digests| digests.first())
        {
            Some(digest) => log.println(&format!(
                "Using docker image {id} for {image} with digest {digest} ..."
            )),
            None => log.println(&format!("Using docker image {id} for {image} ...")),
        }
        let helper = self.config.helper_image.clone();
        if let Err(mut error) = self
            .ensure_image(&helper, "", &[PullPolicy::IfNotPresent], log)
            .await
        {
            // The default helper image is built locally, never published.
            if helper == DockerConfig::default().helper_image {
                error.message.push_str(
                    " (the default helper image is built on the Docker host by scripts/build-helper-image.sh; or set helper_image)",
                );
            }
            return Err(error);
        }

        let short = build.runner.short_token();
        let project_id = build.job.job_info.project_id;
        let unique =
            runner_core::dirs::project_unique_name(&short, project_id, build.concurrent_project_id);
        let random: u64 = rand::random();
        let prefix = format!("{unique}-{random:016x}");
        let labels = job_labels(build);
        let settings = self.volume_settings(build, &prefix);
        let plan = volumes::plan(
            &settings,
            &self.config.volumes,
            &build.dirs.builds_dir,
            build.settings.git_strategy == runner_core::settings::GitStrategy::Fetch,
        )
        .map_err(system)?;
        let entrypoint = self.entrypoint(&build.job.image.entrypoint, log);
        let env = container_env(build);
        let mut container_labels = labels.clone();
        for (key, value) in &self.config.container_labels {
            container_labels.insert(key.clone(), build.variables.expand(value));
        }
        // Registered before anything is created, so cleanup finds what a failure left.
        self.job = Some(Job {
            privileged_image: matches_any_or_none(&self.config.allowed_privileged_images, &image),
            image,
            entrypoint,
            env,
            prefix: prefix.clone(),
            labels: container_labels,
            temporary_volumes: plan.temporary().map(|volume| volume.name.clone()).collect(),
            binds: plan.binds.clone(),
            user: user.clone(),
            platform,
            init: build.flags.enabled("FF_USE_INIT_WITH_DOCKER_EXECUTOR"),
            containers: HashMap::new(),
            hostname: if self.config.hostname.is_empty() {
                unique
            } else {
                self.config.hostname.clone()
            },
            network: None,
            links: Vec::new(),
            services: Vec::new(),
            log_followers: Vec::new(),
        });
        let image_user = found
            .config
            .as_ref()
            .and_then(|config| config.user.clone())
            .unwrap_or_default();
        self.create_volumes(&plan, &labels, settings.protected, &user, &image_user)
            .await?;
        if self.config.network_mode.is_empty() && build.flags.enabled("FF_NETWORK_PER_BUILD") {
            self.create_network(&prefix, &labels).await?;
        }
        self.start_services(build, log).await
    }

    async fn run(
        &mut self,
        command: ExecutorCommand<'_>,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let kind = if command.predefined {
            "predefined"
        } else {
            "build"
        };
        let id = self.container(kind).await?;
        let docker = self.docker()?.clone();
        let attach = docker
            .attach_container(
                &id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .map_err(|error| system(format!("attaching to the {kind} container: {error}")))?;
        docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|error| system(format!("starting the {kind} container: {error}")))?;
        let started = Started {
            process: stage::ContainerStage { docker, id, kind },
            output: stage::AttachOutput(attach.output),
            stdin: Some(attach.input),
        };
        run_stage(
            started,
            command.script.as_bytes(),
            log,
            cancel,
            self.kill_timeouts,
            stage::container_exit,
        )
        .await
    }

    async fn cleanup(&mut self, _log: &JobLog) {
        let Some(job) = self.job.take() else {
            return;
        };
        for follower in &job.log_followers {
            follower.abort();
        }
        let Ok(docker) = self.docker() else {
            return;
        };
        let remove = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(!self.config.volume_keep)
            .build();
        let mut ids: Vec<String> = job
            .containers
            .values()
            .chain(&job.services)
            .cloned()
            .collect();
        // What a canceled prepare may have left: health checks, the permission container.
        ids.extend(self.leftover_containers(&job).await);
        ids.sort();
        ids.dedup();
        for id in &ids {
            match docker.remove_container(id, Some(remove.clone())).await {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(error) => tracing::warn!(container = %id, %error, "removing a job container"),
            }
        }
        if let Some(network) = &job.network {
            if let Err(error) = docker.remove_network(network).await {
                tracing::warn!(%network, %error, "removing the job network");
            }
        }
        for volume in &job.temporary_volumes {
            match docker
                .remove_volume(
                    volume,
                    Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
                )
                .await
            {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(error) => tracing::warn!(%volume, %error, "removing a temporary volume"),
            }
        }
    }
}

/// `12.3 MB`, as docker's progress does (decimal units).
fn human_bytes(bytes: i64) -> String {
    let value = bytes as f64;
    if value >= 1e9 {
        format!("{:.2} GB", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.1} MB", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} kB", value / 1e3)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_images_are_doublestar_patterns() {
        let matches =
            |pattern: &str, image: &str| pattern_matches(pattern.as_bytes(), image.as_bytes());
        assert!(matches("debian:*", "debian:bookworm"));
        assert!(matches("registry.local/**", "registry.local/group/app:1"));
        assert!(!matches("registry.local/*", "registry.local/group/app:1"));
        assert!(matches(
            "registry.local/*/app:?",
            "registry.local/group/app:1"
        ));
        assert!(!matches("debian:*", "alpine:3"));
    }

    fn job() -> Job {
        Job {
            image: "debian:12".into(),
            entrypoint: None,
            env: Vec::new(),
            prefix: "runner-x-project-1-concurrent-0-00".into(),
            labels: HashMap::new(),
            temporary_volumes: Vec::new(),
            binds: vec!["v:/builds".into()],
            user: String::new(),
            platform: String::new(),
            privileged_image: false,
            init: true,
            containers: HashMap::new(),
            hostname: "h".into(),
            network: Some("net".into()),
            links: Vec::new(),
            services: Vec::new(),
            log_followers: Vec::new(),
        }
    }

    fn executor(config: DockerConfig) -> DockerExecutor {
        DockerProvider::new(Some(config)).create(())
    }

    #[test]
    fn build_helper_and_service_containers_get_upstreams_host_config() {
        let config = DockerConfig {
            privileged: true,
            allowed_privileged_services: vec!["postgres:*".into()],
            pid_mode: "host".into(),
            resources: Resources {
                memory: Some(1 << 30),
                ..Resources::default()
            },
            service_resources: Resources {
                memory: Some(1 << 20),
                ..Resources::default()
            },
            ulimits: vec![("nofile".into(), 10, 20)],
            network_mode: String::new(),
            ..DockerConfig::default()
        };
        let executor = executor(config);
        let job = job();
        let build = executor.host_config(&job, true);
        // The build image is not among allowed_privileged_images here.
        assert_eq!(build.privileged, Some(false));
        assert_eq!(build.pid_mode.as_deref(), Some("host"));
        assert_eq!(build.init, Some(true));
        assert_eq!(build.memory, Some(1 << 30));
        assert_eq!(build.network_mode.as_deref(), Some("net"));
        assert_eq!(build.ulimits.as_ref().unwrap()[0].hard, Some(20));
        let helper = executor.host_config(&job, false);
        assert_eq!(helper.privileged, Some(true));
        assert_eq!(helper.pid_mode, None);
        assert_eq!(helper.init, None);
        let service = executor.service_host_config(&job, "postgres:16");
        assert_eq!(service.privileged, Some(true));
        assert_eq!(service.memory, Some(1 << 20));
        assert_eq!(service.binds, Some(vec!["v:/builds".to_string()]));
        let other = executor.service_host_config(&job, "redis:7");
        assert_eq!(other.privileged, Some(false));
    }

    #[test]
    fn labels_are_upstreams() {
        let json = r#"{"id": 42, "token": "job-token",
            "job_info": {"project_id": 7, "pipeline_id": 99, "name": "j", "stage": "s"},
            "git_info": {"repo_url": "https://gitlab-ci-token:secret@gitlab.example/group/app.git",
                "sha": "abc", "before_sha": "000", "ref": "main"},
            "runner_info": {"timeout": 3600},
            "steps": [{"name": "script", "script": ["true"], "timeout": 3600, "when": "on_success"}]}"#;
        let input = runner_core::build::BuildInput {
            job: runner_core::job::JobResponse::from_json(json.as_bytes()).unwrap(),
            runner: runner_core::build::RunnerSettings {
                token: "glrt-abcdefghijklmnop".to_string().into(),
                system_id: "s_0123456789ab".into(),
                ..Default::default()
            },
            executor_name: "docker".into(),
            defaults: DockerProvider::new(None).defaults(),
            shared_environment: false,
            shell: runner_core::script::ShellCommand {
                name: "bash".into(),
                program: "bash".into(),
                args: Vec::new(),
            },
            concurrent_id: 3,
            concurrent_project_id: 1,
            correlation_id: String::new(),
        };
        let build = BuildContext::new(input).unwrap().0;
        let labels = job_labels(&build);
        let label = |key: &str| labels[&format!("{LABEL_PREFIX}.{key}")].as_str();
        assert_eq!(
            label("job.url"),
            "https://gitlab.example/group/app/-/jobs/42"
        );
        assert_eq!(label("job.timeout"), "1h0m0s");
        assert_eq!(label("pipeline.id"), "99");
        assert_eq!(label("project.runner_id"), "1");
        assert_eq!(label("runner.local_id"), "3");
        assert_eq!(label("runner.id"), "abcdefghi");
        assert_eq!(label("runner.system_id"), "s_0123456789ab");
        assert_eq!(labels.len(), 13);
    }

    #[test]
    fn log_options_and_service_devices_follow_upstream() {
        let allowed = HashMap::from([("env".to_string(), "A".to_string())]);
        assert!(check_log_options(&allowed).is_ok());
        let refused = HashMap::from([
            ("max-size".to_string(), "1m".to_string()),
            ("env".to_string(), "A".to_string()),
            ("labels".to_string(), "x".to_string()),
            ("mode".to_string(), "x".to_string()),
        ]);
        let error = check_log_options(&refused).unwrap_err();
        assert_eq!(error.reason, Some(FailureReason::RunnerConfigurationError));
        assert!(
            error.message.ends_with(
                "only [\"env\" \"labels\"] are allowed, but found: [\"max-size\" \"mode\"]"
            ),
            "{}",
            error.message
        );
        let executor = executor(DockerConfig {
            services_devices: vec![("postgres:*".into(), vec!["/dev/fuse".into()])],
            log_options: allowed,
            ..DockerConfig::default()
        });
        let job = job();
        let service = executor.service_host_config(&job, "postgres:16");
        let device = &service.devices.as_ref().unwrap()[0];
        assert_eq!(device.path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(device.cgroup_permissions.as_deref(), Some("rwm"));
        assert_eq!(executor.service_host_config(&job, "redis:7").devices, None);
        let log = executor.host_config(&job, true).log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["env"], "A");
    }

    #[test]
    fn users_are_allowed_as_upstream_allows_them() {
        let open = DockerConfig::default();
        assert!(user_allowed(&open, "anyone"));
        let fixed = DockerConfig {
            user: "ci".into(),
            ..DockerConfig::default()
        };
        assert!(user_allowed(&fixed, "ci"));
        assert!(user_allowed(&fixed, ""));
        assert!(!user_allowed(&fixed, "root"));
        let listed = DockerConfig {
            allowed_users: vec!["a".into(), "b".into()],
            ..DockerConfig::default()
        };
        assert!(user_allowed(&listed, "b"));
        assert!(!user_allowed(&listed, "c"));
    }

    #[test]
    fn effective_pull_policies_are_upstreams() {
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let default = executor(DockerConfig::default());
        assert_eq!(
            default.effective_policies("a", &[]).unwrap(),
            vec![PullPolicy::Always]
        );
        // Without allowed_pull_policies, the configured policies are the allowed ones.
        let error = default
            .effective_policies("a", &names(&["never"]))
            .unwrap_err();
        assert_eq!(error.reason, Some(FailureReason::RunnerConfigurationError));
        assert_eq!(
            error.message,
            "invalid pull policy for image \"a\": pull_policy ([never]) defined in GitLab pipeline config is not one of the allowed_pull_policies ([always])"
        );
        let allowing = executor(DockerConfig {
            pull_policy: vec![PullPolicy::IfNotPresent],
            allowed_pull_policies: vec![PullPolicy::IfNotPresent, PullPolicy::Never],
            ..DockerConfig::default()
        });
        // The job's list is filtered, not refused, when some of it is allowed.
        assert_eq!(
            allowing
                .effective_policies("a", &names(&["always", "never"]))
                .unwrap(),
            vec![PullPolicy::Never]
        );
        let strict = executor(DockerConfig {
            allowed_pull_policies: vec![PullPolicy::Never],
            ..DockerConfig::default()
        });
        let error = strict.effective_policies("a", &[]).unwrap_err();
        assert!(
            error.message.contains("defined in Runner config (default)"),
            "{}",
            error.message
        );
    }

    #[test]
    fn pull_policies_parse_upstreams_names() {
        for name in ["always", "if-not-present", "never"] {
            assert_eq!(PullPolicy::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(PullPolicy::parse("sometimes"), None);
    }
}
