//! Images: `allowed_images` and the pull policies, pulls with upstream's retries and progress
//! lines, and upstream's classification of a failed pull.

use super::*;
pub(crate) use runner_core::failure::classify_image_pull_failure;

/// Pull attempts when the registry cannot be reached (upstream's `defaultPullMaxAttempts`).
pub(crate) const PULL_ATTEMPTS: u32 = 3;

/// Why one pull of an image failed. The text is what docker's CLI prints for the failure (the
/// daemon's own words where it answered) and is complete in itself: it is what
/// [`classify_image_pull_failure`] reads and what the job log shows, so callers use its
/// `Display`, not an error chain. The sources are the same failure as bollard reported it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    /// The executor has no connection to the daemon; the text is the executor's message with
    /// its causes.
    #[error("{}", .0.full_message())]
    NotConnected(ExecutorError),
    /// The daemon answered the pull request with an error response.
    #[error("Error response from daemon: {message}")]
    Daemon {
        /// The daemon's message.
        message: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The daemon reported an error in the pull's progress stream.
    #[error("{message}")]
    Stream {
        /// The daemon's message.
        message: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The daemon could not be reached, or its answer could not be read.
    #[error(transparent)]
    Transport(bollard::errors::Error),
}

impl From<bollard::errors::Error> for PullError {
    fn from(error: bollard::errors::Error) -> Self {
        match &error {
            bollard::errors::Error::DockerResponseServerError { message, .. } => Self::Daemon {
                message: message.clone(),
                source: error,
            },
            bollard::errors::Error::DockerStreamError { error: message } => Self::Stream {
                message: message.clone(),
                source: error,
            },
            _ => Self::Transport(error),
        }
    }
}

/// No patterns, or one that matches (upstream's `isInAllowedPrivilegedImages`, and the
/// pattern half of `VerifyAllowedImage`).
pub(crate) fn matches_any_or_none(patterns: &[String], image: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| runner_core::glob::matches(pattern, image))
}

/// Upstream's `VerifyAllowedImage`: allowed when a pattern matches, when the image is one the
/// runner itself configured, or when there are no patterns. A refusal lists the patterns in
/// the job log and is `disallowed image`.
pub(crate) fn verify_allowed(
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

impl DockerExecutor {
    pub(crate) async fn image_present(
        &self,
        image: &str,
    ) -> Result<Option<bollard::models::ImageInspect>, ExecutorError> {
        match self.docker()?.inspect_image(image).await {
            Ok(inspect) => Ok(Some(inspect)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(error) => Err(system(format!("inspecting image {image:?}")).with_source(error)),
        }
    }

    /// Pulls `image` (`:latest` when it names no tag or digest) with the credentials of its
    /// registry, with upstream's retries: a failure that is the registry's (network) is tried
    /// again, 3 attempts in all, 2 then 4 seconds apart; the error comes with its classified
    /// reason.
    pub(crate) async fn pull(
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
                Err(error) => {
                    let message = error.to_string();
                    let reason = classify_image_pull_failure(&message);
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
    pub(crate) async fn pull_once(
        &self,
        reference: &str,
        platform: &str,
        credentials: Option<bollard::auth::DockerCredentials>,
        log: &JobLog,
    ) -> Result<(), PullError> {
        let mut options = CreateImageOptionsBuilder::default().from_image(reference);
        if !platform.is_empty() {
            options = options.platform(platform);
        }
        let options = options.build();
        let mut stream = self
            .docker()
            .map_err(PullError::NotConnected)?
            .create_image(Some(options), None, credentials);
        let mut last_progress: HashMap<String, tokio::time::Instant> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item?;
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
    pub(crate) async fn ensure_image(
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
    pub(crate) fn effective_policies(
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
}

/// `12.3 MB`, as docker's progress does (decimal units).
pub(crate) fn human_bytes(bytes: i64) -> String {
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
    fn pull_errors_read_as_the_daemon_worded_them() {
        let daemon = PullError::from(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: "manifest for app:2 not found: manifest unknown".into(),
        });
        assert_eq!(
            daemon.to_string(),
            "Error response from daemon: manifest for app:2 not found: manifest unknown"
        );
        assert_eq!(
            classify_image_pull_failure(&daemon.to_string()),
            FailureReason::RunnerConfigurationError
        );
        let stream = PullError::from(bollard::errors::Error::DockerStreamError {
            error: "Get \"https://registry/v2/\": dial tcp: i/o timeout".into(),
        });
        assert_eq!(
            stream.to_string(),
            "Get \"https://registry/v2/\": dial tcp: i/o timeout"
        );
        assert_eq!(
            classify_image_pull_failure(&stream.to_string()),
            FailureReason::RunnerExternalDependencyFailure
        );
        let not_connected = PullError::NotConnected(system("not connected to the Docker daemon"));
        assert_eq!(
            not_connected.to_string(),
            "not connected to the Docker daemon"
        );
    }
}
