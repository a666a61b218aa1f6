//! End to end: the `gitlab-runner-rs` binary with the Docker executor on the real Docker
//! engine, against the fake GitLab and a git server over HTTP on the host (the containers use
//! the host's network to reach them). Images are built locally: the build image is the
//! debootstrap image of `scripts/build-sshd-image.sh`, the helper image adds the static helper.
//! After every job the test lists Docker objects by the job's label and asserts none is left.
//!
//! Needs the Docker engine; never skipped.

use std::process::Command;
use std::time::Duration;

use runner_tests::{
    job_payload, runner_binary, FakeGitlab, GitServer, HelperImage, RunnerProcess, DEBIAN_IMAGE,
};
use serde_json::json;

const BUILD_IMAGE: &str = DEBIAN_IMAGE;
/// Each test has its own runner token, so its objects are told apart by the runner.id label
/// (job ids repeat across the fake GitLabs of tests running at once).
const TOKEN_BASIC: &str = "glrt-t1_dkrbasic1";
const TOKEN_FAIL: &str = "glrt-t1_dkrfail01";
const TOKEN_SERVICES: &str = "glrt-t1_dkrsvc001";
const WAIT: Duration = Duration::from_secs(180);
/// The containers reach the fake GitLab and the git server on the host's loopback.
const HOST_NETWORK: &str = "    network_mode = \"host\"\n";

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Containers, volumes and networks labelled with the runner (its short token: the 9
/// characters after `glrt-t1_`) and `job_id`.
fn objects_of_job(token: &str, job_id: i64) -> Vec<String> {
    let short: String = token
        .trim_start_matches("glrt-t1_")
        .chars()
        .take(9)
        .collect();
    let runner = format!("label=com.gitlab.gitlab-runner.runner.id={short}");
    let job = format!("label=com.gitlab.gitlab-runner.job.id={job_id}");
    let mut out = Vec::new();
    for kind in [["ps", "-a"], ["volume", "ls"], ["network", "ls"]] {
        let listed = run(Command::new("docker")
            .args(kind)
            .args(["-q", "--filter", &runner, "--filter", &job]));
        out.extend(listed.lines().map(str::to_string));
    }
    out
}

struct Runner {
    _process: RunnerProcess,
    _dir: tempfile::TempDir,
}

fn start_runner(gitlab: &FakeGitlab, token: &str, helper: &HelperImage, extra: &str) -> Runner {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 2\ncheck_interval = 1\n\n[[runners]]\n  name = \"docker\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"{BUILD_IMAGE}\"\n    helper_image = \"{}\"\n    pull_policy = [\"if-not-present\"]\n{extra}",
            gitlab.url(),
            helper.0
        ),
    )
    .unwrap();
    Runner {
        _process: RunnerProcess::spawn(&runner_binary(), &config, dir.path(), &[]),
        _dir: dir,
    }
}

fn reasons(payload: &mut serde_json::Value) {
    payload["features"]["failure_reasons"] = json!([
        "script_failure",
        "runner_system_failure",
        "job_execution_timeout",
        "image_pull_failure",
        "runner_configuration_error"
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_clones_runs_in_its_image_uploads_an_artifact_and_leaves_nothing() {
    let helper = HelperImage::build("dev");
    let git = GitServer::start(&[("README.md", "hello from docker\n")], true).await;
    let gitlab = FakeGitlab::start(TOKEN_BASIC).await;
    let mut payload = job_payload(
        &git.url_with_token("JOB_TOKEN"),
        &git.head(),
        &[
            "cat README.md",
            "echo \"os=$(. /etc/os-release; echo $ID) pwd=$PWD shell=$0\"",
            "mkdir -p out && echo made-in-docker > out/result.txt",
        ],
        &["echo after $CI_JOB_STATUS"],
        json!([{"key": "CI_PROJECT_PATH", "value": "group/project", "public": true}]),
        120,
    );
    payload["artifacts"] = json!([{"name": "docker-out", "paths": ["out/"], "when": "on_success",
        "artifact_type": "archive", "artifact_format": "zip"}]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, TOKEN_BASIC, &helper, HOST_NETWORK);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "success", "{log}");
    assert!(
        log.contains(&format!(
            "Using Docker executor with image {BUILD_IMAGE} ..."
        )),
        "{log}"
    );
    assert!(
        log.contains("Using effective pull policy of [if-not-present]"),
        "{log}"
    );
    assert!(log.contains("hello from docker"), "{log}");
    assert!(log.contains("os=debian pwd=/builds/"), "{log}");
    assert!(log.contains("after success"), "{log}");
    assert!(
        log.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{log}"
    );
    assert_eq!(gitlab.artifacts(job).len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        objects_of_job(TOKEN_BASIC, job.id).is_empty(),
        "{:?}",
        objects_of_job(TOKEN_BASIC, job.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_upstreams_reasons_and_clean_up() {
    let helper = HelperImage::build("dev");
    let gitlab = FakeGitlab::start(TOKEN_FAIL).await;
    let no_git = json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]);
    let payload = |script: &[&str], timeout: i64| {
        let mut payload = job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            script,
            &[],
            no_git.clone(),
            timeout,
        );
        reasons(&mut payload);
        payload
    };
    let failing = gitlab.enqueue(payload(&["echo failing", "exit 42"], 120));
    let mut missing = payload(&["echo never"], 120);
    missing["image"] = json!({"name": "gitlab-runner-rs-test/no-such-image:1"});
    let missing = gitlab.enqueue(missing);
    let slow = gitlab.enqueue(payload(&["echo started", "sleep 300"], 5));
    let _runner = start_runner(&gitlab, TOKEN_FAIL, &helper, HOST_NETWORK);

    let update = gitlab.wait_final(failing, WAIT).await;
    let log = gitlab.log(failing);
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("script_failure"),
        "{log}"
    );
    assert_eq!(update.exit_code, Some(42), "{log}");
    assert!(log.contains("ERROR: Job failed: exit code 42"), "{log}");

    let update = gitlab.wait_final(missing, WAIT).await;
    let log = gitlab.log(missing);
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("image_pull_failure"),
        "{log}"
    );
    assert!(
        log.contains("failed to pull image \"gitlab-runner-rs-test/no-such-image:1\""),
        "{log}"
    );

    let update = gitlab.wait_final(slow, WAIT).await;
    let log = gitlab.log(slow);
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("job_execution_timeout"),
        "{log}"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    for job in [failing, missing, slow] {
        assert!(
            objects_of_job(TOKEN_FAIL, job.id).is_empty(),
            "{:?}",
            objects_of_job(TOKEN_FAIL, job.id)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_reached_by_alias_on_the_job_network_and_a_broken_one_is_reported() {
    let helper = HelperImage::build("dev");
    let gitlab = FakeGitlab::start(TOKEN_SERVICES).await;
    let mut payload = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &[
            "exec 3<>/dev/tcp/sshd-svc/22; head -c 7 <&3; echo",
            "exec 4<>/dev/tcp/gitlab-runner-rs-test__debian-sshd/22; head -c 7 <&4; echo",
        ],
        &[],
        json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
        120,
    );
    payload["services"] = json!([
        {"name": BUILD_IMAGE, "alias": "sshd-svc,other-name", "variables": [{"key": "AUTHORIZED_KEY", "value": "ssh-ed25519 AAAA"}]},
        {"name": BUILD_IMAGE, "alias": "broken-svc", "command": ["sh", "-c", "echo service-broke-on-purpose; exit 1"]}
    ]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        TOKEN_SERVICES,
        &helper,
        "    wait_for_services_timeout = 10\n",
    );
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "success", "{log}");
    assert!(
        log.contains("Starting service gitlab-runner-rs-test/debian-sshd:bookworm-1 ..."),
        "{log}"
    );
    assert_eq!(log.matches("SSH-2.0").count(), 2, "{log}");
    // The second service shares the default alias: a warning, and it is reached by its own.
    assert!(log.contains("duplicate alias"), "{log}");
    assert!(log.contains("probably didn't start properly"), "{log}");
    assert!(log.contains("service-broke-on-purpose"), "{log}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        objects_of_job(TOKEN_SERVICES, job.id).is_empty(),
        "{:?}",
        objects_of_job(TOKEN_SERVICES, job.id)
    );
}

const TOKEN_STOP: &str = "glrt-t1_dkrstop01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cancel_and_a_runner_sigterm_leave_no_container() {
    let helper = HelperImage::build("dev");
    let gitlab = FakeGitlab::start(TOKEN_STOP).await;
    let ticking = |marker: &str| {
        job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            &[&format!(
                "echo {marker}; while true; do echo tick; sleep 0.5; done"
            )],
            &[],
            json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
            600,
        )
    };
    let canceled = gitlab.enqueue(ticking("cancel-me"));
    let mut runner = start_runner(&gitlab, TOKEN_STOP, &helper, "");
    gitlab.wait_log(canceled, "cancel-me", WAIT).await;
    gitlab.cancel(canceled);
    let update = gitlab.wait_final(canceled, WAIT).await;
    assert_eq!(update.state, "failed", "{}", gitlab.log(canceled));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        objects_of_job(TOKEN_STOP, canceled.id).is_empty(),
        "{:?}",
        objects_of_job(TOKEN_STOP, canceled.id)
    );

    let interrupted = gitlab.enqueue(ticking("interrupt-me"));
    gitlab.wait_log(interrupted, "interrupt-me", WAIT).await;
    runner._process.signal(libc::SIGTERM);
    let update = gitlab.wait_final(interrupted, WAIT).await;
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_interrupted"),
        "{}",
        gitlab.log(interrupted)
    );
    // The runner exits once its cleanup is done.
    tokio::task::spawn_blocking(move || {
        let _ = runner._process.wait();
    })
    .await
    .unwrap();
    assert!(
        objects_of_job(TOKEN_STOP, interrupted.id).is_empty(),
        "{:?}",
        objects_of_job(TOKEN_STOP, interrupted.id)
    );
}
