//! Services: upstream's `executors/docker/services.go`. The definitions are the configured
//! `[[runners.docker.services]]` then the job's (checked against `allowed_services`), at most
//! `services_limit` of them. Each starts on the job network under its aliases, with the job's
//! public variables and its own; then their exposed TCP ports are waited for, and a service
//! that does not answer gets a warning block with its logs (the job goes on).

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptionsBuilder;
use futures_util::StreamExt;
use runner_core::build::BuildContext;
use runner_core::executor::ExecutorError;
use runner_core::job::Image;
use runner_core::log::{JobLog, StreamId, StreamKind};

use crate::{networking, system, verify_allowed, DockerExecutor, LABEL_PREFIX};

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

    /// Starts the job's services under their aliases, then waits for their exposed ports.
    pub(crate) async fn start_services(
        &mut self,
        build: &BuildContext,
        log: &JobLog,
    ) -> Result<(), ExecutorError> {
        let definitions = self.service_definitions(build, log)?;
        let mut started: Vec<(String, String, Vec<String>)> = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        for (index, service) in definitions.iter().enumerate() {
            let image = build.variables.expand(&service.name);
            let (name_part, version) = match image.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
                _ => (image.clone(), "latest".into()),
            };
            log.println(&format!("Starting service {name_part}:{version} ..."));
            let platform = service
                .executor_opts
                .get("docker")
                .and_then(|opts| opts.get("platform"))
                .and_then(|platform| platform.as_str())
                .unwrap_or("")
                .to_string();
            let policies = self.effective_policies(&image, &service.pull_policy)?;
            self.ensure_image(&image, &platform, &policies, log).await?;
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
            // The job's public and internal variables, then the service's own.
            let env: Vec<String> = build
                .variables
                .iter()
                .filter(|variable| (variable.public || variable.internal) && !variable.file)
                .map(|variable| (variable, build.variables.value(&variable.key)))
                .chain(
                    service
                        .variables
                        .iter()
                        .map(|variable| (variable, build.variables.expand(&variable.value))),
                )
                .map(|(variable, value)| format!("{}={value}", variable.key))
                .collect();
            let entrypoint = self.entrypoint(&service.entrypoint, log);
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                env: Some(env),
                cmd: (!service.command.is_empty()).then(|| service.command.clone()),
                entrypoint,
                labels: Some(labels),
                host_config: Some(self.service_host_config(job, &image)),
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
        if build.settings.ci_debug_services {
            let docker = self.docker()?.clone();
            let tasks: Vec<_> = started
                .iter()
                .map(|(id, _, aliases)| {
                    tokio::spawn(follow_service_logs(
                        docker.clone(),
                        id.clone(),
                        aliases.join("-"),
                        log.clone(),
                    ))
                })
                .collect();
            if let Some(job) = self.job.as_mut() {
                job.log_followers.extend(tasks);
            }
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
}
