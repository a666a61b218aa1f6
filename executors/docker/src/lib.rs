//! The Docker executor (first part): each job gets a build container from its image and a
//! helper container (git and the static `gitlab-runner-rs` helper) sharing a builds volume, as
//! upstream's `executors/docker`. Each container is created once per job and started again for
//! every stage, the stage script on its stdin; the shell is found by upstream's detection script.
//! Pull policies, `allowed_images`, labels on everything created, and cleanup on every path.
//!
//! Services start before the job on a per-job network (upstream's `FF_NETWORK_PER_BUILD`
//! semantics) under their aliases, and are waited for on their exposed ports.
//!
//! Not yet: registry credentials, cache volumes.
//!
//! Main types: [`DockerProvider`], [`DockerExecutor`], [`DockerConfig`].
//!
//! Depends on `runner-core` and bollard; it must not depend on `shells`, `network`, other
//! executors or `commands`.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, DeviceMapping, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use runner_core::build::BuildContext;
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ExecutorProvider, FeaturesInfo,
    ScriptExit, ShellType,
};
use runner_core::failure::FailureReason;
use runner_core::log::{JobLog, StreamId, StreamKind};
use runner_core::script::detect_shell_script;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

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

/// `[runners.docker]`, the keys this executor implements so far.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// `host`, else `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    pub image: String,
    /// The image with git and the helper at [`HELPER_PATH`].
    pub helper_image: String,
    /// Tried in order; default `always`.
    pub pull_policy: Vec<PullPolicy>,
    pub allowed_pull_policies: Vec<PullPolicy>,
    pub allowed_images: Vec<String>,
    pub privileged: bool,
    pub user: String,
    /// Bytes.
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub network_mode: String,
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub shm_size: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub devices: Vec<String>,
    /// `host:container[:mode]` binds.
    pub volumes: Vec<String>,
    /// How long to wait for services' exposed ports; zero or negative does not wait.
    pub wait_for_services_timeout: i64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            image: String::new(),
            helper_image: format!("gitlab-runner-rs/helper:{}", env!("CARGO_PKG_VERSION")),
            pull_policy: vec![PullPolicy::Always],
            allowed_pull_policies: Vec::new(),
            allowed_images: Vec::new(),
            privileged: false,
            user: String::new(),
            memory: None,
            nano_cpus: None,
            network_mode: String::new(),
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            shm_size: None,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            security_opt: Vec::new(),
            devices: Vec::new(),
            volumes: Vec::new(),
            wait_for_services_timeout: 30,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DockerProvider {
    config: Option<DockerConfig>,
}

impl DockerProvider {
    pub fn new(config: Option<DockerConfig>) -> Self {
        Self { config }
    }
}

impl ExecutorProvider for DockerProvider {
    type Reservation = ();
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
            show_hostname: false,
            dirs_from_prepare: false,
        }
    }

    async fn acquire(&self) -> Result<(), ExecutorError> {
        Ok(())
    }

    fn release(&self, _reservation: ()) {}

    fn create(&self, _reservation: ()) -> DockerExecutor {
        DockerExecutor {
            config: self.config.clone().unwrap_or_default(),
            docker: None,
            job: None,
        }
    }
}

/// What prepare set up for the job.
#[derive(Debug)]
struct Job {
    image: String,
    prefix: String,
    labels: HashMap<String, String>,
    builds_volume: String,
    binds: Vec<String>,
    builds_dir: String,
    /// Container ids by kind (`predefined`, `build`), created on first use.
    containers: HashMap<&'static str, String>,
    hostname: String,
    /// The per-job network, when `network_mode` is not set.
    network: Option<String>,
    /// Service container ids.
    services: Vec<String>,
}

pub struct DockerExecutor {
    config: DockerConfig,
    docker: Option<Docker>,
    job: Option<Job>,
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

/// `*` and `**` match any run of characters, as upstream's `allowed_images` patterns do for
/// plain names.
fn image_allowed(patterns: &[String], image: &str) -> bool {
    fn matches(pattern: &[u8], text: &[u8]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                matches(&pattern[1..], text) || (!text.is_empty() && matches(pattern, &text[1..]))
            }
            (Some(p), Some(t)) if p == t => matches(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| matches(pattern.as_bytes(), image.as_bytes()))
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

/// Upstream's default aliases of a service image: its path without registry host port or tag,
/// with `/` as `__`, and with `/` as `-` when that differs.
pub fn service_aliases(image: &str) -> Vec<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_colon = without_digest.rfind(':');
    let last_slash = without_digest.rfind('/');
    let path = match (last_colon, last_slash) {
        (Some(colon), Some(slash)) if colon > slash => &without_digest[..colon],
        (Some(colon), None) => &without_digest[..colon],
        _ => without_digest,
    };
    // A registry host (with a dot or a port) is not part of the alias.
    let path = match path.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') => rest,
        _ => path,
    };
    let mut aliases = vec![path.replace('/', "__")];
    let dashed = path.replace('/', "-");
    if dashed != aliases[0] {
        aliases.push(dashed);
    }
    aliases
}

impl DockerExecutor {
    fn docker(&self) -> Result<&Docker, ExecutorError> {
        self.docker
            .as_ref()
            .ok_or_else(|| system("not connected to the Docker daemon"))
    }

    fn connect(&mut self) -> Result<(), ExecutorError> {
        let host = self
            .config
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .filter(|host| !host.is_empty());
        let docker = match host {
            Some(host) => Docker::connect_with_host(&host),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(|error| system(format!("creating the Docker client: {error}")))?;
        self.docker = Some(docker);
        Ok(())
    }

    async fn image_present(&self, image: &str) -> Result<Option<String>, ExecutorError> {
        match self.docker()?.inspect_image(image).await {
            Ok(inspect) => Ok(Some(inspect.id.unwrap_or_default())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(error) => Err(system(format!("inspecting image {image:?}: {error}"))),
        }
    }

    async fn pull(&self, image: &str, log: &JobLog) -> Result<(), String> {
        log.println(&format!("Pulling docker image {image} ..."));
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut stream =
            self.docker()
                .map_err(|e| e.message)?
                .create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let (Some(id), Some(status)) = (&info.id, &info.status) {
                        if status.starts_with("Pull complete") || status.starts_with("Downloaded") {
                            log.println(&format!("{id}: {status}"));
                        }
                    }
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(())
    }

    /// Upstream's pull manager: the policies in order, each failure logged and the next tried.
    async fn ensure_image(
        &self,
        image: &str,
        policies: &[PullPolicy],
        log: &JobLog,
    ) -> Result<String, ExecutorError> {
        let names: Vec<&str> = policies.iter().map(|policy| policy.as_str()).collect();
        log.println(&format!(
            "Using effective pull policy of [{}] for container {image}",
            names.join(" ")
        ));
        let mut last = String::new();
        for policy in policies {
            match policy {
                PullPolicy::Never | PullPolicy::IfNotPresent => {
                    if let Some(id) = self.image_present(image).await? {
                        log.println(&format!(
                            "Using locally found image version due to \"{}\" pull policy",
                            policy.as_str()
                        ));
                        return Ok(id);
                    }
                    if *policy == PullPolicy::Never {
                        last = format!(
                            "image {image:?} not found locally and the pull policy is \"never\""
                        );
                        continue;
                    }
                }
                PullPolicy::Always => {}
            }
            match self.pull(image, log).await {
                Ok(()) => {
                    if let Some(id) = self.image_present(image).await? {
                        return Ok(id);
                    }
                    last = format!("image {image:?} is not present after the pull");
                }
                Err(error) => {
                    log.warning(&format!(
                        "Failed to pull image with policy \"{}\": {error}",
                        policy.as_str()
                    ));
                    last = error;
                }
            }
        }
        Err(ExecutorError::with_reason(
            FailureReason::ImagePullFailure,
            format!(
                "failed to pull image {image:?} with specified policies [{}]: {last}",
                names.join(" ")
            ),
        ))
    }

    fn policies(&self, build: &BuildContext) -> Result<Vec<PullPolicy>, ExecutorError> {
        let job: Vec<PullPolicy> = build
            .job
            .image
            .pull_policy
            .iter()
            .filter_map(|name| PullPolicy::parse(name))
            .collect();
        if job.is_empty() {
            return Ok(self.config.pull_policy.clone());
        }
        let allowed = if self.config.allowed_pull_policies.is_empty() {
            &self.config.pull_policy
        } else {
            &self.config.allowed_pull_policies
        };
        if let Some(refused) = job.iter().find(|policy| !allowed.contains(policy)) {
            let names: Vec<&str> = allowed.iter().map(|policy| policy.as_str()).collect();
            return Err(ExecutorError::with_reason(
                FailureReason::RunnerConfigurationError,
                format!(
                    "the pull policy \"{}\" of the job is not one of the allowed_pull_policies [{}]",
                    refused.as_str(),
                    names.join(" ")
                ),
            ));
        }
        Ok(job)
    }

    fn host_config(&self, job: &Job) -> HostConfig {
        let config = &self.config;
        let list = |items: &Vec<String>| (!items.is_empty()).then(|| items.clone());
        HostConfig {
            binds: Some(job.binds.clone()),
            privileged: Some(config.privileged),
            memory: config.memory,
            nano_cpus: config.nano_cpus,
            network_mode: if config.network_mode.is_empty() {
                job.network.clone()
            } else {
                Some(config.network_mode.clone())
            },
            extra_hosts: list(&config.extra_hosts),
            dns: list(&config.dns),
            shm_size: config.shm_size,
            cap_add: list(&config.cap_add),
            cap_drop: list(&config.cap_drop),
            security_opt: list(&config.security_opt),
            devices: (!config.devices.is_empty()).then(|| {
                config
                    .devices
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
            }),
            ..HostConfig::default()
        }
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
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(vec!["sh".into(), "-c".into(), detect_shell_script(false)]),
            hostname: Some(job.hostname.clone()),
            working_dir: Some(job.builds_dir.clone()),
            user: (kind == "build" && !self.config.user.is_empty())
                .then(|| self.config.user.clone()),
            labels: Some(labels),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            host_config: Some(self.host_config(job)),
            networking_config: job
                .network
                .as_ref()
                .map(|network| networking(network, vec!["build".into(), name.clone()])),
            ..ContainerCreateBody::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
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

impl DockerExecutor {
    /// Starts the job's services under their aliases, then waits for their exposed ports.
    async fn start_services(
        &mut self,
        build: &BuildContext,
        log: &JobLog,
        policies: &[PullPolicy],
    ) -> Result<(), ExecutorError> {
        let mut started: Vec<(String, String, Vec<String>)> = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        for (index, service) in build.job.services.iter().enumerate() {
            let image = build.variables.expand(&service.name);
            let (name_part, version) = match image.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
                _ => (image.clone(), "latest".into()),
            };
            log.println(&format!("Starting service {name_part}:{version} ..."));
            self.ensure_image(&image, policies, log).await?;
            let mut aliases = Vec::new();
            for alias in service_aliases(&image)
                .into_iter()
                .chain(service.aliases().into_iter().map(str::to_string))
            {
                if taken.contains(&alias) {
                    log.warning(&format!(
                        "Service {image} has a duplicate alias {alias:?}; skipped"
                    ));
                    continue;
                }
                taken.push(alias.clone());
                aliases.push(alias);
            }
            let job = self
                .job
                .as_ref()
                .ok_or_else(|| system("the job was not prepared"))?;
            let name = format!(
                "{}-{}-{index}",
                job.prefix,
                name_part.replace('/', "__").replace(':', "_")
            );
            let mut labels = job.labels.clone();
            labels.insert(format!("{LABEL_PREFIX}.type"), "service".into());
            labels.insert(format!("{LABEL_PREFIX}.service"), name_part.clone());
            let env: Vec<String> = service
                .variables
                .iter()
                .map(|variable| {
                    format!(
                        "{}={}",
                        variable.key,
                        build.variables.expand(&variable.value)
                    )
                })
                .collect();
            let list = |items: &Vec<String>| (!items.is_empty()).then(|| items.clone());
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                env: Some(env),
                cmd: list(&service.command),
                entrypoint: list(&service.entrypoint),
                labels: Some(labels),
                host_config: Some(HostConfig {
                    network_mode: job.network.clone().or_else(|| {
                        (!self.config.network_mode.is_empty())
                            .then(|| self.config.network_mode.clone())
                    }),
                    privileged: Some(false),
                    ..HostConfig::default()
                }),
                networking_config: job
                    .network
                    .as_ref()
                    .map(|network| networking(network, aliases.clone())),
                ..ContainerCreateBody::default()
            };
            let docker = self.docker()?.clone();
            let created = docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    body,
                )
                .await
                .map_err(|error| system(format!("creating service {image}: {error}")))?;
            if let Some(job) = self.job.as_mut() {
                job.services.push(created.id.clone());
            }
            docker
                .start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|error| system(format!("starting service {image}: {error}")))?;
            started.push((created.id, image, aliases));
        }
        if self.config.wait_for_services_timeout <= 0 {
            return Ok(());
        }
        let timeout = std::time::Duration::from_secs(self.config.wait_for_services_timeout as u64);
        for (id, image, _aliases) in &started {
            if let Err(error) = self.wait_for_service(id, timeout).await {
                let logs = self.service_logs(id).await;
                let mut stderr = log.stream(StreamId::SCRIPT, StreamKind::Stderr);
                stderr.write(
                    format!(
                        "\x1b[0;33m*** WARNING:\x1b[0m Service {image} probably didn't start properly.\n\n\
                         Health check error:\n{error}\n\nService container logs:\n{logs}\n\n\
                         \x1b[0;33m*********\x1b[0m\n\n"
                    )
                    .as_bytes(),
                );
                stderr.finish();
            }
        }
        Ok(())
    }

    /// Connects to every exposed TCP port of the service until it answers or `timeout` passes.
    async fn wait_for_service(&self, id: &str, timeout: std::time::Duration) -> Result<(), String> {
        let docker = self.docker().map_err(|error| error.message)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let inspect = docker
                .inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .map_err(|error| error.to_string())?;
            let running = inspect
                .state
                .as_ref()
                .and_then(|state| state.running)
                .unwrap_or(false);
            let ports: Vec<u16> = inspect
                .config
                .as_ref()
                .and_then(|config| config.exposed_ports.clone())
                .unwrap_or_default()
                .iter()
                .filter(|port| port.ends_with("/tcp"))
                .filter_map(|port| port.trim_end_matches("/tcp").parse().ok())
                .collect();
            let address = inspect
                .network_settings
                .as_ref()
                .and_then(|settings| settings.networks.as_ref())
                .and_then(|networks| networks.values().find_map(|n| n.ip_address.clone()))
                .filter(|ip| !ip.is_empty());
            if ports.is_empty() {
                return Ok(());
            }
            if !running {
                return Err("service container is not running".into());
            }
            if let Some(address) = &address {
                let mut all = true;
                for port in &ports {
                    let probe = tokio::net::TcpStream::connect((address.as_str(), *port));
                    if !matches!(
                        tokio::time::timeout(std::time::Duration::from_secs(1), probe).await,
                        Ok(Ok(_))
                    ) {
                        all = false;
                    }
                }
                if all {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "service ports {ports:?} did not answer within {}s",
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    async fn service_logs(&self, id: &str) -> String {
        let Ok(docker) = self.docker() else {
            return String::new();
        };
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("100")
            .build();
        let mut stream = docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(Ok(item)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&item.into_bytes()));
        }
        text
    }
}

impl Executor for DockerExecutor {
    async fn prepare(
        &mut self,
        build: &mut BuildContext,
        log: &JobLog,
        _cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        let image = if build.job.image.name.is_empty() {
            self.config.image.clone()
        } else {
            build.job.image.name.clone()
        };
        if image.is_empty() {
            return Err(ExecutorError::with_reason(
                FailureReason::RunnerConfigurationError,
                "no Docker image specified to run the build in",
            ));
        }
        log.println(&format!("Using Docker executor with image {image} ..."));
        if image != self.config.image && !image_allowed(&self.config.allowed_images, &image) {
            return Err(ExecutorError::with_reason(
                FailureReason::RunnerConfigurationError,
                format!(
                    "the {image:?} image is not present on list of allowed images: {}",
                    self.config.allowed_images.join(", ")
                ),
            ));
        }
        self.cleanup(log).await;
        self.connect()?;
        let policies = self.policies(build)?;
        let id = self.ensure_image(&image, &policies, log).await?;
        log.println(&format!("Using docker image {id} for {image} ..."));
        let helper = self.config.helper_image.clone();
        self.ensure_image(&helper, &[PullPolicy::IfNotPresent], log)
            .await?;

        let short = build.runner.short_token();
        let unique = format!(
            "runner-{short}-project-{}-concurrent-{}",
            build.job.job_info.project_id, build.concurrent_project_id
        );
        let random: u64 = rand::random();
        let prefix = format!("{unique}-{random:016x}");
        let mut labels = HashMap::new();
        for (key, value) in [
            ("job.id", build.job.id.to_string()),
            ("job.sha", build.job.git_info.sha.clone()),
            ("job.ref", build.job.git_info.git_ref.clone()),
            ("project.id", build.job.job_info.project_id.to_string()),
            ("runner.id", short.clone()),
            ("managed", "true".into()),
        ] {
            labels.insert(format!("{LABEL_PREFIX}.{key}"), value);
        }
        let builds_volume = format!("{prefix}-builds");
        let mut volume_labels = labels.clone();
        volume_labels.insert(format!("{LABEL_PREFIX}.type"), "builds".into());
        self.docker()?
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(builds_volume.clone()),
                labels: Some(volume_labels),
                ..Default::default()
            })
            .await
            .map_err(|error| system(format!("creating the builds volume: {error}")))?;
        let mut binds = vec![format!("{builds_volume}:{}", build.dirs.builds_dir)];
        for volume in &self.config.volumes {
            if volume.contains(':') {
                binds.push(volume.clone());
            }
        }
        let network = if self.config.network_mode.is_empty() {
            let name = format!("{prefix}-network");
            let mut network_labels = labels.clone();
            network_labels.insert(format!("{LABEL_PREFIX}.type"), "network".into());
            self.docker()?
                .create_network(bollard::models::NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(network_labels),
                    ..Default::default()
                })
                .await
                .map_err(|error| system(format!("creating the job network: {error}")))?;
            Some(name)
        } else {
            None
        };
        self.job = Some(Job {
            image,
            prefix,
            labels,
            builds_volume,
            binds,
            builds_dir: build.dirs.builds_dir.clone(),
            containers: HashMap::new(),
            hostname: unique,
            network,
            services: Vec::new(),
        });
        self.start_services(build, log, &policies).await
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
        let mut input = attach.input;
        let script = command.script.as_bytes().to_vec();
        let writer = tokio::spawn(async move {
            let _ = input.write_all(&script).await;
            let _ = input.shutdown().await;
        });
        let mut output = attach.output;
        let mut stdout = log.stream(StreamId::SCRIPT, StreamKind::Stdout);
        let mut stderr = log.stream(StreamId::SCRIPT, StreamKind::Stderr);
        let mut killed = false;
        loop {
            tokio::select! {
                // The container's output, until the attach stream ends with it.
                item = output.next() => match item {
                    Some(Ok(bollard::container::LogOutput::StdOut { message })) => stdout.write(&message),
                    Some(Ok(bollard::container::LogOutput::StdErr { message })) => stderr.write(&message),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                // Stopped: kill the container once; the output stream then ends.
                _ = cancel.cancelled(), if !killed => {
                    killed = true;
                    let _ = docker
                        .kill_container(&id, Some(KillContainerOptionsBuilder::default().signal("SIGKILL").build()))
                        .await;
                }
            }
        }
        writer.abort();
        stdout.finish();
        stderr.finish();
        let mut wait = docker.wait_container(
            &id,
            Some(
                WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build(),
            ),
        );
        let code = match wait.next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(error)) => {
                return Err(system(format!("waiting for the {kind} container: {error}")))
            }
            None => return Err(system(format!("the {kind} container vanished"))),
        };
        Ok(if code == 0 {
            ScriptExit::Success
        } else {
            ScriptExit::Failed {
                code: code as i32,
                message: format!("exit code {code}"),
            }
        })
    }

    async fn cleanup(&mut self, _log: &JobLog) {
        let Some(job) = self.job.take() else {
            return;
        };
        let Ok(docker) = self.docker() else {
            return;
        };
        for id in job.containers.values() {
            if let Err(error) = docker
                .remove_container(
                    id,
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await
            {
                tracing::warn!(container = %id, %error, "removing a job container");
            }
        }
        for id in &job.services {
            let _ = docker
                .remove_container(
                    id,
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await;
        }
        if let Some(network) = &job.network {
            if let Err(error) = docker.remove_network(network).await {
                tracing::warn!(%network, %error, "removing the job network");
            }
        }
        if let Err(error) = docker
            .remove_volume(
                &job.builds_volume,
                Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
            )
            .await
        {
            tracing::warn!(volume = %job.builds_volume, %error, "removing the builds volume");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_images_take_wildcards() {
        let patterns = vec!["debian:*".to_string(), "registry.local/**".to_string()];
        assert!(image_allowed(&patterns, "debian:bookworm"));
        assert!(image_allowed(&patterns, "registry.local/group/app:1"));
        assert!(!image_allowed(&patterns, "alpine:3"));
        assert!(image_allowed(&[], "anything"));
    }

    #[test]
    fn service_aliases_follow_upstream() {
        assert_eq!(service_aliases("postgres:16"), vec!["postgres"]);
        assert_eq!(
            service_aliases("registry.local:5000/group/redis:7"),
            vec!["group__redis", "group-redis"]
        );
        assert_eq!(
            service_aliases("tutum/wordpress"),
            vec!["tutum__wordpress", "tutum-wordpress"]
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
