//! Services: upstream's `executors/docker/services.go`. The definitions are the configured
//! `[[runners.docker.services]]` then the job's (checked against `allowed_services`), at most
//! `services_limit` of them. Each starts on the job network under its aliases (upstream's
//! default aliases from the image name, then the job's), with the job's public variables and
//! its own. Then all are waited for at once, each by a helper container running
//! `gitlab-runner-helper health-check` against its exposed TCP ports; one that does not answer
//! gets upstream's warning block with the health check's and the service's logs, and the job
//! goes on.

use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use runner_core::build::BuildContext;
use runner_core::executor::ExecutorError;
use runner_core::job::Image;
use runner_core::log::{JobLog, StreamId, StreamKind};
use runner_core::service_name::{split_name_and_version, ServiceName};

use crate::{
    container_ip, executor_option, networking, system, verify_allowed, DockerExecutor, LABEL_PREFIX,
};

/// A started service, for the wait.
struct Started {
    id: String,
    /// Its container name.
    name: String,
    /// The aliases it got (not those another service had first), for `CI_DEBUG_SERVICES`
    /// line prefixes.
    aliases: Vec<String>,
}

impl DockerExecutor {
    /// Configured services, then the job's; `allowed_services` and `services_limit` as
    /// upstream (a refusal is a system error, so prepare is attempted again, as upstream).
    fn service_definitions(
        &self,
        build: &BuildContext,
        log: &JobLog,
    ) -> Result<Vec<Image>, ExecutorError> {
        let mut definitions: Vec<Image> = self
            .config
            .services
            .iter()
            .map(|service| Image {
                name: build.variables.expand(&service.name),
                ..service.clone()
            })
            .collect();
        let internal: Vec<String> = definitions.iter().map(|s| s.name.clone()).collect();
        for service in &build.job.services {
            let name = build.variables.expand(&service.name);
            verify_allowed(
                &name,
                "services",
                &self.config.allowed_services,
                &internal,
                log,
            )?;
            definitions.push(service.clone());
        }
        if let Some(limit) = self.config.services_limit {
            if definitions.len() > limit {
                return Err(system(format!(
                    "too many services requested: {}, only {limit} allowed",
                    definitions.len()
                )));
            }
        }
        Ok(definitions)
    }

    /// Starts the services under their aliases (an alias another service has is skipped with
    /// a warning; a service left with none is not started, as upstream), then waits for them.
    pub(crate) async fn start_services(
        &mut self,
        build: &BuildContext,
        log: &JobLog,
    ) -> Result<(), ExecutorError> {
        let definitions = self.service_definitions(build, log)?;
        let mut started: Vec<Started> = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        for (index, definition) in definitions.iter().enumerate() {
            let image = build.variables.expand(&definition.name);
            let mut meta = split_name_and_version(&image);
            meta.aliases
                .extend(definition.aliases().into_iter().map(str::to_string));
            let mut service: Option<Started> = None;
            for alias in &meta.aliases {
                if taken.contains(alias) {
                    log.warning(&format!(
                        "Skipping alias {alias:?} for service {:?} (services[{index}]): alias is already in use by another service.",
                        definition.name
                    ));
                    continue;
                }
                taken.push(alias.clone());
                if service.is_none() {
                    service = Some(
                        self.create_service(build, log, index, &meta, definition)
                            .await?,
                    );
                }
                if let Some(service) = service.as_mut() {
                    service.aliases.push(alias.clone());
                }
            }
            started.extend(service);
        }
        self.link_services(&started).await?;
        if build.settings.ci_debug_services {
            let docker = self.docker()?.clone();
            let tasks: Vec<_> = started
                .iter()
                .map(|service| {
                    tokio::spawn(follow_service_logs(
                        docker.clone(),
                        service.id.clone(),
                        service.aliases.join("-"),
                        log.clone(),
                    ))
                })
                .collect();
            if let Some(job) = self.job.as_mut() {
                job.log_followers.extend(tasks);
            }
        }
        // Upstream: 0 is the default, 30 seconds; a negative timeout does not wait.
        let timeout = match self.config.wait_for_services_timeout {
            0 => 30,
            seconds => seconds,
        };
        if timeout <= 0 || started.is_empty() {
            return Ok(());
        }
        log.println(&format!(
            "Waiting for services to be up and running (timeout {timeout} seconds)..."
        ));
        let job = self
            .job
            .as_ref()
            .ok_or_else(|| system("the job was not prepared"))?;
        let check = HealthCheck {
            docker: self.docker()?.clone(),
            helper_image: job.helper_image.clone(),
            network_mode: self.network_mode(job),
            named_network: self.alias_network(job).is_some(),
            log_config: self.log_config(),
            labels: job.labels.clone(),
            timeout: Duration::from_secs(timeout as u64),
        };
        let waits = started.iter().map(|service| check.wait(service, log));
        futures_util::future::join_all(waits).await;
        Ok(())
    }

    /// Without a network that resolves aliases (upstream's default, `FF_NETWORK_PER_BUILD`
    /// off), the job's containers get an `/etc/hosts` entry per alias and short id of every
    /// service, as upstream's links.
    async fn link_services(&mut self, started: &[Started]) -> Result<(), ExecutorError> {
        let job = self
            .job
            .as_ref()
            .ok_or_else(|| system("the job was not prepared"))?;
        if self.alias_network(job).is_some() {
            return Ok(());
        }
        let docker = self.docker()?.clone();
        let mut links = Vec::new();
        for service in started {
            let inspect = docker
                .inspect_container(
                    &service.id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .map_err(|error| system("getting exposed ports").with_source(error))?;
            let Some(ip) = container_ip(&inspect) else {
                continue;
            };
            let short_id: String = service.id.chars().take(12).collect();
            for name in service.aliases.iter().chain(std::iter::once(&short_id)) {
                links.push(format!("{name}:{ip}"));
            }
        }
        if let Some(job) = self.job.as_mut() {
            job.links.extend(links);
        }
        Ok(())
    }

    /// Upstream's `createService`: pulled with the service's own pull policies, created under
    /// `<prefix>-<service with / as __>-<index>` (a leftover of that name removed), started.
    async fn create_service(
        &mut self,
        build: &BuildContext,
        log: &JobLog,
        index: usize,
        meta: &ServiceName,
        definition: &Image,
    ) -> Result<Started, ExecutorError> {
        if meta.version.starts_with('@') {
            log.println(&format!(
                "Starting service {}{}...",
                meta.service, meta.version
            ));
        } else {
            log.println(&format!(
                "Starting service {}:{}...",
                meta.service, meta.version
            ));
        }
        let platform = executor_option(build, definition, "platform");
        let policies = self.effective_policies(&meta.image_name, &definition.pull_policy)?;
        self.ensure_image(&meta.image_name, &platform, &policies, log)
            .await?;
        let job = self
            .job
            .as_ref()
            .ok_or_else(|| system("the job was not prepared"))?;
        let name = format!("{}-{}-{index}", job.prefix, meta.service.replace('/', "__"));
        let mut labels = job.labels.clone();
        for (key, value) in [
            ("type", "service"),
            ("service", meta.service.as_str()),
            ("service.version", meta.version.as_str()),
        ] {
            labels.insert(format!("{LABEL_PREFIX}.{key}"), value.to_string());
        }
        // The job's public and internal variables, then the service's own.
        let env: Vec<String> = build
            .variables
            .iter()
            .filter(|variable| (variable.public || variable.internal) && !variable.file)
            .map(|variable| (variable, build.variables.value(&variable.key)))
            .chain(
                definition
                    .variables
                    .iter()
                    .map(|variable| (variable, build.variables.expand(&variable.value))),
            )
            .map(|(variable, value)| format!("{}={value}", variable.key))
            .collect();
        let body = ContainerCreateBody {
            image: Some(meta.image_name.clone()),
            env: Some(env),
            cmd: (!definition.command.is_empty()).then(|| definition.command.clone()),
            entrypoint: self.entrypoint(&definition.entrypoint, log),
            labels: Some(labels),
            host_config: Some(self.service_host_config(job, &meta.image_name)),
            networking_config: self
                .alias_network(job)
                .map(|network| networking(&network, meta.aliases.clone())),
            ..ContainerCreateBody::default()
        };
        let docker = self.docker()?.clone();
        remove(&docker, &name).await;
        let mut options = CreateContainerOptionsBuilder::default().name(&name);
        if !platform.is_empty() {
            options = options.platform(&platform);
        }
        let created = docker
            .create_container(Some(options.build()), body)
            .await
            .map_err(|error| system("create service container").with_source(error))?;
        if let Some(job) = self.job.as_mut() {
            job.services.push(created.id.clone());
        }
        docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|error| system("start service container").with_source(error))?;
        Ok(Started {
            id: created.id,
            name,
            aliases: Vec::new(),
        })
    }
}

/// Force-removes a container by name or id, if it is there.
async fn remove(docker: &Docker, container: &str) {
    let _ = docker
        .remove_container(
            container,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

/// The last 100 lines a container wrote (stdout and stderr).
async fn container_logs(docker: &Docker, id: &str) -> String {
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

/// What the services' health checks share.
struct HealthCheck {
    docker: Docker,
    helper_image: String,
    network_mode: Option<String>,
    /// Containers find each other by name (else the short id needs an `/etc/hosts` entry).
    named_network: bool,
    log_config: bollard::models::HostConfigLogConfig,
    labels: std::collections::HashMap<String, String>,
    timeout: Duration,
}

/// A Docker API error as the cause of a [`HealthCheckError`], shown by its own text and with
/// no further sources: bollard's messages already name their causes (`Error in the hyper
/// legacy client: {err}`), so an error chain that also followed them would repeat them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DockerCause(bollard::errors::Error);

/// Why a service's health check failed; the job log's warning block shows it with
/// [`runner_core::failure::error_chain`].
#[derive(Debug, thiserror::Error)]
enum HealthCheckError {
    /// The service container could not be inspected.
    #[error(transparent)]
    Inspect(DockerCause),
    /// The service exposes no TCP port to check.
    #[error("service {service:?} has no exposed ports")]
    NoExposedPorts {
        /// The service's name.
        service: String,
    },
    /// The health check container could not be created.
    #[error("create service container")]
    Create(#[source] DockerCause),
    /// The health check container could not be started.
    #[error("start service container")]
    Start(#[source] DockerCause),
    /// The health check did not end within the timeout.
    #[error("service {name:?} timeout")]
    Timeout {
        /// The health check container's name.
        name: String,
    },
    /// The health check ended with a non-zero exit code.
    #[error("service {name:?} health check: exit code {code}")]
    ExitCode {
        /// The health check container's name.
        name: String,
        /// The exit code.
        code: i64,
    },
    /// Waiting for the health check container failed.
    #[error("service {name:?} health check")]
    Wait {
        /// The health check container's name.
        name: String,
        #[source]
        source: DockerCause,
    },
    /// The health check container was gone before it reported an exit code.
    #[error("service {name:?} health check: the container vanished")]
    Vanished {
        /// The health check container's name.
        name: String,
    },
}

/// Why a health check failed, and its container's logs when it ran.
struct Unhealthy {
    error: HealthCheckError,
    logs: Option<String>,
}

impl HealthCheck {
    /// Upstream's `waitForServiceContainer`: the health check, and on failure the warning
    /// block (on the runner's stderr stream) with what the service wrote.
    async fn wait(&self, service: &Started, log: &JobLog) {
        let start = tokio::time::Instant::now();
        let Err(unhealthy) = self.run(service).await else {
            return;
        };
        let mut block = String::from("\n");
        block.push_str(&format!(
            "\x1b[0;33m*** WARNING:\x1b[0;m Service {} probably didn't start properly.\n\n",
            service.name
        ));
        block.push_str(&format!(
            "Health check error:\n{}\n",
            runner_core::failure::error_chain(&unhealthy.error).trim()
        ));
        if let Some(logs) = &unhealthy.logs {
            block.push_str(&format!("\nHealth check container logs:\n{logs}\n"));
            // As upstream: a little time for the service to write something of use.
            let left = self.timeout.saturating_sub(start.elapsed());
            tokio::time::sleep(left.min(Duration::from_secs(10))).await;
        }
        block.push_str(&format!(
            "\nService container logs:\n{}\n",
            container_logs(&self.docker, &service.id).await
        ));
        block.push_str("\n\x1b[0;33m*********\x1b[0;m\n\n");
        let mut stderr = log.stream(StreamId::RUNNER, StreamKind::Stderr);
        stderr.write(block.as_bytes());
        stderr.finish();
    }

    /// A helper container running `gitlab-runner-helper health-check` against the service's
    /// exposed TCP ports, for at most the timeout; removed afterwards.
    async fn run(&self, service: &Started) -> Result<(), Unhealthy> {
        let failed = |error: HealthCheckError| Unhealthy { error, logs: None };
        let inspect = self
            .docker
            .inspect_container(
                &service.id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|error| failed(HealthCheckError::Inspect(DockerCause(error))))?;
        let mut ports: Vec<u16> = inspect
            .config
            .as_ref()
            .and_then(|config| config.exposed_ports.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|port| port.strip_suffix("/tcp")?.parse().ok())
            .collect();
        ports.sort_unstable();
        if ports.is_empty() {
            return Err(failed(HealthCheckError::NoExposedPorts {
                service: service.name.clone(),
            }));
        }
        let short_id: String = service.id.chars().take(12).collect();
        let mut env = vec![format!("WAIT_FOR_SERVICE_TCP_ADDR={short_id}")];
        env.extend(
            ports
                .iter()
                .map(|port| format!("WAIT_FOR_SERVICE_{port}_TCP_PORT={port}")),
        );
        // Off a network with names the short id is not a name Docker resolves.
        let extra_hosts = if self.named_network {
            None
        } else {
            container_ip(&inspect).map(|ip| vec![format!("{short_id}:{ip}")])
        };
        let mut labels = self.labels.clone();
        labels.insert(format!("{LABEL_PREFIX}.type"), "wait".into());
        labels.insert(format!("{LABEL_PREFIX}.wait"), service.id.clone());
        let name = format!("{}-wait-for-service", service.name);
        remove(&self.docker, &name).await;
        let body = ContainerCreateBody {
            image: Some(self.helper_image.clone()),
            cmd: Some(vec!["gitlab-runner-helper".into(), "health-check".into()]),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: self.network_mode.clone(),
                extra_hosts,
                log_config: Some(self.log_config.clone()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|error| failed(HealthCheckError::Create(DockerCause(error))))?;
        let outcome = self.run_container(&created.id, &name).await;
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(error) => Err(Unhealthy {
                error,
                logs: Some(container_logs(&self.docker, &created.id).await),
            }),
        };
        remove(&self.docker, &created.id).await;
        result
    }

    async fn run_container(&self, id: &str, name: &str) -> Result<(), HealthCheckError> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|error| HealthCheckError::Start(DockerCause(error)))?;
        let mut wait = self
            .docker
            .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
        let name = name.to_string();
        match tokio::time::timeout(self.timeout, wait.next()).await {
            Err(_) => Err(HealthCheckError::Timeout { name }),
            Ok(Some(Ok(response))) if response.status_code == 0 => Ok(()),
            Ok(Some(Ok(response))) => Err(HealthCheckError::ExitCode {
                name,
                code: response.status_code,
            }),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Err(HealthCheckError::ExitCode { name, code })
            }
            Ok(Some(Err(error))) => Err(HealthCheckError::Wait {
                name,
                source: DockerCause(error),
            }),
            Ok(None) => Err(HealthCheckError::Vanished { name }),
        }
    }
}

/// `CI_DEBUG_SERVICES`: a service's output in the job log as it comes, each line as upstream's
/// `[service:<aliases>] ` in grey, until the container goes.
async fn follow_service_logs(docker: bollard::Docker, id: String, name: String, log: JobLog) {
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .follow(true)
        .build();
    let mut stream = docker.logs(&id, Some(options));
    let mut writer = log.stream(StreamId::FIRST_SERVICE, StreamKind::Stdout);
    let mut pending: Vec<u8> = Vec::new();
    let emit = |line: &[u8], writer: &mut runner_core::log::LogWriter| {
        let mut framed = format!("\x1b[0;37m[service:{name}] ").into_bytes();
        framed.extend_from_slice(line);
        framed.extend_from_slice(b"\x1b[0;m\n");
        writer.write(&framed);
    };
    while let Some(Ok(item)) = stream.next().await {
        pending.extend_from_slice(&item.into_bytes());
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            emit(&line[..line.len() - 1], &mut writer);
        }
    }
    if !pending.is_empty() {
        emit(&pending, &mut writer);
    }
    writer.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_errors_read_as_before_in_the_warning_block() {
        let chain = |error: HealthCheckError| runner_core::failure::error_chain(&error);
        let refused = || bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "boom".into(),
        };
        assert_eq!(
            chain(HealthCheckError::Start(DockerCause(refused()))),
            "start service container: Docker responded with status code 500: boom"
        );
        assert_eq!(
            chain(HealthCheckError::Wait {
                name: "db-wait-for-service".into(),
                source: DockerCause(refused()),
            }),
            "service \"db-wait-for-service\" health check: Docker responded with status code 500: boom"
        );
        assert_eq!(
            chain(HealthCheckError::ExitCode {
                name: "db-wait-for-service".into(),
                code: 1,
            }),
            "service \"db-wait-for-service\" health check: exit code 1"
        );
        // A bollard error whose text already holds its cause is not followed further.
        #[derive(Debug, thiserror::Error)]
        #[error("socket closed")]
        struct Closed(#[source] std::io::Error);
        let io = std::io::Error::other(Closed(std::io::Error::other("eof")));
        assert_eq!(
            chain(HealthCheckError::Create(DockerCause(io.into()))),
            "create service container: socket closed"
        );
    }
}
