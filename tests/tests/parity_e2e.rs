//! End to end, the parity audit's in-job items (shell executor, fake GitLab over HTTP, a git
//! server that wants the job token): submodules on the same GitLab get the token (item 1),
//! `FF_GIT_URLS_WITHOUT_TOKENS` keeps it out of every URL and file (item 13), job variables
//! named `FF_*` that are not flags survive (item 11), `RUNNER_SCRIPT_TIMEOUT` says its own
//! message (item 9), and a missing dependency still removes file variables (item 6).
//!
//! Each marker a script prints is built at run time (`$((40+2))`), so the `$ command` echo of
//! the script line cannot satisfy an assertion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner_tests::{job_payload, FakeGitlab, GitServer, ShellRunner, SHELL_RUNNER_TOKEN};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn variables(extra: serde_json::Value) -> serde_json::Value {
    let mut list =
        vec![json!({"key": "CI_PROJECT_PATH", "value": "group/project", "public": true})];
    list.extend(extra.as_array().cloned().unwrap_or_default());
    serde_json::Value::Array(list)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_submodule_on_the_same_gitlab_is_fetched_with_the_job_token() {
    let git = GitServer::start_with_submodule(&[("README.md", "top\n")], "glcbt-jobtoken").await;
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        &git.url_with_token("JOB_TOKEN"),
        &git.head(),
        &["cat library/lib.txt", "echo \"checked-$((40+2))\""],
        &[],
        variables(json!([{"key": "GIT_SUBMODULE_STRATEGY", "value": "normal", "public": true}])),
        120,
    ));
    let _runner = ShellRunner::start(&gitlab, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(log.contains("from the private library"), "{log}");
    assert!(log.contains("checked-42"), "{log}");
    // Every request the git server answered carried credentials, the submodule's included.
    let authorizations = git.authorizations();
    assert!(authorizations.len() >= 4, "{authorizations:?}");
    assert!(authorizations.iter().all(|auth| auth.starts_with("Basic ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_git_urls_without_tokens_no_url_or_file_holds_the_token() {
    let git = GitServer::start_with_submodule(&[("README.md", "top\n")], "glcbt-jobtoken").await;
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        &git.url_with_token("JOB_TOKEN"),
        &git.head(),
        &[
            "cat library/lib.txt",
            "echo \"remote=$(git remote get-url origin)\"",
            "if grep -rqsF \"$CI_JOB_TOKEN\" .git library/.git \"$CI_PROJECT_DIR.tmp\"; then echo \"token-on-disk-$((40+2))\"; else echo \"no-token-$((40+2))\"; fi",
        ],
        &[],
        variables(json!([
            {"key": "GIT_SUBMODULE_STRATEGY", "value": "normal", "public": true},
            {"key": "FF_GIT_URLS_WITHOUT_TOKENS", "value": "true", "public": true}
        ])),
        120,
    ));
    let _runner = ShellRunner::start(&gitlab, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(log.contains("from the private library"), "{log}");
    assert!(log.contains(&format!("remote={}", git.url())), "{log}");
    assert!(log.contains("no-token-42"), "{log}");
    assert!(!log.contains("token-on-disk-42"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_variables_that_only_look_like_feature_flags_reach_the_script() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["echo \"app-flag=[$FF_MY_APP_FLAG] known=[$FF_SCRIPT_SECTIONS]\""],
        &[],
        variables(json!([
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "FF_MY_APP_FLAG", "value": "on", "public": true},
            {"key": "FF_SCRIPT_SECTIONS", "value": "true", "public": true}
        ])),
        60,
    ));
    let _runner = ShellRunner::start(&gitlab, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(log.contains("app-flag=[on] known=[true]"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_timeout_fails_the_job_with_its_own_message() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["sleep 60"],
        &["echo \"after-status=$CI_JOB_STATUS\""],
        variables(json!([
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "RUNNER_SCRIPT_TIMEOUT", "value": "2s", "public": true}
        ])),
        600,
    ));
    let _runner = ShellRunner::start(&gitlab, "");
    let log = gitlab
        .wait_failure(job, "job_execution_timeout", WAIT)
        .await;
    assert!(
        log.contains("ERROR: Job failed: script timeout: context deadline exceeded"),
        "{log}"
    );
    assert!(!log.contains("execution took longer"), "{log}");
    assert!(log.contains("after-status=timedout"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dependency_still_saves_on_failure_and_removes_file_variables() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let no_artifacts = |script: &[&str]| {
        job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            script,
            &[],
            variables(json!([
                {"key": "GIT_STRATEGY", "value": "none", "public": true},
                {"key": "SECRET_FILE", "value": "s3cr3t-in-a-file", "public": false, "file": true}
            ])),
            120,
        )
    };
    let gone = gitlab.enqueue(no_artifacts(&["echo uploads nothing"]));
    let runner = ShellRunner::start(&gitlab, "");
    gitlab.wait_success(gone, WAIT).await;
    let mut dependent = no_artifacts(&["echo must-not-run"]);
    dependent["dependencies"] = json!([{
        "id": gone.id, "token": gitlab.token(gone), "name": "build",
        "artifacts_file": {"filename": "artifacts.zip", "size": 100}
    }]);
    dependent["artifacts"] = json!([{
        "name": "report", "untracked": false, "paths": ["report.txt"],
        "when": "on_failure", "artifact_type": "archive", "artifact_format": "zip"
    }]);
    let dependent = gitlab.enqueue(dependent);
    let update = gitlab.wait_final(dependent, WAIT).await;
    let log = gitlab.log(dependent);
    assert_eq!(update.state, "failed", "{log}");
    assert!(!log.contains("must-not-run"), "{log}");
    assert!(log.contains("Uploading artifacts for failed job"), "{log}");
    assert!(
        log.contains("Cleaning up project directory and file based variables"),
        "{log}"
    );
    let left: Vec<_> = files_under(&runner.builds)
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|name| name == "SECRET_FILE"))
        .collect();
    assert!(left.is_empty(), "file variables left on disk: {left:?}");
}

/// A git repository in a temporary directory whose one commit holds `.gitlab-ci.yml` with
/// `pipeline`: the project `exec` runs a job of.
fn committed_project(pipeline: &str) -> tempfile::TempDir {
    let project = tempfile::tempdir().expect("a temporary project");
    std::fs::write(project.path().join(".gitlab-ci.yml"), pipeline).expect("write the pipeline");
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "ci"],
    ] {
        let status = std::process::Command::new("git")
            .current_dir(project.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .expect("run git");
        assert!(status.success(), "git {args:?}");
    }
    project
}

/// `exec shell` restores and saves the job's `cache:` locally (the issue's last item): the
/// second run finds what the first one cached, with no GitLab at all.
#[test]
fn exec_shell_keeps_the_jobs_cache_between_local_runs() {
    let project = committed_project(
        r#"build:
  cache:
    key: deps-$CI_JOB_NAME
    paths: [vendor/]
  script:
    - if [ -f vendor/dep.txt ]; then echo "restored=$(cat vendor/dep.txt)"; else echo "cold-$((40+2))"; fi
    - mkdir -p vendor && echo "from-the-first-run" > vendor/dep.txt
"#,
    );
    let work = tempfile::tempdir().unwrap();
    let run = || {
        let output = std::process::Command::new(runner_tests::runner_binary())
            .current_dir(project.path())
            .args(["exec", "shell", "build", "--builds-dir"])
            .arg(work.path().join("builds"))
            .arg("--cache-dir")
            .arg(work.path().join("cache"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let first = run();
    assert!(first.contains("cold-42"), "{first}");
    assert!(first.contains("Created cache"), "{first}");
    let second = run();
    assert!(second.contains("Successfully extracted cache"), "{second}");
    assert!(second.contains("restored=from-the-first-run"), "{second}");
}

/// `exec shell` keeps the job's `artifacts:` in a local directory: the job's upload stage runs
/// the real uploader against exec's local receiver, and the archive holds the files the
/// paths name (and not the excluded ones), also when the job fails with `when: always`.
#[test]
fn exec_shell_keeps_the_jobs_artifacts_in_a_local_directory() {
    let project = committed_project(
        r#"build:
  artifacts:
    name: dist-$CI_JOB_NAME
    paths: [dist/]
    exclude: [dist/*.tmp]
  script:
    - mkdir -p dist && echo "built-$((6*7))" > dist/app.txt && echo scratch > dist/x.tmp
broken:
  artifacts:
    when: always
    paths: [report.txt]
  script:
    - echo "partial" > report.txt
    - exit 4
"#,
    );
    let work = tempfile::tempdir().unwrap();
    let kept = work.path().join("kept");
    let run = |job: &str| {
        let output = std::process::Command::new(runner_tests::runner_binary())
            .current_dir(project.path())
            .args(["exec", "shell", job, "--builds-dir"])
            .arg(work.path().join("builds"))
            .arg("--artifacts-dir")
            .arg(kept.join(job))
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, out, err) = run("build");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Uploading artifacts..."), "{out}");
    assert!(out.contains("201 Created"), "{out}");
    let archive = kept.join("build/dist-build.zip");
    assert!(
        err.contains(&format!("Artifacts kept in {}", archive.display())),
        "{err}"
    );
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
    let mut names: Vec<String> = zip.file_names().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, ["dist/", "dist/app.txt"], "{out}");
    let mut content = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("dist/app.txt").unwrap(), &mut content).unwrap();
    assert_eq!(content, "built-42\n");

    let (code, out, _) = run("broken");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ERROR: Job failed: exit status 4"), "{out}");
    let zip = zip::ZipArchive::new(std::fs::File::open(kept.join("broken/artifacts.zip")).unwrap())
        .unwrap();
    assert_eq!(
        zip.file_names().collect::<Vec<_>>(),
        ["report.txt"],
        "{out}"
    );
}

/// The `read-logs` helper the Kubernetes attach strategy runs (parity audit item 19):
/// `<offset> <line>` output, upstream's message and exit 1 for a file that never appears, exit
/// 100 for one deleted while followed.
#[test]
fn read_logs_follows_a_file_by_offset_with_upstreams_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("never.log");
    let output = std::process::Command::new(runner_tests::runner_binary())
        .args(["read-logs", "--wait-file-timeout", "1s", "--path"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "error reading logs from {}: timeout waiting for file to be created\n",
            missing.display()
        )
    );

    let log = dir.path().join("output.log");
    std::fs::write(&log, "one\ntwo\n").unwrap();
    let mut child = std::process::Command::new(runner_tests::runner_binary())
        .args(["read-logs", "--offset", "4", "--path"])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "8 two\n");
    std::fs::remove_file(&log).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(100));
}
