//! The Docker executor (first part): each job gets a build container from its image and a
//! helper container (git and the static `gitlab-runner-rs` helper) sharing a builds volume, as
//! upstream's `executors/docker`. Each container is created once per job and started again for
//! every stage, the stage script on its stdin; the shell is found by upstream's detection script.
//! Pull policies, `allowed_images`, labels on everything created, and cleanup on every path.
//!
//! Services start before the job on a per-job network (upstream's `FF_NETWORK_PER_BUILD`
//! semantics) under their aliases, and are waited for on their exposed ports.
//!
//! Volumes follow upstream's volume manager ([`volumes`]): binds, cache volumes kept across
//! jobs, the builds directory kept for `GIT_STRATEGY=fetch`. Pulls authenticate with upstream's
//! credential sources ([`auth`]) and report their progress in the job log. A canceled stage
//! first gets SIGTERM for every process of the build container, then the container is killed.
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

pub mod auth;
mod services;
pub mod volumes;

pub use services::service_aliases;

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
}

impl DockerProvider {
    pub fn new(config: Option<DockerConfig>) -> Self {
        Self {
            config: std::sync::Arc::new(config.unwrap_or_default()),
        }
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
            config: (*self.config).clone(),
            docker: None,
            job: None,
            auth: auth::AuthSources::default(),
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
    /// Where pull credentials come from, set in prepare.
    auth: auth::AuthSources,
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
    if allowed
        .iter()
        .any(|pattern| pattern_matches(pattern.as_bytes(), image.as_bytes()))
        || internal.iter().any(|name| name == image)
        || allowed.is_empty()
    {
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
    /// registry, printing the layers' progress: each layer's start, a download line at most
    /// every 2 seconds, completion, and the daemon's digest and status lines.
    async fn pull(&self, image: &str, log: &JobLog) -> Result<(), String> {
        let mut warnings = Vec::new();
        let sources = self.auth.clone();
        let name = image.to_string();
        let credentials = tokio::task::spawn_blocking(move || {
            let found = auth::for_image(&sources, &name, &mut warnings);
            (found, warnings)
        })
        .await
        .map_err(|error| error.to_string())?;
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
        log.println(&format!("Pulling docker image {image} ..."));
        let last_segment = image.rsplit('/').next().unwrap_or(image);
        let reference = if last_segment.contains(':') || image.contains('@') {
            image.to_string()
        } else {
            format!("{image}:latest")
        };
        let options = CreateImageOptionsBuilder::default()
            .from_image(&reference)
            .build();
        let mut stream =
            self.docker()
                .map_err(|e| e.message)?
                .create_image(Some(options), None, credentials);
        let mut last_progress: HashMap<String, tokio::time::Instant> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|error| match error {
                bollard::errors::Error::DockerResponseServerError { message, .. } => message,
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

    /// Upstream's pull manager: the policies in order, each failure logged and the next tried.
    async fn ensure_image(
        &self,
        image: &str,
        policies: &[PullPolicy],
        log: &JobLog,
    ) -> Result<bollard::models::ImageInspect, ExecutorError> {
        let names: Vec<&str> = policies.iter().map(|policy| policy.as_str()).collect();
        log.println(&format!(
            "Using effective pull policy of [{}] for container {image}",
            names.join(" ")
        ));
        let mut last = String::new();
        for policy in policies {
            match policy {
                PullPolicy::Never | PullPolicy::IfNotPresent => {
                    if let Some(found) = self.image_present(image).await? {
                        log.println(&format!(
                            "Using locally found image version due to \"{}\" pull policy",
                            policy.as_str()
                        ));
                        return Ok(found);
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
                    if let Some(found) = self.image_present(image).await? {
                        return Ok(found);
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
        self.auth = auth::AuthSources {
            docker_auth_config: build.variables.value("DOCKER_AUTH_CONFIG"),
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
        };
        let policies = self.policies(build)?;
        let found = self.ensure_image(&image, &policies, log).await?;
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
        self.ensure_image(&helper, &[PullPolicy::IfNotPresent], log)
            .await?;

        let short = build.runner.short_token();
        let project_id = build.job.job_info.project_id;
        let unique =
            runner_core::dirs::project_unique_name(&short, project_id, build.concurrent_project_id);
        let random: u64 = rand::random();
        let prefix = format!("{unique}-{random:016x}");
        let mut labels = HashMap::new();
        for (key, value) in [
            ("job.id", build.job.id.to_string()),
            ("job.sha", build.job.git_info.sha.clone()),
            ("job.ref", build.job.git_info.git_ref.clone()),
            ("project.id", project_id.to_string()),
            ("runner.id", short.clone()),
            ("managed", "true".into()),
        ] {
            labels.insert(format!("{LABEL_PREFIX}.{key}"), value);
        }
        let protected = build.job.git_info.protected.unwrap_or(false)
            || build.job.cache.iter().any(|cache| {
                cache.key.ends_with("-protected") && !cache.key.ends_with("-non_protected")
            });
        let settings = volumes::VolumeSettings {
            cache_dir: self.config.cache_dir.clone(),
            base_path: build.dirs.project_dir.clone(),
            unique_name: runner_core::dirs::project_real_unique_name(
                build.runner.token.expose(),
                &build.runner.system_id,
                project_id,
                build.concurrent_project_id,
            ),
            temporary_name: prefix.clone(),
            disable_cache: self.config.disable_cache,
            protected,
        };
        let plan = volumes::plan(
            &settings,
            &self.config.volumes,
            &build.dirs.builds_dir,
            build.settings.git_strategy == runner_core::settings::GitStrategy::Fetch,
        )
        .map_err(|error| {
            ExecutorError::with_reason(FailureReason::RunnerConfigurationError, error)
        })?;
        let entrypoint = match (
            build.job.image.entrypoint.is_empty(),
            self.config.disable_entrypoint_overwrite,
        ) {
            (true, _) => None,
            (false, false) => Some(build.job.image.entrypoint.clone()),
            (false, true) => {
                log.warning("Entrypoint override disabled");
                None
            }
        };
        let file_dir = build.variables.file_dir().map(str::to_string);
        let env = build
            .variables
            .iter()
            .map(|variable| match (&file_dir, variable.file) {
                (Some(dir), true) => format!("{}={dir}/{}", variable.key, variable.key),
                _ => format!("{}={}", variable.key, build.variables.value(&variable.key)),
            })
            .collect();
        // Registered before anything is created, so cleanup finds what a failure left.
        self.job = Some(Job {
            image,
            entrypoint,
            env,
            prefix: prefix.clone(),
            labels: labels.clone(),
            temporary_volumes: plan.temporary().map(|volume| volume.name.clone()).collect(),
            binds: plan.binds.clone(),
            containers: HashMap::new(),
            hostname: unique,
            network: None,
            services: Vec::new(),
        });
        let user = self.config.user.clone();
        let image_user = found
            .config
            .as_ref()
            .and_then(|config| config.user.clone())
            .unwrap_or_default();
        self.create_volumes(&plan, &labels, settings.protected, &user, &image_user)
            .await?;
        if self.config.network_mode.is_empty() {
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
            if let Some(job) = self.job.as_mut() {
                job.network = Some(name);
            }
        }
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
        let mut stopper: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                // The container's output, until the attach stream ends with it.
                item = output.next() => match item {
                    Some(Ok(bollard::container::LogOutput::StdOut { message })) => stdout.write(&message),
                    Some(Ok(bollard::container::LogOutput::StdErr { message })) => stderr.write(&message),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                // Stopped: SIGTERM for the build container's processes, then the container is
                // killed; the output is read on meanwhile, and ends with the container.
                _ = cancel.cancelled(), if stopper.is_none() => {
                    stopper = Some(tokio::spawn(stop_container(docker.clone(), id.clone(), kind == "build")));
                }
            }
        }
        // The stop must be over before the container is started for another stage.
        if let Some(stopper) = stopper {
            let _ = stopper.await;
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

/// Sends SIGTERM to every process of the container but its first, newest first, waiting up to
/// 6 seconds for each to go (upstream's `ContainerSigTermScriptForLinux`, in portable sh).
const SIGTERM_SCRIPT: &str = r#"PIDS=""
for P in /proc/[0-9]*; do PIDS="${P#/proc/} $PIDS"; done
for P in $PIDS; do
  if [ "$P" -ne $$ ] && [ "$P" -ne 1 ] && kill -TERM "$P" 2>/dev/null; then
    ATTEMPTS=6
    while [ -e "/proc/$P" ] && [ "$ATTEMPTS" -gt 0 ]; do sleep 1; ATTEMPTS=$((ATTEMPTS-1)); done
  fi
done
"#;

/// A canceled stage's container: for the build container the processes get SIGTERM first (at
/// most 10 seconds), then the container is killed.
async fn stop_container(docker: Docker, id: String, graceful: bool) {
    if graceful {
        let term = async {
            let exec = docker
                .create_exec(
                    &id,
                    bollard::models::ExecConfig {
                        cmd: Some(vec!["sh".into(), "-c".into(), SIGTERM_SCRIPT.into()]),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            if let bollard::exec::StartExecResults::Attached { mut output, .. } =
                docker.start_exec(&exec.id, None).await?
            {
                while output.next().await.is_some() {}
            }
            Ok::<(), bollard::errors::Error>(())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), term).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(container = %id, %error, "sending SIGTERM to the container's processes")
            }
            Err(_) => {
                tracing::debug!(container = %id, "SIGTERM to the container's processes took over 10s")
            }
        }
    }
    let _ = docker
        .kill_container(
            &id,
            Some(
                KillContainerOptionsBuilder::default()
                    .signal("SIGKILL")
                    .build(),
            ),
        )
        .await;
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

    #[test]
    fn pull_policies_parse_upstreams_names() {
        for name in ["always", "if-not-present", "never"] {
            assert_eq!(PullPolicy::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(PullPolicy::parse("sometimes"), None);
    }
}
