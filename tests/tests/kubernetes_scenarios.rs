//! The Kubernetes scenarios that run unchanged on any cluster: against the API double with its
//! Docker-backed kubelet by default, against a real cluster when `RUNNER_TEST_KUBECONFIG`
//! names one (`runner_tests::cluster` lists the variables). The runner binary finds the
//! cluster through `KUBECONFIG`; the test looks at the cluster through the Kubernetes API
//! only. Nothing here injects a fault or reads the double's store: those scenarios are in
//! `kubernetes_e2e.rs` and `kubernetes_failures_e2e.rs`, which need the double.
//!
//! Needs the Docker engine when no cluster is named; never skipped.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::time::Duration;

use runner_tests::cluster::Cluster;
use runner_tests::kube_jobs::{log_lines, output_lines};
use runner_tests::{
    declare_failure_reasons, job_payload, runner_binary, FakeGitlab, JobControl, RunnerProcess,
};
use serde_json::json;

/// Generous: a real cluster may pull the images first.
const WAIT: Duration = Duration::from_secs(300);

struct Runner {
    _process: RunnerProcess,
    _dir: tempfile::TempDir,
}

/// A runner of `executor = "kubernetes"` on `cluster`; `extra` is more of
/// `[runners.kubernetes]`.
fn start_runner(gitlab: &FakeGitlab, token: &str, cluster: &Cluster, extra: &str) -> Runner {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 2\ncheck_interval = 1\n\n[[runners]]\n  name = \"scenarios\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"kubernetes\"\n{}",
            gitlab.url(),
            cluster.runner_section(extra)
        ),
    )
    .unwrap();
    let env = cluster.runner_env();
    let env: Vec<(&str, &std::ffi::OsStr)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_os_str()))
        .collect();
    Runner {
        _process: RunnerProcess::spawn(&runner_binary(), &config, dir.path(), &env),
        _dir: dir,
    }
}

/// A job that fetches nothing (`GIT_STRATEGY: none`: the pod need not reach this machine).
fn job(script: &[&str], after_script: &[&str], timeout: i64) -> serde_json::Value {
    let mut payload = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        after_script,
        json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
        timeout,
    );
    declare_failure_reasons(&mut payload);
    payload
}

fn add_variable(payload: &mut serde_json::Value, variable: serde_json::Value) {
    payload["variables"].as_array_mut().unwrap().push(variable);
}

fn has_line(log: &str, text: &str) -> bool {
    output_lines(log, text) > 0
}

async fn final_log(gitlab: &FakeGitlab, job: JobControl) -> (runner_tests::RecordedUpdate, String) {
    let update = gitlab.wait_final(job, WAIT).await;
    (update, gitlab.log(job))
}

/// A script's output with a masked variable hidden, `exit 42` as the job's exit code with
/// `script_failure`, and `after_script` run after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_fails_with_its_exit_code_masks_a_secret_and_runs_after_script() {
    let cluster = Cluster::from_env().await;
    let token = "glrt-t1_k8sscen01";
    let gitlab = FakeGitlab::start(token).await;
    let mut payload = job(
        &["echo \"the secret is $SCENARIO_SECRET\"", "exit 42"],
        &["echo after-script-ran"],
        300,
    );
    add_variable(
        &mut payload,
        json!({"key": "SCENARIO_SECRET", "value": "k8s-s3cr3t-value", "public": false, "masked": true}),
    );
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, token, &cluster, "");
    let (update, log) = final_log(&gitlab, job).await;
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("script_failure"),
        "{log}"
    );
    assert_eq!(update.exit_code, Some(42), "{log}");
    assert!(has_line(&log, "the secret is [MASKED]"), "{log}");
    assert!(!log.contains("k8s-s3cr3t-value"), "{log}");
    assert!(has_line(&log, "after-script-ran"), "{log}");
    assert!(
        has_line(
            &log,
            "ERROR: Job failed: command terminated with exit code 42"
        ),
        "{log}"
    );
    cluster.assert_nothing_left("k8sscen01").await;
}

/// A service (sshd from the job image) waited for by its `HEALTHCHECK_TCP_PORT` and reached
/// through its alias, on the pod's localhost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_waited_for_and_reached_by_its_alias() {
    let cluster = Cluster::from_env().await;
    let token = "glrt-t1_k8sscen02";
    let gitlab = FakeGitlab::start(token).await;
    let mut payload = job(
        &["exec 3<>/dev/tcp/ssh.service/2222; head -c 7 <&3; echo"],
        &[],
        300,
    );
    payload["services"] = json!([{
        "name": cluster.image,
        "alias": "ssh.service",
        "entrypoint": ["sh", "-c"],
        "command": ["sleep 2; mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -p 2222"],
        "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "2222"}],
    }]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, token, &cluster, "");
    let (update, log) = final_log(&gitlab, job).await;
    assert_eq!(update.state, "success", "{log}");
    assert!(has_line(&log, "SSH-2.0"), "{log}");
    cluster.assert_nothing_left("k8sscen02").await;
}

/// A job over its timeout is stopped with upstream's message and `job_execution_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_timeout_is_stopped() {
    let cluster = Cluster::from_env().await;
    let token = "glrt-t1_k8sscen03";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(job(&["echo started; sleep 120; echo never-here"], &[], 20));
    let _runner = start_runner(&gitlab, token, &cluster, "");
    let (update, log) = final_log(&gitlab, job).await;
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("job_execution_timeout"),
        "{log}"
    );
    assert!(
        has_line(
            &log,
            "ERROR: Job failed: execution took longer than 20s seconds"
        ),
        "{log}"
    );
    assert!(!has_line(&log, "never-here"), "{log}");
    cluster.assert_nothing_left("k8sscen03").await;
}

/// A job canceled in GitLab: the script's TERM trap runs in the pod. (It prints, so the runner
/// learns of the cancel from its next trace update; a quiet job learns it at the 30 s touch.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cancel_reaches_the_scripts_term_trap() {
    let cluster = Cluster::from_env().await;
    let token = "glrt-t1_k8sscen04";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(job(
        &["trap 'echo got-sig''term; exit 3' TERM; echo cancel-me; while true; do echo tick; sleep 0.2; done"],
        &[],
        600,
    ));
    let _runner = start_runner(&gitlab, token, &cluster, "");
    gitlab.wait_log(job, "cancel-me", WAIT).await;
    gitlab.cancel(job);
    let (update, log) = final_log(&gitlab, job).await;
    assert_eq!(update.state, "failed", "{log}");
    assert!(has_line(&log, "got-sigterm"), "{log}");
    cluster.assert_nothing_left("k8sscen04").await;
}

/// A process past the build container's `memory_limit` is killed by the kernel. Where the
/// kubelet groups a container's OOM kills (cgroup v2 with `memory.oom.group`, Kubernetes 1.28
/// and later) the whole container goes, which the runner names; elsewhere (the double) only
/// the process, and the script ends with 137.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_past_the_memory_limit_is_killed() {
    let cluster = Cluster::from_env().await;
    let token = "glrt-t1_k8sscen05";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(job(
        &["echo eating", "head -c 400m /dev/zero | tail > /dev/null"],
        &[],
        300,
    ));
    let _runner = start_runner(&gitlab, token, &cluster, "    memory_limit = \"96Mi\"\n");
    let (update, log) = final_log(&gitlab, job).await;
    assert_eq!(update.state, "failed", "{log}");
    let process_killed =
        update.failure_reason.as_deref() == Some("script_failure") && update.exit_code == Some(137);
    let container_killed = update.failure_reason.as_deref() == Some("runner_system_failure")
        && log.contains("container build was OOM-killed, limit 96Mi");
    assert!(process_killed || container_killed, "{update:?}\n{log}");
    if cluster.is_double() {
        assert!(process_killed, "{update:?}\n{log}");
    }
    cluster.assert_nothing_left("k8sscen05").await;
}

/// A pod no node can take (a node selector nothing matches) stays Pending; the scheduler's
/// reason is printed and after `poll_timeout` the job fails as a system failure with
/// upstream's message in the `prepare environment` wrapper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_no_node_can_take_fails_after_poll_timeout() {
    let cluster = Cluster::from_env().await;
    let token = "glrt-t1_k8sscen06";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(job(&["echo never-scheduled"], &[], 300));
    let _runner = start_runner(
        &gitlab,
        token,
        &cluster,
        "    poll_timeout = 8\n    [runners.kubernetes.node_selector]\n      \"gitlab-runner-rs.test/no-such-node\" = \"true\"\n",
    );
    let (update, log) = final_log(&gitlab, job).await;
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "{log}"
    );
    assert!(
        log_lines(&log)
            .iter()
            .any(|line| line.starts_with("\tUnschedulable: ")
                && line.contains("didn't match Pod's node affinity/selector")),
        "{log}"
    );
    assert!(
        log.contains("ERROR: Job failed (system failure): prepare environment: waiting for pod running: timed out waiting for pod to start (last phase: Pending)"),
        "{log}"
    );
    assert!(!has_line(&log, "never-scheduled"), "{log}");
    cluster.assert_nothing_left("k8sscen06").await;
}

/// An image nobody can pull from (nothing listens on port 1 of the node) fails at once as
/// upstream classifies it, well before `poll_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_as_a_dependency_failure() {
    let cluster = Cluster::from_env().await;
    let token = "glrt-t1_k8sscen07";
    let gitlab = FakeGitlab::start(token).await;
    let mut payload = job(&["echo never-ran"], &[], 300);
    payload["image"] = json!({"name": "127.0.0.1:1/missing/image:1"});
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, token, &cluster, "");
    let (update, log) = final_log(&gitlab, job).await;
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_external_dependency_failure"),
        "{log}"
    );
    assert!(
        log.contains(
            "pulling image \"127.0.0.1:1/missing/image:1\" for container build: image pull failed:"
        ),
        "{log}"
    );
    assert!(!has_line(&log, "never-ran"), "{log}");
    cluster.assert_nothing_left("k8sscen07").await;
}

/// A memory limit overwrite within `memory_limit_overwrite_max_allowed` reaches the build
/// container's cgroup; one beyond it is refused with upstream's message before any pod is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_overwrite_is_applied_within_its_maximum_and_refused_beyond() {
    let cluster = Cluster::from_env().await;
    let token = "glrt-t1_k8sscen08";
    let gitlab = FakeGitlab::start(token).await;
    let mut within = job(
        &["echo \"limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)\""],
        &[],
        300,
    );
    add_variable(
        &mut within,
        json!({"key": "KUBERNETES_MEMORY_LIMIT", "value": "200Mi", "public": true}),
    );
    let mut beyond = job(&["echo never-ran"], &[], 300);
    add_variable(
        &mut beyond,
        json!({"key": "KUBERNETES_MEMORY_LIMIT", "value": "512Mi", "public": true}),
    );
    let within = gitlab.enqueue(within);
    let _runner = start_runner(
        &gitlab,
        token,
        &cluster,
        "    memory_limit = \"128Mi\"\n    memory_limit_overwrite_max_allowed = \"256Mi\"\n",
    );
    let (update, log) = final_log(&gitlab, within).await;
    assert_eq!(update.state, "success", "{log}");
    assert!(
        has_line(&log, "\"MemoryLimit\" overwritten with \"200Mi\""),
        "{log}"
    );
    assert!(
        has_line(&log, &format!("limit={}", 200 * 1024 * 1024)),
        "{log}"
    );
    let beyond = gitlab.enqueue(beyond);
    let (update, log) = final_log(&gitlab, beyond).await;
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_configuration_error"),
        "{log}"
    );
    assert!(
        has_line(
            &log,
            "ERROR: Job failed: couldn't prepare overwrites: invalid build limits specified: the resource \"MemoryLimit\" requested \"512Mi\" is higher than limit allowed \"256Mi\""
        ),
        "{log}"
    );
    cluster.assert_nothing_left("k8sscen08").await;
}
