//! End to end: `run:` jobs (CI steps) on the Docker executor and the real engine: the helper
//! bootstraps itself into a volume, the build container serves the Step Runner around its
//! shell, and the runner reaches it through `docker exec … steps proxy`. A dropped proxy is
//! redialled and the log resumed with no byte lost or repeated.
//!
//! Needs the Docker engine; never skipped.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test fails"
)]

use std::time::Duration;

use runner_tests::docker_objects::objects_of_job;
use runner_tests::{
    declare_failure_reasons, runner_binary, steps_jobs, FakeGitlab, GitServer, HelperImage,
    RunnerProcess, DEBIAN_IMAGE,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(180);

struct Runner {
    _process: RunnerProcess,
    _dir: tempfile::TempDir,
}

fn start_runner(gitlab: &FakeGitlab, token: &str, helper: &HelperImage) -> Runner {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 2\ncheck_interval = 1\n\n[[runners]]\n  name = \"docker-steps\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"{DEBIAN_IMAGE}\"\n    helper_image = \"{}\"\n    pull_policy = [\"if-not-present\"]\n    network_mode = \"host\"\n",
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

fn run_payload(steps: Value) -> Value {
    let mut payload = steps_jobs::run_payload(
        steps,
        vec![
            json!({"key": "MY_SECRET", "value": "s3cr3t-v4lue-42", "public": false, "masked": true}),
            json!({"key": "A_FILE_VAR", "value": "content of the file", "public": true, "file": true}),
        ],
        300,
    );
    declare_failure_reasons(&mut payload);
    payload
}

/// A script step's output passed to a function fetched from git over HTTP, a masked and a
/// file variable read through `job`: all in the job's build container, through `docker exec`;
/// nothing of the job is left after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_job_runs_in_the_build_container_through_docker_exec() {
    let helper = HelperImage::build("dev");
    let func = "spec:\n  inputs:\n    who:\n      type: string\n  outputs:\n    greeting:\n      type: string\n---\nexec:\n  command:\n    - sh\n    - -c\n    - 'g=\"hi ${{ inputs.who }}\"; echo \"$g in $(. /etc/os-release; echo $ID)\"; printf \"{\\\"name\\\":\\\"greeting\\\",\\\"value\\\":\\\"%s\\\"}\\n\" \"$g\" >> \"${{ output_file }}\"'\n";
    let git = GitServer::start(&[("steps/greet/func.yml", func)], false).await;
    let token = "glrt-t1_dkrsteps1";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(run_payload(json!([
        {"name": "hello", "script": "echo hello from $(hostname -s 2>/dev/null || echo container); echo '{\"name\":\"x\",\"value\":\"42\"}' >> \"${{ output_file }}\""},
        {"name": "remote", "func": format!("{}/-/steps/greet@{}", git.url(), git.head()),
         "inputs": {"who": "${{ steps.hello.outputs.x }}"}},
        {"name": "show", "script": "echo got ${{ steps.remote.outputs.greeting }} secret ${{ job.MY_SECRET }}; cat ${{ job.A_FILE_VAR }}; echo; pwd"},
    ])));
    let _runner = start_runner(&gitlab, token, &helper);
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("Executing \"step_run\" stage of the job script"),
        "{log}"
    );
    for line in [
        "Running step name=hello",
        "hi 42 in debian",
        "got hi 42 secret [MASKED]",
        "content of the file",
    ] {
        assert!(
            log.lines().any(|l| l.ends_with(line)),
            "no line ending {line:?}:\n{log}"
        );
    }
    assert!(!log.contains("s3cr3t-v4lue-42"), "{log}");
    assert!(!log.contains("step-runner is listening"), "{log}");
    assert!(
        log.lines().any(|l| l.ends_with("/builds/project-77")),
        "{log}"
    );
    let left = objects_of_job(token, job.id);
    assert!(left.is_empty(), "{left:?}");
}

/// The step kills the `steps proxy` its own output goes through, twice: the runner dials a new
/// `docker exec`, resumes `FollowLogs` from the offset it had, and the log holds every line
/// exactly once; the job succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_docker_exec_is_redialled_and_the_log_resumed_without_loss_or_repeat() {
    let helper = HelperImage::build("dev");
    let token = "glrt-t1_dkrsteps2";
    let gitlab = FakeGitlab::start(token).await;
    let script = steps_jobs::dropped_transport_script("", "steps pro\"\"xy");
    let job = gitlab.enqueue(run_payload(json!([{"name": "count", "script": script}])));
    let _runner = start_runner(&gitlab, token, &helper);
    let log = gitlab.wait_success(job, WAIT).await;
    steps_jobs::assert_dropped_transport_log(&log);
    let left = objects_of_job(token, job.id);
    assert!(left.is_empty(), "{left:?}");
}

/// A failing step on Docker fails the job as a script failure with its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_in_docker_is_a_script_failure_with_its_exit_code() {
    let helper = HelperImage::build("dev");
    let token = "glrt-t1_dkrsteps3";
    let gitlab = FakeGitlab::start(token).await;
    let job = gitlab.enqueue(run_payload(json!([
        {"name": "bad", "script": "echo failing; exit 7"},
    ])));
    let _runner = start_runner(&gitlab, token, &helper);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("script_failure"),
        "{log}"
    );
    assert_eq!(update.exit_code, Some(7), "{log}");
    assert!(
        log.contains("ERROR: Job failed: step \"bad\": exit code 7"),
        "{log}"
    );
    let left = objects_of_job(token, job.id);
    assert!(left.is_empty(), "{left:?}");
}
