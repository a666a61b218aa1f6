//! End to end: `run:` jobs (CI steps) from the fake GitLab, run natively through the Step
//! Runner the executor starts for the job: the shell executor on a private local socket.

use std::time::Duration;

use runner_tests::{steps_jobs, FakeGitlab, GitServer, ShellRunner as Runner, SHELL_RUNNER_TOKEN};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

fn run_payload(steps: Value, variables: Value, timeout: i64) -> Value {
    let Value::Array(variables) = variables else {
        panic!("a list of variables")
    };
    steps_jobs::run_payload(steps, variables, timeout)
}

fn variables() -> Value {
    json!([
        {"key": "CI_PROJECT_PATH", "value": "group/project", "public": true},
        {"key": "MY_SECRET", "value": "s3cr3t-v4lue-42", "public": false, "masked": true},
        {"key": "A_FILE_VAR", "value": "content of the file", "public": true, "file": true},
    ])
}

/// Outputs passed from a script step into a function fetched from a git repository over
/// HTTP at a revision, whose output the next step prints with a masked job variable; the
/// job log shows upstream's `step_run` stage and the steps' output, the secret masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_job_on_the_shell_executor_passes_outputs_through_a_git_function() {
    let func = "spec:\n  inputs:\n    who:\n      type: string\n  outputs:\n    greeting:\n      type: string\n---\nexec:\n  command:\n    - sh\n    - -c\n    - 'g=\"hi ${{ inputs.who }}\"; echo \"$g from ${{ step_dir }}\"; printf \"{\\\"name\\\":\\\"greeting\\\",\\\"value\\\":\\\"%s\\\"}\\n\" \"$g\" >> \"${{ output_file }}\"'\n";
    let git = GitServer::start(&[("steps/greet/func.yml", func)], false).await;
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let steps = json!([
        {"name": "hello", "script": "echo hello from steps; echo '{\"name\":\"x\",\"value\":\"42\"}' >> \"${{ output_file }}\""},
        {"name": "remote", "func": format!("{}/-/steps/greet@{}", git.url(), git.head()),
         "inputs": {"who": "${{ steps.hello.outputs.x }}"}},
        {"name": "show", "script": "echo got ${{ steps.remote.outputs.greeting }} secret ${{ job.MY_SECRET }}; cat ${{ job.A_FILE_VAR }}; echo; pwd"},
    ]);
    let job = gitlab.enqueue(run_payload(steps, variables(), 120));
    let runner = Runner::start(&gitlab, "");
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("Executing \"step_run\" stage of the job script"),
        "{log}"
    );
    for line in [
        "Running step name=hello",
        "hello from steps",
        "got hi 42 secret [MASKED]",
        "content of the file",
    ] {
        assert!(
            log.lines().any(|l| l.ends_with(line)),
            "no line ending {line:?}:\n{log}"
        );
    }
    assert!(log.contains("hi 42 from "), "{log}");
    assert!(!log.contains("s3cr3t-v4lue-42"), "{log}");
    assert!(log.contains("Job succeeded"), "{log}");
    // The steps ran in the project dir, under the runner's builds dir.
    assert!(
        log.lines()
            .any(|l| l.contains(&runner.builds.display().to_string())
                && l.ends_with("/project-77")),
        "{log}"
    );
}

/// A failing step fails the job as a script failure with its exit code, worded as upstream
/// words it; the steps after it do not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_fails_the_job_with_its_exit_code() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let steps = json!([
        {"name": "first", "script": "echo first"},
        {"name": "bad", "script": "echo failing; exit 3"},
        {"name": "never", "script": "echo never-runs"},
    ]);
    let job = gitlab.enqueue(run_payload(steps, variables(), 120));
    let _runner = Runner::start(&gitlab, "");
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("script_failure"),
        "{log}"
    );
    assert_eq!(update.exit_code, Some(3), "{log}");
    assert!(
        log.contains("ERROR: Job failed: step \"bad\": exit code 3"),
        "{log}"
    );
    assert!(!log.contains("never-runs"), "{log}");
}

/// A canceled `run:` job: the running step gets SIGTERM through the Step Runner's `Cancel`
/// (its trap prints), and the job ends canceled (reported as `unknown_failure` to a GitLab
/// that does not list `job_canceled`, as upstream does). The step keeps printing: trace
/// patches are how the runner hears of the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_run_job_stops_its_step_gracefully() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let steps = json!([
        {"name": "waits", "script": "trap 'echo got-term; exit 0' TERM; echo waiting; while true; do echo tick; sleep 0.3; done"},
    ]);
    let job = gitlab.enqueue(run_payload(steps, variables(), 120));
    let _runner = Runner::start(&gitlab, "");
    gitlab.wait_log(job, "waiting", WAIT).await;
    gitlab.cancel(job);
    let update = gitlab.wait_final(job, WAIT).await;
    let log = gitlab.log(job);
    assert_eq!(update.state, "failed", "{log}");
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("unknown_failure"),
        "{log}"
    );
    assert!(
        log.contains("script canceled externally (UI, API)"),
        "{log}"
    );
    assert!(log.lines().any(|l| l.ends_with("got-term")), "{log}");
}
