//! The job pod of the attach strategy, as upstream builds it: containers `build`, `helper` and
//! the services (each with `stdin: true`, so its shell reads the commands typed into it), the
//! `init-permissions` init container that creates the shared log file, the `scripts`, `logs`
//! and `repo` emptyDirs mounted in every container, `restartPolicy: Never`, and the pod-level
//! settings (service account, node selector, tolerations, host aliases, pull secrets, the
//! active deadline). What goes in is a [`PodPlan`] the executor fills from the config, the
//! overwrites and the job; the result is the `Pod` object that is created.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, HostAlias, LocalObjectReference, Pod,
    PodSpec, ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::overwrites::{ResourceValues, Resources};

/// The build container's name.
pub const BUILD_CONTAINER: &str = "build";
/// The helper container's name.
pub const HELPER_CONTAINER: &str = "helper";
/// The init container that prepares the shared log file.
pub const INIT_PERMISSIONS_CONTAINER: &str = "init-permissions";

/// Upstream's shell detection (`shells.BashDetectShellScript`): the first shell of the list
/// that is there, with the arguments passed on.
pub const DETECT_SHELL_SCRIPT: &str = "if [ -x /usr/local/bin/bash ]; then\n\texec /usr/local/bin/bash $@\nelif [ -x /usr/bin/bash ]; then\n\texec /usr/bin/bash $@\nelif [ -x /bin/bash ]; then\n\texec /bin/bash $@\nelif [ -x /usr/local/bin/sh ]; then\n\texec /usr/local/bin/sh $@\nelif [ -x /usr/bin/sh ]; then\n\texec /usr/bin/sh $@\nelif [ -x /bin/sh ]; then\n\texec /bin/sh $@\nelif [ -x /busybox/sh ]; then\n\texec /busybox/sh $@\nelse\n\techo shell not found\n\texit 1\nfi\n\n";

/// The pod's shared directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDirs {
    /// The builds root (`builds_dir`, `/builds` by default): the `repo` volume.
    pub builds_dir: String,
    /// `[scripts_base_dir]/scripts-<project id>-<job id>`.
    pub scripts_dir: String,
    /// `[logs_base_dir]/logs-<project id>-<job id>`.
    pub logs_dir: String,
}

impl PodDirs {
    /// Upstream's directories for a job, with `scripts_base_dir` / `logs_base_dir` (trailing
    /// `/` or `\` trimmed; empty: `/`).
    pub fn new(
        builds_dir: &str,
        scripts_base_dir: &str,
        logs_base_dir: &str,
        project_id: i64,
        job_id: i64,
    ) -> Self {
        let base = |dir: &str| dir.trim_end_matches(['/', '\\']).to_string();
        Self {
            builds_dir: builds_dir.to_string(),
            scripts_dir: format!("{}/scripts-{project_id}-{job_id}", base(scripts_base_dir)),
            logs_dir: format!("{}/logs-{project_id}-{job_id}", base(logs_base_dir)),
        }
    }

    /// The log file every stage appends to and `read-logs` follows.
    pub fn log_file(&self) -> String {
        format!("{}/output.log", self.logs_dir)
    }
}

/// One container of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerPlan {
    /// Its name (`build`, `helper`, a service's).
    pub name: String,
    /// The image.
    pub image: String,
    /// `Always`, `IfNotPresent`, `Never`; empty: the API server's default.
    pub pull_policy: String,
    /// `command`; empty: the image's entrypoint.
    pub command: Vec<String>,
    /// `args`; empty: the image's command.
    pub args: Vec<String>,
    /// The environment, in order; a later duplicate replaces the earlier entry.
    pub env: Vec<(String, String)>,
    /// Requests and limits; empty values are left out.
    pub resources: Resources,
    /// Container ports (services of `.gitlab-webide.yml`).
    pub ports: Vec<i32>,
    /// `privileged`, when configured.
    pub privileged: Option<bool>,
    /// `allowPrivilegeEscalation`, when configured.
    pub allow_privilege_escalation: Option<bool>,
    /// `cap_add`.
    pub cap_add: Vec<String>,
    /// `cap_drop` (on top of the default drop of `NET_RAW`).
    pub cap_drop: Vec<String>,
}

/// Everything the pod is made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodPlan {
    /// The generated pod name.
    pub name: String,
    /// The namespace.
    pub namespace: String,
    /// Labels (see [`crate::metadata::labels`]).
    pub labels: BTreeMap<String, String>,
    /// Annotations (see [`crate::metadata::annotations`]).
    pub annotations: BTreeMap<String, String>,
    /// The build container (its command is set here: the shell detection).
    pub build: ContainerPlan,
    /// The helper container (likewise).
    pub helper: ContainerPlan,
    /// The service containers, in their order; the pod lists them by name.
    pub services: Vec<ContainerPlan>,
    /// The helper's image pull policy for `init-permissions`, and its resources.
    pub init_resources: Resources,
    /// The user volumes (`[runners.kubernetes.volumes]`), before the pod's own.
    pub user_volumes: Vec<Volume>,
    /// Their mounts in every container, after `scripts` and `logs`.
    pub user_mounts: Vec<VolumeMount>,
    /// The pull policy of `init-permissions` (its own place in the build image's policies);
    /// empty: the helper's.
    pub init_pull_policy: String,
    /// The shared directories.
    pub dirs: Option<PodDirs>,
    /// `serviceAccountName`; empty: the namespace's default.
    pub service_account: String,
    /// `automountServiceAccountToken`.
    pub automount_service_account_token: Option<bool>,
    /// `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations: `key[=value]` to effect.
    pub tolerations: BTreeMap<String, String>,
    /// `imagePullSecrets` by name.
    pub image_pull_secrets: Vec<String>,
    /// `hostAliases`: IP and names.
    pub host_aliases: Vec<(String, Vec<String>)>,
    /// `dnsPolicy`; empty: `ClusterFirst`, sent explicitly as upstream does.
    pub dns_policy: String,
    /// `activeDeadlineSeconds` (job timeout + 1 with `FF_USE_POD_ACTIVE_DEADLINE_SECONDS`).
    pub active_deadline_seconds: Option<i64>,
    /// `terminationGracePeriodSeconds`.
    pub termination_grace_period_seconds: Option<i64>,
    /// The Services for images with `ports`, made after the pod (owned by it).
    pub proxy_services: Vec<crate::names::ProxyService>,
    /// `priorityClassName`.
    pub priority_class_name: String,
    /// `schedulerName`.
    pub scheduler_name: String,
    /// `runtimeClassName`.
    pub runtime_class_name: String,
    /// `FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY`: each stage is an exec with its script
    /// on stdin, so there are no `scripts` and `logs` volumes and no `init-permissions`
    /// container (as upstream).
    pub legacy: bool,
}

impl PodPlan {
    /// The build, helper and service containers.
    pub fn containers_mut(&mut self) -> impl Iterator<Item = &mut ContainerPlan> {
        [&mut self.build, &mut self.helper]
            .into_iter()
            .chain(self.services.iter_mut())
    }
}

fn quantities(values: &ResourceValues) -> Option<BTreeMap<String, Quantity>> {
    let entries: BTreeMap<String, Quantity> = [
        ("cpu", &values.cpu),
        ("memory", &values.memory),
        ("ephemeral-storage", &values.ephemeral_storage),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(name, value)| (name.to_string(), Quantity(value.clone())))
    .collect();
    (!entries.is_empty()).then_some(entries)
}

fn resources(values: &Resources) -> ResourceRequirements {
    ResourceRequirements {
        limits: quantities(&values.limits),
        requests: quantities(&values.requests),
        ..ResourceRequirements::default()
    }
}

/// Upstream's `getCapabilities`: `NET_RAW` dropped by default, `cap_add` takes a capability
/// out of the drops, `cap_drop` puts it (back) in; both lists sorted.
pub fn capabilities(cap_add: &[String], cap_drop: &[String]) -> Capabilities {
    let mut enabled: BTreeMap<&str, bool> = BTreeMap::from([("NET_RAW", false)]);
    for capability in cap_add {
        enabled.insert(capability, true);
    }
    for capability in cap_drop {
        enabled.insert(capability, false);
    }
    let pick = |wanted: bool| {
        let list: Vec<String> = enabled
            .iter()
            .filter(|(_, add)| **add == wanted)
            .map(|(name, _)| name.to_string())
            .collect();
        (!list.is_empty()).then_some(list)
    };
    Capabilities {
        add: pick(true),
        drop: pick(false),
    }
}

/// The environment with `$` doubled (so Kubernetes' `$(VAR)` substitution leaves values
/// alone) and later duplicates replacing earlier ones in place.
pub fn environment(env: &[(String, String)]) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::new();
    for (name, value) in env {
        let variable = EnvVar {
            name: name.clone(),
            value: Some(value.replace('$', "$$")),
            ..EnvVar::default()
        };
        match out.iter_mut().find(|existing| existing.name == *name) {
            Some(existing) => *existing = variable,
            None => out.push(variable),
        }
    }
    out
}

/// The tolerations of `key[=value]` to effect entries (upstream's `getPodTolerations`).
pub fn tolerations(entries: &BTreeMap<String, String>) -> Vec<Toleration> {
    entries
        .iter()
        .map(|(key_value, effect)| {
            let effect = (!effect.is_empty()).then(|| effect.clone());
            match key_value.split_once('=') {
                Some((key, value)) => Toleration {
                    key: Some(key.to_string()),
                    value: Some(value.to_string()),
                    operator: Some("Equal".into()),
                    effect,
                    ..Toleration::default()
                },
                None => Toleration {
                    key: Some(key_value.clone()),
                    operator: Some("Exists".into()),
                    effect,
                    ..Toleration::default()
                },
            }
        })
        .collect()
}

/// Whether the pod needs its own `repo` volume: no user volume is mounted at the builds
/// directory.
fn repo_volume_needed(plan: &PodPlan, dirs: &PodDirs) -> bool {
    !plan
        .user_mounts
        .iter()
        .any(|mount| mount.mount_path == dirs.builds_dir)
}

/// Upstream's mount order: `scripts`, `logs`, the user volumes, `repo`.
fn mounts(plan: &PodPlan, dirs: &PodDirs) -> Vec<VolumeMount> {
    let own = |name: &str, path: &String| VolumeMount {
        name: name.into(),
        mount_path: path.clone(),
        ..VolumeMount::default()
    };
    let mut mounts = if plan.legacy {
        Vec::new()
    } else {
        vec![
            own("scripts", &dirs.scripts_dir),
            own("logs", &dirs.logs_dir),
        ]
    };
    mounts.extend(plan.user_mounts.iter().cloned());
    if repo_volume_needed(plan, dirs) {
        mounts.push(own("repo", &dirs.builds_dir));
    }
    mounts
}

fn container(plan: &ContainerPlan, mounts: &[VolumeMount]) -> Container {
    let text = |value: &str| (!value.is_empty()).then(|| value.to_string());
    let list = |values: &[String]| (!values.is_empty()).then(|| values.to_vec());
    let env = environment(&plan.env);
    Container {
        name: plan.name.clone(),
        image: text(&plan.image),
        image_pull_policy: text(&plan.pull_policy),
        command: list(&plan.command),
        args: list(&plan.args),
        env: (!env.is_empty()).then_some(env),
        resources: Some(resources(&plan.resources)),
        ports: (!plan.ports.is_empty()).then(|| {
            plan.ports
                .iter()
                .map(|port| k8s_openapi::api::core::v1::ContainerPort {
                    container_port: *port,
                    ..Default::default()
                })
                .collect()
        }),
        volume_mounts: (!mounts.is_empty()).then(|| mounts.to_vec()),
        security_context: Some(SecurityContext {
            capabilities: Some(capabilities(&plan.cap_add, &plan.cap_drop)),
            privileged: plan.privileged,
            allow_privilege_escalation: plan.allow_privilege_escalation,
            ..SecurityContext::default()
        }),
        stdin: Some(true),
        ..Container::default()
    }
}

/// `sh -c <detect shell>`: how the build and helper containers start their idle shell.
pub fn shell_command() -> Vec<String> {
    vec!["sh".into(), "-c".into(), DETECT_SHELL_SCRIPT.into()]
}

/// The pod of `plan`.
pub fn build_pod(plan: &PodPlan) -> Pod {
    let mounts = plan
        .dirs
        .as_ref()
        .map(|dirs| mounts(plan, dirs))
        .unwrap_or_else(|| plan.user_mounts.clone());
    let mut build = plan.build.clone();
    build.name = BUILD_CONTAINER.into();
    build.command = shell_command();
    let mut helper = plan.helper.clone();
    helper.name = HELPER_CONTAINER.into();
    helper.command = shell_command();
    // No environment in the helper: its stages export what they need.
    helper.env.clear();
    let mut services = plan.services.clone();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let containers: Vec<Container> = [build, helper]
        .iter()
        .chain(services.iter())
        .map(|plan| container(plan, &mounts))
        .collect();
    let init_containers = plan.dirs.as_ref().filter(|_| !plan.legacy).map(|dirs| {
        let mut init = container(
            &ContainerPlan {
                name: INIT_PERMISSIONS_CONTAINER.into(),
                image: plan.helper.image.clone(),
                pull_policy: if plan.init_pull_policy.is_empty() {
                    plan.helper.pull_policy.clone()
                } else {
                    plan.init_pull_policy.clone()
                },
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    format!("touch {0} && (chmod 777 {0} || exit 0)", dirs.log_file()),
                ],
                resources: plan.init_resources.clone(),
                cap_add: plan.helper.cap_add.clone(),
                cap_drop: plan.helper.cap_drop.clone(),
                ..ContainerPlan::default()
            },
            &mounts,
        );
        init.stdin = None;
        vec![init]
    });
    // Upstream's volume order: the user volumes, `repo`, `scripts`, `logs`.
    let mut volumes = plan.user_volumes.clone();
    if let Some(dirs) = plan.dirs.as_ref() {
        let own = match (repo_volume_needed(plan, dirs), plan.legacy) {
            (true, false) => &["repo", "scripts", "logs"][..],
            (false, false) => &["scripts", "logs"][..],
            (true, true) => &["repo"][..],
            (false, true) => &[][..],
        };
        volumes.extend(own.iter().map(|name| Volume {
            name: (*name).into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }));
    }
    let volumes = (!volumes.is_empty()).then_some(volumes);
    let text = |value: &str| (!value.is_empty()).then(|| value.to_string());
    let tolerations = tolerations(&plan.tolerations);
    Pod {
        metadata: ObjectMeta {
            name: Some(plan.name.clone()),
            namespace: Some(plan.namespace.clone()),
            labels: (!plan.labels.is_empty()).then(|| plan.labels.clone()),
            annotations: (!plan.annotations.is_empty()).then(|| plan.annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers,
            init_containers,
            volumes,
            restart_policy: Some("Never".into()),
            service_account_name: text(&plan.service_account),
            automount_service_account_token: plan.automount_service_account_token,
            node_selector: (!plan.node_selector.is_empty()).then(|| plan.node_selector.clone()),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            image_pull_secrets: (!plan.image_pull_secrets.is_empty()).then(|| {
                plan.image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            host_aliases: (!plan.host_aliases.is_empty()).then(|| {
                plan.host_aliases
                    .iter()
                    .map(|(ip, hostnames)| HostAlias {
                        ip: ip.clone(),
                        hostnames: Some(hostnames.clone()),
                    })
                    .collect()
            }),
            dns_policy: Some(if plan.dns_policy.is_empty() {
                "ClusterFirst".into()
            } else {
                plan.dns_policy.clone()
            }),
            active_deadline_seconds: plan.active_deadline_seconds,
            termination_grace_period_seconds: plan.termination_grace_period_seconds,
            priority_class_name: text(&plan.priority_class_name),
            scheduler_name: text(&plan.scheduler_name),
            runtime_class_name: text(&plan.runtime_class_name),
            ..PodSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> PodPlan {
        PodPlan {
            name: "runner-abc-project-7-concurrent-0-x1y2z3w4".into(),
            namespace: "ci".into(),
            labels: BTreeMap::from([("pod".into(), "runner-abc-project-7-concurrent-0".into())]),
            build: ContainerPlan {
                image: "debian:12".into(),
                pull_policy: "IfNotPresent".into(),
                env: vec![
                    ("CI_JOB_ID".into(), "1".into()),
                    ("PRICE".into(), "$5 $(HOME)".into()),
                    ("CI_JOB_ID".into(), "2".into()),
                ],
                resources: Resources {
                    limits: ResourceValues {
                        memory: "256Mi".into(),
                        ..ResourceValues::default()
                    },
                    ..Resources::default()
                },
                cap_add: vec!["NET_RAW".into(), "SYS_TIME".into()],
                ..ContainerPlan::default()
            },
            helper: ContainerPlan {
                image: "helper:dev".into(),
                env: vec![("IGNORED".into(), "x".into())],
                ..ContainerPlan::default()
            },
            services: vec![
                ContainerPlan {
                    name: "svc-0".into(),
                    image: "redis".into(),
                    ..ContainerPlan::default()
                },
                ContainerPlan {
                    name: "db".into(),
                    image: "postgres".into(),
                    cap_drop: vec!["CHOWN".into()],
                    ..ContainerPlan::default()
                },
            ],
            dirs: Some(PodDirs::new("/builds", "", "/tmp/", 7, 1001)),
            tolerations: BTreeMap::from([
                ("gpu=yes".into(), "NoSchedule".into()),
                ("spot".into(), String::new()),
            ]),
            host_aliases: vec![("127.0.0.1".into(), vec!["db".into()])],
            active_deadline_seconds: Some(3601),
            ..PodPlan::default()
        }
    }

    #[test]
    fn the_attach_strategy_pod_as_upstream_builds_it() {
        let pod = serde_json::to_value(build_pod(&plan())).unwrap();
        let spec = &pod["spec"];
        let names: Vec<&str> = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|container| container["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["build", "helper", "db", "svc-0"]);
        let build = &spec["containers"][0];
        assert_eq!(build["command"][0], "sh");
        assert_eq!(build["command"][2], DETECT_SHELL_SCRIPT);
        assert_eq!(build["stdin"], true);
        assert_eq!(
            build["env"],
            serde_json::json!([
                {"name": "CI_JOB_ID", "value": "2"},
                {"name": "PRICE", "value": "$$5 $$(HOME)"}
            ])
        );
        assert_eq!(
            build["resources"],
            serde_json::json!({"limits": {"memory": "256Mi"}})
        );
        assert_eq!(
            build["securityContext"]["capabilities"],
            serde_json::json!({"add": ["NET_RAW", "SYS_TIME"]})
        );
        assert_eq!(
            spec["containers"][2]["securityContext"]["capabilities"],
            serde_json::json!({"drop": ["CHOWN", "NET_RAW"]})
        );
        assert!(spec["containers"][1].get("env").is_none());
        assert_eq!(
            build["volumeMounts"],
            serde_json::json!([
                {"name": "scripts", "mountPath": "/scripts-7-1001"},
                {"name": "logs", "mountPath": "/tmp/logs-7-1001"},
                {"name": "repo", "mountPath": "/builds"}
            ])
        );
        let init = &spec["initContainers"][0];
        assert_eq!(init["name"], "init-permissions");
        assert_eq!(init["image"], "helper:dev");
        assert_eq!(
            init["command"][2],
            "touch /tmp/logs-7-1001/output.log && (chmod 777 /tmp/logs-7-1001/output.log || exit 0)"
        );
        assert_eq!(
            spec["volumes"],
            serde_json::json!([
                {"name": "repo", "emptyDir": {}},
                {"name": "scripts", "emptyDir": {}},
                {"name": "logs", "emptyDir": {}}
            ])
        );
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["activeDeadlineSeconds"], 3601);
        assert_eq!(
            spec["tolerations"],
            serde_json::json!([
                {"key": "gpu", "value": "yes", "operator": "Equal", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists"}
            ])
        );
        assert_eq!(
            spec["hostAliases"],
            serde_json::json!([{"ip": "127.0.0.1", "hostnames": ["db"]}])
        );
        assert_eq!(pod["metadata"]["namespace"], "ci");
    }

    #[test]
    fn the_legacy_pod_has_neither_scripts_nor_logs_volume_nor_init_container() {
        let mut plan = plan();
        plan.legacy = true;
        let pod = serde_json::to_value(build_pod(&plan)).expect("a pod serializes");
        assert_eq!(pod["spec"]["initContainers"], serde_json::Value::Null);
        assert_eq!(
            pod["spec"]["volumes"],
            serde_json::json!([{"name": "repo", "emptyDir": {}}])
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"],
            serde_json::json!([{"name": "repo", "mountPath": "/builds"}])
        );
    }

    #[test]
    fn the_shell_detection_starts_the_first_shell_there_is() {
        // The arguments pass unquoted, as upstream's: a script path is one word.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("stage");
        std::fs::write(&script, "echo started\n").unwrap();
        for (shell, expected) in [("bash", "bash"), ("sh", "sh")] {
            let output = std::process::Command::new(shell)
                .arg("-c")
                .arg(DETECT_SHELL_SCRIPT)
                .arg("detect")
                .arg(&script)
                .output()
                .unwrap();
            assert!(output.status.success(), "{expected}: {output:?}");
            assert_eq!(String::from_utf8_lossy(&output.stdout), "started\n");
        }
    }
}
