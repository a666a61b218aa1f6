//! The Kubernetes API double's kubelet: each pod the double stores runs on the real Docker
//! engine, through the `docker` command line.
//!
//! A pod is a "pause" container that holds the network namespace (so the pod's containers
//! and services reach each other on localhost, and `hostAliases` are its `/etc/hosts`), one
//! Docker volume per `emptyDir`, bind mounts for `hostPath`, the init containers run one after
//! the other to completion, then every container started in the pause container's network.
//! Containers get the pod spec's `command` (entrypoint) and `args`, `env`, `workingDir`,
//! `stdin`, the memory limit (the kernel's OOM killer ends a container past it, reported as
//! `OOMKilled` with exit code 137), the CPU limit (a CFS quota, as a kubelet sets it),
//! `privileged`, capabilities and `runAsUser`. Images missing from the engine (or any image
//! under `Always`) are pulled unless the policy is `Never`: from a registry on loopback by the
//! engine, from anywhere else never (nothing leaves this machine), failing as a kubelet does
//! when the registry's name does not resolve. A failed pull leaves the container waiting with
//! `ErrImagePull` and that message.
//!
//! The status the kubelet writes (phase, conditions, container states) is what the API server
//! stores and watches report. Deleting a pod removes its containers and volumes at once (a
//! real kubelet stops them with the grace period first).
//!
//! What it is not: a scheduler (every pod is scheduled at once, on its one node labelled as
//! [`node_labels`], unless its `nodeSelector` asks for other labels, which holds it Pending
//! with the scheduler's [`NO_NODE_MATCHES`], or [`KubeletSettings::unschedulable`] holds them
//! all Pending as a full cluster would; affinity and taints are not looked at), a restart
//! policy other than `Never`, probes, or resource requests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// The label every container and volume of one double carries (its instance's id).
pub const INSTANCE_LABEL: &str = "gitlab-runner-rs.kube-double";
/// The label with the pod's uid on its containers and volumes.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// The image of each pod's pause container when none is given: it must have `sleep`.
pub const DEFAULT_INFRA_IMAGE: &str = "gitlab-runner-rs-test/debian-sshd:bookworm-1";

/// How the kubelet runs pods.
#[derive(Debug, Clone)]
pub struct KubeletSettings {
    /// The image of the pause container (it runs `sleep infinity`).
    pub infra_image: String,
    /// The Docker network of the pause container, which every container of the pod shares:
    /// `bridge` (a pod address of its own), or `host` for pods that must reach servers on
    /// the host's loopback (the tests' fake GitLab and git server).
    pub network: String,
    /// When set, no pod is started: each stays Pending with the scheduler's
    /// `PodScheduled=False` condition, reason `Unschedulable` and this message (such as
    /// `0/3 nodes are available: 3 Insufficient memory.`), and the scheduler's Warning event
    /// `FailedScheduling` with it, as on a cluster with no room for the pod. `None` (the
    /// default): every pod is scheduled at once.
    pub unschedulable: Option<String>,
    /// When set, a kernel OOM kill of any process in a container ends the whole container,
    /// as a cgroup-v2 kubelet (Kubernetes 1.28 and later, `memory.oom.group`) has it; the
    /// container is then `OOMKilled` with exit code 137. When not (the default), only the
    /// process the kernel chose dies, as on cgroup v1 and on the engine without a kubelet.
    pub grouped_oom_kill: bool,
}

impl Default for KubeletSettings {
    fn default() -> Self {
        Self {
            infra_image: DEFAULT_INFRA_IMAGE.to_string(),
            network: "bridge".to_string(),
            unschedulable: None,
            grouped_oom_kill: false,
        }
    }
}

/// The one node's labels, as a real kubelet sets them.
pub fn node_labels() -> serde_json::Map<String, Value> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(arch));
    labels.insert("kubernetes.io/hostname".into(), json!("docker-kubelet"));
    labels
}

/// The scheduler's verdict on a pod whose `nodeSelector` no node's labels satisfy (the
/// double has one node).
pub const NO_NODE_MATCHES: &str = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

fn node_selector_matches(selector: &Value) -> bool {
    let labels = node_labels();
    selector
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, wanted)| labels.get(key) == Some(wanted))
}

/// What the API server side tells the kubelet, and how it reaches the store.
pub(crate) trait PodStore: Send + Sync + 'static {
    /// The pod as stored, if it still is (matched by uid, so a new pod of the same name is
    /// another pod).
    fn pod(&self, namespace: &str, name: &str, uid: &str) -> Option<Value>;
    /// Changes the pod's status in place (a MODIFIED event follows); false when it is gone.
    fn update_status(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        change: &mut dyn FnMut(&mut Value),
    ) -> bool;
    /// Records an Event about the pod (`kind` `Normal` or `Warning`).
    fn record_event(&self, pod: &Value, kind: &str, reason: &str, message: &str);
}

/// The Docker name of a pod's container.
pub fn docker_name(instance: &str, pod: &Value, container: &str) -> String {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let short = &uid[uid.len().saturating_sub(12)..];
    format!("{instance}-{short}-{container}")
}

/// Runs `docker` with `args`: its standard output, trimmed, or its standard error.
pub async fn docker(args: &[String]) -> Result<String, String> {
    let output = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|error| format!("docker: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// Kills the container on the engine's first `oom` event for it (the cgroup reached its
/// limit): a grouped OOM kill, which the engine then reports as `OOMKilled`. With the
/// container's own OOM killer disabled (cgroup v1) its processes stay frozen until then, so
/// none of them outlives the others; on cgroup v2 the engine ignores that setting, the kernel
/// kills one process first and the others may run on for the moment before this kill.
/// Events since a minute back are replayed, so one from before this watch began counts.
async fn kill_whole_on_oom(name: String) {
    use tokio::io::AsyncBufReadExt;
    let Ok(mut events) = tokio::process::Command::new("docker")
        .args(["events", "--since", "1m", "--filter", "event=oom"])
        .args(["--format", "{{.Action}}"])
        .args(["--filter", &format!("container={name}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    else {
        return;
    };
    let Some(stdout) = events.stdout.take() else {
        return;
    };
    if let Ok(Some(_)) = tokio::io::BufReader::new(stdout).lines().next_line().await {
        let _ = docker(&strings(&["kill", &name])).await;
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// A kubelet's CFS quota, in microseconds per [`CPU_PERIOD_MICROS`], for a Kubernetes CPU
/// quantity (`500m`, `1`, `1.5`, `2k`): the milli-CPUs times the period over 1000, at least
/// 1000 (the kernel's minimum), as the kubelet's `MilliCPUToQuota` computes it.
pub fn cpu_quota_micros(quantity: &str) -> Option<i64> {
    let quantity = quantity.trim();
    let (number, factor) = match quantity.strip_suffix('m') {
        Some(millis) => (millis, 1.0),
        None => match quantity.strip_suffix('k') {
            Some(thousands) => (thousands, 1e6),
            None => (quantity, 1000.0),
        },
    };
    let number: f64 = number.parse().ok()?;
    if !(number.is_finite() && number >= 0.0) {
        return None;
    }
    let millis = (number * factor).ceil() as i64;
    Some((millis * CPU_PERIOD_MICROS / 1000).max(1000))
}

/// The CFS period a kubelet gives containers with a CPU limit (100 ms).
pub const CPU_PERIOD_MICROS: i64 = 100_000;

/// A Kubernetes memory quantity in bytes (`256Mi`, `1G`, `1000000`), for `docker --memory`.
pub fn memory_bytes(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * factor).ceil() as u64)
}

use crate::kube_api::now;

/// `POST /containers/create?name=` with `body` on the engine's local socket, through `curl`:
/// the engine's message when it refuses.
async fn engine_create(name: String, body: String) -> Result<(), String> {
    let mut child = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail-with-body",
            "--unix-socket",
            "/var/run/docker.sock",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            &format!("http://localhost/containers/create?name={name}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("curl: {error}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(body.as_bytes())
            .await
            .map_err(|error| format!("curl: {error}"))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| format!("curl: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&output.stdout);
        let message = serde_json::from_str::<Value>(&said)
            .ok()
            .and_then(|reply| reply["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{said}{}", String::from_utf8_lossy(&output.stderr)));
        Err(message)
    }
}

/// One pod on the engine.
struct PodRun {
    store: Arc<dyn PodStore>,
    instance: String,
    settings: KubeletSettings,
    namespace: String,
    name: String,
    uid: String,
    pod: Value,
    /// Held (shared) by every step that makes something on the engine while it runs; the
    /// removal of a deleted pod takes it alone, so nothing is made after it lists what to
    /// remove.
    making: Arc<tokio::sync::RwLock<()>>,
}

/// The labels of one pod's containers and volumes: the double's instance (uids repeat across
/// doubles) and the pod's uid.
fn pod_labels(instance: &str, uid: &str) -> Vec<String> {
    vec![
        format!("{INSTANCE_LABEL}={instance}"),
        format!("{POD_UID_LABEL}={uid}"),
    ]
}

impl PodRun {
    fn labels(&self) -> Vec<String> {
        pod_labels(&self.instance, &self.uid)
            .into_iter()
            .flat_map(|label| ["--label".to_string(), label])
            .collect()
    }

    fn volume_name(&self, volume: &str) -> String {
        format!("{}-{volume}", docker_name(&self.instance, &self.pod, "vol"))
    }

    fn update(&self, mut change: impl FnMut(&mut Value)) -> bool {
        self.store
            .update_status(&self.namespace, &self.name, &self.uid, &mut change)
    }

    fn gone(&self) -> bool {
        self.store
            .pod(&self.namespace, &self.name, &self.uid)
            .is_none()
    }

    /// Runs `work`, a step that makes a container or volume, to its end even when the start-up
    /// task is aborted meanwhile (a `docker` or `curl` left to itself would make it after the
    /// pod's removal): it runs in a task of its own holding the pod's `making` lock, which
    /// the removal waits for.
    async fn make<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        // Taken here, before the task exists: an abort before this point makes nothing.
        let held = self.making.clone().read_owned().await;
        tokio::spawn(async move {
            let result = work.await;
            drop(held);
            result
        })
        .await
        .map_err(|error| format!("kubelet: {error}"))?
    }

    /// `docker` with `args` as a step that makes something (see [`Self::make`]).
    async fn docker_make(&self, args: Vec<String>) -> Result<String, String> {
        self.make(async move { docker(&args).await }).await
    }

    /// Whether the pod was deleted while it started; if so, what the start-up made so far goes
    /// (the removal of the deleted pod may have listed the engine before it was made).
    async fn stopped_if_gone(&self) -> bool {
        if !self.gone() {
            return false;
        }
        remove_labelled(pod_labels(&self.instance, &self.uid)).await;
        true
    }

    /// The Engine API mounts of a container's volume mounts.
    fn mounts(&self, container: &Value) -> Vec<Value> {
        let volumes = self.pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut mounts = Vec::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().unwrap_or("");
            let Some(volume) = volumes.iter().find(|volume| volume["name"] == name) else {
                continue;
            };
            let (kind, source) = match volume["hostPath"]["path"].as_str() {
                Some(path) => ("bind", path.to_string()),
                None => ("volume", self.volume_name(name)),
            };
            mounts.push(json!({
                "Type": kind,
                "Source": source,
                "Target": mount["mountPath"],
                "ReadOnly": mount["readOnly"] == true,
            }));
        }
        mounts
    }

    /// Whether `image` is on the engine, pulling it if the policy allows: the waiting reason
    /// and message when it cannot be had.
    async fn ensure_image(&self, container: &Value) -> Result<(), (String, String)> {
        let image = container["image"].as_str().unwrap_or("").to_string();
        let policy = container["imagePullPolicy"]
            .as_str()
            .unwrap_or("IfNotPresent");
        let present = docker(&strings(&[
            "image", "inspect", "--format", "{{.Id}}", &image,
        ]))
        .await
        .is_ok();
        if present && policy != "Always" {
            return Ok(());
        }
        if policy == "Never" {
            return Err((
                "ErrImageNeverPull".into(),
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            ));
        }
        let host = registry_host(&image);
        if !is_loopback_host(&host) {
            // No registry is reachable from here and the double sends nothing off this
            // machine (not even a DNS question): a pull from anywhere but loopback fails as a
            // kubelet's does when the registry's name does not resolve.
            return Err((
                "ErrImagePull".into(),
                format!(
                    "rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": failed to do request: Head \"https://{host}/v2/\": dial tcp: lookup {host}: no such host"
                ),
            ));
        }
        match docker(&strings(&["pull", "--quiet", &image])).await {
            Ok(_) => Ok(()),
            // `Always` with the image present but the registry unreachable still fails, as
            // the kubelet does.
            Err(error) => Err((
                "ErrImagePull".into(),
                format!("failed to pull and unpack image \"{image}\": {error}"),
            )),
        }
    }

    /// The Engine API's create body of one container of the pod. (The `docker create`
    /// command line sets `StdinOnce` with `--interactive`, so the container's stdin would
    /// close when the first attach ends; a Kubernetes container with `stdin: true` and no
    /// `stdinOnce` keeps it open for every attach.)
    fn create_body(&self, container: &Value, infra: &str) -> Value {
        let strings_of = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|part| part.as_str().map(str::to_string))
                .collect()
        };
        let env: Vec<String> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|variable| {
                format!(
                    "{}={}",
                    variable["name"].as_str().unwrap_or(""),
                    variable["value"].as_str().unwrap_or("")
                )
            })
            .collect();
        let security = &container["securityContext"];
        let user = security["runAsUser"]
            .as_i64()
            .map(|user| match security["runAsGroup"].as_i64() {
                Some(group) => format!("{user}:{group}"),
                None => user.to_string(),
            })
            .unwrap_or_default();
        let memory = container["resources"]["limits"]["memory"]
            .as_str()
            .and_then(memory_bytes);
        let cpu_quota = container["resources"]["limits"]["cpu"]
            .as_str()
            .and_then(cpu_quota_micros);
        let command = strings_of(&container["command"]);
        let args = strings_of(&container["args"]);
        let stdin = container["stdin"] == true;
        let mut body = json!({
            "Image": container["image"],
            "Env": env,
            "OpenStdin": stdin,
            "StdinOnce": container["stdinOnce"] == true,
            "AttachStdin": false,
            "Tty": container["tty"] == true,
            "User": user,
            "Labels": {INSTANCE_LABEL: self.instance, POD_UID_LABEL: self.uid},
            "HostConfig": {
                "NetworkMode": format!("container:{infra}"),
                "Privileged": security["privileged"] == true,
                "CapAdd": strings_of(&security["capabilities"]["add"]),
                "CapDrop": strings_of(&security["capabilities"]["drop"]),
                "Mounts": self.mounts(container),
            },
        });
        if let Some(dir) = container["workingDir"].as_str() {
            body["WorkingDir"] = json!(dir);
        }
        if let Some(memory) = memory {
            // No swap beyond the limit: past it, the OOM killer.
            body["HostConfig"]["Memory"] = json!(memory);
            body["HostConfig"]["MemorySwap"] = json!(memory);
            // Frozen at the limit instead of one process killed (cgroup v1), for the
            // grouped kill of `kill_whole_on_oom` to end every process at once.
            body["HostConfig"]["OomKillDisable"] = json!(self.settings.grouped_oom_kill);
        }
        if let Some(quota) = cpu_quota {
            // A quota rather than `NanoCpus`, which the engine refuses above the host's CPU
            // count (a Kubernetes limit may be higher than the node has).
            body["HostConfig"]["CpuPeriod"] = json!(CPU_PERIOD_MICROS);
            body["HostConfig"]["CpuQuota"] = json!(quota);
        }
        // Kubernetes' `command` replaces the entrypoint (and then the image's command is not
        // used), `args` the command.
        if !command.is_empty() {
            body["Entrypoint"] = json!(command);
            body["Cmd"] = json!(args);
        } else if !args.is_empty() {
            body["Cmd"] = json!(args);
        }
        body
    }

    /// Creates the container through the Engine API on the local socket (a step that makes
    /// something, see [`Self::make`]).
    async fn create(&self, container: &Value, infra: &str) -> Result<(), String> {
        let name = docker_name(
            &self.instance,
            &self.pod,
            container["name"].as_str().unwrap_or(""),
        );
        let body = self.create_body(container, infra).to_string();
        self.make(engine_create(name, body)).await
    }

    /// The container's state from the engine, as a Kubernetes `state` object.
    async fn terminated_state(&self, docker_name: &str) -> Value {
        let inspect = docker(&strings(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}} {{.State.OOMKilled}} {{.State.StartedAt}} {{.State.FinishedAt}}",
            docker_name,
        ]))
        .await
        .unwrap_or_default();
        let fields: Vec<&str> = inspect.split(' ').collect();
        let code: i64 = fields
            .first()
            .and_then(|code| code.parse().ok())
            .unwrap_or(137);
        let oom = fields.get(1) == Some(&"true");
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        json!({"terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": fields.get(2).map(|at| rfc3339(at)).unwrap_or_else(now),
            "finishedAt": fields.get(3).map(|at| rfc3339(at)).unwrap_or_else(now),
            "containerID": format!("docker://{docker_name}"),
        }})
    }

    fn container_status(container: &Value, state: Value, ready: bool) -> Value {
        json!({
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": ready,
            "started": state.get("running").is_some(),
            "restartCount": 0,
            "state": state,
        })
    }

    fn set_container_status(&self, list: &'static str, status: Value) {
        self.update(|pod_status| {
            let name = status["name"].clone();
            let statuses = pod_status[list].as_array_mut();
            match statuses {
                Some(statuses) => match statuses.iter_mut().find(|entry| entry["name"] == name) {
                    Some(entry) => *entry = status.clone(),
                    None => statuses.push(status.clone()),
                },
                None => pod_status[list] = json!([status.clone()]),
            }
        });
    }

    /// Whether the container's image is there; if not, the container is left waiting with
    /// the kubelet's reason in `list` (the pod stays Pending, as while the kubelet backs off).
    async fn image_or_waiting(&self, list: &'static str, container: &Value) -> bool {
        match self.ensure_image(container).await {
            Ok(()) => true,
            Err((reason, message)) => {
                // As a kubelet reports a failed pull: a Warning event besides the status.
                if reason == "ErrImagePull" {
                    self.store.record_event(
                        &self.pod,
                        "Warning",
                        "Failed",
                        &format!(
                            "Failed to pull image \"{}\": {message}",
                            container["image"].as_str().unwrap_or_default()
                        ),
                    );
                }
                self.set_container_status(
                    list,
                    Self::container_status(
                        container,
                        json!({"waiting": {"reason": reason, "message": message}}),
                        false,
                    ),
                );
                false
            }
        }
    }

    /// Creates and starts one container of the pod: its Docker name.
    async fn create_and_start(&self, container: &Value, infra: &str) -> Result<String, String> {
        let name = docker_name(
            &self.instance,
            &self.pod,
            container["name"].as_str().unwrap_or(""),
        );
        self.create(container, infra).await?;
        docker(&strings(&["start", &name])).await?;
        Ok(name)
    }

    /// What the scheduler does with a pod no node has room for: it stays Pending, unbound,
    /// with `PodScheduled=False`, reason `Unschedulable` and `message`, and a `FailedScheduling`
    /// Warning event; nothing of it is made on the engine.
    fn hold_unschedulable(&self, message: &str) {
        self.update(|status| {
            status["phase"] = json!("Pending");
            status["conditions"] = json!([{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": now(),
            }]);
        });
        self.store
            .record_event(&self.pod, "Warning", "FailedScheduling", message);
    }

    fn fail_pod(&self, reason: &str, message: &str) {
        self.update(|status| {
            status["phase"] = json!("Failed");
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        });
    }

    /// Starts the pod: volumes, the pause container, the init containers one after the other,
    /// then the app containers; then waits for them to end. It stops (removing what it made)
    /// when the pod is found deleted after any step that made something.
    async fn run(self) {
        if self.gone() {
            return;
        }
        if let Some(message) = &self.settings.unschedulable {
            return self.hold_unschedulable(message);
        }
        if !node_selector_matches(&self.pod["spec"]["nodeSelector"]) {
            return self.hold_unschedulable(NO_NODE_MATCHES);
        }
        let containers = self.pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let init_containers = self.pod["spec"]["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        self.update(|status| {
            status["conditions"] = json!([
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
                {"type": "Initialized", "status": if init_containers.is_empty() { "True" } else { "False" },
                 "lastTransitionTime": now()},
                {"type": "ContainersReady", "status": "False", "lastTransitionTime": now()},
                {"type": "Ready", "status": "False", "lastTransitionTime": now()},
            ]);
            status["hostIP"] = json!("127.0.0.1");
            status["startTime"] = json!(now());
            status["containerStatuses"] = json!(containers
                .iter()
                .map(|container| Self::container_status(
                    container,
                    json!({"waiting": {"reason": "ContainerCreating"}}),
                    false
                ))
                .collect::<Vec<_>>());
        });
        for volume in self.pod["spec"]["volumes"].as_array().into_iter().flatten() {
            if volume.get("hostPath").is_some() {
                continue;
            }
            let mut args = vec!["volume".to_string(), "create".into()];
            args.extend(self.labels());
            args.push(self.volume_name(volume["name"].as_str().unwrap_or("")));
            if let Err(error) = self.docker_make(args).await {
                return self.fail_pod("VolumeFailed", &error);
            }
            if self.stopped_if_gone().await {
                return;
            }
        }
        let infra = docker_name(&self.instance, &self.pod, "pause");
        let mut args = vec![
            "run".to_string(),
            "--detach".into(),
            "--name".into(),
            infra.clone(),
            "--network".into(),
            self.settings.network.clone(),
        ];
        args.extend(self.labels());
        for alias in self.pod["spec"]["hostAliases"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let ip = alias["ip"].as_str().unwrap_or("");
            for host in alias["hostnames"].as_array().into_iter().flatten() {
                args.push("--add-host".into());
                args.push(format!("{}:{ip}", host.as_str().unwrap_or("")));
            }
        }
        args.extend(strings(&[
            "--entrypoint",
            "sleep",
            &self.settings.infra_image,
            "infinity",
        ]));
        if let Err(error) = self.docker_make(args).await {
            return self.fail_pod("SandboxFailed", &error);
        }
        if self.stopped_if_gone().await {
            return;
        }
        let pod_ip = docker(&strings(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}}",
            &infra,
        ]))
        .await
        .unwrap_or_default();
        let pod_ip = if pod_ip.is_empty() {
            "127.0.0.1".to_string()
        } else {
            pod_ip
        };
        let pod_ip = if pod_ip.is_empty() {
            "127.0.0.1".to_string()
        } else {
            pod_ip
        };
        self.update(|status| status["podIP"] = json!(pod_ip));

        for container in &init_containers {
            if self.gone() {
                return;
            }
            if !self
                .image_or_waiting("initContainerStatuses", container)
                .await
            {
                return;
            }
            let name = match self.create_and_start(container, &infra).await {
                Ok(name) => name,
                Err(error) => return self.fail_pod("InitFailed", &error),
            };
            if self.stopped_if_gone().await {
                return;
            }
            let _ = docker(&strings(&["wait", &name])).await;
            let state = self.terminated_state(&name).await;
            let failed = state["terminated"]["exitCode"] != 0;
            self.set_container_status(
                "initContainerStatuses",
                Self::container_status(container, state, false),
            );
            if failed {
                return self.fail_pod("", "");
            }
        }
        self.update(|status| set_condition(status, "Initialized", true));

        for container in &containers {
            if self.gone() {
                return;
            }
            if !self.image_or_waiting("containerStatuses", container).await {
                return;
            }
        }
        for container in &containers {
            if let Err(error) = self.create_and_start(container, &infra).await {
                self.set_container_status(
                    "containerStatuses",
                    Self::container_status(
                        container,
                        json!({"waiting": {"reason": "CreateContainerError", "message": error}}),
                        false,
                    ),
                );
                return;
            }
            if self.stopped_if_gone().await {
                return;
            }
        }
        let run = Arc::new(self);
        run.update(|status| {
            status["phase"] = json!("Running");
            set_condition(status, "ContainersReady", true);
            set_condition(status, "Ready", true);
            status["containerStatuses"] = json!(containers
                .iter()
                .map(|container| Self::container_status(
                    container,
                    json!({"running": {"startedAt": now()}}),
                    true
                ))
                .collect::<Vec<_>>());
        });
        let mut waiters = Vec::new();
        for container in containers.clone() {
            let run = run.clone();
            waiters.push(tokio::spawn(async move {
                let name = docker_name(
                    &run.instance,
                    &run.pod,
                    container["name"].as_str().unwrap_or(""),
                );
                let grouped = run
                    .settings
                    .grouped_oom_kill
                    .then(|| tokio::spawn(kill_whole_on_oom(name.clone())));
                let waited = docker(&strings(&["wait", &name])).await;
                if let Some(grouped) = grouped {
                    grouped.abort();
                }
                if waited.is_err() || run.gone() {
                    return None;
                }
                let state = run.terminated_state(&name).await;
                let code = state["terminated"]["exitCode"].as_i64().unwrap_or(1);
                run.set_container_status(
                    "containerStatuses",
                    Self::container_status(&container, state, false),
                );
                run.update(|status| {
                    set_condition(status, "ContainersReady", false);
                    set_condition(status, "Ready", false);
                });
                Some(code)
            }));
        }
        let mut codes = Vec::new();
        for waiter in waiters {
            match waiter.await {
                Ok(Some(code)) => codes.push(code),
                _ => return,
            }
        }
        let phase = if codes.iter().all(|code| *code == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
        run.update(|status| status["phase"] = json!(phase));
    }
}

fn set_condition(status: &mut Value, kind: &str, value: bool) {
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for condition in conditions.iter_mut() {
            if condition["type"] == kind {
                condition["status"] = json!(if value { "True" } else { "False" });
                condition["lastTransitionTime"] = json!(now());
            }
        }
    }
}

/// Docker's `2026-12-02T20:31:10.123456789Z` as Kubernetes writes times (whole seconds).
fn rfc3339(docker_time: &str) -> String {
    match docker_time.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => docker_time.to_string(),
    }
}

/// The start-up of one pod: its task, and what its steps that make something hold.
struct Started {
    task: tokio::task::JoinHandle<()>,
    making: Arc<tokio::sync::RwLock<()>>,
}

/// The kubelet of one double: starts pods as they are created, removes them as they are
/// deleted. The API server calls it from its create and delete handlers, in the order of the
/// store's changes.
pub(crate) struct Kubelet {
    pub(crate) instance: String,
    settings: KubeletSettings,
    store: Arc<dyn PodStore>,
    /// The runtime the double started on: pods start and go on it whoever deletes them
    /// (a test's thread, too).
    runtime: tokio::runtime::Handle,
    /// The start-up of each pod not deleted yet, by uid.
    running: Mutex<HashMap<String, Started>>,
}

impl Kubelet {
    /// The kubelet of the double `instance`, on the current runtime.
    pub(crate) fn new(
        instance: String,
        settings: KubeletSettings,
        store: Arc<dyn PodStore>,
    ) -> Self {
        Self {
            instance,
            settings,
            store,
            runtime: tokio::runtime::Handle::current(),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// A pod was created: run it.
    pub(crate) fn pod_added(&self, pod: &Value) {
        let making = Arc::new(tokio::sync::RwLock::new(()));
        let uid: String = pod["metadata"]["uid"].as_str().unwrap_or("").into();
        let run = PodRun {
            store: self.store.clone(),
            instance: self.instance.clone(),
            settings: self.settings.clone(),
            namespace: pod["metadata"]["namespace"].as_str().unwrap_or("").into(),
            name: pod["metadata"]["name"].as_str().unwrap_or("").into(),
            uid: uid.clone(),
            pod: pod.clone(),
            making: making.clone(),
        };
        let task = self.runtime.spawn(run.run());
        if let Ok(mut running) = self.running.lock() {
            // Pods whose start-up is over (they ran to their end) have nothing to stop.
            running.retain(|_, started| !started.task.is_finished());
            running.insert(uid, Started { task, making });
        }
    }

    /// A pod was deleted: its start-up stops, then its containers and volumes go.
    pub(crate) fn pod_deleted(&self, pod: &Value) {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let started = self
            .running
            .lock()
            .ok()
            .and_then(|mut running| running.remove(&uid));
        if let Some(started) = &started {
            started.task.abort();
        }
        let labels = pod_labels(&self.instance, &uid);
        self.runtime.spawn(async move {
            // The task ends at its next await; a step that was making something finishes
            // first (it holds `making`), so the listing below sees what it made.
            let _alone = match started {
                Some(started) => {
                    let _ = started.task.await;
                    Some(started.making.write_owned().await)
                }
                None => None,
            };
            remove_labelled(labels).await;
        });
    }

    /// Removes everything of this double, now (when the double stops).
    pub(crate) fn remove_all_now(&self) {
        if let Ok(running) = self.running.lock() {
            for started in running.values() {
                started.task.abort();
            }
        }
        let filter = format!("label={INSTANCE_LABEL}={}", self.instance);
        remove_by_filter_blocking(&filter);
    }
}

/// Removes the containers, then the volumes, carrying every one of `labels`.
pub async fn remove_labelled(labels: Vec<String>) {
    let filters: Vec<String> = labels
        .iter()
        .flat_map(|label| ["--filter".to_string(), format!("label={label}")])
        .collect();
    let mut list = strings(&["ps", "-aq"]);
    list.extend(filters.iter().cloned());
    if let Ok(ids) = docker(&list).await {
        let ids: Vec<String> = ids.split_whitespace().map(str::to_string).collect();
        if !ids.is_empty() {
            let mut args = strings(&["rm", "--force", "--volumes"]);
            args.extend(ids);
            let _ = docker(&args).await;
        }
    }
    let mut list = strings(&["volume", "ls", "-q"]);
    list.extend(filters);
    if let Ok(names) = docker(&list).await {
        let names: Vec<String> = names.split_whitespace().map(str::to_string).collect();
        if !names.is_empty() {
            let mut args = strings(&["volume", "rm", "--force"]);
            args.extend(names);
            let _ = docker(&args).await;
        }
    }
}

fn remove_by_filter_blocking(filter: &str) {
    let list = |args: &[&str]| -> Vec<String> {
        std::process::Command::new("docker")
            .args(args)
            .output()
            .map(|output| {
                String::from_utf8_lossy(&output.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = list(&["ps", "-aq", "--filter", filter]);
    if !containers.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "--force", "--volumes"])
            .args(&containers)
            .output();
    }
    let volumes = list(&["volume", "ls", "-q", "--filter", filter]);
    if !volumes.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "--force"])
            .args(&volumes)
            .output();
    }
}

/// The containers and volumes of the double `instance` still on the engine.
pub fn leftovers(instance: &str) -> Vec<String> {
    let filter = format!("label={INSTANCE_LABEL}={instance}");
    let mut found = Vec::new();
    for args in [
        vec![
            "ps",
            "-a",
            "--format",
            "container {{.Names}}",
            "--filter",
            &filter,
        ],
        vec![
            "volume",
            "ls",
            "--format",
            "volume {{.Name}}",
            "--filter",
            &filter,
        ],
    ] {
        if let Ok(output) = std::process::Command::new("docker").args(&args).output() {
            found.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    found
}

/// The registry an image reference names (Docker Hub's when it names none).
fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_string(),
        _ => "registry-1.docker.io".to_string(),
    }
}

/// Whether a registry host (with its port) is on this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_become_bytes() {
        assert_eq!(memory_bytes("256Mi"), Some(256 * 1024 * 1024));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(memory_bytes("128974848"), Some(128_974_848));
        assert_eq!(memory_bytes("12q"), None);
    }

    #[test]
    fn cpu_quantities_become_a_kubelets_cfs_quota() {
        assert_eq!(cpu_quota_micros("500m"), Some(50_000));
        assert_eq!(cpu_quota_micros("1"), Some(100_000));
        assert_eq!(cpu_quota_micros("1.5"), Some(150_000));
        assert_eq!(cpu_quota_micros("2"), Some(200_000));
        // The kernel's minimum quota.
        assert_eq!(cpu_quota_micros("1m"), Some(1000));
        assert_eq!(cpu_quota_micros("many"), None);
    }

    #[test]
    fn docker_times_lose_their_fraction() {
        assert_eq!(
            rfc3339("2026-12-02T20:31:10.123456789Z"),
            "2026-12-02T20:31:10Z"
        );
    }
}
