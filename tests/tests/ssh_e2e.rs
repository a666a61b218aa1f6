//! End to end: the `gitlab-runner-rs` binary with the SSH executor against a fake GitLab over
//! real HTTP and a real OpenSSH server on loopback (started by the harness, logging in as a
//! throwaway user), cloning a real repository served over git smart HTTP.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runner_tests::{
    job_payload, runner_binary, FakeGitlab, GitServer, RunnerProcess, SshServer, SshdOptions,
};
use serde_json::json;

const RUNNER_TOKEN: &str = "glrt-t1_sshrunnertoken";
const WAIT: Duration = Duration::from_secs(120);

struct Runner {
    _process: RunnerProcess,
    _dir: tempfile::TempDir,
}

impl Runner {
    /// A runner whose `[runners.ssh]` section is `ssh` (key = value lines).
    fn start(gitlab: &FakeGitlab, ssh: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"concurrent = 2
check_interval = 1

[[runners]]
  name = "ssh-e2e"
  url = "{url}"
  token = "{RUNNER_TOKEN}"
  executor = "ssh"
  [runners.ssh]
{ssh}
"#,
            url = gitlab.url(),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let process = RunnerProcess::spawn(
            &runner_binary(),
            &config_path,
            dir.path(),
            &[("RUST_LOG", "info".as_ref())],
        );
        Self {
            _process: process,
            _dir: dir,
        }
    }
}

impl Runner {
    /// A runner that knows `server`'s host keys and logs in with the accepted key.
    fn with_key(gitlab: &FakeGitlab, server: &SshServer) -> Self {
        let known_hosts = server.known_hosts(false);
        Self::start(
            gitlab,
            &ssh_section(server, &known_hosts, Some(&server.identity_file())),
        )
    }
}

/// `[runners.ssh]` for `server` with its key and a known_hosts file.
fn ssh_section(server: &SshServer, known_hosts: &Path, identity: Option<&Path>) -> String {
    let mut text = format!(
        "    host = \"127.0.0.1\"\n    port = \"{}\"\n    user = \"{}\"\n    known_hosts_file = \"{}\"\n",
        server.port(),
        server.user(),
        known_hosts.display()
    );
    if let Some(identity) = identity {
        text.push_str(&format!("    identity_file = \"{}\"\n", identity.display()));
    }
    text
}

fn variables(extra: serde_json::Value) -> serde_json::Value {
    let mut list = vec![
        json!({"key": "CI_PROJECT_PATH", "value": "group/project", "public": true}),
        json!({"key": "MY_SECRET", "value": "s3cr3t-over-ssh-77", "public": false, "masked": true}),
    ];
    if let Some(items) = extra.as_array() {
        list.extend(items.iter().cloned());
    }
    serde_json::Value::Array(list)
}

fn no_git(timeout: i64, script: &[&str], after: &[&str]) -> serde_json::Value {
    job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        after,
        variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
        timeout,
    )
}

/// Waits until the test user runs nothing but sshd's own processes.
async fn assert_no_user_processes(server: &SshServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = server.user_processes();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left on the SSH host: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir() && !path.is_symlink() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_clones_over_http_on_the_remote_host_and_succeeds() {
    let server = SshServer::start(SshdOptions::default());
    let git = GitServer::start(&[("README.md", "hello over ssh\n")], true).await;
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        &git.url_with_token("JOB_TOKEN"),
        &git.head(),
        &[
            "cat README.md",
            "echo \"user=$(id -un) pwd=$PWD\"",
            "echo \"secret is $MY_SECRET\"",
            "echo to-\"std\"err >&2",
        ],
        &["echo after $CI_JOB_STATUS"],
        variables(json!([])),
        120,
    ));
    let _runner = Runner::with_key(&gitlab, &server);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "success", "{log}\n{}", server.log());
    assert!(log.contains("Using SSH executor..."), "{log}");
    assert!(log.contains("Running on "), "{log}");
    assert!(log.contains(" via "), "{log}");
    assert!(log.contains("hello over ssh"), "{log}");
    // The relative default builds dir lives in the remote user's home.
    let home = server.home();
    assert!(
        log.contains(&format!(
            "user={} pwd={}/builds/",
            server.user(),
            home.display()
        )),
        "{log}"
    );
    assert!(log.contains("secret is [MASKED]"), "{log}");
    assert!(!log.contains("s3cr3t-over-ssh-77"), "{log}");
    assert!(log.contains("to-stderr"), "{log}");
    assert!(log.contains("after success"), "{log}");
    assert!(!log.contains("gitlab-runner-rs-ssh-pid"), "{log}");
    let readme = find(&home.join("builds"), "README.md").expect("the clone on the remote host");
    assert_eq!(std::fs::read_to_string(readme).unwrap(), "hello over ssh\n");
    assert_no_user_processes(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_reports_the_remote_exit_status_and_after_script_runs() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(no_git(
        120,
        &["echo before failing", "exit 42", "echo never printed"],
        &["echo \"after_script sees $CI_JOB_STATUS\""],
    ));
    let _runner = Runner::with_key(&gitlab, &server);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(update.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(update.exit_code, Some(42));
    assert!(log.contains("before failing"), "{log}");
    assert!(!log.contains("never printed"), "{log}");
    assert!(log.contains("after_script sees failed"), "{log}");
    assert!(
        log.contains("ERROR: Job failed: Process exited with status 42"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_authentication_and_a_hashed_known_hosts_file() {
    let server = SshServer::start(SshdOptions {
        password: Some("pw-Over-SSH-1".into()),
    });
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(no_git(60, &["echo logged-in-as=$(id -un)"], &[]));
    let known_hosts = server.known_hosts(true);
    let hashed = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(hashed.contains("|1|"), "{hashed}");
    let mut section = ssh_section(&server, &known_hosts, None);
    section.push_str("    password = \"pw-Over-SSH-1\"\n");
    let _runner = Runner::start(&gitlab, &section);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "success", "{log}\n{}", server.log());
    assert!(
        log.contains(&format!("logged-in-as={}", server.user())),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_mismatch_is_refused_naming_the_host_and_fingerprint() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(no_git(60, &["echo must-not-run"], &[]));
    let known_hosts = server.wrong_known_hosts();
    let _runner = Runner::start(
        &gitlab,
        &ssh_section(&server, &known_hosts, Some(&server.identity_file())),
    );
    let log = gitlab
        .wait_failure(job, "runner_system_failure", WAIT)
        .await;
    assert!(log.contains("knownhosts: key mismatch"), "{log}");
    assert!(
        log.contains(&format!("host 127.0.0.1:{} offered", server.port())),
        "{log}"
    );
    assert!(log.contains(&server.host_key_fingerprint()), "{log}");
    assert!(!log.contains("must-not-run"), "{log}");
    // No session was ever opened.
    assert!(
        !server.log().contains("Accepted publickey"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_refused_unless_strict_checking_is_disabled() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let empty = tempfile::NamedTempFile::new().unwrap();
    let refused = gitlab.enqueue(no_git(60, &["echo must-not-run"], &[]));
    let runner = Runner::start(
        &gitlab,
        &ssh_section(&server, empty.path(), Some(&server.identity_file())),
    );
    let log = gitlab
        .wait_failure(refused, "runner_system_failure", WAIT)
        .await;
    assert!(log.contains("knownhosts: key is unknown"), "{log}");
    drop(runner);

    let allowed = gitlab.enqueue(no_git(60, &["echo ran-without-host-check"], &[]));
    let mut section = ssh_section(&server, empty.path(), Some(&server.identity_file()));
    section.push_str("    disable_strict_host_key_checking = true\n");
    let _runner = Runner::start(&gitlab, &section);
    let log = gitlab.wait_success(allowed, WAIT).await;
    assert!(log.contains("ran-without-host-check"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_as_a_system_failure() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(no_git(60, &["echo must-not-run"], &[]));
    let known_hosts = server.known_hosts(false);
    let _runner = Runner::start(
        &gitlab,
        &ssh_section(&server, &known_hosts, Some(&server.wrong_identity_file())),
    );
    let log = gitlab
        .wait_failure(job, "runner_system_failure", WAIT)
        .await;
    assert!(log.contains("ssh: unable to authenticate"), "{log}");
    assert!(log.contains("Preparation failed"), "{log}");
    assert!(!log.contains("must-not-run"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_every_remote_process_of_the_stage() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    // A backgrounded child and a foreground one: upstream's signal to the shell alone would
    // leave both running on the host.
    let job = gitlab.enqueue(no_git(
        5,
        &["sleep 3001 &", "echo started", "sleep 3002"],
        &[],
    ));
    let _runner = Runner::with_key(&gitlab, &server);
    gitlab.wait_log(job, "started", WAIT).await;
    assert!(
        server
            .user_processes()
            .iter()
            .any(|command| command.contains("sleep 3002")),
        "{:?}",
        server.user_processes()
    );
    gitlab
        .wait_failure(job, "job_execution_timeout", WAIT)
        .await;
    assert_no_user_processes(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cancel_stops_the_remote_script_and_after_script_runs() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(no_git(
        300,
        &["echo running; while true; do echo tick; sleep 0.5; done"],
        &["echo \"after_script status=$CI_JOB_STATUS\""],
    ));
    let _runner = Runner::with_key(&gitlab, &server);
    gitlab.wait_log(job, "running", WAIT).await;
    gitlab.cancel(job);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert!(
        log.contains("script canceled externally (UI, API)"),
        "{log}"
    );
    assert!(log.contains("after_script status=canceled"), "{log}");
    assert_no_user_processes(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_killed_mid_job_is_a_system_failure_without_a_hang() {
    let mut server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(no_git(
        600,
        &["echo running; while true; do echo tick; sleep 0.5; done"],
        &[],
    ));
    let _runner = Runner::with_key(&gitlab, &server);
    gitlab.wait_log(job, "running", WAIT).await;
    let killed_at = Instant::now();
    server.kill_sshd();
    let log = gitlab
        .wait_failure(job, "runner_system_failure", WAIT)
        .await;
    assert!(log.contains("the connection was lost"), "{log}");
    // Far below the job timeout: the lost connection ended the job, nothing waited it out.
    assert!(killed_at.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_fails_after_upstreams_connect_retries() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(no_git(60, &["echo must-not-run"], &[]));
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let known_hosts = tempfile::NamedTempFile::new().unwrap();
    let _runner = Runner::start(
        &gitlab,
        &format!(
            "    host = \"127.0.0.1\"\n    port = {port}\n    known_hosts_file = \"{}\"\n",
            known_hosts.path().display()
        ),
    );
    let log = gitlab
        .wait_failure(job, "runner_system_failure", WAIT)
        .await;
    assert!(
        log.contains(&format!(
            "ssh command Connect() error: ssh Dial() error: dial tcp 127.0.0.1:{port}"
        )),
        "{log}"
    );
    assert!(log.contains("Connection refused"), "{log}");
    assert_eq!(log.matches("Preparation failed").count(), 3, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_upload_through_the_helper_on_the_remote_path() {
    let server = SshServer::start(SshdOptions::default());
    // The remote host's `gitlab-runner` is this runner binary, on the user's PATH.
    std::os::unix::fs::symlink(runner_binary(), server.home().join("bin/gitlab-runner")).unwrap();
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let mut payload = no_git(
        120,
        &["mkdir -p out && printf 'remote-bytes' > out/result.txt"],
        &[],
    );
    payload["artifacts"] = json!([{"name": "remote", "untracked": false, "paths": ["out/"],
        "when": "on_success", "artifact_type": "archive", "artifact_format": "zip"}]);
    let job = gitlab.enqueue(payload);
    let _runner = Runner::with_key(&gitlab, &server);
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{log}"
    );
    let uploaded = gitlab.artifacts(job);
    assert_eq!(uploaded.len(), 1, "{log}");
    assert_eq!(uploaded[0].filename, "remote.zip");
    let bytes = &uploaded[0].bytes;
    assert!(
        bytes.windows(14).any(|window| window == b"out/result.txt"),
        "the archive names the file written on the remote host"
    );

    // A second job on the same host downloads it as a dependency.
    let mut test = no_git(120, &["echo \"got=$(cat out/result.txt)\""], &[]);
    test["variables"] =
        variables(json!([{"key": "GIT_STRATEGY", "value": "empty", "public": true}]));
    test["dependencies"] = json!([{
        "id": job.id, "token": gitlab.token(job), "name": "build",
        "artifacts_file": {"filename": "remote.zip", "size": bytes.len()}
    }]);
    let test = gitlab.enqueue(test);
    let log = gitlab.wait_success(test, WAIT).await;
    assert!(log.contains("got=remote-bytes"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_writes_the_ssh_section_from_upstreams_flags_and_the_runner_uses_it() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let known_hosts = server.known_hosts(false);
    let output = std::process::Command::new(runner_binary())
        .args(["register", "--non-interactive", "-c"])
        .arg(&config)
        .args(["--url", &gitlab.url(), "--token", RUNNER_TOKEN])
        .args(["--name", "registered-ssh", "--executor", "ssh"])
        .args([
            "--ssh-host",
            "127.0.0.1",
            "--ssh-port",
            &server.port().to_string(),
        ])
        .args(["--ssh-user", server.user()])
        .arg("--ssh-identity-file")
        .arg(server.identity_file())
        .arg("--ssh-known-hosts-file")
        .arg(&known_hosts)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("[runners.ssh]"), "{written}");
    assert!(
        written.contains(&format!("port = \"{}\"", server.port())),
        "{written}"
    );

    let job = gitlab.enqueue(no_git(60, &["echo registered-runner-ran"], &[]));
    let _process = RunnerProcess::spawn(&runner_binary(), &config, dir.path(), &[]);
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(log.contains("registered-runner-ran"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_host_example_driver_runs_jobs_through_the_custom_executor() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let ok = gitlab.enqueue(no_git(60, &["echo \"driver-user=$(id -un)\""], &[]));
    let failing = gitlab.enqueue(no_git(60, &["exit 5"], &[]));
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/custom-drivers/ssh-host");
    let dir = tempfile::tempdir().unwrap();
    let mut section = String::new();
    for stage in ["config", "prepare", "run", "cleanup"] {
        section.push_str(&format!(
            "    {stage}_exec = \"{}\"\n",
            driver.join(format!("{stage}.sh")).display()
        ));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n\n[[runners]]\n  name = \"ssh-host\"\n  url = \"{}\"\n  token = \"{RUNNER_TOKEN}\"\n  executor = \"custom\"\n  [runners.custom]\n{section}",
            gitlab.url()
        ),
    )
    .unwrap();
    let known_hosts = server.known_hosts(false);
    let port = server.port().to_string();
    let identity = server.identity_file();
    let _runner = RunnerProcess::spawn(
        &runner_binary(),
        &config,
        dir.path(),
        &[
            ("SSH_HOST_DRIVER_HOST", "127.0.0.1".as_ref()),
            ("SSH_HOST_DRIVER_PORT", port.as_ref()),
            ("SSH_HOST_DRIVER_USER", server.user().as_ref()),
            ("SSH_HOST_DRIVER_KEY", identity.as_os_str()),
            ("SSH_HOST_DRIVER_KNOWN_HOSTS", known_hosts.as_os_str()),
        ],
    );
    let update = gitlab.wait_final(ok, WAIT).await;
    let log = gitlab.log(ok);
    assert_eq!(update.state, "success", "{log}\n{}", server.log());
    assert!(
        log.contains("Using Custom executor with driver ssh-host v1..."),
        "{log}"
    );
    assert!(log.contains("Connected to 127.0.0.1"), "{log}");
    assert!(
        log.contains(&format!("driver-user={}", server.user())),
        "{log}"
    );
    let update = gitlab.wait_final(failing, WAIT).await;
    assert_eq!(update.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(update.exit_code, Some(5), "{}", gitlab.log(failing));
    // The relative builds dir is on the remote user's side.
    assert!(server.home().join("builds").is_dir());
    assert_no_user_processes(&server).await;
}
