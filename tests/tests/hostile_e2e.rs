//! End to end, as an attacker would try it: the `gitlab-runner-rs` binary with the shell
//! executor against a fake GitLab, fed hostile job variables, payloads, branch names, archives
//! and config files (`shared/research/security-probe.md`). Each test fails on the code before
//! the fixes: a panicking job task that stayed `running`, a command run from a cache key, a
//! reload that killed the runner, an extraction that changed a directory outside the project.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner_tests::{
    job_payload, runner_binary, FakeGitlab, RunnerProcess, ShellRunner, SHELL_RUNNER_TOKEN,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// A payload that needs no repository (`GIT_STRATEGY=empty`), with `extra` variables.
fn payload(script: &[&str], extra: Value) -> Value {
    let mut variables = vec![
        json!({"key": "GIT_STRATEGY", "value": "empty", "public": true}),
        json!({"key": "CI_PROJECT_PATH", "value": "group/project", "public": true}),
    ];
    variables.extend(extra.as_array().cloned().unwrap_or_default());
    job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        &["echo after-script-ran"],
        Value::Array(variables),
        120,
    )
}

fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|file| file == name) {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            found.extend(files_named(&path, name));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_timeouts_neither_crash_the_job_nor_leave_its_secrets() {
    // Security probe finding 2: each of these panicked the job task; the job stayed
    // `running` forever and DEPLOY_KEY stayed on disk.
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let secret_file = json!({"key": "DEPLOY_KEY", "value": "super-secret-file-content", "public": false, "file": true});
    let script_timeout = gitlab.enqueue(payload(
        &["cat \"$DEPLOY_KEY\" | wc -c"],
        json!([
            {"key": "RUNNER_SCRIPT_TIMEOUT", "value": "99999999999999999999999h", "public": true},
            secret_file.clone()
        ]),
    ));
    let after_timeout = gitlab.enqueue(payload(
        &["echo script-ran"],
        json!([
            {"key": "RUNNER_AFTER_SCRIPT_TIMEOUT", "value": format!("1{}s", "0".repeat(400)), "public": true},
            secret_file.clone()
        ]),
    ));
    let mut huge_job_timeout = payload(&["echo script-ran"], json!([secret_file]));
    huge_job_timeout["runner_info"]["timeout"] = json!(i64::MAX);
    let job_timeout = gitlab.enqueue(huge_job_timeout);
    let runner = ShellRunner::start(&gitlab, "");

    let log = gitlab.wait_success(script_timeout, WAIT).await;
    assert!(
        log.contains(
            "WARNING: Ignoring malformed RUNNER_SCRIPT_TIMEOUT timeout: 99999999999999999999999h"
        ),
        "{log}"
    );
    assert!(
        log.lines().any(|line| line.trim_end().ends_with(" 25")),
        "{log}"
    );
    let log = gitlab.wait_success(after_timeout, WAIT).await;
    assert!(
        log.contains("WARNING: Ignoring malformed RUNNER_AFTER_SCRIPT_TIMEOUT timeout: 1000"),
        "{log}"
    );
    assert!(
        log.lines().any(|line| line.ends_with("after-script-ran")),
        "{log}"
    );
    let log = gitlab.wait_success(job_timeout, WAIT).await;
    assert!(
        log.lines().any(|line| line.ends_with("script-ran")),
        "{log}"
    );
    assert_eq!(
        files_named(&runner.builds, "DEPLOY_KEY"),
        Vec::<PathBuf>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_value_is_masked_as_the_job_sees_it_after_expansion() {
    // Security probe finding 4: `EXPSECRET=$BASE-suffix` was printed in clear as its
    // expansion.
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let job = gitlab.enqueue(payload(
        &["echo \"exp=$EXPSECRET\""],
        json!([
            {"key": "BASE", "value": "basevalue123", "public": true},
            {"key": "EXPSECRET", "value": "$BASE-suffix", "public": false, "masked": true}
        ]),
    ));
    let _runner = ShellRunner::start(&gitlab, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.lines().any(|line| line.ends_with("exp=[MASKED]")),
        "{log}"
    );
    assert!(!log.contains("basevalue123-suffix"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_variables_whose_names_are_paths_or_code_are_skipped() {
    // Security probe finding 11: the key was used as a path (written outside the project's
    // temporary directory) and as shell code.
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let outside = tempfile::tempdir().unwrap();
    let marker = outside.path().join("ran");
    let escape = format!(
        "../../../../../../../../../..{}/x",
        outside.path().display()
    );
    let job = gitlab.enqueue(payload(
        &["echo \"fine=$FINE\" && cat \"$FINE\""],
        json!([
            {"key": escape, "value": "escaped", "public": false, "file": true},
            {"key": format!("F$(touch {})", marker.display()), "value": "code", "public": false, "file": true},
            {"key": "FINE", "value": "fine-content", "public": false, "file": true}
        ]),
    ));
    let runner = ShellRunner::start(&gitlab, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("skipping file variables with invalid names"),
        "{log}"
    );
    assert!(
        log.lines().any(|line| line.ends_with("fine-content")),
        "{log}"
    );
    assert!(!marker.exists(), "a file variable's key ran as code");
    assert!(
        !outside.path().join("x").exists(),
        "a file variable escaped"
    );
    // The shell executor's temporary directory (file variables, the git config with the job
    // token) is its user's alone; the project's parents keep the umask.
    use std::os::unix::fs::PermissionsExt;
    // GIT_STRATEGY=empty builds in `<project>-empty`, so its directory is `project-empty.tmp`.
    let tmp = files_named(&runner.builds, "project-empty.tmp");
    assert_eq!(tmp.len(), 1, "{tmp:?}");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tmp[0]), 0o700);
    assert_ne!(
        mode(tmp[0].parent().unwrap()) & 0o055,
        0,
        "a parent became private"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_the_runner_cannot_parse_are_still_failed_and_the_next_job_runs() {
    // Security probe finding 9: nesting past serde_json's limit anywhere, or an id written as
    // a string, left the job `running`.
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let deep = gitlab.enqueue(payload(&["echo never"], json!([])));
    gitlab.edit_payload(deep, |payload| {
        let mut nested = json!({});
        for _ in 0..200 {
            nested = json!({ "x": nested });
        }
        payload["features"]["tracing"] = nested;
    });
    let string_id = gitlab.enqueue(payload(&["echo never"], json!([])));
    gitlab.edit_payload(string_id, |payload| {
        let id = payload["id"].as_i64().unwrap();
        payload["id"] = json!(id.to_string());
        // A wrongly typed field whose value looks like a token: the log must not echo it.
        payload["runner_info"]["timeout"] = json!("glpat-leakedtokenvalue");
    });
    let next = gitlab.enqueue(payload(&["echo next-job-ran"], json!([])));
    let _runner = ShellRunner::start(&gitlab, "");
    for job in [deep, string_id] {
        let log = gitlab
            .wait_failure(job, "runner_system_failure", WAIT)
            .await;
        assert!(log.contains("invalid job payload"), "{log}");
        assert!(!log.contains("leakedtokenvalue"), "{log}");
    }
    let log = gitlab.wait_success(next, WAIT).await;
    assert!(
        log.lines().any(|line| line.ends_with("next-job-ran")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_name_in_a_cache_key_runs_nothing_under_bash_or_sh() {
    // Security probe finding 6: the unquoted here-doc ran `$(…)` from the cache key.
    for shell in ["bash", "sh"] {
        let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
        let outside = tempfile::tempdir().unwrap();
        let marker = outside.path().join("ran");
        let branch = format!("feature-$(touch {})", marker.display());
        let mut job = payload(
            &["mkdir -p vendor && echo x > vendor/f"],
            json!([{"key": "CI_COMMIT_REF_NAME", "value": branch, "public": true}]),
        );
        job["cache"] = json!([{"key": "$CI_COMMIT_REF_NAME", "paths": ["vendor/"], "policy": "push", "when": "on_success", "untracked": false, "fallback_keys": []}]);
        let job = gitlab.enqueue(job);
        let _runner = ShellRunner::start(&gitlab, &format!("shell = \"{shell}\""));
        let log = gitlab.wait_success(job, WAIT).await;
        assert!(
            log.contains("Creating cache feature-$(touch"),
            "{shell}: {log}"
        );
        assert!(log.contains("Created cache"), "{shell}: {log}");
        assert!(!marker.exists(), "{shell} ran a command from the cache key");
    }
}

async fn wait_for_line(path: &Path, text: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.matches(text).count() >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner never logged {text:?} {count} times:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_hostile_values_keeps_the_old_config_and_the_running_job() {
    // Security probe finding 5: each of these values on a live reload made the runner exit
    // 101 and orphaned the running job.
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.1; done; echo released-\"after\"-reloads",
        release.display()
    );
    let running = gitlab.enqueue(payload(&[&script], json!([])));
    let good = ShellRunner::config(&gitlab, dir.path(), 2, "");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &good).unwrap();
    let log_path = dir.path().join("runner.log");
    let mut process = RunnerProcess::spawn_logged(&runner_binary(), &config, dir.path(), &log_path);
    gitlab.wait_log(running, "$ while", WAIT).await;

    let hostile = [
        good.replace("concurrent = 2", "concurrent = 3000000000000000000"),
        good.replace("graceful_kill_timeout = 2", "limit = 9223372036854775807"),
        good.replace(
            "graceful_kill_timeout = 2",
            "request_concurrency = 3000000000000000000",
        ),
        good.replace(
            "graceful_kill_timeout = 2",
            "unhealthy_interval = \"99999999999999999999999h\"",
        ),
        good.replace(
            "graceful_kill_timeout = 2",
            "output_limit = 18014398509481984",
        ),
    ];
    for (index, text) in hostile.iter().enumerate() {
        let staged = dir.path().join("config.toml.new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &config).unwrap();
        wait_for_line(&log_path, "keeping the previous one", index + 1).await;
        assert!(process.is_running(), "the runner exited on reload {index}");
    }
    std::fs::write(&release, b"").unwrap();
    let log = gitlab.wait_success(running, WAIT).await;
    assert!(
        log.lines()
            .any(|line| line.ends_with("released-after-reloads")),
        "{log}"
    );
    // The runner still serves jobs with the configuration it kept.
    let next = gitlab.enqueue(payload(&["echo still-serving"], json!([])));
    gitlab.wait_success(next, WAIT).await;
    let runner_log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        runner_log.contains("invalid value for concurrent: \"3000000000000000000\""),
        "{runner_log}"
    );
    assert!(!runner_log.contains("panicked"), "{runner_log}");
}

#[test]
fn a_start_with_a_hostile_value_fails_with_the_usual_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    for (text, expected) in [
        (
            "concurrent = 9223372036854775807\n",
            "invalid value for concurrent: \"9223372036854775807\" (must be at most 1000000)",
        ),
        (
            "[[runners]]\nurl = \"http://127.0.0.1:9/\"\ntoken = \"glrt-x\"\nexecutor = \"shell\"\nunhealthy_interval = \"99999999999999999999999h\"\n",
            "invalid value for runners[0].unhealthy_interval",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let output = std::process::Command::new(runner_binary())
            .args(["run", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn cache_extractor_refuses_an_archive_that_reaches_outside_through_a_symlink() {
    // Security probe findings 1 and 3 through the real helper subcommand: the outside
    // directory went from 0700 to 0777, and a setuid bit survived.
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&project).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    let archive = dir.path().join("a.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("tool", options.unix_permissions(0o4755))
        .unwrap();
    zip.write_all(b"#!/bin/sh\nid\n").unwrap();
    zip.add_symlink(
        "d",
        outside.display().to_string(),
        options.unix_permissions(0o777),
    )
    .unwrap();
    zip.add_directory("d/", options.unix_permissions(0o777))
        .unwrap();
    zip.finish().unwrap();

    let output = std::process::Command::new(runner_binary())
        .args(["cache-extractor", "--file"])
        .arg(&archive)
        .current_dir(&project)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("would be written through a symbolic link"),
        "{stderr}"
    );
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&outside), 0o700);

    // A setuid entry (a committed fuzz seed: the zip crate cannot write one) loses the bit.
    let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus/archive_extract/zip-setuid-file");
    let output = std::process::Command::new(runner_binary())
        .args(["cache-extractor", "--file"])
        .arg(&seed)
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(mode(&project.join("suid")), 0o755);
}
