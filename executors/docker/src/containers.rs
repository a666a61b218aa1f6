//! The job's containers, network and volumes: upstream's host configs, labels, users, devices
//! and log options, and the build and helper containers created once per job.

use super::*;

pub(crate) fn list(items: &[String]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.to_vec())
}

pub(crate) fn text(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

pub(crate) fn map(items: &HashMap<String, String>) -> Option<HashMap<String, String>> {
    (!items.is_empty()).then(|| items.clone())
}

/// A container's address on its (first) network, if it has one.
pub(crate) fn container_ip(inspect: &bollard::models::ContainerInspectResponse) -> Option<String> {
    inspect
        .network_settings
        .as_ref()
        .and_then(|settings| settings.networks.as_ref())
        .and_then(|networks| networks.values().find_map(|n| n.ip_address.clone()))
        .filter(|ip| !ip.is_empty())
}

/// Where pull credentials come from for this job.
pub(crate) fn auth_sources(build: &BuildContext) -> auth::AuthSources {
    auth::AuthSources::for_build(build)
}

/// An image's (the job's or a service's) `executor_opts.docker.<name>` (a string or a
/// number), expanded.
pub(crate) fn executor_option(
    build: &BuildContext,
    image: &runner_core::job::Image,
    name: &str,
) -> String {
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
pub(crate) fn container_env(build: &BuildContext) -> Vec<String> {
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
pub(crate) fn job_labels(build: &BuildContext) -> HashMap<String, String> {
    let job = &build.job;
    let pipeline = if job.job_info.pipeline_id > 0 {
        job.job_info.pipeline_id.to_string()
    } else {
        build.variables.value("CI_PIPELINE_ID")
    };
    // The repository URL without credentials or `.git`, as upstream's JobURL.
    let repo = job.git_info.repo_url.expose();
    let clean = runner_core::url::strip_userinfo(repo);
    let clean = clean.split(['?', '#']).next().unwrap_or(&clean).to_string();
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
pub(crate) fn user_allowed(config: &DockerConfig, user: &str) -> bool {
    if user.is_empty() || (config.allowed_users.is_empty() && config.user.is_empty()) {
        return true;
    }
    if config.allowed_users.is_empty() {
        return config.user == user;
    }
    config.allowed_users.iter().any(|allowed| allowed == user)
}

/// `host[:container[:permissions]]` device strings as Docker's mappings.
pub(crate) fn device_mappings(devices: &[String]) -> Option<Vec<DeviceMapping>> {
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
pub(crate) fn check_log_options(options: &HashMap<String, String>) -> Result<(), ExecutorError> {
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

pub(crate) fn networking(network: &str, aliases: Vec<String>) -> bollard::models::NetworkingConfig {
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
    /// Upstream's `createHostConfig`: the build container's (`build`), which alone gets
    /// `pid_mode` and `--init`, or the helper's.
    pub(crate) fn host_config(&self, job: &Job, build: bool) -> HostConfig {
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

    pub(crate) fn log_config(&self) -> bollard::models::HostConfigLogConfig {
        bollard::models::HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: map(&self.config.log_options),
        }
    }

    /// The containers' network: `network_mode`, else the per-job network, else Docker's
    /// default.
    pub(crate) fn network_mode(&self, job: &Job) -> Option<String> {
        text(&self.config.network_mode).or_else(|| job.network.clone())
    }

    /// The network on which containers are found by their aliases: the per-job one, or a
    /// user-defined `network_mode`; none on `bridge`, `host`, `none` or `container:<id>`,
    /// where services are reached through `/etc/hosts` entries instead.
    pub(crate) fn alias_network(&self, job: &Job) -> Option<String> {
        if job.network.is_some() {
            return job.network.clone();
        }
        let mode = self.config.network_mode.as_str();
        let builtin = ["", "bridge", "host", "none", "default"].contains(&mode)
            || mode.starts_with("container:");
        (!builtin).then(|| mode.to_string())
    }

    /// What build, helper and service containers share: resources, network, DNS, binds.
    pub(crate) fn common_host_config(&self, job: &Job, resources: &Resources) -> HostConfig {
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
    pub(crate) fn service_host_config(&self, job: &Job, image: &str) -> HostConfig {
        let config = &self.config;
        let privileged = config.services_privileged.unwrap_or(config.privileged)
            && matches_any_or_none(&config.allowed_privileged_services, image);
        let devices: Vec<String> = config
            .services_devices
            .iter()
            .filter(|(pattern, _)| runner_core::glob::matches(pattern, image))
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
    pub(crate) async fn leftover_containers(&self, job: &Job) -> Vec<String> {
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
    pub(crate) fn build_user(&self, build: &BuildContext) -> Result<String, ExecutorError> {
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
    pub(crate) fn volume_settings(
        &self,
        build: &BuildContext,
        prefix: &str,
    ) -> volumes::VolumeSettings {
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
    pub(crate) fn entrypoint(&self, entrypoint: &[String], log: &JobLog) -> Option<Vec<String>> {
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
    pub(crate) async fn create_network(
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
            .map_err(|error| system("creating the job network").with_source(error))?;
        if let Some(job) = self.job.as_mut() {
            job.network = Some(name);
        }
        Ok(())
    }

    /// Creates the plan's named volumes that do not exist yet, labelled as upstream's cache
    /// volumes. When the build container runs as another user than root, the new ones are
    /// made world-writable by the helper's `cache-init` (upstream does this for every volume).
    pub(crate) async fn create_volumes(
        &self,
        plan: &volumes::VolumePlan,
        labels: &HashMap<String, String>,
        protected: bool,
        user: &str,
        image_user: &str,
        helper_image: &str,
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
            image: Some(helper_image.to_string()),
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
            .map_err(|error| system("set volume permissions").with_source(error))?;
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
        outcome.map_err(|error| system("set volume permissions").with_source(error))
    }

    /// The container of `kind` for a stage: the job's, while the daemon still has it, else a
    /// new one (upstream's `requestContainer`). A new build container gets the project's files
    /// handed to its user when `FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR` is on.
    pub(crate) async fn container(
        &mut self,
        kind: &'static str,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<String, ExecutorError> {
        if let Some(id) = self.existing_container(kind, log).await? {
            return Ok(id);
        }
        let id = self.create_container(kind).await?;
        if kind == "build" {
            self.change_files_ownership(&id, log, cancel).await?;
        }
        Ok(id)
    }

    /// The job's container of `kind` if the daemon still has it. One that is gone (removed
    /// since, or not inspectable: upstream's warning) is forgotten, so that a new one is made.
    pub(crate) async fn existing_container(
        &mut self,
        kind: &'static str,
        log: &JobLog,
    ) -> Result<Option<String>, ExecutorError> {
        let job = self
            .job
            .as_ref()
            .ok_or_else(|| system("the job was not prepared"))?;
        let Some(id) = job.containers.get(kind).cloned() else {
            return Ok(None);
        };
        let inspected = self
            .docker()?
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        match inspected {
            Ok(_) => return Ok(Some(id)),
            Err(error) if stage::is_not_found(&error) => {}
            Err(error) => log.warning(&format!("Failed to inspect {kind} container {id} {error}")),
        }
        if let Some(job) = self.job.as_mut() {
            job.containers.remove(kind);
        }
        Ok(None)
    }

    /// Creates the job's container of `kind` (a same-named leftover is removed first).
    pub(crate) async fn create_container(
        &mut self,
        kind: &'static str,
    ) -> Result<String, ExecutorError> {
        let job = self
            .job
            .as_ref()
            .ok_or_else(|| system("the job was not prepared"))?;
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
            job.helper_image.clone()
        };
        let detect = container_shell(kind, job.umask_disabled);
        let mut cmd = vec!["sh".into(), "-c".into(), detect];
        if kind == "build" && job.steps {
            cmd = crate::steps::serve_command(cmd);
        }
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(cmd),
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

/// What the container of `kind` runs: upstream's shell detection; for the helper, after
/// `umask 0000` (upstream's `gitlab-runner-build`), so a build container running as another
/// user can write what the helper checked out or extracted, unless
/// `FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR` is on (the files are then handed to that user; see
/// [`crate::ownership`]). Upstream then runs `/bin/bash` itself; the detection finds it too, and
/// still works with a helper image that only has `sh`.
pub(crate) fn container_shell(kind: &str, umask_disabled: bool) -> String {
    if kind == "build" || umask_disabled {
        detect_shell_script(false)
    } else {
        format!("umask 0000\n{}", detect_shell_script(false))
    }
}

/// The upstream shell-detection script a container runs to start the best available shell.
pub(crate) fn detect_shell_script(login: bool) -> String {
    let flag = if login { " -l" } else { "" };
    let mut script = String::new();
    for (index, path) in [
        "/usr/local/bin/bash",
        "/usr/bin/bash",
        "/bin/bash",
        "/usr/local/bin/sh",
        "/usr/bin/sh",
        "/bin/sh",
        "/busybox/sh",
    ]
    .iter()
    .enumerate()
    {
        let keyword = if index == 0 { "if" } else { "elif" };
        script.push_str(&format!(
            "{keyword} [ -x {path} ]; then\n  exec {path}{flag} \"$@\"\n"
        ));
    }
    script.push_str("else\n  echo shell not found\n  exit 1\nfi\n\n");
    script
}
