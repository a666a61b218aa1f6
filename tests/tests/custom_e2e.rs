//! End to end: the `gitlab-runner-rs` binary with the custom executor against the fake GitLab
//! over real HTTP, driving real driver scripts: the `local` example driver and small broken
//! drivers written by each test.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runner_tests::{job_payload, runner_binary, FakeGitlab, RunnerProcess};
use serde_json::json;

const RUNNER_TOKEN: &str = "glrt-t1_customrunnertoken";
const WAIT: Duration = Duration::from_secs(120);

fn example_driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/custom-drivers/local")
}

/// A runner with `[runners.custom]` = `custom`; drivers find their root in LOCAL_DRIVER_ROOT.
struct Runner {
    _process: RunnerProcess,
    dir: tempfile::TempDir,
}

impl Runner {
    fn start(gitlab: &FakeGitlab, custom: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("driver-root");
        std::fs::create_dir_all(&root).unwrap();
        let config = format!(
            "concurrent = 2\ncheck_interval = 1\n\n[[runners]]\n  name = \"custom-e2e\"\n  url = \"{}\"\n  token = \"{RUNNER_TOKEN}\"\n  executor = \"custom\"\n  [runners.custom]\n{custom}\n",
            gitlab.url()
        );
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let process = RunnerProcess::spawn(
            &runner_binary(),
            &path,
            dir.path(),
            &[
                ("RUST_LOG", "info".as_ref()),
                ("LOCAL_DRIVER_ROOT", root.as_os_str()),
            ],
        );
        Self {
            _process: process,
            dir,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("driver-root")
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn example_section(overrides: &[(&str, String)]) -> String {
    let driver = example_driver();
    let mut keys: Vec<(String, String)> = ["config", "prepare", "run", "cleanup"]
        .iter()
        .map(|name| {
            (
                format!("{name}_exec"),
                format!("\"{}\"", driver.join(format!("{name}.sh")).display()),
            )
        })
        .collect();
    for (key, value) in overrides {
        keys.retain(|(k, _)| k != key);
        keys.push((key.to_string(), value.clone()));
    }
    keys.iter()
        .map(|(key, value)| format!("    {key} = {value}\n"))
        .collect()
}

fn job(script: &[&str], after: &[&str], timeout: i64) -> serde_json::Value {
    job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        after,
        json!([
            {"key": "CI_PROJECT_PATH", "value": "group/project", "public": true},
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "MY_FILE", "value": "file-contents-here", "public": true, "file": true}
        ]),
        timeout,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_driver_runs_every_stage_in_order_with_upstreams_environment() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let mut payload = job(
        &[
            "echo \"in job: $(cat $MY_FILE) pwd=$PWD\"",
            "echo \"job env reaches run_exec: ${LOCAL_DRIVER_JOB_DIR:-absent}\"",
        ],
        &["echo after $CI_JOB_STATUS"],
        120,
    );
    payload["services"] = json!([{"name": "postgres:16", "alias": "db,pg", "command": ["-c", "x=1"],
        "variables": [{"key": "POSTGRES_DB", "value": "$CI_PROJECT_PATH"}]}]);
    let job = gitlab.enqueue(payload);
    // prepare_exec also prints what the contract gives it, so the test can check it.
    let scripts = tempfile::tempdir().unwrap();
    let prepare = write_script(
        scripts.path(),
        "prepare.sh",
        &format!(
            "{}\necho \"services=$CUSTOM_ENV_CI_JOB_SERVICES\"\necho \"file-var=$CUSTOM_ENV_MY_FILE\"\n\
             echo \"response-mode=$(stat -c %a \"$JOB_RESPONSE_FILE\") id=$(grep -o '\"id\":[0-9]*' \"$JOB_RESPONSE_FILE\" | head -1)\"\n\
             echo \"codes=$BUILD_FAILURE_EXIT_CODE/$SYSTEM_FAILURE_EXIT_CODE tmp=$TMPDIR pwd=$PWD\"",
            std::fs::read_to_string(example_driver().join("prepare.sh")).unwrap()
        ),
    );
    let runner = Runner::start(
        &gitlab,
        &example_section(&[("prepare_exec", format!("\"{}\"", prepare.display()))]),
    );
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("Using Custom executor with driver local v1..."),
        "{log}"
    );
    assert!(log.contains("Prepared "), "{log}");
    assert!(
        log.contains(r#"services=[{"name":"postgres:16","alias":"db","entrypoint":null,"command":["-c","x=1"],"variables":{"POSTGRES_DB":"group/project"}}]"#),
        "{log}"
    );
    assert!(log.contains("file-var=file-contents-here"), "{log}");
    assert!(log.contains("response-mode=600 id=\"id\":1001"), "{log}");
    assert!(log.contains("codes=1/2 tmp=/"), "{log}");
    assert!(log.contains("in job: file-contents-here pwd="), "{log}");
    assert!(
        log.contains(&format!("pwd={}/builds/", runner.root().display())),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "job env reaches run_exec: {}/jobs/1001",
            runner.root().display()
        )),
        "{log}"
    );
    assert!(
        log.contains("Running on $(hostname)") || log.contains("Running on"),
        "{log}"
    );
    assert!(
        log.contains("Starting with version 17.0 the 'build_script' stage will be replaced with 'step_script'"),
        "{log}"
    );
    assert!(log.contains("after success"), "{log}");
    assert_eq!(
        runner.calls(),
        [
            "config",
            "prepare",
            "run prepare_script",
            "run get_sources",
            "run build_script",
            "run after_script",
            "run cleanup_file_variables",
            "cleanup"
        ],
        "{log}"
    );
    // cleanup_exec removed the job dir; the runner removed its temp dir.
    assert!(!runner.root().join("jobs/1001").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_map_to_upstreams_failure_classes() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    // The user's exit code arrives through BUILD_EXIT_CODE_FILE.
    let failing = gitlab.enqueue(job(
        &["echo failing", "exit 42"],
        &["echo after $CI_JOB_STATUS"],
        60,
    ));
    let runner = Runner::start(&gitlab, &example_section(&[]));
    let log = gitlab.wait_failure(failing, "script_failure", WAIT).await;
    let update = gitlab.final_update(failing).unwrap();
    assert_eq!(update.exit_code, Some(42), "{log}");
    assert!(log.contains("ERROR: Job failed: exit status 42"), "{log}");
    assert!(log.contains("after failed"), "{log}");
    drop(runner);

    // SYSTEM_FAILURE_EXIT_CODE from run_exec: a system failure.
    let system = gitlab.enqueue(job(&["echo never"], &[], 60));
    let scripts = tempfile::tempdir().unwrap();
    let run = write_script(
        scripts.path(),
        "run.sh",
        "if [ \"$2\" = build_script ]; then echo backend-lost >&2; exit \"$SYSTEM_FAILURE_EXIT_CODE\"; fi\nbash \"$1\"",
    );
    let runner = Runner::start(
        &gitlab,
        &example_section(&[("run_exec", format!("\"{}\"", run.display()))]),
    );
    let log = gitlab
        .wait_failure(system, "runner_system_failure", WAIT)
        .await;
    assert!(log.contains("backend-lost"), "{log}");
    assert!(
        log.contains("ERROR: Job failed (system failure): exit status 2"),
        "{log}"
    );
    drop(runner);

    // Any other code in prepare: an unknown failure, retried 3 times, cleaned up after each.
    let unknown = gitlab.enqueue(job(&["echo never"], &[], 60));
    let prepare = write_script(
        scripts.path(),
        "prepare.sh",
        "echo prepare >> \"$LOCAL_DRIVER_ROOT/calls.log\"; exit 7",
    );
    let runner = Runner::start(
        &gitlab,
        &example_section(&[("prepare_exec", format!("\"{}\"", prepare.display()))]),
    );
    let log = gitlab
        .wait_failure(unknown, "runner_system_failure", WAIT)
        .await;
    assert_eq!(
        log.matches("ERROR: Preparation failed: unknown Custom executor executable exit code 7; executable execution terminated with: exit status 7").count(),
        3,
        "{log}"
    );
    let calls = runner.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "cleanup").count(),
        3,
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.starts_with("run ")), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_ignoring_sigterm_is_killed_with_its_children_at_the_job_timeout() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job(&["echo started", "sleep 300"], &[], 4));
    let scripts = tempfile::tempdir().unwrap();
    let marker = format!("sleep 2{}", std::process::id() % 1000);
    let run = write_script(
        scripts.path(),
        "run.sh",
        &format!(
            "trap 'echo got-term' TERM\nif [ \"$2\" = build_script ]; then (exec {marker}) & bash \"$1\"; wait; wait; exit 0; fi\nbash \"$1\""
        ),
    );
    let runner = Runner::start(
        &gitlab,
        &example_section(&[
            ("run_exec", format!("\"{}\"", run.display())),
            ("graceful_kill_timeout", "2".into()),
            ("force_kill_timeout", "2".into()),
        ]),
    );
    let started = Instant::now();
    let log = gitlab
        .wait_failure(job, "job_execution_timeout", WAIT)
        .await;
    assert!(log.contains("got-term"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(60), "{log}");
    // SIGKILL went to the driver's whole process group.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .filter(|command| command.trim() == marker)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(runner.calls().last().map(String::as_str), Some("cleanup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_configurations_fail_with_upstreams_messages() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    // config_exec printing something that is not JSON: a retried system failure.
    let bad_json = gitlab.enqueue(job(&["echo never"], &[], 60));
    let scripts = tempfile::tempdir().unwrap();
    let config = write_script(scripts.path(), "config.sh", "echo 'builds_dir: /tmp'");
    let runner = Runner::start(
        &gitlab,
        &example_section(&[("config_exec", format!("\"{}\"", config.display()))]),
    );
    let log = gitlab
        .wait_failure(bad_json, "runner_system_failure", WAIT)
        .await;
    assert!(log.contains("error while parsing JSON output"), "{log}");
    drop(runner);

    // No run_exec: a configuration error, not retried.
    let no_run = gitlab.enqueue(job(&["echo never"], &[], 60));
    let _runner = Runner::start(
        &gitlab,
        &format!(
            "    config_exec = \"{}\"\n",
            example_driver().join("config.sh").display()
        ),
    );
    let update = gitlab.wait_final(no_run, WAIT).await;
    let log = gitlab.log(no_run);
    assert_eq!(update.state, "failed", "{log}");
    assert!(log.contains("custom executor is missing RunExec"), "{log}");
    assert_eq!(log.matches("Preparation failed").count(), 0, "{log}");
}

/// `custom-driver check` on the example driver with some of its scripts replaced.
fn check_driver(replace: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let example = example_driver();
    let mut section = String::new();
    for name in ["config", "prepare", "run", "cleanup"] {
        let path = match replace.iter().find(|(which, _)| *which == name) {
            Some((_, body)) => write_script(dir.path(), &format!("{name}.sh"), body),
            None => example.join(format!("{name}.sh")),
        };
        section.push_str(&format!("    {name}_exec = \"{}\"\n", path.display()));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[[runners]]\n  name = \"checked\"\n  url = \"http://127.0.0.1:9\"\n  token = \"glrt-check\"\n  executor = \"custom\"\n  [runners.custom]\n{section}"),
    )
    .unwrap();
    let root = dir.path().join("root");
    let output = std::process::Command::new(runner_binary())
        .args(["custom-driver", "check", "--timeout", "2", "-c"])
        .arg(&config)
        .env("LOCAL_DRIVER_ROOT", &root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn driver_check_passes_the_example_driver() {
    let (code, report) = check_driver(&[]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("== success"), "{report}");
    assert!(report.contains("run_exec build_script"), "{report}");
    assert!(report.contains("cleanup_exec (again)"), "{report}");
    assert_eq!(report.matches("   PASS").count(), 5, "{report}");
    assert!(!report.contains("BROKEN"), "{report}");
}

#[test]
fn driver_check_diagnoses_broken_drivers() {
    // No BUILD_EXIT_CODE_FILE: every failure is exit status 1.
    let (code, report) =
        check_driver(&[("run", "bash \"$1\" || exit \"$BUILD_FAILURE_EXIT_CODE\"")]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("does not write the script's code to BUILD_EXIT_CODE_FILE"),
        "{report}"
    );

    // A user's failure reported as a system failure.
    let (code, report) =
        check_driver(&[("run", "bash \"$1\" || exit \"$SYSTEM_FAILURE_EXIT_CODE\"")]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("was reported as a system failure"),
        "{report}"
    );

    // A child outside the driver's process group outlives the job.
    let (code, report) = check_driver(&[(
        "run",
        "if [ \"$2\" = build_script ]; then setsid sleep 3017 </dev/null >/dev/null 2>&1 & fi\nbash \"$1\" || { echo $? > \"$BUILD_EXIT_CODE_FILE\"; exit 1; }",
    )]);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("processes left behind"), "{report}");
    assert!(report.contains("sleep 3017"), "{report}");

    // Cleanup that fails when there is nothing left to clean.
    let (code, report) = check_driver(&[(
        "cleanup",
        "rm -r \"$LOCAL_DRIVER_JOB_DIR\" || exit \"$SYSTEM_FAILURE_EXIT_CODE\"",
    )]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("cleanup_exec is not idempotent"),
        "{report}"
    );

    // config_exec chatter on stdout.
    let (code, report) = check_driver(&[("config", "echo 'starting the driver'; echo '{}'")]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("config_exec printed something that is not JSON"),
        "{report}"
    );

    // A driver that ignores SIGTERM is killed after graceful_kill_timeout.
    let (code, report) = check_driver(&[(
        "run",
        "trap '' TERM\nbash \"$1\" || { echo $? > \"$BUILD_EXIT_CODE_FILE\"; exit 1; }",
    )]);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("run_exec ignored SIGTERM"), "{report}");
    assert!(report.contains("graceful_kill_timeout"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_exec_can_switch_the_script_shell_to_sh() {
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let scripts = tempfile::tempdir().unwrap();
    let builds = scripts.path().join("builds");
    let config = write_script(
        scripts.path(),
        "config.sh",
        &format!(
            "echo '{{\"builds_dir\": \"{b}\", \"cache_dir\": \"{b}/../cache\", \"shell\": \"sh\"}}'",
            b = builds.display()
        ),
    );
    let run = write_script(
        scripts.path(),
        "run.sh",
        "sh \"$1\" || { echo $? > \"$BUILD_EXIT_CODE_FILE\"; exit 1; }",
    );
    let switched = gitlab.enqueue(job(&["echo \"bash=${BASH_VERSION:-none}\""], &[], 60));
    let _runner = Runner::start(
        &gitlab,
        &format!(
            "    config_exec = \"{}\"\n    run_exec = \"{}\"\n",
            config.display(),
            run.display()
        ),
    );
    let log = gitlab.wait_success(switched, WAIT).await;
    // The generated scripts are POSIX sh scripts now, and run under dash.
    assert!(log.contains("bash=none"), "{log}");

    let pwsh = write_script(scripts.path(), "pwsh.sh", "echo '{\"shell\": \"pwsh\"}'");
    let refused = gitlab.enqueue(job(&["echo never"], &[], 60));
    drop(_runner);
    let _runner = Runner::start(
        &gitlab,
        &format!(
            "    config_exec = \"{}\"\n    run_exec = \"{}\"\n",
            pwsh.display(),
            run.display()
        ),
    );
    let update = gitlab.wait_final(refused, WAIT).await;
    let log = gitlab.log(refused);
    assert_eq!(update.state, "failed", "{log}");
    assert!(log.contains("this runner supports bash and sh"), "{log}");
}
