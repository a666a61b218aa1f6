//! The Docker executor (first part): each job gets a build container from its image and a
//! helper container (git and the static `gitlab-runner-rs` helper) sharing a builds volume, as
//! upstream's `executors/docker`. Each container is created once per job (again if it vanished)
//! and started again for every stage, the stage script on its stdin; the shell is found by
//! upstream's detection script. A stage whose container vanished as it was started is tried
//! again (`EXECUTOR_JOB_SECTION_ATTEMPTS`). Pull policies, `allowed_images`, labels on everything
//! created, and cleanup on every path.
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
//! Main types: [`DockerProvider`], [`DockerExecutor`], [`DockerConfig`]. Modules: `config`
//! (the typed `[runners.docker]`), `raw_config` ([`RawDockerConfig`], the section as written,
//! and its validation), `pull` (images, pull policies, the pull-failure classifier),
//! `containers` (host configs, labels, the job's containers, network and volumes), `ownership`
//! (`FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR`), `services`, [`volumes`], [`auth`], [`stage`] (the
//! port to the stage runner, and the stage's tries).
//!
//! A `run:` job's steps go to the Step Runner the build container serves around its shell
//! (`steps`: bootstrap into a volume, `docker exec … steps proxy` as the transport).
//!
//! Depends on `runner-core`, `runner-steps` (the Step Runner's client) and bollard; it must not
//! depend on `shells`, `network`, other executors or `commands`.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, DeviceMapping, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use runner_core::build::BuildContext;
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ExecutorProvider, FeaturesInfo,
    ScriptExit, ShellType, StepsRequest, Unlimited,
};
use runner_core::failure::FailureReason;
use runner_core::feature_flags::FeatureFlag;
use runner_core::log::JobLog;
use runner_core::process::KillTimeouts;
use runner_core::stage_runner::run_stage;
use tokio_util::sync::CancellationToken;

pub use runner_core::registry_auth as auth;
mod config;
mod containers;
mod ownership;
mod pull;
mod raw_config;
mod services;
pub mod stage;
mod steps;
pub mod volumes;

pub use config::{DockerConfig, PullPolicy, Resources};
pub use raw_config::RawDockerConfig;
pub use runner_core::failure::classify_image_pull_failure;

use containers::*;
use pull::*;

pub use runner_core::service_name::{split_name_and_version, ServiceName};

/// Where upstream's helper image keeps the helper, and where scripts call it.
pub const HELPER_PATH: &str = "/usr/bin/gitlab-runner-helper";
/// Labels on everything the executor creates.
pub const LABEL_PREFIX: &str = "com.gitlab.gitlab-runner";

/// Upstream's warning after the executor line when `volume_keep` is set.
const VOLUME_KEEP_WARNING: &str = "volume_keep is enabled: Docker volumes will not be removed after job completion and may accumulate on disk";

/// Upstream's line for a configured `helper_image` (its `Println` puts a space between every
/// part, hence the doubled spaces and the one before the closing parenthesis).
fn helper_image_overridden_notice(helper: &str, default: &str) -> String {
    format!("Using helper image:  {helper}  (overridden, default would be  {default} )")
}

/// Upstream's line for the default helper image when the daemon does not have it yet.
fn helper_image_notice(helper: &str) -> String {
    format!("Using helper image:  {helper}")
}

/// Creates a [`DockerExecutor`] for each job of a runner with `executor = "docker"`; holds the
/// runner's `[runners.docker]` section.
#[derive(Debug, Clone)]
pub struct DockerProvider {
    /// Shared by the provider's clones; each job gets its own copy.
    config: std::sync::Arc<DockerConfig>,
    kill_timeouts: KillTimeouts,
}

impl DockerProvider {
    /// The provider for a runner's `[runners.docker]` section; `None` (no section) runs with the
    /// defaults, which name no image, so only jobs that bring their own `image` can run.
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
            native_steps_integration: true,
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
            switch_user: false,
            stage_markers: false,
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
    /// The build image's id (`sha256:…`), as errors about it name it.
    image_id: String,
    /// The user the build image's config names (empty: root).
    image_user: String,
    /// `helper_image` expanded with the job's variables.
    helper_image: String,
    /// `CI_PROJECT_DIR`, whose files (and `.tmp` sibling's) a new build container is given
    /// when the umask is off.
    project_dir: String,
    /// `FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR`.
    umask_disabled: bool,
    /// `EXECUTOR_JOB_SECTION_ATTEMPTS`.
    section_attempts: u32,
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
    /// A `run:` job: the build container serves the Step Runner around its shell.
    steps: bool,
}

/// One job's Docker executor: connects to the daemon, creates the job's containers, network and
/// volumes in prepare, runs each stage in the right container and removes it all at cleanup.
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
        self.docker = Some(connect(&self.config)?);
        Ok(())
    }
}

/// The Docker client for `config` (see [`DockerExecutor`]'s connect).
fn connect(config: &DockerConfig) -> Result<Docker, ExecutorError> {
    {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let host = config
            .host
            .clone()
            .or_else(|| env("DOCKER_HOST"))
            .filter(|host| !host.is_empty());
        let cert_path = Some(config.tls_cert_path.clone())
            .filter(|path| !path.is_empty())
            .or_else(|| env("DOCKER_CERT_PATH"));
        let verify = config.tls_verify || env("DOCKER_TLS_VERIFY").is_some();
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
        .map_err(|error| system("creating the Docker client").with_source(error))?;
        Ok(docker)
    }
}

/// The first host address of an IPv4 `a.b.c.d/n` subnet.
fn first_address(subnet: &str) -> Option<std::net::Ipv4Addr> {
    let (address, bits) = subnet.split_once('/')?;
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    let bits: u32 = bits.parse().ok().filter(|bits| *bits <= 30)?;
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    Some(std::net::Ipv4Addr::from((u32::from(address) & mask) + 1))
}

/// The address on this machine that a container on `config`'s network reaches the host by:
/// 127.0.0.1 with `network_mode = "host"`, else the gateway of the named network (Docker's
/// `bridge` when none is named). `exec docker` serves the job's artifacts there.
pub async fn host_address_for_containers(
    config: &DockerConfig,
) -> Result<std::net::IpAddr, ExecutorError> {
    let mode = config.network_mode.as_str();
    if mode == "host" {
        return Ok(std::net::IpAddr::from([127, 0, 0, 1]));
    }
    let network = if mode.is_empty() { "bridge" } else { mode };
    let docker = connect(config)?;
    let inspected = docker
        .inspect_network(
            network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .map_err(|error| {
            system(format!("inspecting the Docker network {network}")).with_source(error)
        })?;
    inspected
        .ipam
        .and_then(|ipam| ipam.config)
        .into_iter()
        .flatten()
        .find_map(|config| {
            // Docker's default bridge may list only its subnet; its gateway is then the
            // subnet's first address, as Docker assigns it.
            let gateway = config.gateway.and_then(|gateway| gateway.parse().ok());
            gateway.or_else(|| first_address(config.subnet.as_deref()?))
        })
        .map(std::net::IpAddr::from)
        .ok_or_else(|| system(format!("the Docker network {network} has no IPv4 gateway")))
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
        if self.config.volume_keep {
            log.warning(VOLUME_KEEP_WARNING);
        }
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
        let helper = build.variables.expand(&self.config.helper_image);
        let default_helper = DockerConfig::default().helper_image;
        // Upstream names a configured helper image (a config equal to the default counts as
        // not configured: the config keeps no trace of it), and the default one only when it
        // is missing and would be pulled.
        if helper != default_helper {
            log.println(&helper_image_overridden_notice(&helper, &default_helper));
        } else if self.image_present(&helper).await?.is_none() {
            log.println(&helper_image_notice(&helper));
        }
        if let Err(error) = self
            .ensure_image(&helper, "", &[PullPolicy::IfNotPresent], log)
            .await
        {
            // The default helper image is built locally, never published.
            if helper == default_helper {
                return Err(error.with_hint(
                    " (the default helper image is built on the Docker host by scripts/build-helper-image.sh; or set helper_image)",
                ));
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
        .map_err(|error| system(error.to_string()))?;
        let entrypoint = self.entrypoint(&build.job.image.entrypoint, log);
        let env = container_env(build);
        let mut container_labels = labels.clone();
        for (key, value) in &self.config.container_labels {
            container_labels.insert(key.clone(), build.variables.expand(value));
        }
        let image_user = found
            .config
            .as_ref()
            .and_then(|config| config.user.clone())
            .unwrap_or_default();
        let umask_disabled = build
            .flags
            .enabled(FeatureFlag::DisableUmaskForDockerExecutor);
        // Registered before anything is created, so cleanup finds what a failure left.
        self.job = Some(Job {
            privileged_image: matches_any_or_none(&self.config.allowed_privileged_images, &image),
            image,
            image_id: id,
            image_user: image_user.clone(),
            helper_image: helper.clone(),
            project_dir: build.dirs.project_dir.clone(),
            umask_disabled,
            section_attempts: build.settings.executor_job_section_attempts,
            entrypoint,
            env,
            prefix: prefix.clone(),
            labels: container_labels,
            temporary_volumes: plan.temporary().map(|volume| volume.name.clone()).collect(),
            binds: plan.binds.clone(),
            user: user.clone(),
            platform,
            init: build.flags.enabled(FeatureFlag::UseInitWithDockerExecutor),
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
            steps: !build.job.run.is_empty(),
        });
        if !build.job.run.is_empty() {
            self.bootstrap_steps(&prefix, &labels, &helper).await?;
        }
        self.create_volumes(
            &plan,
            &labels,
            settings.protected,
            &user,
            &image_user,
            &helper,
        )
        .await?;
        if self.config.network_mode.is_empty() && build.flags.enabled(FeatureFlag::NetworkPerBuild)
        {
            self.create_network(&prefix, &labels).await?;
        }
        self.start_services(build, log).await?;
        if umask_disabled {
            log.println(ownership::UMASK_DISABLED_NOTICE);
        }
        Ok(())
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
        let max = self.job.as_ref().map_or(1, |job| job.section_attempts);
        let mut attempts = stage::Attempts::new(max, command.stage.name(), log);
        while attempts.next() {
            let id = self.container(kind, log, cancel).await?;
            let docker = self.docker()?.clone();
            let serving = kind == "build" && self.job.as_ref().is_some_and(|job| job.steps);
            match stage::start(docker, id.clone(), kind).await {
                Ok(started) if serving => {
                    let started = runner_core::stage_runner::Started {
                        process: started.process,
                        output: steps::WithoutListening::new(started.output),
                        stdin: started.stdin,
                    };
                    return run_stage(
                        started,
                        command.script.as_bytes(),
                        log,
                        cancel,
                        self.kill_timeouts,
                        stage::container_exit,
                    )
                    .await;
                }
                Ok(started) => {
                    return run_stage(
                        started,
                        command.script.as_bytes(),
                        log,
                        cancel,
                        self.kill_timeouts,
                        stage::container_exit,
                    )
                    .await
                }
                // Removed since it was looked up: the next try makes a new one.
                Err(error) if error.vanished() => attempts.vanished(&id, error.into()),
                Err(error) => return Err(error.into()),
            }
        }
        Err(attempts.exhausted())
    }

    async fn run_steps(
        &mut self,
        request: &StepsRequest,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let id = self.container("build", log, cancel).await?;
        let docker = self.docker()?.clone();
        let started = stage::start(docker.clone(), id.clone(), "build").await?;
        let mut process = started.process;
        let mut output = started.output;
        let socket = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            steps::listening_socket(&mut output),
        )
        .await
        .map_err(|_| {
            system("the step runner in the build container did not listen within 60s")
        })??;
        // Serve says nothing more for the job log; what it says goes to the operator.
        let drain = tokio::spawn(async move {
            use runner_core::stage_runner::StageOutput;
            while let Some(chunk) = output.next_chunk().await {
                tracing::debug!(text = %String::from_utf8_lossy(&chunk.data), "step runner");
            }
        });
        let result = runner_steps::drive::run(
            steps::exec_dialer(docker, id, socket),
            request,
            log,
            cancel,
            self.kill_timeouts.graceful,
        )
        .await;
        // Its stdin ends with no byte: serve has no shell to run and exits 0.
        if let Some(mut stdin) = started.stdin {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.shutdown().await;
        }
        {
            use runner_core::stage_runner::StageProcess;
            if tokio::time::timeout(std::time::Duration::from_secs(30), process.wait())
                .await
                .is_err()
            {
                process.kill().await;
            }
        }
        drain.abort();
        result
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

#[cfg(test)]
mod tests;

impl DockerExecutor {
    /// A volume for the job's copy of the helper, filled by `steps bootstrap`, mounted in the
    /// build container at `/opt/gitlab-runner` and removed at cleanup.
    async fn bootstrap_steps(
        &mut self,
        prefix: &str,
        labels: &HashMap<String, String>,
        helper: &str,
    ) -> Result<(), ExecutorError> {
        let volume = format!("{prefix}-steps");
        let docker = self.docker()?.clone();
        let mut volume_labels = labels.clone();
        volume_labels.insert(format!("{LABEL_PREFIX}.type"), "steps".into());
        docker
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(volume_labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|error| system(format!("creating the step runner's volume: {error}")))?;
        if let Some(job) = self.job.as_mut() {
            job.temporary_volumes.push(volume.clone());
            job.binds.push(format!("{volume}:{}:ro", steps::STEPS_DIR));
        }
        steps::bootstrap(&docker, helper, &volume, volume_labels).await
    }
}
