//! End to end: how jobs of the `gitlab-runner-rs` binary with `executor = "kubernetes"` fail
//! (and do not fail) against the Kubernetes API double, whose kubelet runs each pod on the real
//! Docker engine (`runner_tests::kubelet`): a pod the scheduler cannot place past
//! `poll_timeout`, a job over its timeout and a script over `RUNNER_SCRIPT_TIMEOUT`, a service
//! container OOM-killed under its `service_memory_limit`, resource overwrites within and beyond
//! their `*_overwrite_max_allowed`, and an attach that drops after its line was delivered.
//! Each checks the job log's lines and the final update's state, failure reason and exit code,
//! and after every job that the double holds no pod and the engine nothing of it.
//!
//! Needs the Docker engine; never skipped.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::time::{Duration, Instant};

use runner_tests::kube_api::{Fault, FaultKind, KubeApi};
use runner_tests::kube_jobs::{assert_nothing_left, output_lines, plain, runner_config};
use runner_tests::kubelet::KubeletSettings;
use runner_tests::{
    declare_failure_reasons, job_payload, runner_binary, FakeGitlab, HelperImage, RecordedUpdate,
    RunnerProcess, DEBIAN_IMAGE,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

struct Runner {
    _process: RunnerProcess,
    _dir: tempfile::TempDir,
}

/// The double with its kubelet on the host's network (the pods reach the fake GitLab on
/// loopback); `unschedulable` holds every pod Pending with that scheduler message.
async fn double_with(unschedulable: Option<&str>) -> KubeApi {
    // The debootstrap image of the other engine tests, built if missing.
    let _ = runner_tests::debian_image();
    KubeApi::start_with_kubelet(KubeletSettings {
        network: "host".into(),
        unschedulable: unschedulable.map(str::to_string),
        ..KubeletSettings::default()
    })
    .await
}

async fn double() -> KubeApi {
    double_with(None).await
}

/// A kubernetes runner on the double; `extra` is more of `[runners.kubernetes]`.
fn start_runner(
    gitlab: &FakeGitlab,
    token: &str,
    api: &KubeApi,
    helper: &HelperImage,
    extra: &str,
) -> Runner {
    let (dir, config) = runner_config(&gitlab.url(), token, api, helper, extra);
    Runner {
        _process: RunnerProcess::spawn(&runner_binary(), &config, dir.path(), &[]),
        _dir: dir,
    }
}

/// A job that fetches nothing (`GIT_STRATEGY: none`), with `script`, `after_script`, more
/// variables and a timeout in seconds; it declares every failure reason used here.
fn no_git_job(
    script: &[&str],
    after_script: &[&str],
    variables: &[(&str, &str)],
    timeout: i64,
) -> serde_json::Value {
    let mut all = vec![json!({"key": "GIT_STRATEGY", "value": "none", "public": true})];
    all.extend(
        variables
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value, "public": true})),
    );
    let mut payload = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        after_script,
        json!(all),
        timeout,
    );
    declare_failure_reasons(&mut payload);
    payload
}

/// The job log's one `ERROR: Job failed` line, without its timestamp, marker and colours.
fn failed_line(log: &str) -> String {
    let failed: Vec<String> = log
        .lines()
        .filter(|line| line.contains("ERROR: Job failed"))
        .filter_map(|line| line.split_once(' ').and_then(|(_, rest)| rest.get(4..)))
        .map(plain)
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    failed[0].clone()
}

/// The first pod the double holds, as `(namespace, name)`, once there is one.
async fn wait_for_pod(api: &KubeApi) -> (String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(pod) = api.pod_names().first() {
            let (namespace, name) = pod.split_once('/').unwrap();
            return (namespace.to_string(), name.to_string());
        }
        assert!(Instant::now() < deadline, "no pod: {:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many requests so far start with `prefix` (`METHOD /path`).
fn requests_to(api: &KubeApi, prefix: &str) -> usize {
    api.requests()
        .iter()
        .filter(|request| request.starts_with(prefix))
        .count()
}

/// A job whose pod the scheduler cannot place: the kubelet holds it Pending with
/// `Unschedulable` and `first`; once the runner has looked at it, the verdict changes to
/// `second` (as when another node fills up). The job's final update and log, the pod's
/// namespace and name, and the double.
async fn pending_until_poll_timeout(
    token: &str,
    first: &str,
    second: &str,
) -> (RecordedUpdate, String, (String, String), KubeApi) {
    let helper = HelperImage::build("dev");
    let api = double_with(Some(first)).await;
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(no_git_job(&["echo never-scheduled"], &[], &[], 120));
    let _runner = start_runner(&gitlab, token, &api, &helper, "    poll_timeout = 3\n");
    let (namespace, name) = wait_for_pod(&api).await;
    let created = Instant::now();
    let pod_path = format!("GET /api/v1/namespaces/{namespace}/pods/{name}");
    // The first verdict is stored, and a look of the runner's came after it.
    let deadline = Instant::now() + WAIT;
    while api.object("pods", &namespace, &name).unwrap()["status"]["conditions"][0]["reason"]
        != "Unschedulable"
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            api.object("pods", &namespace, &name)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let looked = requests_to(&api, &pod_path);
    while requests_to(&api, &pod_path) <= looked {
        assert!(Instant::now() < deadline, "{:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut status = api.object("pods", &namespace, &name).unwrap()["status"].clone();
    status["conditions"][0]["message"] = json!(second);
    assert!(api.set_pod_status(&namespace, &name, status));
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    // poll_timeout, not the default 180 s.
    assert!(created.elapsed() < Duration::from_secs(60), "{log}");
    // At least the `poll_timeout / poll_interval + 1` polls (and one more per change).
    assert!(requests_to(&api, &pod_path) >= 4, "{:?}", api.requests());
    (update, log, (namespace, name), api)
}

const NO_ROOM: &str = "0/3 nodes are available: 3 Insufficient memory.";
const TAINTED: &str = "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }, 2 Insufficient memory.";

/// A pod no node has room for stays Pending: each distinct scheduler reason is said once (not
/// on every poll), the scheduler's Warning event is printed once, and after `poll_timeout`
/// (3 s) the job fails as a system failure with upstream's `waiting for pod running: timed out
/// waiting for pod to start (last phase: Pending)` and, beyond upstream, the last reason. The
/// pod is deleted; the engine never had anything of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_scheduler_cannot_place_times_out_saying_each_reason_once() {
    let (update, log, (namespace, name), api) =
        pending_until_poll_timeout("glrt-t1_k8spend01", NO_ROOM, TAINTED).await;
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "{log}"
    );
    // Upstream's line and the reasons under it, once per change of the reasons (a first look
    // before the scheduler's verdict has no reason line).
    let waiting = output_lines(
        &log,
        &format!(
            "Waiting for pod {namespace}/{name} to be running on the node <unknown>, status is Pending"
        ),
    );
    assert!((2..=3).contains(&waiting), "{log}");
    for message in [NO_ROOM, TAINTED] {
        assert_eq!(
            output_lines(&log, &format!("\tUnschedulable: {message:?}")),
            1,
            "{message:?} in:\n{log}"
        );
    }
    let failed = failed_line(&log);
    assert!(
        failed.starts_with("ERROR: Job failed (system failure): "),
        "{log}"
    );
    assert!(
        failed.contains(&format!(
            "waiting for pod running: timed out waiting for pod to start (last phase: Pending); Unschedulable: {TAINTED:?}"
        )),
        "{log}"
    );
    // print_pod_warning_events (on by default): the scheduler's event, once.
    assert_eq!(
        output_lines(
            &log,
            &format!("WARNING: Event retrieved from the cluster: {NO_ROOM}")
        ),
        1,
        "{log}"
    );
    assert_eq!(output_lines(&log, "never-scheduled"), 0, "{log}");
    assert_nothing_left(&api).await;
}

/// Upstream waits for the pod in the first stage it runs (`prepare_script`), so its error is
/// wrapped as every error of that stage: `prepare environment: waiting for pod running: timed
/// out waiting for pod to start… . Check
/// https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_never_starts_fails_with_upstreams_prepare_environment_wrapper() {
    let (_, log, _, api) = pending_until_poll_timeout("glrt-t1_k8spend02", NO_ROOM, TAINTED).await;
    let failed = failed_line(&log);
    assert!(
        failed.starts_with(
            "ERROR: Job failed (system failure): prepare environment: waiting for pod running: timed out waiting for pod to start (last phase: Pending)"
        ),
        "{log}"
    );
    assert!(
        failed.ends_with(
            ". Check https://docs.gitlab.com/runner/shells/#shell-profile-loading for more information"
        ),
        "{log}"
    );
    assert_nothing_left(&api).await;
}

/// A job over its timeout is stopped (the script's `sleep` too, in its pod) with upstream's
/// `execution took longer than 5s seconds` and `job_execution_timeout`; after_script does not
/// run after a job timeout (its context is the job's). A script over `RUNNER_SCRIPT_TIMEOUT`
/// fails the same way with `script timeout: context deadline exceeded`, and there
/// after_script does run, seeing `timedout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_timeout_and_a_script_over_its_own_end_as_execution_timeouts() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8stime01";
    let gitlab = FakeGitlab::start(token).await;
    let _runner = start_runner(&gitlab, token, &api, &helper, "");

    let job = gitlab.enqueue(no_git_job(
        &[
            "echo started-before-the-timeout",
            "sleep 60",
            "echo after-the-sleep",
        ],
        &["echo after-status=$CI_JOB_STATUS"],
        &[],
        5,
    ));
    let started = Instant::now();
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("job_execution_timeout"),
        "{log}"
    );
    // No exit code: the script did not end by itself.
    assert_eq!(update.exit_code, None, "{log}");
    assert!(started.elapsed() < Duration::from_secs(50), "{log}");
    assert_eq!(
        output_lines(&log, "started-before-the-timeout"),
        1,
        "the script ran before the timeout:\n{log}"
    );
    assert_eq!(output_lines(&log, "after-the-sleep"), 0, "{log}");
    assert!(
        log.contains("ERROR: Job failed: execution took longer than 5s seconds"),
        "{log}"
    );
    assert!(!log.contains("after-status="), "{log}");
    assert_nothing_left(&api).await;

    let job = gitlab.enqueue(no_git_job(
        &["echo script-started", "sleep 60", "echo after-the-sleep"],
        &["echo after-status=$CI_JOB_STATUS"],
        &[("RUNNER_SCRIPT_TIMEOUT", "3s")],
        120,
    ));
    let started = Instant::now();
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("job_execution_timeout"),
        "{log}"
    );
    // No exit code: the script did not end by itself.
    assert_eq!(update.exit_code, None, "{log}");
    assert!(started.elapsed() < Duration::from_secs(50), "{log}");
    assert_eq!(output_lines(&log, "script-started"), 1, "{log}");
    assert_eq!(output_lines(&log, "after-the-sleep"), 0, "{log}");
    assert!(
        log.contains("ERROR: Job failed: script timeout: context deadline exceeded"),
        "{log}"
    );
    assert!(!log.contains("execution took longer"), "{log}");
    assert_eq!(output_lines(&log, "after-status=timedout"), 1, "{log}");
    assert_nothing_left(&api).await;
}

/// A service whose own main process eats memory past `service_memory_limit` is killed by the
/// kernel (exit 137, `OOMKilled`): the job log says so once, naming the container and its
/// limit, and the job, whose script outlives the service, succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_service_is_reported_once_with_its_limit_and_the_job_succeeds() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8ssvcoom";
    let gitlab = FakeGitlab::start(token).await;
    let mut payload = no_git_job(
        &[
            "echo waiting-for-the-service-to-die",
            "sleep 6",
            "echo still-here",
        ],
        &[],
        &[],
        120,
    );
    payload["services"] = json!([{
        "name": DEBIAN_IMAGE,
        "alias": "hungry",
        "entrypoint": ["sh", "-c"],
        // `tail` keeps the one endless line of /dev/zero: as the container's main process it
        // grows until the kernel kills it.
        "command": ["sleep 1; exec tail /dev/zero"],
    }]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        "    service_memory_limit = \"32Mi\"\n",
    );
    let (namespace, name) = wait_for_pod(&api).await;
    let pod = api.object("pods", &namespace, &name).unwrap();
    let service = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|container| container["name"] == "hungry")
        .cloned()
        .unwrap_or_else(|| panic!("{pod}"));
    assert_eq!(
        service["resources"]["limits"]["memory"], "32Mi",
        "{service}"
    );
    let log = gitlab.wait_success(job, WAIT).await;
    assert_eq!(output_lines(&log, "still-here"), 1, "{log}");
    assert_eq!(
        log.matches(
            "WARNING: Service container ended: Error in container hungry: exit code: 137, reason: 'OOMKilled' (container hungry was OOM-killed, limit 32Mi)"
        )
        .count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("Service container ended").count(), 1, "{log}");
    assert_nothing_left(&api).await;
}

/// `KUBERNETES_CPU_LIMIT` and `KUBERNETES_MEMORY_LIMIT` within their maxima replace the
/// configured limits, each said with upstream's line; the build container gets them: in the
/// pod's spec, and as the cgroup limits its script reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_overwrites_within_their_maxima_reach_the_build_container() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8sover01";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(no_git_job(
        &[
            "echo \"memory-limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)\"",
            "echo \"cpu-quota=$(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us))\"",
        ],
        &[],
        &[
            ("KUBERNETES_CPU_LIMIT", "500m"),
            ("KUBERNETES_MEMORY_LIMIT", "512Mi"),
        ],
        120,
    ));
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        "    cpu_limit = \"250m\"\n    memory_limit = \"256Mi\"\n    cpu_limit_overwrite_max_allowed = \"1\"\n    memory_limit_overwrite_max_allowed = \"1Gi\"\n",
    );
    let (namespace, name) = wait_for_pod(&api).await;
    let pod = api.object("pods", &namespace, &name).unwrap();
    let build = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|container| container["name"] == "build")
        .cloned()
        .unwrap_or_else(|| panic!("{pod}"));
    assert_eq!(
        build["resources"]["limits"],
        json!({"cpu": "500m", "memory": "512Mi"}),
        "{build}"
    );
    let log = gitlab.wait_success(job, WAIT).await;
    for line in [
        r#""CPULimit" overwritten with "500m""#,
        r#""MemoryLimit" overwritten with "512Mi""#,
    ] {
        assert_eq!(output_lines(&log, line), 1, "{line:?} in:\n{log}");
    }
    assert_eq!(
        output_lines(&log, &format!("memory-limit={}", 512 * 1024 * 1024)),
        1,
        "{log}"
    );
    assert_eq!(output_lines(&log, "cpu-quota=50000 100000"), 1, "{log}");
    assert_nothing_left(&api).await;
}

/// A job with `KUBERNETES_CPU_LIMIT=2` on a runner that allows up to 1 CPU: its final update
/// and log, and the double.
async fn cpu_overwrite_beyond_its_maximum(token: &str) -> (RecordedUpdate, String, KubeApi) {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(no_git_job(
        &["echo never-runs"],
        &[],
        &[("KUBERNETES_CPU_LIMIT", "2")],
        120,
    ));
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        "    cpu_limit_overwrite_max_allowed = \"1\"\n    memory_limit_overwrite_max_allowed = \"1Gi\"\n",
    );
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    (update, log, api)
}

const CPU_TOO_HIGH: &str = r#"invalid build limits specified: the resource "CPULimit" requested "2" is higher than limit allowed "1""#;

/// `KUBERNETES_CPU_LIMIT` over `cpu_limit_overwrite_max_allowed` fails the job at once, not
/// retried, before any pod is made, with upstream's refusal (`invalid build limits specified:
/// the resource "CPULimit" requested "2" is higher than limit allowed "1"`) as a configuration
/// error (spec §1.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_overwrite_beyond_its_maximum_is_a_configuration_error() {
    let (update, log, api) = cpu_overwrite_beyond_its_maximum("glrt-t1_k8sover02").await;
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_configuration_error"),
        "{log}"
    );
    assert_eq!(update.exit_code, None, "{log}");
    let failed = failed_line(&log);
    assert!(failed.starts_with("ERROR: Job failed: "), "{log}");
    assert!(failed.ends_with(CPU_TOO_HIGH), "{log}");
    assert!(!log.contains("Preparation failed"), "{log}");
    assert!(!log.contains("overwritten with"), "{log}");
    assert_eq!(output_lines(&log, "never-runs"), 0, "{log}");
    assert_eq!(
        requests_to(&api, "POST /api/v1/namespaces/default/pods"),
        0,
        "{:?}",
        api.requests()
    );
    assert_nothing_left(&api).await;
}

/// Upstream wraps every overwrite refusal as `couldn't prepare overwrites: …` (spec §1.2;
/// `executors/kubernetes/kubernetes.go` `Prepare`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_overwrite_says_couldnt_prepare_overwrites_as_upstream() {
    let (_, log, api) = cpu_overwrite_beyond_its_maximum("glrt-t1_k8sover03").await;
    assert_eq!(
        failed_line(&log),
        format!("ERROR: Job failed: couldn't prepare overwrites: {CPU_TOO_HIGH}"),
        "{log}"
    );
    assert_nothing_left(&api).await;
}

/// The build container's attach drops (no status, no close frame) at the first output after
/// its typed line was delivered: what was typed runs once (the stage's guard), the next line
/// is typed through a new attach, no output line is lost or repeated, and the job succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_attach_runs_each_stage_once_and_loses_no_line() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    api.inject(Fault {
        matching: "/attach?&stdin=true&container=build".into(),
        kind: FaultKind::CutStreamAfter(0),
        times: 1,
    });
    let token = "glrt-t1_k8sattdrop";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(no_git_job(
        &[
            "echo ran >> /tmp/runs; echo \"runs=$(wc -l < /tmp/runs)\"",
            "seq -f 'attach-line-%g' 1 200",
        ],
        &["echo ran-after >> /tmp/after-runs; echo \"after-runs=$(wc -l < /tmp/after-runs)\""],
        &[],
        120,
    ));
    let _runner = start_runner(&gitlab, token, &api, &helper, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert_eq!(output_lines(&log, "runs=1"), 1, "{log}");
    assert!(!log.contains("runs=2"), "{log}");
    assert_eq!(output_lines(&log, "after-runs=1"), 1, "{log}");
    let numbers: Vec<u32> = log
        .lines()
        .filter_map(|line| line.split_once("O attach-line-"))
        .map(|(_, number)| number.parse().unwrap())
        .collect();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>(), "{log}");
    // The drop happened: the build container was attached to again (once per container
    // otherwise, see kubernetes_e2e).
    let attaches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|request| request.ends_with("/attach"))
        .collect();
    assert_eq!(attaches.len(), 3, "{attaches:?}");
    assert_nothing_left(&api).await;
}
