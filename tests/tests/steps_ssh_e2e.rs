//! End to end: `run:` jobs (CI steps) on the SSH executor against a real `sshd` on loopback:
//! the remote host's `gitlab-runner` (this binary) serves the Step Runner in a private
//! directory for the job, and every dial is a new session running `steps proxy`. A dropped
//! session is redialled and the log resumed with no byte lost or repeated.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test fails"
)]

use std::time::Duration;

use runner_tests::{runner_binary, steps_jobs, FakeGitlab, RunnerProcess, SshServer, SshdOptions};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);

struct Runner {
    _process: RunnerProcess,
    _dir: tempfile::TempDir,
}

fn start_runner(gitlab: &FakeGitlab, token: &str, server: &SshServer) -> Runner {
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = server.known_hosts(false);
    let config = format!(
        "concurrent = 2\ncheck_interval = 1\n\n[[runners]]\n  name = \"ssh-steps\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"ssh\"\n  [runners.ssh]\n    host = \"127.0.0.1\"\n    port = \"{}\"\n    user = \"{}\"\n    known_hosts_file = \"{}\"\n    identity_file = \"{}\"\n",
        gitlab.url(),
        server.port(),
        server.user(),
        known_hosts.display(),
        server.identity_file().display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    Runner {
        _process: RunnerProcess::spawn(&runner_binary(), &path, dir.path(), &[]),
        _dir: dir,
    }
}

/// An SSH server whose user has this binary as `gitlab-runner` on its PATH.
fn server() -> SshServer {
    let server = SshServer::start(SshdOptions::default());
    std::os::unix::fs::symlink(runner_binary(), server.home().join("bin/gitlab-runner")).unwrap();
    server
}

fn run_payload(steps: Value) -> Value {
    steps_jobs::run_payload(
        steps,
        vec![
            json!({"key": "MY_SECRET", "value": "s3cr3t-over-ssh-77", "public": false, "masked": true}),
        ],
        120,
    )
}

/// Steps on the remote host: outputs between steps, a masked variable, the project dir; the
/// remote step runner's private directory is gone after the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_job_runs_on_the_remote_host_through_ssh_sessions() {
    let server = server();
    let token = "glrt-t1_sshsteps1";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(run_payload(json!([
        {"name": "hello", "script": "echo hello as $(id -un); echo '{\"name\":\"x\",\"value\":\"7\"}' >> \"${{ output_file }}\""},
        {"name": "show", "script": "echo got ${{ steps.hello.outputs.x }} secret ${{ job.MY_SECRET }}; pwd; echo serve-dir=$(dirname $(tr '\\0' ' ' < /proc/$PPID/cmdline | sed 's/.*--socket //'))"},
    ])));
    let _runner = start_runner(&gitlab, token, &server);
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("Executing \"step_run\" stage of the job script"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.ends_with(&format!("hello as {}", server.user()))),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.ends_with("got 7 secret [MASKED]")),
        "{log}"
    );
    assert!(!log.contains("s3cr3t-over-ssh-77"), "{log}");
    let dir = log
        .lines()
        .find_map(|l| l.split("serve-dir=").nth(1))
        .unwrap()
        .trim()
        .to_string();
    assert!(dir.starts_with("/tmp/step-runner."), "{log}");
    // The session's end stopped the service and removed its directory.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&dir).exists() {
        assert!(tokio::time::Instant::now() < deadline, "{dir} is left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The step kills the `steps proxy` session its own output goes through, twice (found by the
/// socket of its own service, so no other job's is touched): the runner opens new sessions,
/// resumes `FollowLogs` from its offset, and the log holds every line exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_ssh_session_is_redialled_and_the_log_resumed_without_loss_or_repeat() {
    let server = server();
    let token = "glrt-t1_sshsteps2";
    let gitlab = FakeGitlab::start(token).await;
    // Its own service's socket (the step's parent is `steps serve --socket …`).
    let prelude = "socket=$(tr '\\0' ' ' < /proc/$PPID/cmdline | sed 's/.*--socket //; s/ *$//'); ";
    let script = steps_jobs::dropped_transport_script(prelude, "pro\"\"xy --socket $socket");
    let job = gitlab.enqueue(run_payload(json!([{"name": "count", "script": script}])));
    let _runner = start_runner(&gitlab, token, &server);
    let log = gitlab.wait_success(job, WAIT).await;
    steps_jobs::assert_dropped_transport_log(&log);
}
