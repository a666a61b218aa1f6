//! Reading a job pod's status while it starts and while it runs (upstream's
//! `waitForPodRunning`, `checkTerminalContainerErrors` and the stage's pod poller): whether it
//! is ready, the "Waiting for pod" line and its condition lines, the terminal container states
//! that end the wait at once with their failure reason, and a container that died under a
//! stage, with the OOM killer named.
//!
//! Beyond upstream: [`WaitReporter`] prints the scheduler's or kubelet's reasons when they
//! change, not on every poll, and the final "timed out" error names what held the pod.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use runner_core::failure::{classify_image_pull_failure, FailureReason};

use crate::pod::BUILD_CONTAINER;

/// Why the pod cannot be used, with the job's failure reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PodProblem {
    /// Upstream's text.
    pub message: String,
    /// How the job fails.
    pub reason: FailureReason,
    /// The container whose image could not be pulled, for the pull-policy fallback.
    pub pull_failed: Option<PullFailure>,
}

/// A container's failed image pull (upstream's `ImagePullError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullFailure {
    /// The container.
    pub container: String,
    /// Its image.
    pub image: String,
    /// The kubelet's message.
    pub message: String,
}

/// What one look at the starting pod says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartState {
    /// Running, with the build container ready.
    Ready,
    /// Not yet; the lines are upstream's "Waiting for pod" line and its condition lines.
    Waiting(Vec<String>),
    /// It will not start.
    Failed(PodProblem),
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    status
        .and_then(|status| status.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|status| status.init_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
}

fn image_of(pod: &Pod, container: &str) -> String {
    let spec = pod.spec.as_ref();
    spec.map(|spec| spec.containers.iter())
        .into_iter()
        .flatten()
        .chain(
            spec.and_then(|spec| spec.init_containers.as_ref())
                .into_iter()
                .flatten(),
        )
        .find(|candidate| candidate.name == container)
        .and_then(|candidate| candidate.image.clone())
        .unwrap_or_default()
}

/// Upstream's terminal waiting reasons of a container that is not ready.
pub fn terminal_container_problem(pod: &Pod) -> Option<PodProblem> {
    for status in statuses(pod) {
        if status.ready {
            continue;
        }
        let Some(waiting) = status
            .state
            .as_ref()
            .and_then(|state| state.waiting.as_ref())
        else {
            continue;
        };
        let message = waiting.message.clone().unwrap_or_default();
        let problem = |text: String, reason: FailureReason| PodProblem {
            message: text,
            reason,
            pull_failed: None,
        };
        match waiting.reason.as_deref().unwrap_or("") {
            "ErrImagePull" | "ImagePullBackOff" => {
                let image = image_of(pod, &status.name);
                return Some(PodProblem {
                    message: format!(
                        "pulling image {image:?} for container {}: image pull failed: {message}",
                        status.name
                    ),
                    reason: classify_image_pull_failure(&message),
                    pull_failed: Some(PullFailure {
                        container: status.name.clone(),
                        image,
                        message,
                    }),
                });
            }
            "InvalidImageName" => {
                return Some(problem(
                    format!("image pull failed: {message}"),
                    FailureReason::RunnerConfigurationError,
                ))
            }
            "CrashLoopBackOff" => {
                let last = status
                    .last_state
                    .as_ref()
                    .and_then(|state| state.terminated.as_ref())
                    .and_then(|terminated| terminated.message.clone())
                    .filter(|text| !text.is_empty())
                    .map(|text| format!(": {text}"))
                    .unwrap_or_default();
                return Some(problem(
                    format!(
                        "container {:?} is in CrashLoopBackOff: {message}{last}",
                        status.name
                    ),
                    FailureReason::RunnerConfigurationError,
                ));
            }
            "CreateContainerConfigError" => {
                return Some(problem(
                    format!("container configuration error: {message}"),
                    FailureReason::RunnerConfigurationError,
                ))
            }
            _ => {}
        }
    }
    None
}

/// One look at the pod while waiting for it to run.
pub fn start_state(pod: &Pod, namespace: &str) -> StartState {
    let name = pod.metadata.name.clone().unwrap_or_default();
    match phase(pod) {
        "Running" => {
            let build_ready =
                statuses(pod).any(|status| status.name == BUILD_CONTAINER && status.ready);
            if build_ready {
                return StartState::Ready;
            }
        }
        "Succeeded" => {
            return StartState::Failed(PodProblem {
                message: "pod already succeeded before it begins running".into(),
                reason: FailureReason::RunnerSystemFailure,
                pull_failed: None,
            })
        }
        "Failed" => {
            return StartState::Failed(PodProblem {
                message: "pod status is failed".into(),
                reason: FailureReason::RunnerSystemFailure,
                pull_failed: None,
            })
        }
        _ => {}
    }
    if let Some(problem) = terminal_container_problem(pod) {
        return StartState::Failed(problem);
    }
    let node = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .unwrap_or_else(|| "<unknown>".into());
    let mut lines = vec![format!(
        "Waiting for pod {namespace}/{name} to be running on the node {node}, status is {}",
        phase(pod)
    )];
    for condition in pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(reason) = condition
            .reason
            .as_deref()
            .filter(|reason| !reason.is_empty())
        {
            lines.push(format!(
                "\t{reason}: {:?}",
                condition.message.clone().unwrap_or_default()
            ));
        }
    }
    StartState::Waiting(lines)
}

/// Upstream's eviction, preemption or node-drain notice: the pod's `DisruptionTarget`
/// condition is true (`pod "<ns>/<pod>" is disrupted: reason "<r>", message "<m>"`).
pub fn disrupted(pod: &Pod, namespace: &str) -> Option<String> {
    let condition = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|condition| condition.type_ == "DisruptionTarget" && condition.status == "True")?;
    // Go's %q: quoted, with embedded quotes and control characters escaped.
    Some(format!(
        "pod {:?} is disrupted: reason {:?}, message {:?}",
        format!(
            "{namespace}/{}",
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
        condition.reason.as_deref().unwrap_or_default(),
        condition.message.as_deref().unwrap_or_default()
    ))
}

/// The containers (not init containers: those end by design) that have terminated, each with
/// upstream's `Error in container <c>: exit code: <n>, reason: '<reason>'` and, beyond
/// upstream, the memory limit when the OOM killer ended it.
fn terminated_containers(pod: &Pod) -> Vec<(String, String)> {
    let containers = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .into_iter()
        .flatten();
    let mut ended = Vec::new();
    for status in containers {
        let Some(terminated) = status
            .state
            .as_ref()
            .and_then(|state| state.terminated.as_ref())
        else {
            continue;
        };
        let reason = terminated.reason.clone().unwrap_or_default();
        let mut message = format!(
            "Error in container {}: exit code: {}, reason: '{reason}'",
            status.name, terminated.exit_code
        );
        if reason == "OOMKilled" {
            let limit = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.containers.iter().find(|c| c.name == status.name))
                .and_then(|container| container.resources.as_ref())
                .and_then(|resources| resources.limits.as_ref())
                .and_then(|limits| limits.get("memory"))
                .map(|quantity| quantity.0.clone());
            message.push_str(&match limit {
                Some(limit) => {
                    format!(" (container {} was OOM-killed, limit {limit})", status.name)
                }
                None => format!(" (container {} was OOM-killed)", status.name),
            });
        }
        ended.push((status.name.clone(), message));
    }
    ended
}

fn is_job_container(name: &str) -> bool {
    name == crate::pod::BUILD_CONTAINER || name == crate::pod::HELPER_CONTAINER
}

/// A build or helper container that ended under a running stage ([`terminated_containers`]'
/// text): the stage cannot go on.
pub fn died_under_stage(pod: &Pod) -> Option<PodProblem> {
    terminated_containers(pod)
        .into_iter()
        .find(|(name, _)| is_job_container(name))
        .map(|(_, message)| PodProblem {
            message,
            reason: FailureReason::RunnerSystemFailure,
            pull_failed: None,
        })
}

/// The service containers that have ended (name and text), for a warning in the job log:
/// beyond upstream, which does not look, but not a runner failure either (a service that
/// exits may be done, or misconfigured by the job).
pub fn ended_services(pod: &Pod) -> Vec<(String, String)> {
    terminated_containers(pod)
        .into_iter()
        .filter(|(name, _)| !is_job_container(name))
        .collect()
}

/// Prints each distinct set of waiting lines once: the first poll's, then only when the
/// reasons change. The last set is kept for the timeout's error.
#[derive(Debug, Default)]
pub struct WaitReporter {
    last: Vec<String>,
}

impl WaitReporter {
    /// The lines to print for this poll (none when nothing changed).
    pub fn report(&mut self, lines: &[String]) -> Vec<String> {
        if lines == self.last.as_slice() {
            return Vec::new();
        }
        self.last = lines.to_vec();
        lines.to_vec()
    }

    /// Upstream's timeout error, with what the last poll said held the pod.
    pub fn timed_out(&self, last_phase: &str) -> String {
        let held: Vec<&str> = self
            .last
            .iter()
            .skip(1)
            .map(|line| line.trim_start_matches('\t'))
            .collect();
        let mut message = format!("timed out waiting for pod to start (last phase: {last_phase})");
        if !held.is_empty() {
            message.push_str(&format!("; {}", held.join("; ")));
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn spec() -> serde_json::Value {
        serde_json::json!({"containers": [
            {"name": "build", "image": "app:2", "resources": {"limits": {"memory": "256Mi"}}},
            {"name": "helper", "image": "helper:dev"}
        ]})
    }

    #[test]
    fn a_pending_pod_reports_its_scheduler_reason_once_per_change() {
        let pending = pod(serde_json::json!({
            "metadata": {"name": "job-pod"},
            "spec": spec(),
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient memory."}
            ]}
        }));
        let StartState::Waiting(lines) = start_state(&pending, "ci") else {
            panic!("waiting")
        };
        assert_eq!(
            lines,
            [
                "Waiting for pod ci/job-pod to be running on the node <unknown>, status is Pending",
                "\tUnschedulable: \"0/3 nodes are available: 3 Insufficient memory.\""
            ]
        );
        let mut reporter = WaitReporter::default();
        assert_eq!(reporter.report(&lines).len(), 2);
        assert!(reporter.report(&lines).is_empty(), "the same reasons again");
        assert_eq!(
            reporter.timed_out("Pending"),
            "timed out waiting for pod to start (last phase: Pending); Unschedulable: \"0/3 nodes are available: 3 Insufficient memory.\""
        );
    }

    #[test]
    fn image_pull_failures_end_the_wait_with_upstreams_text_and_classification() {
        let failing = |message: &str| {
            pod(serde_json::json!({
                "metadata": {"name": "job-pod"},
                "spec": spec(),
                "status": {"phase": "Pending", "containerStatuses": [
                    {"name": "build", "image": "app:2", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "ErrImagePull", "message": message}}}
                ]}
            }))
        };
        let StartState::Failed(problem) = start_state(
            &failing("manifest for app:2 not found: manifest unknown"),
            "ci",
        ) else {
            panic!("failed")
        };
        assert_eq!(
            problem.message,
            "pulling image \"app:2\" for container build: image pull failed: manifest for app:2 not found: manifest unknown"
        );
        assert_eq!(problem.reason, FailureReason::RunnerConfigurationError);
        assert_eq!(
            problem
                .pull_failed
                .map(|failure| (failure.container, failure.image)),
            Some(("build".to_string(), "app:2".to_string()))
        );
        let StartState::Failed(problem) = start_state(
            &failing("dial tcp 10.0.0.1:443: connect: connection refused"),
            "ci",
        ) else {
            panic!("failed")
        };
        assert_eq!(
            problem.reason,
            FailureReason::RunnerExternalDependencyFailure
        );
    }

    #[test]
    fn running_with_a_ready_build_container_is_ready() {
        let running = pod(serde_json::json!({
            "metadata": {"name": "job-pod"},
            "spec": spec(),
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "build", "image": "app:2", "imageID": "x", "ready": true, "restartCount": 0,
                 "state": {"running": {}}}
            ]}
        }));
        assert_eq!(start_state(&running, "ci"), StartState::Ready);
    }

    #[test]
    fn an_oom_killed_container_is_named_with_its_limit() {
        let killed = pod(serde_json::json!({
            "metadata": {"name": "job-pod"},
            "spec": spec(),
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "build", "image": "app:2", "imageID": "x", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ]}
        }));
        let problem = died_under_stage(&killed).unwrap();
        assert_eq!(
            problem.message,
            "Error in container build: exit code: 137, reason: 'OOMKilled' (container build was OOM-killed, limit 256Mi)"
        );
        assert_eq!(problem.reason, FailureReason::RunnerSystemFailure);
    }
}
