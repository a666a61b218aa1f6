//! End to end: the `gitlab-runner-rs` binary with `executor = "kubernetes"` against the
//! Kubernetes API double, whose kubelet runs each pod on the real Docker engine
//! (`runner_tests::kubelet`), the fake GitLab and a git server over HTTP. The pods share the
//! host's network (the double's `network = "host"`), so their containers reach both servers
//! on loopback. After every job the test checks that the double holds no pod and the engine
//! no container or volume of it.
//!
//! Needs the Docker engine; never skipped.

use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use runner_tests::kube_api::{Fault, FaultKind, KubeApi, TOKEN};
use runner_tests::kube_jobs::{assert_nothing_left, output_lines, runner_config};
use runner_tests::kubelet::KubeletSettings;
use runner_tests::{
    declare_failure_reasons, job_payload, runner_binary, FakeGitlab, GitServer, HelperImage,
    RunnerProcess, DEBIAN_IMAGE,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

struct Runner {
    process: RunnerProcess,
    _dir: tempfile::TempDir,
}

async fn double() -> KubeApi {
    // The debootstrap image of the other engine tests, built if missing.
    let _ = runner_tests::debian_image();
    KubeApi::start_with_kubelet(KubeletSettings {
        network: "host".into(),
        ..KubeletSettings::default()
    })
    .await
}

fn start_runner(
    gitlab: &FakeGitlab,
    token: &str,
    api: &KubeApi,
    helper: &HelperImage,
    extra: &str,
) -> Runner {
    let (dir, config) = runner_config(&gitlab.url(), token, api, helper, extra);
    Runner {
        process: RunnerProcess::spawn(&runner_binary(), &config, dir.path(), &[]),
        _dir: dir,
    }
}

/// A job that fetches nothing (`GIT_STRATEGY: none`), with `script`, `after_script` and a
/// timeout in seconds.
fn no_git_job(script: &[&str], after_script: &[&str], timeout: i64) -> serde_json::Value {
    job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        after_script,
        json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
        timeout,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_clones_runs_in_its_pod_uploads_an_artifact_and_leaves_nothing() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let git = GitServer::start(&[("README.md", "hello from a pod\n")], true).await;
    let gitlab = FakeGitlab::start("glrt-t1_k8sbasic1").await;
    let mut payload = job_payload(
        &git.url_with_token("JOB_TOKEN"),
        &git.head(),
        &[
            "cat README.md",
            "echo \"pwd=$PWD host=$(hostname) secret=$MY_SECRET\"",
            "mkdir -p out && echo made-in-a-pod > out/result.txt",
        ],
        &["echo after $CI_JOB_STATUS"],
        json!([
            {"key": "CI_PROJECT_PATH", "value": "group/project", "public": true},
            {"key": "MY_SECRET", "value": "s3cr3t-value", "public": false, "masked": true}
        ]),
        120,
    );
    payload["artifacts"] = json!([{"name": "pod-out", "paths": ["out/"], "when": "on_success",
        "artifact_type": "archive", "artifact_format": "zip"}]);
    payload["cache"] = json!([{"key": "pod-cache", "paths": ["out/"], "policy": "pull-push",
        "when": "on_success", "untracked": false}]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, "glrt-t1_k8sbasic1", &api, &helper, "");
    let log = gitlab.wait_success(job, WAIT).await;
    for expected in [
        "Using Kubernetes namespace: default",
        &format!("Using Kubernetes executor with image {DEBIAN_IMAGE} ..."),
        "Using attach strategy to execute scripts...",
        "Using effective pull policy of [IfNotPresent] for container build",
        "hello from a pod",
        "pwd=/builds/",
        "secret=[MASKED]",
        "after success",
        "Uploading artifacts as \"archive\" to coordinator... 201 Created",
        "Checking cache for pod-cache...",
        "Creating cache pod-cache...",
        "Created cache",
    ] {
        assert!(log.contains(expected), "{expected:?} not in:\n{log}");
    }
    assert!(!log.contains("s3cr3t-value"), "{log}");
    // The markers are taken out of the log.
    assert!(!log.contains("command_exit_code"), "{log}");
    // One attach per container serves every stage typed into it (build and helper).
    let attaches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|request| request.contains("/attach"))
        .collect();
    assert_eq!(attaches.len(), 2, "{attaches:?}");
    assert_eq!(gitlab.artifacts(job).len(), 1);
    assert_nothing_left(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_keeps_its_exit_code_runs_after_script_and_a_fake_marker_ends_nothing() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8sfail01").await;
    let mut payload = no_git_job(
        &[
            // A line that looks like upstream's exit marker, without the stage's nonce.
            "echo '{\"command_exit_code\": 0, \"script\": \"/scripts/step_script\"}'",
            "echo still-running",
            "exit 42",
        ],
        &["echo after $CI_JOB_STATUS"],
        120,
    );
    declare_failure_reasons(&mut payload);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, "glrt-t1_k8sfail01", &api, &helper, "");
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("script_failure"),
        "{log}"
    );
    assert_eq!(update.exit_code, Some(42), "{log}");
    // The fake marker is output (a line of its own, not only the echoed command), and the
    // stage ran once.
    assert_eq!(
        output_lines(
            &log,
            "{\"command_exit_code\": 0, \"script\": \"/scripts/step_script\"}"
        ),
        1,
        "{log}"
    );
    assert_eq!(output_lines(&log, "still-running"), 1, "{log}");
    assert!(
        log.contains("command terminated with exit code 42"),
        "{log}"
    );
    assert!(log.contains("after failed"), "{log}");
    assert_nothing_left(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cancel_reaches_the_scripts_term_trap_and_leaves_nothing() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8sstop01").await;
    let payload = no_git_job(
        &[
            "trap 'echo got-sig''term; exit 3' TERM; echo cancel-me; while true; do echo tick; sleep 0.2; done",
        ],
        &[],
        600,
    );
    let job = gitlab.enqueue(payload);
    let runner = start_runner(&gitlab, "glrt-t1_k8sstop01", &api, &helper, "");
    gitlab.wait_log(job, "cancel-me", WAIT).await;
    gitlab.cancel(job);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert!(log.contains("got-sigterm"), "{log}");
    assert_nothing_left(&api).await;
    drop(runner.process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_at_once_with_upstreams_class() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8spull01").await;
    // Nothing listens on port 1: the pull fails with "connection refused", a dependency
    // failure in upstream's classification, well before `poll_timeout`.
    let mut payload = no_git_job(&["echo never"], &[], 120);
    payload["image"] = json!({"name": "127.0.0.1:1/missing/image:1"});
    declare_failure_reasons(&mut payload);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, "glrt-t1_k8spull01", &api, &helper, "");
    let log = gitlab
        .wait_failure(job, "runner_external_dependency_failure", WAIT)
        .await;
    assert!(
        log.contains(
            "pulling image \"127.0.0.1:1/missing/image:1\" for container build: image pull failed:"
        ),
        "{log}"
    );
    assert!(!log.contains("never"), "{log}");
    // The kubelet's Warning event about it, once (print_pod_warning_events is on by default).
    assert_eq!(
        log.matches("WARNING: Event retrieved from the cluster: Failed to pull image \"127.0.0.1:1/missing/image:1\": ")
            .count(),
        1,
        "{log}"
    );
    assert_nothing_left(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_is_enforced_and_a_runner_sigterm_interrupts_the_job() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8soom001").await;
    // A process past the build container's limit is killed by the kernel: the script ends
    // with 137, as on a cluster.
    let mut hungry = no_git_job(
        &["echo eating", "head -c 300m /dev/zero | tail > /dev/null"],
        &[],
        120,
    );
    declare_failure_reasons(&mut hungry);
    let hungry = gitlab.enqueue(hungry);
    let mut runner = start_runner(
        &gitlab,
        "glrt-t1_k8soom001",
        &api,
        &helper,
        "    memory_limit = \"96Mi\"\n",
    );
    let update = gitlab.wait_final(hungry, WAIT).await;
    let log = gitlab.log(hungry);
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("script_failure"),
        "{log}"
    );
    assert_eq!(update.exit_code, Some(137), "{log}");
    assert!(
        log.contains("command terminated with exit code 137"),
        "{log}"
    );
    assert_nothing_left(&api).await;

    let ticking = gitlab.enqueue(no_git_job(
        &["echo interrupt-me; while true; do echo tick; sleep 0.5; done"],
        &[],
        600,
    ));
    gitlab.wait_log(ticking, "interrupt-me", WAIT).await;
    runner.process.signal(libc::SIGTERM);
    let update = gitlab.wait_final(ticking, WAIT).await;
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_interrupted"),
        "{}",
        gitlab.log(ticking)
    );
    tokio::task::spawn_blocking(move || {
        let _ = runner.process.wait();
    })
    .await
    .unwrap();
    assert_nothing_left(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_under_a_running_stage_ends_the_job_as_a_system_failure() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8sevict1").await;
    let mut payload = no_git_job(&["echo delete-me; sleep 600"], &[], 900);
    declare_failure_reasons(&mut payload);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, "glrt-t1_k8sevict1", &api, &helper, "");
    gitlab.wait_log(job, "delete-me", WAIT).await;
    let pods = api.pod_names();
    assert_eq!(pods.len(), 1, "{pods:?}");
    let (namespace, name) = pods[0].split_once('/').unwrap();
    assert!(api.delete_pod(namespace, name));
    // Found by the next look at the pod (poll_interval = 1 s), not after the job timeout.
    let started = Instant::now();
    let log = gitlab
        .wait_failure(job, "runner_system_failure", WAIT)
        .await;
    assert!(started.elapsed() < Duration::from_secs(60), "{log}");
    assert!(log.contains(&format!("pods \"{name}\" not found")), "{log}");
    assert_nothing_left(&api).await;
}

/// A pod evicted under a running stage (its `DisruptionTarget` condition set, then deleted
/// after a grace period) ends the job at the next look with upstream's disruption message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_pod_ends_the_job_with_the_disruption_reason() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8sdisr01").await;
    let mut payload = no_git_job(&["echo evict-me; sleep 600"], &[], 900);
    declare_failure_reasons(&mut payload);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, "glrt-t1_k8sdisr01", &api, &helper, "");
    gitlab.wait_log(job, "evict-me", WAIT).await;
    let pods = api.pod_names();
    let (namespace, name) = pods[0].split_once('/').unwrap();
    assert!(api.evict_pod(
        namespace,
        name,
        "EvictionByEvictionAPI",
        "Eviction API: evicting",
        Duration::from_secs(5)
    ));
    let log = gitlab
        .wait_failure(job, "runner_system_failure", WAIT)
        .await;
    assert!(
        log.contains(&format!(
            "pod \"{namespace}/{name}\" is disrupted: reason \"EvictionByEvictionAPI\", message \"Eviction API: evicting\""
        )),
        "{log}"
    );
    assert_nothing_left(&api).await;
}

/// The kubelet behind clients nobody here wrote: kubectl creates a pod whose container reads
/// its stdin, waits for it to be Ready (a watch), attaches to it twice (its stdin stays open
/// after the first attach ends, as a container with `stdin: true` and no `stdinOnce`), execs
/// into it, reads its logs, and deletes it; the engine keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attaches_execs_reads_logs_and_deletes_on_the_docker_backed_kubelet() {
    let api = double().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let manifest = dir.path().join("pod.json");
    std::fs::write(
        &manifest,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "reader"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": DEBIAN_IMAGE, "imagePullPolicy": "Never", "stdin": true,
                "command": ["bash", "-c", "echo started; while read -r line; do echo \"got $line\"; echo \"$line\" >> /tmp/lines; done"]
            }]}
        })
        .to_string(),
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        let mut command = runner_tests::kube_api::kubectl();
        command.arg("--kubeconfig").arg(&kubeconfig).args(args);
        command
    };
    // The double serves no OpenAPI document for client-side validation.
    let output = kubectl(&[
        "create",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let output = kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/reader",
        "--timeout=60s",
    ])
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    for word in ["first", "second"] {
        let mut attach = kubectl(&["attach", "-i", "reader", "-c", "main"]);
        attach
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let wanted = format!("got {word}");
        // The attach lasts as long as the container: it is killed from here (on drop too,
        // when the echo never comes).
        let mut child = tokio::process::Command::from(attach)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let seen = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line == wanted {
                    return true;
                }
            }
            false
        })
        .await;
        let _ = child.kill().await;
        assert_eq!(seen, Ok(true), "no echo of {word:?} through kubectl attach");
    }
    let output = kubectl(&["exec", "reader", "-c", "main", "--", "cat", "/tmp/lines"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "first\nsecond\n",
        "{output:?}"
    );
    let output = kubectl(&["logs", "reader", "-c", "main"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("started\ngot first\ngot second\n"),
        "{output:?}"
    );
    let output = kubectl(&["delete", "pod", "reader", "--wait=false"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_nothing_left(&api).await;
}

/// A service container waited for through its `HEALTHCHECK_TCP_PORT` and reached through its
/// alias (the pod's host aliases); a `host_path`
/// user volume shared with this machine; the job's registry credentials as a dockercfg
/// Secret in the pod's image pull secrets, owned by the pod and gone with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_reached_by_its_alias_a_host_path_is_shared_and_the_registry_secret_goes_with_the_pod(
) {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8ssvc001").await;
    let shared = tempfile::tempdir().unwrap();
    let port = 20000 + (std::process::id() % 20000);
    let mut payload = no_git_job(
        &[
            // One try: the service's HEALTHCHECK_TCP_PORT made the runner wait for it.
            &format!(
                "exec 3<>/dev/tcp/db.internal/{port}; head -c 7 <&3; echo; echo \"via $(getent hosts db.internal | head -n 1)\""
            ),
            "echo from-the-pod > /shared/$CI_JOB_ID.txt",
            // Held until the test has looked at the Secret.
            "until [ -e /shared/go ]; do sleep 0.1; done",
        ],
        &[],
        120,
    );
    payload["services"] = json!([{
        "name": DEBIAN_IMAGE,
        "alias": "db.internal",
        "entrypoint": ["sh", "-c"],
        // Slow to come up, so only the health check makes the one try above work.
        "command": [format!("sleep 2; mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -p {port} -o ListenAddress=127.0.0.1")],
        "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": port.to_string()}],
    }, {
        // A service with ports (the web IDE's session proxy) gets a Kubernetes Service.
        "name": DEBIAN_IMAGE,
        "alias": "IDE",
        "entrypoint": ["sleep"],
        "command": ["infinity"],
        "ports": [{"number": 8080, "protocol": "http", "name": "web"}, {"number": 8443}],
    }]);
    payload["image"] = json!({"name": DEBIAN_IMAGE, "ports": [{"number": 3000}]});
    payload["credentials"] = json!([{
        "type": "registry", "url": "registry.example.com:5005",
        "username": "gitlab-ci-token", "password": "registry-pass-123"
    }]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        "glrt-t1_k8ssvc001",
        &api,
        &helper,
        &format!(
            "    pod_disruption_budget = true\n    [[runners.kubernetes.volumes.host_path]]\n      name = \"shared\"\n      mount_path = \"/shared\"\n      host_path = \"{}\"\n",
            shared.path().display()
        ),
    );
    let written = shared.path().join(format!("{}.txt", job.id));
    let deadline = Instant::now() + WAIT;
    while !written.exists() {
        assert!(Instant::now() < deadline, "{}", gitlab.log(job));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "from-the-pod\n");
    let secrets = api.secret_names();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let (namespace, name) = secrets[0].split_once('/').unwrap();
    let secret = api.object("secrets", namespace, name).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/dockercfg");
    let config = secret["data"][".dockercfg"].as_str().unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, config).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config,
        json!({"registry.example.com:5005": {"username": "gitlab-ci-token",
            "password": "registry-pass-123", "serveraddress": "registry.example.com:5005"}})
    );
    let pods = api.pod_names();
    let (_, pod_name) = pods[0].split_once('/').unwrap();
    let pod = api.object("pods", namespace, pod_name).unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        pod["metadata"]["uid"]
    );
    assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": name}]));
    // The companions upstream makes, each owned by the pod: the disruption budget and a
    // Service per alias of an image with ports (the build image's is `build`).
    let selector = json!({"job.runner.gitlab.com/pod":
        pod["metadata"]["labels"]["job.runner.gitlab.com/pod"]});
    let budget = api
        .object(
            "poddisruptionbudgets",
            namespace,
            &format!("{pod_name}-pdb"),
        )
        .unwrap_or_else(|| panic!("{:?}", api.names("poddisruptionbudgets")));
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(budget["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(
        budget["metadata"]["ownerReferences"][0]["uid"],
        pod["metadata"]["uid"]
    );
    let mut services = api.names("services");
    services.sort();
    assert_eq!(services.len(), 2, "{services:?}");
    for (listed, base, ports) in [
        (&services[0], "build", json!([3000])),
        (&services[1], "ide", json!([8080, 8443])),
    ] {
        let (_, service_name) = listed.split_once('/').unwrap();
        assert!(
            service_name.starts_with(&format!("{base}-")),
            "{services:?}"
        );
        assert_eq!(service_name.len(), base.len() + 9, "{service_name}");
        let service = api.object("services", namespace, service_name).unwrap();
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["selector"], selector);
        assert_eq!(
            service["metadata"]["ownerReferences"][0]["uid"],
            pod["metadata"]["uid"]
        );
        let numbers: Vec<serde_json::Value> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|port| {
                assert_eq!(port["name"], format!("{base}-{}", port["port"]));
                assert_eq!(port["targetPort"], port["port"]);
                port["port"].clone()
            })
            .collect();
        assert_eq!(json!(numbers), ports);
    }
    let containers = pod["spec"]["containers"].as_array().unwrap();
    let ports_of = |name: &str| {
        containers
            .iter()
            .find(|container| container["name"] == name)
            .map(|container| container["ports"].clone())
    };
    assert_eq!(ports_of("build"), Some(json!([{"containerPort": 3000}])));
    assert_eq!(
        ports_of("svc-1"),
        Some(json!([{"containerPort": 8080}, {"containerPort": 8443}]))
    );
    std::fs::write(shared.path().join("go"), "").unwrap();
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(log.contains("SSH-2.0"), "{log}");
    assert!(log.contains("via 127.0.0.1"), "{log}");
    assert!(
        log.contains(&format!(
            "waiting for TCP connection to localhost on [{port}]..."
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("dial succeeded on localhost:{port}. Exiting...")),
        "{log}"
    );
    assert!(!log.contains("registry-pass-123"), "{log}");
    assert_nothing_left(&api).await;
    assert!(api.secret_names().is_empty(), "{:?}", api.secret_names());
}

/// Upstream's pull-policy fallback: `always` cannot pull (no registry), so the next policy,
/// `if-not-present`, is tried in a new pod with a new name, one container at a time as the
/// kubelet reports them (`init-permissions` first, then `build`, then `helper`: four pods),
/// and the job runs in the last; the others are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_tries_the_next_policy_in_a_new_pod() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8spull01").await;
    let mut payload = no_git_job(&["echo ran-after-fallback"], &[], 120);
    payload["image"] = json!({"name": DEBIAN_IMAGE, "pull_policy": ["always", "if-not-present"]});
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        "glrt-t1_k8spull01",
        &api,
        &helper,
        "    allowed_pull_policies = [\"always\", \"if-not-present\"]\n",
    );
    let log = gitlab.wait_success(job, WAIT).await;
    for expected in [
        format!("WARNING: Failed to pull image \"{DEBIAN_IMAGE}\" for container \"build\" with policy \"Always\": "),
        format!("Attempt #3: Trying \"IfNotPresent\" pull policy for \"{DEBIAN_IMAGE}\" image for container \"build\""),
        "Attempt #4: Trying \"IfNotPresent\" pull policy for \"gitlab-runner-rs-test/helper:dev\" image for container \"helper\"".to_string(),
    ] {
        assert!(log.contains(&expected), "{expected:?} not in:\n{log}");
    }
    assert_eq!(output_lines(&log, "ran-after-fallback"), 1, "{log}");
    let created: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|request| request.starts_with("POST ") && request.ends_with("/pods"))
        .collect();
    assert_eq!(created.len(), 4, "{created:?}");
    assert_nothing_left(&api).await;
}

/// The `read-logs` stream drops four times in the middle of the output (no status, no close
/// frame, after 700 bytes each): every line reaches the job log once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_stream_that_drops_resumes_from_its_offset_without_losing_or_repeating_a_line() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    api.inject(Fault {
        matching: "read-logs".into(),
        kind: FaultKind::CutStreamAfter(700),
        times: 4,
    });
    let gitlab = FakeGitlab::start("glrt-t1_k8sdrop01").await;
    let payload = no_git_job(&["seq -f 'numbered-line-%g' 1 400"], &[], 120);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, "glrt-t1_k8sdrop01", &api, &helper, "");
    let log = gitlab.wait_success(job, WAIT).await;
    let numbers: Vec<u32> = log
        .lines()
        .filter_map(|line| line.split_once("O numbered-line-"))
        .map(|(_, number)| number.parse().unwrap())
        .collect();
    assert_eq!(numbers, (1..=400).collect::<Vec<_>>(), "{log}");
    // Each drop is said in the job log, as upstream says it (and so each really happened).
    assert_eq!(log.matches(". Retrying...").count(), 4, "{log}");
    assert_nothing_left(&api).await;
}

/// Transient API failures are tried again: two pod creates answered 503, a Secret create
/// whose answer is lost after it was made (the retry finds its own Secret), a 429 on a pod
/// look-up. The job runs in one pod and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_api_failures_are_tried_again_and_a_lost_create_answer_adopts_its_object() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    api.inject(Fault {
        matching: "POST /api/v1/namespaces/default/pods?".into(),
        kind: FaultKind::Refuse(503),
        times: 2,
    });
    api.inject(Fault {
        matching: "POST /api/v1/namespaces/default/secrets?".into(),
        kind: FaultKind::LoseAnswer,
        times: 1,
    });
    api.inject(Fault {
        matching: "GET /api/v1/namespaces/default/pods/runner-".into(),
        kind: FaultKind::Refuse(429),
        times: 1,
    });
    let gitlab = FakeGitlab::start("glrt-t1_k8sretry1").await;
    let mut payload = no_git_job(&["echo ran-despite-the-api"], &[], 120);
    payload["credentials"] = json!([{
        "type": "registry", "url": "registry.example.com",
        "username": "gitlab-ci-token", "password": "pw"
    }]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, "glrt-t1_k8sretry1", &api, &helper, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert_eq!(output_lines(&log, "ran-despite-the-api"), 1, "{log}");
    let requests = api.requests();
    let count = |prefix: &str| {
        requests
            .iter()
            .filter(|request| request.starts_with(prefix))
            .count()
    };
    assert_eq!(
        count("POST /api/v1/namespaces/default/pods"),
        3,
        "{requests:?}"
    );
    assert_eq!(
        count("POST /api/v1/namespaces/default/secrets"),
        2,
        "{requests:?}"
    );
    assert_nothing_left(&api).await;
    assert!(api.secret_names().is_empty(), "{:?}", api.secret_names());
}

/// `namespace_per_job`: the job runs in its own `ci-job-<id>` namespace, made before the pod
/// and deleted at cleanup; a failing script prints no event (there is none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_per_job_makes_and_removes_the_jobs_own_namespace() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8snsjob1").await;
    let payload = no_git_job(&["echo in-its-own-namespace", "exit 3"], &[], 120);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        "glrt-t1_k8snsjob1",
        &api,
        &helper,
        "    namespace_per_job = true\n",
    );
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.exit_code, Some(3), "{log}");
    let namespace = format!("ci-job-{}", job.id);
    assert!(
        log.contains(&format!("Using Kubernetes namespace: {namespace}")),
        "{log}"
    );
    assert!(!log.contains("Event retrieved from the cluster"), "{log}");
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|request| request == "POST /api/v1/namespaces"),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(
            |request| request.starts_with(&format!("POST /api/v1/namespaces/{namespace}/pods"))
        ),
        "{requests:?}"
    );
    assert!(
        !api.namespace_names()
            .iter()
            .any(|name| name.ends_with(&namespace)),
        "{:?}",
        api.namespace_names()
    );
    assert_nothing_left(&api).await;
}

/// `FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY`: each stage is one exec with the script on
/// its stdin (no attach, no read-logs, no markers in the output); the exec's status is the
/// script's exit code, on v5 streams and on v4 ones (where the end of stdin cannot be sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_exec_strategy_runs_each_stage_as_one_exec_on_v5_and_v4() {
    let helper = HelperImage::build("dev");
    for v4 in [false, true] {
        let api = double().await;
        if v4 {
            api.speak_v4_only();
        }
        let gitlab = FakeGitlab::start("glrt-t1_k8slegacy").await;
        let mut payload = job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            &["echo legacy-out", "echo legacy-err >&2", "exit 7"],
            &["echo after $CI_JOB_STATUS"],
            json!([
                {"key": "GIT_STRATEGY", "value": "none", "public": true},
                {"key": "FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY", "value": "true", "public": true}
            ]),
            120,
        );
        declare_failure_reasons(&mut payload);
        let job = gitlab.enqueue(payload);
        let _runner = start_runner(&gitlab, "glrt-t1_k8slegacy", &api, &helper, "");
        let update = gitlab.wait_final(job, WAIT).await;
        let log = gitlab.log(job);
        assert_eq!(update.exit_code, Some(7), "v4 {v4}: {log}");
        for output in ["legacy-out", "legacy-err", "after failed"] {
            assert_eq!(
                output_lines(&log, output),
                1,
                "v4 {v4}: {output:?} in:\n{log}"
            );
        }
        assert!(
            log.contains("command terminated with exit code 7"),
            "v4 {v4}: {log}"
        );
        assert!(!log.contains("Using attach strategy"), "{log}");
        assert!(!log.contains("nonce"), "{log}");
        let requests = api.requests();
        assert!(
            !requests.iter().any(|request| request.contains("/attach")),
            "{requests:?}"
        );
        assert_nothing_left(&api).await;
    }
}

/// A service that ends during the job is said once in the job log (its container is named
/// after its alias, as upstream names it), and the job goes on (a service's exit is the job's
/// business, not a runner failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_ends_is_reported_once_and_the_job_goes_on() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let gitlab = FakeGitlab::start("glrt-t1_k8ssvcend").await;
    let mut payload = no_git_job(
        &[
            "echo waiting-for-the-service-to-end",
            "sleep 4",
            "echo still-here",
        ],
        &[],
        120,
    );
    payload["services"] = json!([{
        "name": DEBIAN_IMAGE,
        "alias": "short-lived",
        "entrypoint": ["sh", "-c"],
        "command": ["sleep 1; exit 3"],
    }]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, "glrt-t1_k8ssvcend", &api, &helper, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert_eq!(output_lines(&log, "still-here"), 1, "{log}");
    assert_eq!(
        log.matches("WARNING: Service container ended: Error in container short-lived: exit code: 3, reason: 'Error'")
            .count(),
        1,
        "{log}"
    );
    assert_nothing_left(&api).await;
}

/// Beyond upstream: at start the runner deletes the pods, unowned Secrets and job namespaces
/// that an earlier run of it left behind past their job's timeout (an hour's margin), and
/// nothing else: not younger ones, not another runner's, not one without a timeout, not a
/// Secret a pod owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_the_runner_sweeps_its_own_leftovers_past_their_timeout() {
    use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
    use kube::api::{Api, PostParams};
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8ssweep01";
    // The token's short form (prefixes off, nine characters), as in the pods' labels.
    let mine = "k8ssweep0".to_string();
    let client = api.client();
    let metadata = |name: &str, owner: &str, timeout: Option<&str>| {
        let mut meta = json!({"name": name,
            "labels": {"manager.runner.gitlab.com/id-short": owner}});
        if let Some(timeout) = timeout {
            meta["annotations"] = json!({"job.runner.gitlab.com/timeout": timeout});
        }
        meta
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let namespaces: Api<Namespace> = Api::all(client);
    let made = PostParams::default();
    let long_ago = Duration::from_secs(2 * 3600 + 60);
    for (name, owner, timeout, aged) in [
        ("old-mine", mine.as_str(), Some("1h0m0s"), true),
        ("young-mine", mine.as_str(), Some("1h0m0s"), false),
        ("old-other", "someoneelse", Some("1h0m0s"), true),
        ("old-untimed", mine.as_str(), None, true),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": metadata(name, owner, timeout),
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": DEBIAN_IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "infinity"]}]}
        }))
        .unwrap();
        pods.create(&made, &pod).await.unwrap();
        if aged {
            assert!(api.backdate("pods", "default", name, long_ago));
        }
    }
    let young = pods.get("young-mine").await.unwrap();
    for (name, owned) in [("old-secret", false), ("owned-secret", true)] {
        let mut secret = json!({"metadata": metadata(name, &mine, Some("1h0m0s")),
            "type": "Opaque"});
        if owned {
            secret["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod",
                "name": "young-mine", "uid": young.metadata.uid}]);
        }
        secrets
            .create(&made, &serde_json::from_value(secret).unwrap())
            .await
            .unwrap();
        assert!(api.backdate("secrets", "default", name, long_ago));
    }
    for (name, aged) in [("ci-job-77", true), ("ci-job-78", false)] {
        let namespace = json!({"metadata": metadata(name, &mine, Some("30m0s"))});
        namespaces
            .create(&made, &serde_json::from_value(namespace).unwrap())
            .await
            .unwrap();
        if aged {
            assert!(api.backdate("namespaces", "", name, long_ago));
        }
    }

    let gitlab = FakeGitlab::start(token).await;
    let (dir, config) = runner_config(
        &gitlab.url(),
        token,
        &api,
        &helper,
        "    namespace_per_job = true\n",
    );
    let log = dir.path().join("runner.log");
    let _runner = RunnerProcess::spawn_logged(&runner_binary(), &config, dir.path(), &log);
    let deadline = Instant::now() + WAIT;
    let gone = |names: Vec<String>, name: &str| !names.iter().any(|left| left.ends_with(name));
    while !(gone(api.pod_names(), "/old-mine")
        && gone(api.secret_names(), "/old-secret")
        && gone(api.namespace_names(), "ci-job-77"))
    {
        assert!(
            Instant::now() < deadline,
            "nothing swept: {:?} {:?} {:?}\n{}",
            api.pod_names(),
            api.secret_names(),
            api.namespace_names(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The sweep is one pass: what is left now stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pods_left = api.pod_names();
    pods_left.sort();
    assert_eq!(
        pods_left,
        [
            "default/old-other",
            "default/old-untimed",
            "default/young-mine"
        ]
    );
    assert!(
        api.secret_names()
            .iter()
            .any(|name| name.ends_with("/owned-secret")),
        "{:?}",
        api.secret_names()
    );
    assert!(
        api.namespace_names()
            .iter()
            .any(|name| name.ends_with("ci-job-78")),
        "{:?}",
        api.namespace_names()
    );
    let written = std::fs::read_to_string(&log).unwrap();
    for place in [
        "pod default/old-mine",
        "secret default/old-secret",
        "namespace ci-job-77",
    ] {
        assert!(
            written.contains(&format!("removed the left-over {place} of an earlier run")),
            "{written}"
        );
    }
    for name in ["young-mine", "old-other", "old-untimed"] {
        pods.delete(name, &Default::default()).await.unwrap();
    }
    assert_nothing_left(&api).await;
}

/// `exec kubernetes`: a job of a local `.gitlab-ci.yml` in a pod of the double, cloned from the
/// project directory (a read-only host path in the pod), its artifacts received on loopback,
/// nothing left after a passing and a failing job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_kubernetes_runs_a_local_pipeline_job_in_a_pod() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::write(dir.join("README.md"), "local readme\n").unwrap();
    std::fs::write(
        dir.join(".gitlab-ci.yml"),
        format!(
            "image: {DEBIAN_IMAGE}\nvariables:\n  GREETING: hello-pod\nbuild-job:\n  artifacts:\n    paths: [out.txt]\n  script:\n    - cat README.md\n    - echo \"$GREETING in $CI_JOB_NAME\" | tee out.txt\nfailing-job:\n  script:\n    - exit 3\n"
        ),
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "initial"],
    ] {
        let status = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
    let binary = runner_binary();
    let exec = |job: &str| {
        let mut command = tokio::process::Command::new(&binary);
        command
            .current_dir(dir)
            .args(["exec", "kubernetes", job])
            .args(["--kubernetes-host", &api.url()])
            .arg("--kubernetes-ca-file")
            .arg(api.ca_file())
            .env("KUBERNETES_BEARER_TOKEN", TOKEN)
            .args(["--kubernetes-namespace", "default"])
            .args(["--kubernetes-helper-image", &helper.0])
            .args(["--kubernetes-pull-policy", "if-not-present"]);
        async move {
            let output = command.output().await.unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr),
            )
        }
    };
    let (code, out) = exec("build-job").await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        output_lines(&out, "local readme"),
        0,
        "no timestamps in exec's log"
    );
    assert!(out.lines().any(|line| line == "local readme"), "{out}");
    assert!(
        out.lines().any(|line| line == "hello-pod in build-job"),
        "{out}"
    );
    assert!(out.contains("Job succeeded"), "{out}");
    let archive = dir.join("exec-artifacts/build-job/artifacts.zip");
    let zip = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
    assert_eq!(zip.file_names().collect::<Vec<_>>(), ["out.txt"], "{out}");
    assert_nothing_left(&api).await;
    let (code, out) = exec("failing-job").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("ERROR: Job failed: command terminated with exit code 3"),
        "{out}"
    );
    assert_nothing_left(&api).await;
}

/// `resource_availability_check_max_attempts`: the configured service account and image pull
/// secret are looked for before the pod is made; one that does not come within the attempts
/// (5 s apart) fails the job with upstream's message and no pod; one that comes meanwhile lets
/// the job run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_check_waits_for_the_service_account_and_pull_secret() {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use kube::api::{Api, PostParams};
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8sresck01";
    let gitlab = FakeGitlab::start(token).await;
    let mut missing = no_git_job(&["echo never"], &[], 120);
    declare_failure_reasons(&mut missing);
    let missing = gitlab.enqueue(missing);
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        "    service_account = \"ci-builder\"\n    image_pull_secrets = [\"pull-creds\"]\n    resource_availability_check_max_attempts = 1\n",
    );
    let update = gitlab.wait_final(missing, WAIT).await;
    let log = gitlab.log(missing);
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "{log}"
    );
    assert!(
        log.contains(
            "Timed out while waiting for ServiceAccount/ci-builder to be present in the cluster"
        ),
        "{log}"
    );
    let looked = |path: &str| {
        api.requests()
            .iter()
            .filter(|request| request.starts_with(&format!("GET {path}")))
            .count()
    };
    // Once, and once more after the one further attempt.
    assert_eq!(
        looked("/api/v1/namespaces/default/serviceaccounts/ci-builder"),
        2
    );
    assert!(!api
        .requests()
        .iter()
        .any(|request| request.starts_with("POST /api/v1/namespaces/default/pods")));
    assert_nothing_left(&api).await;

    let client = api.client();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let account = serde_json::from_value(json!({"metadata": {"name": "ci-builder"}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let arriving = gitlab.enqueue(no_git_job(&["echo ran-once-all-was-there"], &[], 120));
    // The secret comes only once the runner has looked for it and not found it (the first
    // job never got to it): its one further look, 5 s later, finds it.
    let deadline = Instant::now() + WAIT;
    while looked("/api/v1/namespaces/default/secrets/pull-creds") < 1 {
        assert!(Instant::now() < deadline, "{:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let secret = serde_json::from_value(json!({"metadata": {"name": "pull-creds"}})).unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let log = gitlab.wait_success(arriving, WAIT).await;
    assert_eq!(output_lines(&log, "ran-once-all-was-there"), 1, "{log}");
    assert_eq!(looked("/api/v1/namespaces/default/secrets/pull-creds"), 2);
    assert_nothing_left(&api).await;
}

/// `FF_PRINT_POD_EVENTS`: the pod's events from its creation on are printed as upstream's
/// table (`Type`, `Reason`, `Message`), without the "Waiting for pod" lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_events_are_printed_as_a_table_with_ff_print_pod_events() {
    use k8s_openapi::api::core::v1::Event;
    use kube::api::{Api, PostParams};
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8sevtab01";
    let gitlab = FakeGitlab::start(token).await;
    let shared = tempfile::tempdir().unwrap();
    let mut payload = no_git_job(
        &[
            "until [ -e /shared/go ]; do sleep 0.1; done",
            "echo events-seen",
        ],
        &[],
        120,
    );
    payload["variables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "FF_PRINT_POD_EVENTS", "value": "true", "public": true}));
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        &format!(
            "    [[runners.kubernetes.volumes.host_path]]\n      name = \"shared\"\n      mount_path = \"/shared\"\n      host_path = \"{}\"\n",
            shared.path().display()
        ),
    );
    gitlab.wait_log(job, "until [ -e /shared/go ]", WAIT).await;
    let pods = api.pod_names();
    let (_, pod) = pods[0].split_once('/').unwrap();
    let events: Api<Event> = Api::namespaced(api.client(), "default");
    for (name, involved, reason, message) in [
        ("ours", pod, "Probe", "made-by-the-test for the job's pod"),
        ("theirs", "another-pod", "Other", "not-about-the-job"),
    ] {
        let event = serde_json::from_value(json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": involved, "namespace": "default"},
            "type": "Normal", "reason": reason, "message": message
        }))
        .unwrap();
        events.create(&PostParams::default(), &event).await.unwrap();
    }
    gitlab
        .wait_log(job, "Probe    made-by-the-test for the job's pod", WAIT)
        .await;
    std::fs::write(shared.path().join("go"), "").unwrap();
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("Subscribing to Kubernetes Pod events..."),
        "{log}"
    );
    assert!(!log.contains("not-about-the-job"), "{log}");
    assert!(!log.contains("Waiting for pod"), "{log}");
    let table: Vec<&str> = log
        .lines()
        .filter_map(|line| line.split_once(' ').and_then(|(_, rest)| rest.get(4..)))
        .filter(|line| line.starts_with("Type ") || line.starts_with("Normal "))
        .collect();
    assert_eq!(
        table,
        [
            "Type     Reason   Message",
            "Normal   Probe    made-by-the-test for the job's pod"
        ],
        "{log}"
    );
    assert!(
        log.contains("00E Type     Reason"),
        "the table is on stderr: {log}"
    );
    events.delete("theirs", &Default::default()).await.unwrap();
    assert_nothing_left(&api).await;
}

/// Upstream's `SharedBuildsDir`: a `host_path` volume at the builds root may be shared by
/// concurrent jobs, so the project directory is `<root>/<short token>/<concurrent id>/<path>`
/// (without it, in the pod's own `repo` emptyDir, `<root>/<path>`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_path_at_the_builds_root_gives_the_shared_builds_dir_layout() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8sshare01";
    let gitlab = FakeGitlab::start(token).await;
    let builds = tempfile::tempdir().unwrap();
    let job = gitlab.enqueue(no_git_job(
        &[
            "echo \"dir=$CI_PROJECT_DIR\"",
            "mkdir -p \"$CI_PROJECT_DIR\" && touch \"$CI_PROJECT_DIR/made-in-the-pod\"",
        ],
        &[],
        120,
    ));
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        &format!(
            "    [[runners.kubernetes.volumes.host_path]]\n      name = \"builds\"\n      mount_path = \"/builds\"\n      host_path = \"{}\"\n",
            builds.path().display()
        ),
    );
    let log = gitlab.wait_success(job, WAIT).await;
    let project = log
        .lines()
        .find_map(|line| line.split_once("01O dir=").map(|(_, dir)| dir.to_string()))
        .unwrap_or_else(|| panic!("no dir= line in:\n{log}"));
    let relative = project
        .strip_prefix("/builds/k8sshare0/0/")
        .unwrap_or_else(|| {
            panic!("{project} is not under /builds/<short token>/<concurrent id>/:\n{log}")
        });
    assert!(
        builds
            .path()
            .join("k8sshare0/0")
            .join(relative)
            .join("made-in-the-pod")
            .exists(),
        "{relative} on the host path ({:?}):\n{log}",
        std::process::Command::new("find")
            .arg(builds.path())
            .output()
            .unwrap()
    );
    assert_nothing_left(&api).await;
}

/// A job canceled while the resource check waits for a service account that never comes
/// ends at once (not after its 30 looks, 5 s apart), with upstream's wrapper for what the
/// first stage does, and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_resource_check_ends_the_job_at_once() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8sresck02";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(no_git_job(&["echo never"], &[], 600));
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        "    service_account = \"never-there\"\n    resource_availability_check_max_attempts = 30\n",
    );
    let deadline = Instant::now() + WAIT;
    while !api.requests().iter().any(|request| {
        request.starts_with("GET /api/v1/namespaces/default/serviceaccounts/never-there")
    }) {
        assert!(Instant::now() < deadline, "{:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let canceled = Instant::now();
    gitlab.cancel(job);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert!(canceled.elapsed() < Duration::from_secs(20), "{log}");
    assert!(!log.contains("Timed out while waiting"), "{log}");
    assert_eq!(output_lines(&log, "never"), 0, "{log}");
    assert_nothing_left(&api).await;
}

/// The shared S3 cache from pods: the first job's helper container uploads the cache to a
/// real S3 server (through the presigned URL the runner gives it), the second job, in a new
/// pod with an empty `repo` volume, downloads and extracts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_cache_round_trips_between_two_pods() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let s3 = runner_tests::S3Server::start("runner-cache");
    let token = "glrt-t1_k8scache1";
    let gitlab = FakeGitlab::start(token).await;
    let cache = json!([{"key": "k8s-s3", "paths": ["vendor/"], "policy": "pull-push",
        "when": "on_success", "untracked": false}]);
    let mut save = no_git_job(
        &["mkdir -p vendor && printf 'from-s3' > vendor/dep.txt"],
        &[],
        120,
    );
    save["cache"] = cache.clone();
    let save = gitlab.enqueue(save);
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        &s3.cache_section(runner_tests::s3::SECRET_KEY, ""),
    );
    let log = gitlab.wait_success(save, WAIT).await;
    assert!(log.contains("Uploading cache.zip to http://"), "{log}");
    assert!(log.contains("Created cache"), "{log}");
    assert!(!log.contains("X-Amz-Signature"), "{log}");
    let objects = s3.objects("runner-cache");
    assert!(
        objects
            .iter()
            .any(|object| object.starts_with("prefix/runner/")
                && object.ends_with("/project/77/k8s-s3")),
        "{objects:?}"
    );
    assert_nothing_left(&api).await;

    let mut restore = no_git_job(&["echo \"restored=$(cat vendor/dep.txt)\""], &[], 120);
    restore["cache"] = cache;
    let restore = gitlab.enqueue(restore);
    let log = gitlab.wait_success(restore, WAIT).await;
    assert!(log.contains("Downloading cache from http://"), "{log}");
    assert!(log.contains("Successfully extracted cache"), "{log}");
    assert_eq!(output_lines(&log, "restored=from-s3"), 1, "{log}");
    assert_nothing_left(&api).await;
}

/// The build container itself OOM-killed (the double kills the whole container on an OOM
/// kill in it, as a cgroup-v2 kubelet's grouped OOM kill does): the job ends as a system
/// failure naming the container and its memory limit, and leaves nothing. (Raising the main
/// shell's `oom_score_adj` instead is not enough: on this machine's cgroup v1 the kernel still
/// chose the hog, once in a CI run and always on a bare engine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_build_container_is_named_with_its_limit() {
    let helper = HelperImage::build("dev");
    let _ = runner_tests::debian_image();
    let api = KubeApi::start_with_kubelet(KubeletSettings {
        network: "host".into(),
        grouped_oom_kill: true,
        ..KubeletSettings::default()
    })
    .await;
    let token = "glrt-t1_k8soom002";
    let gitlab = FakeGitlab::start(token).await;
    let mut payload = no_git_job(
        &["head -c 300m /dev/zero | tail > /dev/null", "echo survived"],
        &[],
        120,
    );
    declare_failure_reasons(&mut payload);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        "    memory_limit = \"96Mi\"\n",
    );
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_system_failure"),
        "{log}"
    );
    assert!(
        log.contains("container build was OOM-killed, limit 96Mi"),
        "{log}"
    );
    assert_eq!(output_lines(&log, "survived"), 0, "{log}");
    assert_nothing_left(&api).await;
}

/// Every kind of `KUBERNETES_*` overwrite a job may make, each allowed by its
/// `*_overwrite_allowed` or within its `*_overwrite_max_allowed`, said with upstream's line and
/// found in the pod the double stores; then one refusal of each kind with upstream's message,
/// before any pod is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_overwrite_is_applied_within_bounds_and_refused_beyond() {
    let helper = HelperImage::build("dev");
    let api = double().await;
    let token = "glrt-t1_k8sovall1";
    let gitlab = FakeGitlab::start(token).await;
    let shared = tempfile::tempdir().unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let accepted = [
        ("KUBERNETES_NAMESPACE_OVERWRITE", "ci-review".to_string()),
        (
            "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE",
            "ci-builder".to_string(),
        ),
        ("KUBERNETES_POD_LABELS_1", "team=blue".to_string()),
        (
            "KUBERNETES_POD_ANNOTATIONS_1",
            "note=from-the-job".to_string(),
        ),
        (
            "KUBERNETES_NODE_SELECTOR_ARCH",
            format!("kubernetes.io/arch={arch}"),
        ),
        (
            "KUBERNETES_NODE_TOLERATIONS_1",
            "gpu=true:NoSchedule".to_string(),
        ),
        ("KUBERNETES_CPU_REQUEST", "200m".to_string()),
        ("KUBERNETES_MEMORY_REQUEST", "64Mi".to_string()),
        ("KUBERNETES_EPHEMERAL_STORAGE_LIMIT", "1Gi".to_string()),
        ("KUBERNETES_HELPER_CPU_LIMIT", "300m".to_string()),
        ("KUBERNETES_HELPER_MEMORY_REQUEST", "32Mi".to_string()),
    ];
    let job = |variables: &[(&str, String)], script: &[&str]| {
        let mut payload = no_git_job(script, &[], 120);
        for (key, value) in variables {
            payload["variables"]
                .as_array_mut()
                .unwrap()
                .push(json!({"key": key, "value": value, "public": true}));
        }
        declare_failure_reasons(&mut payload);
        payload
    };
    // The namespace the job moves to is there, as on a cluster.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(api.client());
    let review = serde_json::from_value(json!({"metadata": {"name": "ci-review"}})).unwrap();
    namespaces
        .create(&Default::default(), &review)
        .await
        .unwrap();
    let held = gitlab.enqueue(job(
        &accepted,
        &[
            "until [ -e /shared/go ]; do sleep 0.1; done",
            "echo overwritten-pod-ran",
        ],
    ));
    let _runner = start_runner(
        &gitlab,
        token,
        &api,
        &helper,
        &format!(
            "    namespace_overwrite_allowed = \"ci-.*\"\n    service_account_overwrite_allowed = \"ci-.*\"\n    pod_labels_overwrite_allowed = \"team=.*\"\n    pod_annotations_overwrite_allowed = \"note=.*\"\n    node_selector_overwrite_allowed = \"kubernetes.io/arch=.*\"\n    node_tolerations_overwrite_allowed = \"gpu=.*\"\n    cpu_request_overwrite_max_allowed = \"500m\"\n    memory_request_overwrite_max_allowed = \"128Mi\"\n    ephemeral_storage_limit_overwrite_max_allowed = \"2Gi\"\n    helper_cpu_limit_overwrite_max_allowed = \"500m\"\n    helper_memory_request_overwrite_max_allowed = \"64Mi\"\n    [[runners.kubernetes.volumes.host_path]]\n      name = \"shared\"\n      mount_path = \"/shared\"\n      host_path = \"{}\"\n",
            shared.path().display()
        ),
    );
    gitlab.wait_log(held, "until [ -e /shared/go ]", WAIT).await;
    let pods = api.pod_names();
    let (namespace, name) = pods[0].split_once('/').unwrap();
    assert_eq!(namespace, "ci-review", "{pods:?}");
    let pod = api.object("pods", namespace, name).unwrap();
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "ci-builder", "{pod}");
    assert_eq!(pod["metadata"]["labels"]["team"], "blue", "{pod}");
    assert_eq!(
        pod["metadata"]["annotations"]["note"], "from-the-job",
        "{pod}"
    );
    assert_eq!(spec["nodeSelector"]["kubernetes.io/arch"], arch, "{pod}");
    assert!(
        spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|toleration| toleration["key"] == "gpu"
                && toleration["value"] == "true"
                && toleration["effect"] == "NoSchedule"),
        "{pod}"
    );
    let container = |wanted: &str| {
        spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|container| container["name"] == wanted)
            .unwrap()
            .clone()
    };
    let build = container("build");
    assert_eq!(build["resources"]["requests"]["cpu"], "200m", "{build}");
    assert_eq!(build["resources"]["requests"]["memory"], "64Mi", "{build}");
    assert_eq!(
        build["resources"]["limits"]["ephemeral-storage"], "1Gi",
        "{build}"
    );
    let helper_container = container("helper");
    assert_eq!(
        helper_container["resources"]["limits"]["cpu"], "300m",
        "{helper_container}"
    );
    assert_eq!(
        helper_container["resources"]["requests"]["memory"], "32Mi",
        "{helper_container}"
    );
    std::fs::write(shared.path().join("go"), "").unwrap();
    let log = gitlab.wait_success(held, WAIT).await;
    for line in [
        r#""Namespace" overwritten with "ci-review""#,
        r#""ServiceAccount" overwritten with "ci-builder""#,
        r#""PodLabels" "team" overwritten with "blue""#,
        r#""PodAnnotations" "note" overwritten with "from-the-job""#,
        r#""NodeTolerations" "gpu=true" overwritten with "NoSchedule""#,
        r#""CPURequest" overwritten with "200m""#,
        r#""MemoryRequest" overwritten with "64Mi""#,
        r#""EphemeralStorageLimit" overwritten with "1Gi""#,
        r#""HelperCPULimit" overwritten with "300m""#,
        r#""HelperMemoryRequest" overwritten with "32Mi""#,
    ] {
        assert_eq!(output_lines(&log, line), 1, "{line} in:\n{log}");
    }
    assert_eq!(
        output_lines(
            &log,
            &format!(r#""NodeSelector" "kubernetes.io/arch" overwritten with "{arch}""#)
        ),
        1,
        "{log}"
    );
    assert_eq!(output_lines(&log, "overwritten-pod-ran"), 1, "{log}");
    assert_nothing_left(&api).await;

    let pods_made = |api: &KubeApi| {
        api.requests()
            .iter()
            .filter(|request| {
                request.starts_with("POST /api/v1/namespaces/") && request.contains("/pods?")
            })
            .count()
    };
    let before = pods_made(&api);
    for (key, value, message) in [
        (
            "KUBERNETES_NAMESPACE_OVERWRITE",
            "prod",
            r#"provided value "prod" does not match "ci-.*""#,
        ),
        (
            "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE",
            "admin",
            r#"provided value "admin" does not match "ci-.*""#,
        ),
        (
            "KUBERNETES_POD_LABELS_1",
            "owner=me",
            r#"provided value "owner=me" does not match "team=.*""#,
        ),
        (
            "KUBERNETES_POD_ANNOTATIONS_1",
            "other=x",
            r#"provided value "other=x" does not match "note=.*""#,
        ),
        (
            "KUBERNETES_NODE_SELECTOR_1",
            "zone=a",
            r#"provided value "zone=a" does not match "kubernetes.io/arch=.*""#,
        ),
        (
            "KUBERNETES_NODE_TOLERATIONS_1",
            "spot=true:NoSchedule",
            r#"provided value "spot=true:NoSchedule" does not match "gpu=.*""#,
        ),
        (
            "KUBERNETES_MEMORY_REQUEST",
            "1Gi",
            r#"invalid build requests specified: the resource "MemoryRequest" requested "1Gi" is higher than limit allowed "128Mi""#,
        ),
        (
            "KUBERNETES_HELPER_CPU_LIMIT",
            "2",
            r#"invalid helper limits specified: the resource "HelperCPULimit" requested "2" is higher than limit allowed "500m""#,
        ),
    ] {
        let refused = gitlab.enqueue(job(&[(key, value.to_string())], &["echo never-ran"]));
        let update = gitlab.wait_final(refused, WAIT).await;
        let log = gitlab.log(refused);
        assert_eq!(
            update.failure_reason.as_deref(),
            Some("runner_configuration_error"),
            "{key}: {log}"
        );
        assert_eq!(
            output_lines(
                &log,
                &format!("ERROR: Job failed: couldn't prepare overwrites: {message}")
            ),
            1,
            "{key}: {log}"
        );
    }
    assert_eq!(pods_made(&api), before, "{:?}", api.requests());
    assert_nothing_left(&api).await;
}
