//! The executor: [`KubernetesProvider`] makes a [`KubernetesExecutor`] per job. Prepare
//! evaluates the overwrites, connects, makes the job's namespace (`namespace_per_job`) and
//! registry Secret, creates the pod and waits for it to run (a failed pull tries the next pull
//! policy in a new pod); each stage is written into the `scripts` volume and typed into the
//! build or helper container's stdin, its output read back through `read-logs`
//! ([`crate::session`]), or with the legacy flag run as one exec ([`crate::legacy`]); after a
//! failed stage the pod's Warning events are printed; cleanup deletes what prepare made.
//!
//! Services with `HEALTHCHECK_TCP_PORT` are waited for before the first stage.
//!
//! Once the pod is created come its companions (the disruption budget, Services for images
//! with `ports`); before it, the resource availability check. The start-up sweep of an
//! earlier run's left-overs is [`crate::sweep`]; `FF_PRINT_POD_EVENTS`' table is
//! [`crate::event_stream`].

use std::collections::BTreeMap;
use std::sync::Arc;

/// The wait between two looks for a resource the pod needs
/// (`resource_availability_check_max_attempts`).
const RESOURCE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::Api;
use runner_core::build::BuildContext;
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ExecutorProvider, FeaturesInfo,
    ScriptExit, ShellType, Unlimited,
};
use runner_core::failure::FailureReason;
use runner_core::feature_flags::FeatureFlag;
use runner_core::log::JobLog;
use runner_core::stage_runner::{run_stage, Started};
use tokio_util::sync::CancellationToken;

use crate::config::KubernetesConfig;
use crate::log_processor::new_nonce;
use crate::metadata::JobMetadata;
use crate::names::{generate_name, sanitize_label, service_container_names, services_host_alias};
use crate::pod::{
    build_pod, ContainerPlan, PodDirs, PodPlan, BUILD_CONTAINER, DETECT_SHELL_SCRIPT,
    HELPER_CONTAINER, INIT_PERMISSIONS_CONTAINER,
};
use crate::pod_status::{start_state, StartState, WaitReporter};
use crate::retry::RetryPolicy;
use crate::session::{Session, Written};
use crate::stage_commands::{start_stage_line, DETECT_SHELL_FILE};

/// Where the helper image keeps the helper, and where scripts call it.
pub const HELPER_PATH: &str = "/usr/bin/gitlab-runner-helper";

/// The helper image when `helper_image` is not set: the one `scripts/build-helper-image.sh`
/// builds (as the Docker executor's).
pub fn default_helper_image() -> String {
    format!("gitlab-runner-rs/helper:{}", env!("CARGO_PKG_VERSION"))
}

fn system(message: impl Into<String>) -> ExecutorError {
    ExecutorError::system(message)
}

fn configuration(message: impl Into<String>) -> ExecutorError {
    ExecutorError::with_reason(FailureReason::RunnerConfigurationError, message)
}

/// Makes a [`KubernetesExecutor`] per job of a runner with `executor = "kubernetes"`.
#[derive(Debug, Clone)]
pub struct KubernetesProvider {
    config: Arc<KubernetesConfig>,
    kill_timeouts: runner_core::process::KillTimeouts,
}

impl KubernetesProvider {
    /// The provider for a runner's validated `[runners.kubernetes]`.
    pub fn new(config: KubernetesConfig) -> Self {
        Self {
            config: Arc::new(config),
            kill_timeouts: runner_core::process::KillTimeouts::default(),
        }
    }

    /// The stop of a canceled stage (`graceful_kill_timeout`, `force_kill_timeout`).
    pub fn with_kill_timeouts(mut self, kill_timeouts: runner_core::process::KillTimeouts) -> Self {
        self.kill_timeouts = kill_timeouts;
        self
    }

    /// The start-up sweep of the left-overs of the runner whose short token is
    /// `short_token` (see [`crate::sweep`]); an error when the API cannot be reached at all.
    pub async fn sweep(&self, short_token: &str) -> Result<crate::sweep::Swept, String> {
        let client_config = crate::connect::client_config(&self.config.connection, "")
            .await
            .map_err(|error| format!("getting Kubernetes config: {error}"))?;
        let client = crate::throttle::client(client_config)
            .map_err(|error| format!("connecting to Kubernetes: {error}"))?;
        Ok(crate::sweep::sweep(
            client,
            &self.config,
            short_token,
            std::time::SystemTime::now(),
        )
        .await)
    }
}

impl ExecutorProvider for KubernetesProvider {
    type Capacity = Unlimited;
    type Executor = KubernetesExecutor;

    fn name(&self) -> &'static str {
        "kubernetes"
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
            switch_user: false,
            stage_markers: true,
        }
    }

    fn capacity(&self) -> &Unlimited {
        &Unlimited
    }

    fn create(&self, _reservation: ()) -> KubernetesExecutor {
        KubernetesExecutor {
            config: self.config.clone(),
            kill_timeouts: self.kill_timeouts,
            job: None,
            pod_events: crate::events::PodEvents::default(),
            job_namespace: None,
        }
    }
}

/// Each container's pull policies, in the order they are tried.
type Policies = BTreeMap<String, Vec<String>>;

/// Why the pod did not come to run.
enum StartError {
    /// A container's image could not be pulled (the fallback may try its next policy).
    Pull(crate::pod_status::PullFailure, ExecutorError),
    /// Anything else.
    Other(ExecutorError),
}

impl From<ExecutorError> for StartError {
    fn from(error: ExecutorError) -> Self {
        Self::Other(error)
    }
}

/// What every attempt at starting the job's pod shares.
struct PodStart {
    client: kube::Client,
    retry: RetryPolicy,
    /// The pod's and the Secret's names before their random suffix.
    base_name: String,
    auths: Vec<runner_core::registry_auth::RegistryAuth>,
    configured_pull_secrets: Vec<String>,
    dirs: PodDirs,
    umask: bool,
    legacy: bool,
    /// `FF_PRINT_POD_EVENTS`: the pod's events as a table, no "Waiting for pod" lines.
    print_events: bool,
}

/// The job's registry credentials Secret.
struct JobSecret {
    secrets: Api<Secret>,
    name: String,
    /// The pod owns it: the garbage collector deletes it with the pod.
    owned: bool,
}

/// What prepare made.
struct Job {
    pods: Api<Pod>,
    events: Api<k8s_openapi::api::core::v1::Event>,
    namespace: String,
    pod: String,
    secret: Option<JobSecret>,
    retry: RetryPolicy,
    dirs: PodDirs,
    umask: bool,
    /// `FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY`: one exec per stage.
    legacy: bool,
    session: Session,
    /// `FF_PRINT_POD_EVENTS`: prints the pod's events until the job is dropped.
    event_printer: Option<crate::event_stream::Printer>,
}

/// One job's pod.
pub struct KubernetesExecutor {
    config: Arc<KubernetesConfig>,
    kill_timeouts: runner_core::process::KillTimeouts,
    job: Option<Job>,
    /// The pod events printed so far (across the pods of a pull-policy fallback).
    pod_events: crate::events::PodEvents,
    /// The job's own namespace (`namespace_per_job`), deleted at cleanup.
    job_namespace: Option<(
        Api<k8s_openapi::api::core::v1::Namespace>,
        String,
        RetryPolicy,
    )>,
}

impl std::fmt::Debug for KubernetesExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesExecutor")
            .field("pod", &self.job.as_ref().map(|job| &job.pod))
            .finish()
    }
}

impl KubernetesExecutor {
    /// The pod of the job, from the configuration, the overwrites and the job.
    fn plan(
        &self,
        build: &BuildContext,
        overwrites: &crate::overwrites::Overwrites,
        image: &str,
        helper_image: &str,
        log: &JobLog,
    ) -> Result<(PodPlan, Policies), ExecutorError> {
        let config = &self.config;
        let meta = JobMetadata::of(build);
        let expand = |value: &str| build.variables.expand(value);
        let (labels, refused) = crate::metadata::labels(&meta, overwrites, expand);
        for key in refused {
            tracing::debug!("label {key} is in the runner's namespace and not set");
        }
        let annotations = crate::metadata::annotations(&meta, overwrites, expand);
        let mut rng = rand::thread_rng();
        let name = generate_name(&sanitize_label(&meta.project_unique_name), &mut rng);
        let build_policies = crate::pull::effective(
            BUILD_CONTAINER,
            &build.job.image.pull_policy,
            &config.pull_policy,
            &config.allowed_pull_policies,
        )
        .map_err(configuration)?;
        log.println(&crate::pull::effective_line(
            BUILD_CONTAINER,
            &build_policies,
        ));
        let first = |policies: &[String]| policies.first().cloned().unwrap_or_default();
        let mut all_policies = Policies::from([
            (BUILD_CONTAINER.to_string(), build_policies.clone()),
            (HELPER_CONTAINER.to_string(), build_policies.clone()),
            (
                INIT_PERMISSIONS_CONTAINER.to_string(),
                build_policies.clone(),
            ),
        ]);
        let build_env = crate::containers::build_environment(&build.variables);
        let service_names = service_container_names(build.job.services.iter());
        let mut services = Vec::new();
        for (service, container) in build.job.services.iter().zip(&service_names) {
            let mut plan = crate::containers::service_plan(container, service, &build.variables);
            let policies = crate::pull::effective(
                container,
                &service.pull_policy,
                &config.pull_policy,
                &config.allowed_pull_policies,
            )
            .map_err(configuration)?;
            log.println(&crate::pull::effective_line(container, &policies));
            plan.pull_policy = first(&policies);
            all_policies.insert(container.clone(), policies);
            let (resources, lines) = crate::overwrites::evaluate_service(
                &config.overwrites,
                &overwrites.service,
                &runner_core::variables::Variables::new(service.variables.clone()),
            )
            .map_err(|error| {
                configuration(format!(
                    "couldn't prepare explicit service overwrites: {error}"
                ))
            })?;
            for line in lines {
                log.println(&line);
            }
            plan.resources = resources.unwrap_or_else(|| overwrites.service.clone());
            plan.privileged = config.privileged;
            plan.allow_privilege_escalation = config.allow_privilege_escalation;
            plan.cap_add = config.cap_add.clone();
            plan.cap_drop = config.cap_drop.clone();
            services.push(plan);
        }
        let mut host_aliases = Vec::new();
        if let Some(aliases) =
            services_host_alias(build.job.services.iter()).map_err(configuration)?
        {
            host_aliases.push(("127.0.0.1".to_string(), aliases));
        }
        host_aliases.extend(config.host_aliases.iter().cloned());
        let container =
            |name: &str, image: &str, env: Vec<(String, String)>, resources| ContainerPlan {
                name: name.into(),
                image: image.into(),
                pull_policy: first(&build_policies),
                env,
                resources,
                privileged: config.privileged,
                allow_privilege_escalation: config.allow_privilege_escalation,
                cap_add: config.cap_add.clone(),
                cap_drop: config.cap_drop.clone(),
                ..ContainerPlan::default()
            };
        let deadline = build
            .flags
            .enabled(FeatureFlag::UsePodActiveDeadlineSeconds)
            .then(|| {
                log.println(&format!(
                    "Using FF_USE_POD_ACTIVE_DEADLINE_SECONDS, the Pod activeDeadlineSeconds will be set to the job timeout: {}...",
                    runner_core::settings::format_go_duration(build.job_timeout())
                ));
                build.job_timeout().as_secs() as i64 + 1
            });
        let mut volume_warnings = Vec::new();
        let plan = PodPlan {
            name,
            namespace: overwrites.namespace.clone(),
            labels,
            annotations,
            build: ContainerPlan {
                ports: build
                    .job
                    .image
                    .ports
                    .iter()
                    .filter_map(|port| i32::try_from(port.number).ok())
                    .collect(),
                ..container(BUILD_CONTAINER, image, build_env, overwrites.build.clone())
            },
            helper: container(
                HELPER_CONTAINER,
                helper_image,
                Vec::new(),
                overwrites.helper.clone(),
            ),
            services,
            init_resources: overwrites.helper.clone(),
            init_pull_policy: String::new(),
            user_volumes: config.volumes.volumes(&expand, &mut volume_warnings),
            user_mounts: config.volumes.mounts(&expand),
            dirs: Some(PodDirs::new(
                &build.dirs.builds_dir,
                &config.scripts_base_dir,
                &config.logs_base_dir,
                build.job.job_info.project_id,
                build.job.id,
            )),
            service_account: overwrites.service_account.clone(),
            automount_service_account_token: config.automount_service_account_token,
            node_selector: overwrites.node_selector.clone(),
            tolerations: overwrites.node_tolerations.clone(),
            image_pull_secrets: if config.use_service_account_image_pull_secrets {
                Vec::new()
            } else {
                config.image_pull_secrets.clone()
            },
            host_aliases,
            dns_policy: config.dns_policy.clone(),
            active_deadline_seconds: deadline,
            termination_grace_period_seconds: config.pod_termination_grace_period_seconds,
            proxy_services: crate::names::proxy_services(
                std::iter::once((BUILD_CONTAINER, &build.job.image)).chain(
                    service_names
                        .iter()
                        .map(String::as_str)
                        .zip(build.job.services.iter()),
                ),
            ),
            priority_class_name: config.priority_class_name.clone(),
            scheduler_name: config.scheduler_name.clone(),
            runtime_class_name: config.runtime_class_name.clone(),
            legacy: false,
        };
        for warning in volume_warnings {
            log.warning(&warning);
        }
        Ok((plan, all_policies))
    }

    /// Polls the pod every `poll_interval` until it runs, printing what holds it once per
    /// change; `poll_timeout` ends the wait with upstream's message.
    async fn wait_for_running(
        &self,
        pods: &Api<Pod>,
        namespace: &str,
        name: &str,
        // Where the waiting lines go; none with `FF_PRINT_POD_EVENTS`.
        log: Option<&JobLog>,
        cancel: &CancellationToken,
        resource_version: Option<&str>,
    ) -> Result<(), StartError> {
        let deadline = Instant::now() + self.config.poll_timeout;
        let mut reporter = WaitReporter::default();
        let mut last_phase = String::new();
        let mut out = log.map(|log| {
            log.stream(
                runner_core::log::StreamId::RUNNER,
                runner_core::log::StreamKind::Stderr,
            )
        });
        // Beyond upstream's polling: a watch on the pod, so a change is looked at when it
        // happens rather than up to `poll_interval` later (polling goes on if the watch
        // cannot be had or ends).
        let mut changes = match resource_version {
            Some(version) => {
                let params = kube::api::WatchParams::default()
                    .fields(&format!("metadata.name={name}"))
                    .timeout(290);
                pods.watch(&params, version)
                    .await
                    .ok()
                    .map(futures_util::StreamExt::boxed)
            }
            None => None,
        };
        loop {
            let pod = self
                .config
                .retry_policy()
                .run("getting the pod", |_| pods.get(name))
                .await
                .map_err(|error| {
                    system(format!(
                        "waiting for pod running: {}",
                        crate::retry::api_text(&error)
                    ))
                })?;
            last_phase = pod
                .status
                .as_ref()
                .and_then(|status| status.phase.clone())
                .unwrap_or(last_phase);
            match start_state(&pod, namespace) {
                StartState::Ready => return Ok(()),
                StartState::Failed(problem) => {
                    let error = ExecutorError::with_reason(
                        problem.reason,
                        format!("waiting for pod running: {}", problem.message),
                    );
                    return Err(match problem.pull_failed {
                        Some(failure) => StartError::Pull(failure, error),
                        None => StartError::Other(error),
                    });
                }
                StartState::Waiting(lines) => {
                    // Upstream writes these raw to the executor-level stderr stream.
                    for line in reporter.report(&lines) {
                        if let Some(out) = out.as_mut() {
                            out.write(format!("{line}\n").as_bytes());
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(system(format!(
                    "waiting for pod running: {}",
                    reporter.timed_out(&last_phase)
                ))));
            }
            let pause = self
                .config
                .poll_interval
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(pause.max(Duration::from_millis(10))) => {}
                changed = next_change(&mut changes) => {
                    if !changed {
                        changes = None;
                    }
                }
                _ = cancel.cancelled() => return Err(StartError::Other(system("canceled while waiting for the pod to run"))),
            }
        }
    }

    /// Creates the job's Secret (when it has registry credentials) and `plan`'s pod, makes
    /// the pod the Secret's owner and waits for the pod to run. What it made is registered
    /// first, so cleanup deletes it whatever fails.
    async fn start_pod(
        &mut self,
        start: &PodStart,
        plan: &mut PodPlan,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(), StartError> {
        let retry = &start.retry;
        let pods: Api<Pod> = Api::namespaced(start.client.clone(), &plan.namespace);
        let session = Session::new(
            pods.clone(),
            &plan.namespace,
            &plan.name,
            HELPER_PATH,
            &start.dirs.log_file(),
            self.config.poll_interval,
            retry.clone(),
        );
        self.job = Some(Job {
            pods: pods.clone(),
            events: Api::namespaced(start.client.clone(), &plan.namespace),
            namespace: plan.namespace.clone(),
            pod: plan.name.clone(),
            secret: None,
            retry: retry.clone(),
            dirs: start.dirs.clone(),
            umask: start.umask,
            legacy: start.legacy,
            session,
            event_printer: None,
        });
        plan.image_pull_secrets = start.configured_pull_secrets.clone();
        let secret_name = generate_name(&start.base_name, &mut rand::thread_rng());
        let mut credentials = None;
        if let Some(mut secret) =
            crate::credentials::registry_secret(&secret_name, &plan.namespace, &start.auths)
        {
            let (labels, annotations) =
                crate::sweep::companion_metadata(&plan.labels, &plan.annotations);
            secret.metadata.labels = Some(labels);
            secret.metadata.annotations = Some(annotations);
            let secrets: Api<Secret> = Api::namespaced(start.client.clone(), &plan.namespace);
            self.job()?.secret = Some(JobSecret {
                secrets: secrets.clone(),
                name: secret_name.clone(),
                owned: false,
            });
            let created = create_or_adopt(retry, &secrets, &secret_name, &secret)
                .await
                .map_err(|error| {
                    system(format!(
                        "setting up credentials: {}",
                        crate::retry::api_text(&error)
                    ))
                })?;
            credentials = Some(created);
            if !self.config.use_service_account_image_pull_secrets {
                plan.image_pull_secrets.push(secret_name.clone());
            }
        }
        // Upstream's `setting up build pod: ` for all of `setupBuildPod` (not in legacy mode).
        let in_build_pod = |error: StartError| match error {
            StartError::Other(error) if !start.legacy => StartError::Other(reworded(
                &error,
                format!("setting up build pod: {}", error.full_message()),
            )),
            other => other,
        };
        self.check_dependant_resources(start, &plan.namespace, cancel)
            .await
            .map_err(in_build_pod)?;
        let pod = build_pod(plan);
        let created = create_or_adopt(retry, &pods, &plan.name, &pod)
            .await
            .map_err(|error| in_build_pod(system(crate::retry::api_text(&error)).into()))?;
        let owned = credentials.and_then(|secret| crate::credentials::owned_by(secret, &created));
        if let (Some(secret), Some(job_secret)) = (owned, self.job()?.secret.as_mut()) {
            let secrets = job_secret.secrets.clone();
            let params = PostParams::default();
            retry
                .run("setting the secret's owner", |_| {
                    secrets.replace(&secret_name, &params, &secret)
                })
                .await
                .map_err(|error| {
                    in_build_pod(
                        system(format!(
                            "error setting ownerReferences: {}",
                            crate::retry::api_text(&error)
                        ))
                        .into(),
                    )
                })?;
            job_secret.owned = true;
        }
        self.make_companions(start, plan, &created)
            .await
            .map_err(in_build_pod)?;
        if start.print_events {
            log.println("Subscribing to Kubernetes Pod events...");
            let events = Api::namespaced(start.client.clone(), &plan.namespace);
            let printer =
                crate::event_stream::start(events, &plan.name, retry.clone(), log.clone());
            self.job()?.event_printer = Some(printer);
        }
        self.wait_for_running(
            &pods,
            &plan.namespace,
            &plan.name,
            (!start.print_events).then_some(log),
            cancel,
            created.metadata.resource_version.as_deref(),
        )
        .await
    }

    /// `resource_availability_check_max_attempts` (upstream's `checkDependantResources`): the
    /// configured service account and each configured image pull secret must be there; each
    /// is looked for once, then again every 5 s up to that many times, before it is given up
    /// on with upstream's `Timed out while waiting for <Type>/<name> to be present in the
    /// cluster`.
    async fn check_dependant_resources(
        &self,
        start: &PodStart,
        namespace: &str,
        cancel: &CancellationToken,
    ) -> Result<(), StartError> {
        let attempts = self.config.resource_availability_check_max_attempts;
        if attempts == 0 {
            return Ok(());
        }
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(start.client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(start.client.clone(), namespace);
        let account = &self.config.overwrites.service_account;
        let mut wanted = Vec::new();
        if !account.is_empty() {
            wanted.push(("ServiceAccount", account.clone()));
        }
        wanted.extend(
            self.config
                .image_pull_secrets
                .iter()
                .map(|name| ("ImagePullSecret", name.clone())),
        );
        for (kind, name) in wanted {
            let mut found = false;
            for attempt in 0..=attempts {
                if attempt > 0 {
                    tracing::debug!("{kind} {name} is not there yet (attempt {attempt})");
                }
                let exists = if kind == "ServiceAccount" {
                    start
                        .retry
                        .run("getting the service account", |_| accounts.get(&name))
                        .await
                        .is_ok()
                } else {
                    start
                        .retry
                        .run("getting the image pull secret", |_| secrets.get(&name))
                        .await
                        .is_ok()
                };
                if exists {
                    found = true;
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(RESOURCE_CHECK_INTERVAL) => {}
                    _ = cancel.cancelled() => {
                        return Err(StartError::Other(system(format!(
                            "canceled while waiting for {kind}/{name} to be present in the cluster"
                        ))));
                    }
                }
            }
            if !found {
                return Err(StartError::Other(system(format!(
                    "Timed out while waiting for {kind}/{name} to be present in the cluster"
                ))));
            }
        }
        Ok(())
    }

    /// What upstream makes once the pod is there, each owned by it (so each goes with it):
    /// the `pod_disruption_budget` (`<pod>-pdb`, `minAvailable: 1`) and a ClusterIP Service
    /// per alias of an image with `ports`.
    async fn make_companions(
        &self,
        start: &PodStart,
        plan: &PodPlan,
        pod: &Pod,
    ) -> Result<(), StartError> {
        let owner = serde_json::json!([{"apiVersion": "v1", "kind": "Pod",
            "name": pod.metadata.name, "uid": pod.metadata.uid}]);
        let selector = serde_json::json!({
            crate::metadata::POD_SELECTOR_LABEL: plan.labels.get(crate::metadata::POD_SELECTOR_LABEL)
        });
        if self.config.pod_disruption_budget {
            let name = format!("{}-pdb", plan.name);
            let budget: k8s_openapi::api::policy::v1::PodDisruptionBudget =
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": plan.namespace,
                        "ownerReferences": owner},
                    "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}
                }))
                .map_err(|error| system(format!("error creating PodDisruptionBudget: {error}")))?;
            let budgets = Api::namespaced(start.client.clone(), &plan.namespace);
            create_or_adopt(&start.retry, &budgets, &name, &budget)
                .await
                .map_err(|error| {
                    system(format!(
                        "error creating PodDisruptionBudget: {}",
                        crate::retry::api_text(&error)
                    ))
                })?;
        }
        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(start.client.clone(), &plan.namespace);
        for proxy in &plan.proxy_services {
            let name = generate_name(&proxy.base, &mut rand::thread_rng());
            let ports: Vec<serde_json::Value> = proxy
                .ports
                .iter()
                .map(|port| {
                    serde_json::json!({"name": format!("{}-{port}", proxy.base),
                        "port": port, "targetPort": port})
                })
                .collect();
            let service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": plan.namespace, "ownerReferences": owner},
                "spec": {"ports": ports, "selector": selector, "type": "ClusterIP"}
            }))
            .map_err(|error| {
                system(format!(
                    "error creating the proxy service {name:?}: {error}"
                ))
            })?;
            create_or_adopt(&start.retry, &services, &name, &service)
                .await
                .map_err(|error| {
                    system(format!(
                        "error creating the proxy service {name:?}: {}",
                        crate::retry::api_text(&error)
                    ))
                })?;
        }
        Ok(())
    }

    /// Upstream's wait for services with `HEALTHCHECK_TCP_PORT`: `gitlab-runner-helper
    /// health-check --port <p>…` in the helper container (the pod's network is shared, so it
    /// dials localhost), its output in the job log, the pod looked at meanwhile; a non-zero
    /// exit fails the job with that code.
    async fn wait_for_services(
        &mut self,
        ports: &[String],
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        let timeouts = self.kill_timeouts;
        let poll_interval = self.config.poll_interval;
        let job = self.job()?;
        let mut command = format!("{HELPER_PATH} health-check");
        for port in ports {
            command.push_str(&format!(" --port {}", crate::stage_commands::quote(port)));
        }
        let target = crate::legacy::Target {
            pods: &job.pods,
            namespace: &job.namespace,
            pod: &job.pod,
            container: HELPER_CONTAINER,
            umask: false,
            poll_interval,
        };
        let (process, output) = crate::legacy::start(target, &command, &job.retry)
            .await
            .map_err(not_retried)?;
        let ended = run_exec_stage(process, output, log, cancel, timeouts)
            .await
            .map_err(not_retried)?;
        match ended {
            ScriptExit::Success => Ok(()),
            ScriptExit::Failed { message, .. } => Err(ExecutorError::with_reason(
                FailureReason::ScriptFailure,
                message,
            )),
        }
    }

    /// After a failed stage: the pod's new Warning events, when `print_pod_warning_events`.
    async fn report_events(&mut self, log: &JobLog) {
        if !self.config.print_pod_warning_events {
            return;
        }
        let Some(job) = self.job.as_ref() else {
            return;
        };
        self.pod_events
            .report(&job.events, &job.pod, &job.retry, log)
            .await;
    }

    fn job(&mut self) -> Result<&mut Job, ExecutorError> {
        self.job
            .as_mut()
            .ok_or_else(|| system("the pod was not prepared"))
    }
}

impl Executor for KubernetesExecutor {
    /// Upstream's `SharedBuildsDir`: when a user volume other than an `emptyDir` is mounted
    /// at the builds root, concurrent jobs may share it, so the project directory gets the
    /// `<short token>/<concurrent id>/` prefix.
    async fn configure(
        &mut self,
        build: &BuildContext,
        _log: &JobLog,
        _cancel: &CancellationToken,
    ) -> Result<runner_core::build::Reconfigure, ExecutorError> {
        let shared = builds_dir_is_shared(&self.config.volumes, &build.dirs.builds_dir, &|text| {
            build.variables.expand(text)
        });
        Ok(runner_core::build::Reconfigure {
            builds_dir_is_shared: shared.then_some(true),
            ..runner_core::build::Reconfigure::default()
        })
    }

    async fn prepare(
        &mut self,
        build: &mut BuildContext,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        self.cleanup(log).await;
        let config = self.config.clone();
        let overwrites = crate::overwrites::evaluate(&config.overwrites, &build.variables)
            .map_err(|error| configuration(format!("couldn't prepare overwrites: {error}")))?;
        for line in &overwrites.log {
            log.println(line);
        }
        let image = if build.job.image.name.is_empty() {
            build.variables.expand(&config.image)
        } else {
            build.variables.expand(&build.job.image.name)
        };
        if image.is_empty() {
            return Err(configuration(
                "no image specified and no default set in config",
            ));
        }
        let mut overwrites = overwrites;
        if config.namespace_per_job {
            overwrites.namespace = format!("ci-job-{}", build.job.id);
        }
        if overwrites.namespace.is_empty() {
            log.warning("Namespace is empty, therefore assuming 'default'.");
            overwrites.namespace = "default".into();
        }
        let client_config =
            crate::connect::client_config(&config.connection, &overwrites.bearer_token)
                .await
                .map_err(|error| configuration(format!("getting Kubernetes config: {error}")))?;
        let client = crate::throttle::client(client_config)
            .map_err(|error| system(format!("connecting to Kubernetes: {error}")))?;
        log.println(&format!(
            "Using Kubernetes namespace: {}",
            overwrites.namespace
        ));
        log.println(&format!("Using Kubernetes executor with image {image} ..."));
        let legacy = build
            .flags
            .enabled(FeatureFlag::UseLegacyKubernetesExecutionStrategy);
        if legacy {
            // The stage's exec status is its exit code: no markers in the scripts.
            build.defaults.stage_markers = false;
        } else {
            log.println("Using attach strategy to execute scripts...");
        }
        let helper_image = match build.variables.expand(&config.helper_image) {
            configured if !configured.is_empty() => configured,
            _ => default_helper_image(),
        };
        let (mut plan, policies) = self.plan(build, &overwrites, &image, &helper_image, log)?;
        plan.legacy = legacy;
        let mut warnings = Vec::new();
        let auths = runner_core::registry_auth::all_configs(
            &runner_core::registry_auth::AuthSources::for_build(build),
            &mut warnings,
        );
        for warning in warnings {
            log.warning(&warning);
        }
        let ports: Vec<String> = build
            .job
            .services
            .iter()
            .map(|service| {
                runner_core::variables::Variables::new(service.variables.clone())
                    .get("HEALTHCHECK_TCP_PORT")
                    .to_string()
            })
            .filter(|port| !port.is_empty())
            .collect();
        // Upstream makes the pod in the first stage it runs (`prepare_script`), so what goes
        // wrong from here on carries that stage's wrapper; but with services to wait for it
        // makes the pod in its prepare, whose errors are bare.
        let in_first_stage = |error: ExecutorError| {
            if ports.is_empty() {
                in_prepare_environment(error)
            } else {
                not_retried(error)
            }
        };
        if config.namespace_per_job {
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            let (labels, annotations) =
                crate::sweep::companion_metadata(&plan.labels, &plan.annotations);
            let namespace = k8s_openapi::api::core::v1::Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some(plan.namespace.clone()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..kube::api::ObjectMeta::default()
                },
                ..Default::default()
            };
            let retry = config.retry_policy();
            self.job_namespace = Some((namespaces.clone(), plan.namespace.clone(), retry.clone()));
            create_or_adopt(&retry, &namespaces, &plan.namespace, &namespace)
                .await
                .map_err(|error| {
                    in_first_stage(system(format!(
                        "setting up build namespace: failed to create namespace: {}",
                        crate::retry::api_text(&error)
                    )))
                })?;
        }
        let start = PodStart {
            client,
            retry: config.retry_policy(),
            base_name: sanitize_label(&JobMetadata::of(build).project_unique_name),
            auths,
            configured_pull_secrets: plan.image_pull_secrets.clone(),
            dirs: plan.dirs.clone().unwrap_or_else(|| {
                PodDirs::new(
                    &build.dirs.builds_dir,
                    "",
                    "",
                    build.job.job_info.project_id,
                    build.job.id,
                )
            }),
            umask: !build
                .flags
                .enabled(FeatureFlag::DisableUmaskForKubernetesExecutor),
            legacy,
            print_events: build.flags.enabled(FeatureFlag::PrintPodEvents),
        };
        let started: Result<(), ExecutorError> = async {
            // Upstream's pull-policy fallback: a container whose image pull fails tries its next
            // policy in a new pod.
            let mut failures: BTreeMap<String, usize> = BTreeMap::new();
            for attempt in 1.. {
                for container in plan.containers_mut() {
                    let tried = failures.get(&container.name).copied().unwrap_or(0);
                    if let Some(policy) = policies
                        .get(&container.name)
                        .and_then(|list| list.get(tried))
                    {
                        container.pull_policy = policy.clone();
                    }
                }
                let tried = failures
                    .get(INIT_PERMISSIONS_CONTAINER)
                    .copied()
                    .unwrap_or(0);
                if let Some(policy) = policies
                    .get(INIT_PERMISSIONS_CONTAINER)
                    .and_then(|list| list.get(tried))
                {
                    plan.init_pull_policy = policy.clone();
                }
                if attempt > 1 {
                    plan.name = generate_name(&start.base_name, &mut rand::thread_rng());
                }
                let started = self.start_pod(&start, &mut plan, log, cancel).await;
                if started.is_err() {
                    self.report_events(log).await;
                }
                let (failure, error) = match started {
                    Ok(()) => break,
                    Err(StartError::Other(error)) => return Err(error),
                    Err(StartError::Pull(failure, error)) => (failure, error),
                };
                let list = policies
                    .get(&failure.container)
                    .cloned()
                    .unwrap_or_else(|| vec![String::new()]);
                let tried = failures.entry(failure.container.clone()).or_insert(0);
                let policy = list.get(*tried).cloned().unwrap_or_default();
                *tried += 1;
                log.warning(&format!(
                    "Failed to pull image {:?} for container {:?} with policy {policy:?}: {}",
                    failure.image, failure.container, failure.message
                ));
                let Some(next) = list.get(*tried) else {
                    return Err(error);
                };
                log.println(&format!(
                    "Attempt #{}: Trying {next:?} pull policy for {:?} image for container {:?}",
                    attempt + 1,
                    failure.image,
                    failure.container
                ));
                let deadline = tokio::time::Instant::now() + config.cleanup_resources_timeout;
                self.cleanup_pod(log, deadline).await;
            }
            if !ports.is_empty() {
                self.wait_for_services(&ports, log, cancel).await?;
            }
            let job = self.job()?;
            if job.legacy {
                return Ok(());
            }
            let path = format!("{}/{DETECT_SHELL_FILE}", job.dirs.scripts_dir);
            let written = job
                .session
                .write_file(BUILD_CONTAINER, &path, DETECT_SHELL_SCRIPT.as_bytes())
                .await?;
            if let Written::Exited { code, said } = written {
                return Err(system(format!(
                    "writing {path} in container {BUILD_CONTAINER}: command terminated with exit code {code}: {said}"
                )));
            }
            job.session.start_log_stream(log.clone());
            Ok(())
        }
        .await;
        started.map_err(in_first_stage)
    }

    async fn run(
        &mut self,
        command: ExecutorCommand<'_>,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let timeouts = self.kill_timeouts;
        let poll_interval = self.config.poll_interval;
        let job = self.job()?;
        let container = if command.predefined {
            HELPER_CONTAINER
        } else {
            BUILD_CONTAINER
        };
        if job.legacy {
            let target = crate::legacy::Target {
                pods: &job.pods,
                namespace: &job.namespace,
                pod: &job.pod,
                container,
                umask: command.predefined && job.umask,
                poll_interval,
            };
            let (process, output) =
                crate::legacy::start(target, command.script, &job.retry).await?;
            let result = run_exec_stage(process, output, log, cancel, timeouts).await;
            if !matches!(result, Ok(ScriptExit::Success)) {
                self.report_events(log).await;
            }
            return result;
        }
        let stage = command.stage.name();
        let script = format!("{}/{stage}", job.dirs.scripts_dir);
        let written = job
            .session
            .write_file(container, &script, command.script.as_bytes())
            .await?;
        if let Written::Exited { code, said } = written {
            // Upstream: the write's output goes to the job log, its status is the stage's.
            if !said.is_empty() {
                log.println(&said);
            }
            return Ok(script_exit(code));
        }
        let nonce = new_nonce(&mut rand::thread_rng());
        let line = start_stage_line(
            &job.dirs.scripts_dir,
            &job.dirs.log_file(),
            &stage,
            &nonce,
            command.predefined && job.umask,
        );
        let (process, output) = job
            .session
            .start_stage(container, &script, &nonce, &line, cancel)
            .await?;
        let started = Started {
            process,
            output,
            stdin: None,
        };
        let result = run_stage(started, &[], log, cancel, timeouts, |ended| {
            if let Some(warning) = &ended.exit.warning {
                log.warning(warning);
            }
            Ok(script_exit(ended.exit.code))
        })
        .await;
        if !matches!(result, Ok(ScriptExit::Success)) {
            self.report_events(log).await;
        }
        result
    }

    async fn cleanup(&mut self, log: &JobLog) {
        // One `cleanup_resources_timeout` for everything.
        let deadline = tokio::time::Instant::now() + self.config.cleanup_resources_timeout;
        self.cleanup_pod(log, deadline).await;
        if let Some((namespaces, name, retry)) = self.job_namespace.take() {
            let params = DeleteParams::default();
            let deleted = tokio::time::timeout_at(
                deadline,
                retry.run("deleting the namespace", |_| {
                    namespaces.delete(&name, &params)
                }),
            )
            .await;
            match deleted {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => log.error(&format!(
                    "Error tearing down namespace: failed to delete namespace: {}",
                    crate::retry::api_text(&error)
                )),
                Err(_) => log.error(&format!(
                    "Error tearing down namespace: deleting namespace {name} timed out"
                )),
            }
        }
    }
}

impl KubernetesExecutor {
    /// Deletes the pod, and its Secret when the pod does not own it, before `deadline`; what
    /// fails is said in `log`, never fails the job.
    async fn cleanup_pod(&mut self, log: &JobLog, deadline: tokio::time::Instant) {
        let Some(mut job) = self.job.take() else {
            return;
        };
        // Upstream stops the event stream first, so the deletion's events are not printed.
        drop(job.event_printer.take());
        drop(job.session);
        let params = DeleteParams {
            grace_period_seconds: self
                .config
                .cleanup_grace_period_seconds
                .and_then(|seconds| u32::try_from(seconds).ok()),
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        let deleted = tokio::time::timeout_at(
            deadline,
            job.retry
                .run("deleting the pod", |_| job.pods.delete(&job.pod, &params)),
        )
        .await;
        match deleted {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
            Ok(Err(error)) => log.error(&format!(
                "Error cleaning up pod: {}",
                crate::retry::api_text(&error)
            )),
            Err(_) => log.error(&format!(
                "Error cleaning up pod: deleting pod {}/{} timed out",
                job.namespace, job.pod
            )),
        }
        // An owned Secret goes with its pod; one the pod never came to own is deleted here.
        if let Some(secret) = job.secret.filter(|secret| !secret.owned) {
            let params = DeleteParams {
                grace_period_seconds: params.grace_period_seconds,
                ..DeleteParams::default()
            };
            let deleted = tokio::time::timeout_at(
                deadline,
                job.retry.run("deleting the secret", |_| {
                    secret.secrets.delete(&secret.name, &params)
                }),
            )
            .await;
            match deleted {
                Ok(Ok(_)) => {}
                Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
                Ok(Err(error)) => log.error(&format!(
                    "Error cleaning up secrets: {}",
                    crate::retry::api_text(&error)
                )),
                Err(_) => log.error(&format!(
                    "Error cleaning up secrets: deleting secret {}/{} timed out",
                    job.namespace, secret.name
                )),
            }
        }
    }
}

/// Runs a stage started as one exec ([`crate::legacy`]) through the stage runner.
async fn run_exec_stage(
    process: crate::legacy::ExecStage,
    output: crate::legacy::ExecOutput,
    log: &JobLog,
    cancel: &CancellationToken,
    timeouts: runner_core::process::KillTimeouts,
) -> Result<ScriptExit, ExecutorError> {
    let started = Started {
        process,
        output,
        stdin: None,
    };
    run_stage(started, &[], log, cancel, timeouts, |ended| {
        Ok(script_exit(ended.exit))
    })
    .await
}

/// A stage's exit status in upstream's words (`command terminated with exit code N`).
fn script_exit(code: i32) -> ScriptExit {
    match code {
        0 => ScriptExit::Success,
        code => ScriptExit::Failed {
            code,
            message: format!("command terminated with exit code {code}"),
        },
    }
}

/// Whether the volume at `builds_root` may be shared by concurrent jobs: a user volume is
/// mounted there and it is not an `emptyDir` (upstream's `isSharedBuildsDirRequired`).
fn builds_dir_is_shared(
    volumes: &crate::volumes::UserVolumes,
    builds_root: &str,
    expand: &dyn Fn(&str) -> String,
) -> bool {
    volumes
        .mounts(expand)
        .iter()
        .find(|mount| mount.mount_path == builds_root)
        .is_some_and(|mount| {
            !volumes
                .empty_dir
                .iter()
                .any(|empty| empty.mount.name == mount.name)
        })
}

/// `error` with another `message`, of the same kind.
fn reworded(error: &ExecutorError, message: String) -> ExecutorError {
    match error.kind() {
        runner_core::executor::ExecutorErrorKind::System => system(message),
        runner_core::executor::ExecutorErrorKind::Job(reason) => {
            ExecutorError::with_reason(reason, message)
        }
    }
}

/// The wrapper upstream's `prepare_script` stage gives its errors, the failure reason kept
/// (a system failure is one of the job: that stage is not tried again).
fn in_prepare_environment(error: ExecutorError) -> ExecutorError {
    let message = format!(
        "prepare environment: {}. Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information",
        error.full_message()
    );
    not_retried(reworded(&error, message))
}

/// A failure to start the pod fails the job without the build layer's preparation retries:
/// upstream starts the pod in the first stage, where nothing is tried again (and a new try
/// would meet this one's namespace still being deleted).
fn not_retried(error: ExecutorError) -> ExecutorError {
    match error.kind() {
        runner_core::executor::ExecutorErrorKind::System => {
            ExecutorError::with_reason(FailureReason::RunnerSystemFailure, error.full_message())
        }
        runner_core::executor::ExecutorErrorKind::Job(_) => error,
    }
}

/// Waits for the next event of a pod watch: `true` when one came, `false` when the watch
/// ended or failed; never resolves without a watch.
async fn next_change(
    changes: &mut Option<
        futures_util::stream::BoxStream<'static, kube::Result<kube::api::WatchEvent<Pod>>>,
    >,
) -> bool {
    match changes {
        Some(stream) => matches!(futures_util::StreamExt::next(stream).await, Some(Ok(_))),
        None => std::future::pending().await,
    }
}

/// Creates `object` named `name`. A create that is tried again after a lost answer and finds
/// the name taken finds its own first try (the names are random): that object is taken.
async fn create_or_adopt<K>(
    retry: &RetryPolicy,
    api: &Api<K>,
    name: &str,
    object: &K,
) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    retry
        .run("creating", |attempt| {
            let api = api.clone();
            let object = object.clone();
            let name = name.to_string();
            async move {
                match api.create(&PostParams::default(), &object).await {
                    Err(kube::Error::Api(status)) if status.code == 409 && attempt > 1 => {
                        api.get(&name).await
                    }
                    other => other,
                }
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes(toml_text: &str) -> crate::volumes::UserVolumes {
        toml::from_str(toml_text).expect("valid volumes")
    }

    #[test]
    fn only_a_user_volume_other_than_an_empty_dir_at_the_builds_root_shares_it() {
        let same = |text: &str| text.to_string();
        // The pod's own `repo` emptyDir.
        assert!(!builds_dir_is_shared(&volumes(""), "/builds", &same));
        let pvc = volumes(
            "[[pvc]]\nname = \"builds-$CI_RUNNER_ID\"\nmount_path = \"/builds\"\n[[host_path]]\nname = \"cache\"\nmount_path = \"/cache\"\n",
        );
        assert!(builds_dir_is_shared(&pvc, "/builds", &same));
        // Mounted elsewhere: the root is still the pod's own.
        assert!(!builds_dir_is_shared(&pvc, "/other", &same));
        let host = volumes("[[host_path]]\nname = \"b\"\nmount_path = \"$ROOT\"\n");
        assert!(builds_dir_is_shared(&host, "/builds", &|text: &str| {
            text.replace("$ROOT", "/builds")
        }));
        let empty = volumes("[[empty_dir]]\nname = \"b\"\nmount_path = \"/builds\"\n");
        assert!(!builds_dir_is_shared(&empty, "/builds", &same));
    }
}
