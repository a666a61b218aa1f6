//! End to end: the `gitlab-runner-rs` binary against a fake GitLab over real HTTP, running jobs
//! with the shell executor that clone a real repository served over git smart HTTP.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner_tests::{
    job_payload, runner_binary, FakeGitlab, GitServer, RunnerProcess, ShellRunner as Runner,
    TestCertificates, SHELL_RUNNER_TOKEN,
};
use serde_json::json;

const RUNNER_TOKEN: &str = SHELL_RUNNER_TOKEN;
const WAIT: Duration = Duration::from_secs(90);

fn variables(extra: serde_json::Value) -> serde_json::Value {
    let mut list = vec![
        json!({"key": "CI_PROJECT_PATH", "value": "group/project", "public": true}),
        json!({"key": "MY_SECRET", "value": "s3cr3t-v4lue-42", "public": false, "masked": true}),
        json!({"key": "FF_TIMESTAMPS", "value": "true", "public": true}),
    ];
    if let Some(items) = extra.as_array() {
        list.extend(items.iter().cloned());
    }
    serde_json::Value::Array(list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_clones_over_http_runs_and_succeeds_with_secrets_masked() {
    let git = GitServer::start(&[("README.md", "hello from the repository\n")], true).await;
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        &git.url_with_token("JOB_TOKEN"),
        &git.head(),
        &[
            "cat README.md",
            "echo \"secret is $MY_SECRET\"",
            "echo \"personal token glpat-abcdefghijklmnop\"",
            "echo \"job token $CI_JOB_TOKEN\"",
        ],
        &["echo after $CI_JOB_STATUS"],
        variables(json!([{"key": "CI_JOB_TOKEN", "value": "glcbt-jobtoken-value", "public": false, "masked": true}])),
        120,
    ));
    let runner = Runner::start(&gitlab, "");
    let log = gitlab.wait_success(job, WAIT).await;
    let update = gitlab.final_update(job).unwrap();
    assert_eq!(update.failure_reason, None);
    assert!(log.contains("hello from the repository"), "{log}");
    assert!(log.contains("secret is [MASKED]"), "{log}");
    assert!(!log.contains("s3cr3t-v4lue-42"), "{log}");
    assert!(log.contains("glpat-[MASKED]"), "{log}");
    assert!(!log.contains("abcdefghijklmnop"), "{log}");
    assert!(log.contains("after success"), "{log}");
    assert!(log.contains("Job succeeded"), "{log}");
    assert!(log.contains("section_start:"), "{log}");
    // Every line carries upstream's timestamp and stream prefix.
    let first = log.lines().next().unwrap();
    assert_eq!(&first[26..32], "Z 00O ", "{first}");
    // The checksum and size GitLab got describe exactly the log it has.
    let bytes = gitlab.log_bytes(job);
    assert_eq!(update.bytesize, Some(bytes.len() as u64));
    // The first update is the two-phase `running` confirmation.
    assert_eq!(gitlab.updates(job)[0].state, "running");
    // Git authenticated with the job token and did not keep it in the repository config.
    assert!(git
        .authorizations()
        .iter()
        .any(|auth| auth.starts_with("Basic ")));
    let configs: Vec<String> = walk(&runner.builds)
        .into_iter()
        .filter(|path| path.ends_with(".git/config"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    assert!(!configs.is_empty());
    assert!(configs
        .iter()
        .all(|config| !config.contains(&gitlab.token(job))));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_reports_its_exit_code_and_after_script_still_runs() {
    let git = GitServer::start(&[("file.txt", "x\n")], false).await;
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        &git.url_with_token("JOB_TOKEN"),
        &git.head(),
        &["echo before failing", "exit 42", "echo never printed"],
        &["echo \"after_script sees $CI_JOB_STATUS\""],
        variables(json!([])),
        120,
    ));
    let _runner = Runner::start(&gitlab, "");
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(update.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(update.exit_code, Some(42));
    assert!(log.contains("before failing"));
    assert!(!log.contains("never printed"));
    assert!(log.contains("after_script sees failed"), "{log}");
    assert!(log.contains("ERROR: Job failed: exit status 42"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_timeout_is_stopped_as_job_execution_timeout() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["echo started", "sleep 600"],
        &["echo after_script must not run after a job timeout"],
        variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
        4,
    ));
    let _runner = Runner::start(&gitlab, "");
    let log = gitlab
        .wait_failure(job, "job_execution_timeout", WAIT)
        .await;
    assert!(
        log.contains("execution took longer than 4s seconds"),
        "{log}"
    );
    assert!(!log.contains("after_script must not run"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cancel_stops_the_script_and_after_script_still_runs() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        // Output keeps trace patches flowing; their `Job-Status: canceling` is how the runner
        // learns of the cancel (a quiet job learns it from the keep-alive update after 30 s).
        &["echo running; while true; do echo tick; sleep 0.5; done"],
        &["echo \"after_script status=$CI_JOB_STATUS\""],
        variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
        300,
    ));
    let _runner = Runner::start(&gitlab, "");
    gitlab.wait_log(job, "running", WAIT).await;
    gitlab.cancel(job);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    // job_canceled is internal; GitLab without it gets unknown_failure, as upstream sends.
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("unknown_failure"),
        "{log}"
    );
    assert!(
        log.contains("script canceled externally (UI, API)"),
        "{log}"
    );
    assert!(log.contains("after_script status=canceled"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_over_the_output_limit_is_cut_with_upstreams_notice() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &[
            "head -c 3000000 /dev/zero | tr '\\0' 'x' | fold -w 100",
            "echo finished-the-job",
        ],
        &[],
        variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
        300,
    ));
    let _runner = Runner::start(&gitlab, "output_limit = 64");
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(
        update.state,
        "success",
        "{}",
        &log[log.len().saturating_sub(500)..]
    );
    assert!(
        log.contains("Job's log exceeded limit of 65536 bytes."),
        "{}",
        &log[log.len() - 300..]
    );
    assert!(log.len() < 66 * 1024, "log is {} bytes", log.len());
    assert!(!log.contains("finished-the-job"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_payload_fails_the_job_instead_of_leaving_it_running() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let mut payload = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["echo hi"],
        &[],
        variables(json!([])),
        60,
    );
    payload["steps"] = json!("this should be a list");
    let job = gitlab.enqueue(payload);
    let _runner = Runner::start(&gitlab, "");
    let update = gitlab.wait_final(job, WAIT).await;
    assert_eq!(update.state, "failed");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_system_failure")
    );
    assert!(
        gitlab.log(job).contains("invalid job payload"),
        "{}",
        gitlab.log(job)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_interrupts_running_jobs_and_reports_them() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["echo working; sleep 600"],
        &[],
        variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
        300,
    ));
    let mut runner = Runner::start(&gitlab, "");
    gitlab.wait_log(job, "working", WAIT).await;
    runner.signal(libc::SIGTERM);
    let update = gitlab.wait_final(job, WAIT).await;
    assert_eq!(update.state, "failed");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_interrupted"),
        "{}",
        gitlab.log(job)
    );
    let status = runner.process.wait().unwrap();
    assert!(status.success(), "runner exited with {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_recovers_from_range_mismatches() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["for i in $(seq 1 5); do echo line-$i; sleep 0.5; done"],
        &[],
        variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
        300,
    ));
    gitlab.inject_range_mismatches(job, 2);
    let _runner = Runner::start(&gitlab, "");
    let log = gitlab.wait_success(job, WAIT).await;
    let update = gitlab.final_update(job).unwrap();
    for i in 1..=5 {
        assert_eq!(log.matches(&format!("line-{i}\n")).count(), 1, "{log}");
    }
    assert_eq!(update.bytesize, Some(log.len() as u64));
}

fn tls_job() -> serde_json::Value {
    job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &[
            "head -n 1 \"$CI_SERVER_TLS_CA_FILE\"",
            "echo \"client cert: $(head -n 1 \"${CI_SERVER_TLS_CERT_FILE:-/dev/null}\")\"",
            "echo \"client key mode: $(stat -c %a \"${CI_SERVER_TLS_KEY_FILE:-/dev/null}\")\"",
        ],
        &[],
        variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
        60,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_configured_ca_is_trusted_and_handed_to_the_job() {
    let certs = TestCertificates::generate();
    let gitlab =
        FakeGitlab::start_https(RUNNER_TOKEN, &certs.server_cert, &certs.server_key, None).await;
    assert!(gitlab.url().starts_with("https://127.0.0.1:"));
    let job = gitlab.enqueue(tls_job());
    let _runner = Runner::start(
        &gitlab,
        &format!("tls-ca-file = \"{}\"", certs.ca.display()),
    );
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(log.contains("-----BEGIN CERTIFICATE-----"), "{log}");
    // No client certificate configured: no CI_SERVER_TLS_CERT_FILE / KEY_FILE.
    assert!(
        log.contains("client cert: \n") || log.contains("client cert: \r"),
        "{log}"
    );
}

/// A shell runner as [`Runner::start`] starts it, but with its own log (`RUST_LOG=info`) in a
/// file, so a test can wait for what the runner says it did instead of sleeping: the TLS tests
/// assert that no request got through, which is only evidence once the runner is known to
/// have tried.
struct LoggedRunner {
    process: RunnerProcess,
    dir: tempfile::TempDir,
}

impl LoggedRunner {
    fn start(gitlab: &FakeGitlab, extra_runner_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            Runner::config(gitlab, dir.path(), 2, extra_runner_config),
        )
        .unwrap();
        let process = RunnerProcess::spawn_logged(
            &runner_binary(),
            &config,
            dir.path(),
            &dir.path().join("runner.log"),
        );
        Self { process, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runner.log")).unwrap_or_default()
    }

    /// The job requests the runner logged as failed on the server's certificate (rustls'
    /// `invalid peer certificate: ...` in its `Checking for jobs... client error: ...` line).
    fn certificate_refusals(&self) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains("Checking for jobs") && line.contains("certificate"))
            .count()
    }

    /// Waits until the runner, still running, has logged `count` job requests refused in the
    /// TLS handshake; panics with its log if it exits or `WAIT` passes first.
    async fn wait_certificate_refusals(&mut self, count: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.certificate_refusals() < count {
            assert!(
                self.process.is_running(),
                "the runner exited; its log:\n{}",
                self.log()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "the runner never logged {count} job requests refused on the certificate; \
                 its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            self.process.is_running(),
            "the runner exited after a refused certificate; its log:\n{}",
            self.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_gitlab_certificate_is_refused() {
    let certs = TestCertificates::generate();
    let gitlab =
        FakeGitlab::start_https(RUNNER_TOKEN, &certs.server_cert, &certs.server_key, None).await;
    let job = gitlab.enqueue(tls_job());
    let mut runner = LoggedRunner::start(&gitlab, "");
    // Positive evidence first: the runner is up and polling (twice: the first refusal did not
    // stop it) and says each request failed on the certificate...
    runner.wait_certificate_refusals(2).await;
    // ...and none of those requests got past the TLS handshake.
    assert_eq!(gitlab.job_requests(), 0, "{}", runner.log());
    assert_eq!(gitlab.status(job), runner_tests::JobStatus::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_authenticates_the_runner_and_reaches_the_job() {
    let certs = TestCertificates::generate();
    let gitlab = FakeGitlab::start_https(
        RUNNER_TOKEN,
        &certs.server_cert,
        &certs.server_key,
        Some(&certs.ca),
    )
    .await;
    let job = gitlab.enqueue(tls_job());
    let _runner = Runner::start(
        &gitlab,
        &format!(
            "tls-ca-file = \"{}\"\n  tls-cert-file = \"{}\"\n  tls-key-file = \"{}\"",
            certs.ca.display(),
            certs.client_cert.display(),
            certs.client_key.display()
        ),
    );
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("client cert: -----BEGIN CERTIFICATE-----"),
        "{log}"
    );
    // File variables are written with mode 0600.
    assert!(log.contains("client key mode: 600"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_ca_file_is_picked_up_without_a_restart() {
    let certs = TestCertificates::generate();
    let other = TestCertificates::generate();
    let gitlab =
        FakeGitlab::start_https(RUNNER_TOKEN, &certs.server_cert, &certs.server_key, None).await;
    let ca_file = certs.dir.path().join("configured-ca.pem");
    std::fs::copy(&other.ca, &ca_file).unwrap();
    let job = gitlab.enqueue(tls_job());
    let mut runner = LoggedRunner::start(
        &gitlab,
        &format!(
            "tls-ca-file = \"{}\"\n  unhealthy_requests_limit = 1000",
            ca_file.display()
        ),
    );
    // The runner polls with the configured CA and says the certificate was refused...
    runner.wait_certificate_refusals(1).await;
    // ...and no request got through with it: the wrong CA is not trusted.
    assert_eq!(
        gitlab.job_requests(),
        0,
        "the wrong CA must not be trusted:\n{}",
        runner.log()
    );
    assert_eq!(gitlab.status(job), runner_tests::JobStatus::Pending);
    // Renewing the file (new contents, new mtime) applies to the next request.
    std::fs::copy(&certs.ca, &ca_file).unwrap();
    let update = gitlab.wait_final(job, WAIT).await;
    assert_eq!(
        update.state,
        "success",
        "{}\nrunner log:\n{}",
        gitlab.log(job),
        runner.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_inputs_are_interpolated_and_sensitive_ones_refused() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let with_inputs = |script: &str| {
        let mut payload = job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            &[script],
            &[],
            variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
            60,
        );
        payload["inputs"] = json!([
            {"key": "name", "value": {"type": "string", "content": "fred", "sensitive": false}},
            {"key": "targets", "value": {"type": "array", "content": ["x86", "arm"]}},
            {"key": "password", "value": {"type": "string", "content": "pw-value", "sensitive": true}}
        ]);
        payload["features"]["failure_reasons"]
            .as_array_mut()
            .unwrap()
            .push(json!("runner_configuration_error"));
        payload
    };
    let good = gitlab.enqueue(with_inputs(
        "echo \"hello ${{ job.inputs.name }} on ${{ job.inputs.targets[1] }}\"",
    ));
    let sensitive = gitlab.enqueue(with_inputs("echo ${{ job.inputs.password }}"));
    let _runner = Runner::start(&gitlab, "");
    let log = gitlab.wait_success(good, WAIT).await;
    assert!(
        log.contains("\nhello fred on arm") || log.contains(" hello fred on arm"),
        "{log}"
    );
    let update = gitlab.wait_final(sensitive, WAIT).await;
    let log = gitlab.log(sensitive);
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_configuration_error")
    );
    assert!(
        log.contains("ERROR: Job failed: sensitive inputs are unsupported in interpolations yet"),
        "{log}"
    );
    assert!(!log.contains("pw-value"), "{log}");
}

fn artifacts_job(script: &[&str], artifacts: serde_json::Value) -> serde_json::Value {
    let mut payload = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        &[],
        variables(json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}])),
        120,
    );
    payload["artifacts"] = artifacts;
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_uploaded_by_one_job_are_downloaded_by_the_next() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let build = gitlab.enqueue(artifacts_job(
        &[
            "mkdir -p out/bin && printf 'binary-bytes' > out/bin/tool && chmod 750 out/bin/tool",
            "ln -sf tool out/bin/alias && echo note > out/readme.txt && echo skip > out/debug.log",
        ],
        json!([{"name": "build-output", "untracked": false, "paths": ["out/"], "exclude": ["out/*.log"],
                "when": "on_success", "artifact_type": "archive", "artifact_format": "zip", "expire_in": "1 day"}]),
    ));
    let _runner = Runner::start(&gitlab, "");
    let log = gitlab.wait_success(build, WAIT).await;
    assert!(log.contains("Uploading artifacts..."), "{log}");
    assert!(
        log.contains("out/: found 5 matching artifact files and directories"),
        "{log}"
    );
    assert!(log.contains("out/*.log: excluded 1 files"), "{log}");
    assert!(
        log.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{log}"
    );
    let uploaded = gitlab.artifacts(build);
    assert_eq!(uploaded.len(), 1);
    assert_eq!(uploaded[0].filename, "build-output.zip");
    assert!(
        uploaded[0].query.contains("expire_in=1+day")
            || uploaded[0].query.contains("expire_in=1%20day"),
        "{}",
        uploaded[0].query
    );
    assert!(uploaded[0].query.contains("artifact_format=zip"));

    let mut test = artifacts_job(
        &[
            "cat out/bin/tool; echo",
            "echo \"mode=$(stat -c %a out/bin/tool) link=$(readlink out/bin/alias)\"",
            "test ! -e out/debug.log && echo excluded-file-\"absent\"",
        ],
        json!([]),
    );
    // `empty` starts from an empty directory, so only the downloaded files are there.
    test["variables"] =
        variables(json!([{"key": "GIT_STRATEGY", "value": "empty", "public": true}]));
    test["dependencies"] = json!([{
        "id": build.id, "token": gitlab.token(build), "name": "build",
        "artifacts_file": {"filename": "build-output.zip", "size": uploaded[0].bytes.len()}
    }]);
    let test = gitlab.enqueue(test);
    let log = gitlab.wait_success(test, WAIT).await;
    assert!(
        log.contains(&format!(
            "Downloading artifacts for build ({})...",
            build.id
        )),
        "{log}"
    );
    assert!(
        log.contains("Downloading artifacts from coordinator... ok"),
        "{log}"
    );
    assert!(
        log.contains("\nbinary-bytes") || log.contains(" binary-bytes"),
        "{log}"
    );
    assert!(log.contains("mode=750 link=tool"), "{log}");
    assert!(log.contains("excluded-file-absent"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_artifact_upload_fails_the_job_and_missing_paths_do_not() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let artifacts = json!([{"name": "big", "paths": ["big.bin"], "when": "on_success",
                            "artifact_type": "archive", "artifact_format": "zip"}]);
    let too_large = gitlab.enqueue(artifacts_job(
        &["head -c 1000 /dev/zero > big.bin"],
        artifacts,
    ));
    gitlab.refuse_artifacts(too_large, 413);
    let missing = gitlab.enqueue(artifacts_job(
        &["echo nothing to keep"],
        json!([{"name": "none", "paths": ["does-not-exist/"], "when": "on_success",
                "artifact_type": "archive", "artifact_format": "zip"}]),
    ));
    let _runner = Runner::start(&gitlab, "");
    let update = gitlab.wait_final(too_large, WAIT).await;
    let log = gitlab.log(too_large);
    assert_eq!(update.state, "failed", "{log}");
    assert!(log.contains("FATAL: too large"), "{log}");
    let log = gitlab.wait_success(missing, WAIT).await;
    assert!(log.contains("does-not-exist/: no matching files"), "{log}");
    assert!(log.contains("ERROR: No files to upload"), "{log}");
}

fn cache_job(
    script: &[&str],
    cache: serde_json::Value,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut vars = vec![json!({"key": "GIT_STRATEGY", "value": "empty", "public": true})];
    vars.extend(extra.as_array().cloned().unwrap_or_default());
    let mut payload = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        &[],
        variables(serde_json::Value::Array(vars)),
        120,
    );
    payload["cache"] = cache;
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_saved_by_one_job_is_restored_by_the_next_and_a_fallback_key_is_used() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let save = gitlab.enqueue(cache_job(
        &["mkdir -p vendor/lib && printf 'cached-bytes' > vendor/lib/dep.txt && chmod 640 vendor/lib/dep.txt"],
        json!([{"key": "deps-main", "paths": ["vendor/"], "policy": "pull-push", "when": "on_success", "untracked": false}]),
        json!([]),
    ));
    let runner = Runner::start(&gitlab, "");
    let log = gitlab.wait_success(save, WAIT).await;
    assert!(log.contains("Checking cache for deps-main..."), "{log}");
    assert!(log.contains("Cache file does not exist"), "{log}");
    assert!(log.contains("Failed to extract cache"), "{log}");
    assert!(log.contains("Creating cache deps-main..."), "{log}");
    assert!(
        log.contains("vendor/: found 3 matching artifact files and directories"),
        "{log}"
    );
    assert!(log.contains("Created cache"), "{log}");
    let archive = runner
        .dir
        .path()
        .join("cache/group/project-empty/deps-main/cache.zip");
    assert!(
        archive.exists(),
        "{} missing; cache files: {:?}\n{log}",
        archive.display(),
        walk(&runner.dir.path().join("cache"))
    );

    // Same key: restored with its mode; the archive is not rebuilt when nothing changed.
    let restore = gitlab.enqueue(cache_job(
        &["echo \"got=$(cat vendor/lib/dep.txt) mode=$(stat -c %a vendor/lib/dep.txt)\""],
        json!([{"key": "deps-main", "paths": ["vendor/"], "policy": "pull-push", "when": "on_success", "untracked": false}]),
        json!([]),
    ));
    let log = gitlab.wait_success(restore, WAIT).await;
    assert!(log.contains("Successfully extracted cache"), "{log}");
    assert!(log.contains("got=cached-bytes mode=640"), "{log}");
    // Restored files keep their archived times, so nothing is newer than the archive; as
    // upstream, the up-to-date archive is offered to the shared cache (none here), not rebuilt.
    assert!(
        log.contains("Primary cache does not exist remotely, uploading existing archive"),
        "{log}"
    );
    assert!(log.contains("Cache will be stored only locally."), "{log}");
    assert!(!log.contains("Archive is up to date!"), "{log}");

    // A key that misses falls back to `fallback_keys`, then to CACHE_FALLBACK_KEY.
    let fallback = gitlab.enqueue(cache_job(
        &["echo \"fallback-got=$(cat vendor/lib/dep.txt)\""],
        json!([{"key": "deps-feature", "fallback_keys": ["deps-nothing"], "paths": ["vendor/"], "policy": "pull", "when": "on_success", "untracked": false}]),
        json!([{"key": "CACHE_FALLBACK_KEY", "value": "deps-main", "public": true}]),
    ));
    let log = gitlab.wait_success(fallback, WAIT).await;
    assert!(log.contains("Checking cache for deps-feature..."), "{log}");
    assert!(log.contains("Checking cache for deps-nothing..."), "{log}");
    assert!(log.contains("Checking cache for deps-main..."), "{log}");
    assert!(log.contains("fallback-got=cached-bytes"), "{log}");
    assert!(
        log.contains("Not uploading cache deps-feature due to policy"),
        "{log}"
    );

    // A corrupt archive is refused with a warning and the job goes on.
    std::fs::write(&archive, b"PK\x03\x04 not really a zip").unwrap();
    let corrupt = gitlab.enqueue(cache_job(
        &["test ! -e vendor/lib/dep.txt && echo nothing-\"restored\""],
        json!([{"key": "deps-main", "paths": ["vendor/"], "policy": "pull", "when": "on_success", "untracked": false}]),
        json!([]),
    ));
    let log = gitlab.wait_success(corrupt, WAIT).await;
    assert!(log.contains("Failed to extract cache"), "{log}");
    assert!(log.contains("nothing-restored"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_without_artifacts_is_a_missing_dependency_failure() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    // Job 1001 uploads nothing, so its artifacts download is a 404.
    let gone = gitlab.enqueue(artifacts_job(&["echo no artifacts here"], json!([])));
    let _runner = Runner::start(&gitlab, "");
    assert_eq!(gitlab.wait_final(gone, WAIT).await.state, "success");
    let dependent = |reasons: serde_json::Value| {
        let mut job = artifacts_job(&["echo must-not-run"], json!([]));
        job["dependencies"] = json!([{
            "id": gone.id, "token": gitlab.token(gone), "name": "build",
            "artifacts_file": {"filename": "artifacts.zip", "size": 100}
        }]);
        job["features"]["failure_reasons"] = reasons;
        job
    };
    let knows = gitlab.enqueue(dependent(json!([
        "script_failure",
        "missing_dependency_failure"
    ])));
    let log = gitlab
        .wait_failure(knows, "missing_dependency_failure", WAIT)
        .await;
    assert!(
        log.contains("Downloading artifacts from coordinator... not found"),
        "{log}"
    );
    assert!(log.contains("FATAL: file does not exist"), "{log}");
    assert!(!log.contains("must-not-run"), "{log}");
    // A GitLab that does not know the reason gets upstream's script_failure.
    let old = gitlab.enqueue(dependent(json!(["script_failure"])));
    let update = gitlab.wait_final(old, WAIT).await;
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("script_failure"),
        "{}",
        gitlab.log(old)
    );
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_s3_cache_round_trips_through_a_real_s3_server() {
    let s3 = runner_tests::S3Server::start("runner-cache");
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let cache = json!([{"key": "s3-key", "paths": ["vendor/"], "policy": "pull-push", "when": "on_success", "untracked": false}]);
    let save = gitlab.enqueue(cache_job(
        &["mkdir -p vendor && printf 'from-s3' > vendor/dep.txt"],
        cache.clone(),
        json!([]),
    ));
    let runner = Runner::start(&gitlab, &s3.cache_section(runner_tests::s3::SECRET_KEY, ""));
    let log = gitlab.wait_success(save, WAIT).await;
    assert!(log.contains("Uploading cache.zip to http://"), "{log}");
    assert!(log.contains("Created cache"), "{log}");
    // The presigned query never reaches the log.
    assert!(!log.contains("X-Amz-Signature"), "{log}");
    let objects = s3.objects("runner-cache");
    assert!(
        objects
            .iter()
            .any(|object| object.starts_with("prefix/runner/")
                && object.ends_with("/project/77/s3-key")),
        "{objects:?}"
    );

    // Only the shared copy is left: the next job gets it from S3.
    std::fs::remove_dir_all(runner.dir.path().join("cache")).unwrap();
    let restore = gitlab.enqueue(cache_job(
        &["echo \"restored=$(cat vendor/dep.txt)\""],
        cache.clone(),
        json!([]),
    ));
    let log = gitlab.wait_success(restore, WAIT).await;
    assert!(log.contains("Downloading cache from http://"), "{log}");
    assert!(log.contains("Successfully extracted cache"), "{log}");
    assert!(log.contains("restored=from-s3"), "{log}");

    // Only the object a runner with FF_HASH_CACHE_KEYS left (SHA-256 key, sharded path) has
    // this key: the extractor takes the alternate URL, and the archiver, finding the restored
    // files up to date and the primary object missing, uploads the archive under the primary
    // name.
    let object = objects
        .iter()
        .find(|object| object.ends_with("/project/77/s3-key"))
        .unwrap()
        .clone();
    let hashed = sha256_hex("s3-key");
    let alternate = object.replace(
        "/project/77/s3-key",
        &format!("/project/77/{}/{hashed}", &hashed[..2]),
    );
    let target = s3.object_path("runner-cache", &alternate);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::rename(s3.object_path("runner-cache", &object), &target).unwrap();
    std::fs::remove_dir_all(runner.dir.path().join("cache")).unwrap();
    let from_alternate = gitlab.enqueue(cache_job(
        &["echo \"alternate=$(cat vendor/dep.txt)\""],
        cache.clone(),
        json!([]),
    ));
    let log = gitlab.wait_success(from_alternate, WAIT).await;
    assert!(
        log.contains("Selecting alternate cache URL: primary not available"),
        "{log}"
    );
    assert!(log.contains("alternate=from-s3"), "{log}");
    assert!(
        log.contains("Primary cache does not exist remotely, uploading existing archive"),
        "{log}"
    );
    assert!(
        s3.objects("runner-cache").contains(&object),
        "{:?}",
        s3.objects("runner-cache")
    );
    // Now the primary object is there: the next up-to-date archive is not sent again.
    let present = gitlab.enqueue(cache_job(&["true"], cache.clone(), json!([])));
    let log = gitlab.wait_success(present, WAIT).await;
    assert!(log.contains("Selecting primary cache URL"), "{log}");
    assert!(
        log.contains("Primary cache already exists remotely, skipping upload"),
        "{log}"
    );
    drop(runner);

    // A wrong secret: S3 refuses the upload, the job still passes.
    let refused = gitlab.enqueue(cache_job(
        &["mkdir -p vendor && echo changed > vendor/dep.txt"],
        json!([{"key": "other-key", "paths": ["vendor/"], "policy": "push", "when": "on_success", "untracked": false}]),
        json!([]),
    ));
    let runner = Runner::start(&gitlab, &s3.cache_section("not-the-secret", ""));
    let log = gitlab.wait_success(refused, WAIT).await;
    assert!(log.contains("received: 403 Forbidden"), "{log}");
    assert!(log.contains("Failed to create cache"), "{log}");
    drop(runner);

    // An archive over MaxUploadedArchiveSize stays local.
    let big = gitlab.enqueue(cache_job(
        &["mkdir -p vendor && head -c 4096 /dev/urandom > vendor/blob"],
        json!([{"key": "big-key", "paths": ["vendor/"], "policy": "push", "when": "on_success", "untracked": false}]),
        json!([]),
    ));
    let _runner = Runner::start(
        &gitlab,
        &s3.cache_section(runner_tests::s3::SECRET_KEY, "MaxUploadedArchiveSize = 100"),
    );
    let log = gitlab.wait_success(big, WAIT).await;
    assert!(log.contains("is too big (Limit is set to 100)"), "{log}");
    assert!(
        !s3.objects("runner-cache")
            .iter()
            .any(|object| object.ends_with("big-key")),
        "{:?}",
        s3.objects("runner-cache")
    );
}
