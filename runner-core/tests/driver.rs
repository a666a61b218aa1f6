//! The build driver against a hand-written fake executor, on paused time: stage order, failure
//! branches, retries, timeouts and cancellation, and the final state and reason.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner_core::build::{BuildContext, BuildDriver, BuildInput, RunnerSettings, RuntimeState};
use runner_core::cancel::JobCancel;
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorDefaults, ExecutorError, ScriptExit,
};
use runner_core::failure::FailureReason;
use runner_core::job::JobResponse;
use runner_core::log::{JobLog, LogOptions};
use runner_core::script::{ScriptError, ScriptGenerator, ShellCommand};
use runner_core::stage::Stage;
use runner_core::BuildOutcome;
use tokio_util::sync::CancellationToken;

/// What the fake does for a stage.
#[derive(Clone, Debug)]
enum Behaviour {
    Exit(i32),
    /// Fails the first `n` times, then succeeds.
    FailTimes(u32),
    /// Runs until cancelled.
    Hang,
    /// Runs until cancelled, then exits with this code (a TERM trap's `exit 143`, or 0).
    HangThenExit(i32),
    SystemError,
    /// A bug in the executor: the stage panics.
    Panic,
}

#[derive(Default)]
struct Record {
    stages: Vec<String>,
    scripts: HashMap<String, String>,
    prepares: u32,
    cleanups: u32,
    attempts: HashMap<String, u32>,
}

struct FakeExecutor {
    behaviours: HashMap<String, Behaviour>,
    prepare_failures: u32,
    record: Arc<Mutex<Record>>,
}

impl Executor for FakeExecutor {
    async fn prepare(
        &mut self,
        _build: &mut BuildContext,
        _log: &JobLog,
        _cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        let mut record = self.record.lock().unwrap();
        record.prepares += 1;
        if record.prepares <= self.prepare_failures {
            return Err(ExecutorError::system("backend unavailable"));
        }
        Ok(())
    }

    async fn run(
        &mut self,
        command: ExecutorCommand<'_>,
        _log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let name = command.stage.name();
        let attempt = {
            let mut record = self.record.lock().unwrap();
            record.stages.push(name.clone());
            record
                .scripts
                .insert(name.clone(), command.script.to_string());
            let attempt = record.attempts.entry(name.clone()).or_default();
            *attempt += 1;
            *attempt
        };
        match self.behaviours.get(&name).cloned() {
            None | Some(Behaviour::Exit(0)) => Ok(ScriptExit::Success),
            Some(Behaviour::Exit(code)) => Ok(ScriptExit::Failed {
                code,
                message: format!("exit status {code}"),
            }),
            Some(Behaviour::FailTimes(times)) if attempt <= times => Ok(ScriptExit::Failed {
                code: 1,
                message: "exit status 1".into(),
            }),
            Some(Behaviour::FailTimes(_)) => Ok(ScriptExit::Success),
            Some(Behaviour::Hang) => {
                cancel.cancelled().await;
                Ok(ScriptExit::Failed {
                    code: -1,
                    message: "signal: killed".into(),
                })
            }
            Some(Behaviour::HangThenExit(code)) => {
                cancel.cancelled().await;
                Ok(match code {
                    0 => ScriptExit::Success,
                    code => ScriptExit::Failed {
                        code,
                        message: format!("exit status {code}"),
                    },
                })
            }
            Some(Behaviour::SystemError) => Err(ExecutorError::system("lost the backend")),
            Some(Behaviour::Panic) => {
                tokio::task::yield_now().await;
                panic!("the fake executor broke in {name}")
            }
        }
    }

    async fn cleanup(&mut self, _log: &JobLog) {
        self.record.lock().unwrap().cleanups += 1;
    }
}

/// Generates a script for every stage except those in `skip`; the script carries the job
/// status so after_script's view of `CI_JOB_STATUS` can be checked.
struct Generator {
    skip: HashSet<&'static str>,
}

impl ScriptGenerator for Generator {
    fn generate(&self, stage: &Stage, build: &BuildContext) -> Result<Option<String>, ScriptError> {
        if self.skip.contains(stage.name().as_str()) {
            return Ok(None);
        }
        if let Stage::Step(step) = stage {
            if !build
                .job
                .steps
                .iter()
                .any(|s| s.name.to_lowercase() == *step)
            {
                return Ok(None);
            }
        }
        Ok(Some(format!(
            "status={}",
            build.variables.get("CI_JOB_STATUS")
        )))
    }
}

struct Harness {
    behaviours: HashMap<String, Behaviour>,
    prepare_failures: u32,
    variables: Vec<(&'static str, &'static str)>,
    timeout: i64,
    skip: HashSet<&'static str>,
    /// More top-level payload fields (`policy_options`, ...).
    payload: serde_json::Map<String, serde_json::Value>,
}

impl Default for Harness {
    fn default() -> Self {
        Self {
            behaviours: HashMap::new(),
            prepare_failures: 0,
            variables: Vec::new(),
            timeout: 3600,
            skip: [
                "restore_cache",
                "download_artifacts",
                "archive_cache",
                "archive_cache_on_failure",
                "upload_artifacts_on_success",
                "upload_artifacts_on_failure",
            ]
            .into_iter()
            .collect(),
            payload: serde_json::Map::new(),
        }
    }
}

struct Result_ {
    outcome: BuildOutcome,
    record: Arc<Mutex<Record>>,
    log: String,
}

impl Result_ {
    fn stages(&self) -> Vec<String> {
        self.record.lock().unwrap().stages.clone()
    }
    fn script(&self, stage: &str) -> String {
        self.record
            .lock()
            .unwrap()
            .scripts
            .get(stage)
            .cloned()
            .unwrap_or_default()
    }
    fn reason(&self) -> Option<FailureReason> {
        self.outcome.error.as_ref().map(|e| e.reason)
    }
}

impl Harness {
    fn behave(mut self, stage: &str, behaviour: Behaviour) -> Self {
        self.behaviours.insert(stage.to_string(), behaviour);
        self
    }

    async fn run_with(self, cancel: JobCancel) -> Result_ {
        {
            let variables: Vec<serde_json::Value> = self
                .variables
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v, "public": true}))
                .collect();
            let mut payload = serde_json::json!({
                "id": 1, "token": "t",
                "git_info": {"repo_url": "https://example.com/g/p.git", "sha": "abc"},
                "runner_info": {"timeout": self.timeout},
                "variables": variables,
                "steps": [
                    {"name": "script", "script": ["true"]},
                    {"name": "after_script", "script": ["true"]}
                ]
            });
            payload.as_object_mut().unwrap().extend(self.payload);
            let job = JobResponse::from_json(payload.to_string().as_bytes()).unwrap();
            let record = Arc::new(Mutex::new(Record::default()));
            let mut executor = FakeExecutor {
                behaviours: self.behaviours,
                prepare_failures: self.prepare_failures,
                record: record.clone(),
            };
            let generator = Generator { skip: self.skip };
            let log = JobLog::new(LogOptions {
                timestamps: false,
                ..LogOptions::default()
            })
            .unwrap();
            let input = BuildInput {
                job,
                runner: RunnerSettings {
                    name: "fake".into(),
                    token: "glrt-faketoken123".into(),
                    ..RunnerSettings::default()
                },
                executor_name: "fake".into(),
                defaults: ExecutorDefaults {
                    builds_dir: "/builds".into(),
                    cache_dir: "/cache".into(),
                    ..ExecutorDefaults::default()
                },
                shared_environment: false,
                shell: ShellCommand::default(),
                concurrent_id: 0,
                concurrent_project_id: 0,
                correlation_id: String::new(),
            };
            let outcome = BuildDriver::new(&mut executor, &generator, &log, &cancel)
                .run(input)
                .await;
            Result_ {
                outcome,
                record,
                log: String::from_utf8(log.contents()).unwrap(),
            }
        }
    }

    async fn run(self) -> Result_ {
        self.run_with(JobCancel::new()).await
    }
}

#[tokio::test(start_paused = true)]
async fn stages_run_in_upstream_order_and_the_job_succeeds() {
    let result = Harness::default().run().await;
    assert_eq!(result.outcome.state, RuntimeState::Success);
    assert_eq!(
        result.stages(),
        [
            "prepare_script",
            "get_sources",
            "step_script",
            "after_script",
            "cleanup_file_variables"
        ]
    );
    assert_eq!(result.script("after_script"), "status=success");
    assert!(result.log.contains("Preparing the \"fake\" executor"));
    assert!(
        result.log.ends_with("\x1b[32;1mJob succeeded\x1b[0;m\n"),
        "{}",
        result.log
    );
    assert_eq!(result.record.lock().unwrap().cleanups, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_script_runs_after_script_and_the_failure_branches() {
    let mut harness = Harness::default().behave("step_script", Behaviour::Exit(3));
    harness.skip.remove("archive_cache_on_failure");
    harness.skip.remove("upload_artifacts_on_failure");
    let result = harness.run().await;
    assert_eq!(result.outcome.state, RuntimeState::Failed);
    let error = result.outcome.error.clone().unwrap();
    assert_eq!(error.reason, FailureReason::ScriptFailure);
    assert_eq!(error.exit_code, 3);
    assert_eq!(
        result.stages(),
        [
            "prepare_script",
            "get_sources",
            "step_script",
            "after_script",
            "archive_cache_on_failure",
            "upload_artifacts_on_failure",
            "cleanup_file_variables"
        ]
    );
    assert_eq!(result.script("after_script"), "status=failed");
    assert!(result.log.contains("ERROR: Job failed: exit status 3"));
}

#[tokio::test(start_paused = true)]
async fn a_get_sources_failure_skips_scripts_and_after_script() {
    let result = Harness::default()
        .behave("get_sources", Behaviour::Exit(1))
        .run()
        .await;
    assert_eq!(result.reason(), Some(FailureReason::ScriptFailure));
    assert_eq!(
        result.stages(),
        ["prepare_script", "get_sources", "cleanup_file_variables"]
    );
}

#[tokio::test(start_paused = true)]
async fn get_sources_is_retried_with_clear_worktree_before_the_second_attempt() {
    let mut harness = Harness::default().behave("get_sources", Behaviour::FailTimes(2));
    harness.variables.push(("GET_SOURCES_ATTEMPTS", "3"));
    let result = harness.run().await;
    assert_eq!(
        result.outcome.state,
        RuntimeState::Success,
        "{}",
        result.log
    );
    assert_eq!(
        result.stages()[..5],
        [
            "prepare_script",
            "get_sources",
            "clear_worktree",
            "get_sources",
            "get_sources"
        ]
    );
    assert_eq!(result.log.matches("WARNING: Retrying...").count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_preparation_that_always_fails_is_cleaned_up_once_per_attempt() {
    let harness = Harness {
        prepare_failures: 3,
        ..Harness::default()
    };
    let result = harness.run().await;
    assert_eq!(result.outcome.state, RuntimeState::Failed);
    let record = result.record.lock().unwrap();
    assert_eq!(record.prepares, 3);
    // As upstream: one cleanup after each failed attempt, none more at the end.
    assert_eq!(record.cleanups, 3);
}

#[tokio::test(start_paused = true)]
async fn preparation_is_retried_three_times_with_cleanup_between() {
    let harness = Harness {
        prepare_failures: 2,
        ..Harness::default()
    };
    let result = harness.run().await;
    assert_eq!(result.outcome.state, RuntimeState::Success);
    let (prepares, cleanups) = {
        let record = result.record.lock().unwrap();
        (record.prepares, record.cleanups)
    };
    assert_eq!(prepares, 3);
    assert_eq!(cleanups, 3);
    assert_eq!(
        result
            .log
            .matches("ERROR: Preparation failed: backend unavailable")
            .count(),
        2
    );
    assert!(result.log.contains("Will be retried in 3s ..."));

    let harness = Harness {
        prepare_failures: 5,
        ..Harness::default()
    };
    let result = harness.run().await;
    assert_eq!(result.reason(), Some(FailureReason::RunnerSystemFailure));
    assert!(result
        .log
        .contains("ERROR: Job failed (system failure): backend unavailable"));
}

#[tokio::test(start_paused = true)]
async fn the_job_timeout_stops_everything_but_executor_cleanup() {
    let mut harness = Harness::default().behave("step_script", Behaviour::Hang);
    harness.timeout = 10;
    let result = harness.run().await;
    assert_eq!(result.outcome.state, RuntimeState::Timedout);
    let error = result.outcome.error.clone().unwrap();
    assert_eq!(error.reason, FailureReason::JobExecutionTimeout);
    assert_eq!(error.message, "execution took longer than 10s seconds");
    assert_eq!(
        result.stages(),
        ["prepare_script", "get_sources", "step_script"]
    );
    assert_eq!(result.record.lock().unwrap().cleanups, 1);
    assert!(result
        .log
        .contains("step_script could not run to completion because the timeout was exceeded"));
}

#[tokio::test(start_paused = true)]
async fn the_script_timeout_still_runs_after_script() {
    let mut harness = Harness::default().behave("step_script", Behaviour::Hang);
    harness.variables.push(("RUNNER_SCRIPT_TIMEOUT", "30s"));
    let result = harness.run().await;
    assert_eq!(result.reason(), Some(FailureReason::JobExecutionTimeout));
    // Parity audit item 9: upstream fails the job with the script context's error, not the job
    // timeout's `execution took longer than 1h0m0s seconds`.
    assert_eq!(result.outcome.state, RuntimeState::Failed);
    assert!(
        result
            .log
            .contains("ERROR: Job failed: script timeout: context deadline exceeded"),
        "{}",
        result.log
    );
    assert!(
        !result.log.contains("execution took longer"),
        "{}",
        result.log
    );
    assert_eq!(result.script("after_script"), "status=timedout");
    assert!(result
        .stages()
        .contains(&"cleanup_file_variables".to_string()));
}

#[tokio::test(start_paused = true)]
async fn malformed_and_relative_stage_timeouts_are_ignored_with_upstreams_warnings() {
    let mut harness = Harness::default();
    harness.variables.push(("RUNNER_SCRIPT_TIMEOUT", "90"));
    harness
        .variables
        .push(("RUNNER_AFTER_SCRIPT_TIMEOUT", "-1m"));
    let result = harness.run().await;
    assert_eq!(result.outcome.state, RuntimeState::Success);
    assert!(result
        .log
        .contains("WARNING: Ignoring malformed RUNNER_SCRIPT_TIMEOUT timeout: 90"));
    assert!(result
        .log
        .contains("WARNING: Ignoring relative RUNNER_AFTER_SCRIPT_TIMEOUT timeout: -1m"));
}

#[tokio::test(start_paused = true)]
async fn a_graceful_cancel_stops_the_script_but_not_after_script() {
    let cancel = JobCancel::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        trigger.cancel_gracefully();
    });
    let result = Harness::default()
        .behave("step_script", Behaviour::Hang)
        .run_with(cancel)
        .await;
    assert_eq!(result.outcome.state, RuntimeState::Canceled);
    assert_eq!(result.reason(), Some(FailureReason::JobCanceled));
    assert_eq!(result.script("after_script"), "status=canceled");
    assert!(result
        .log
        .contains("WARNING: script canceled externally (UI, API)"));
    assert!(result
        .stages()
        .contains(&"cleanup_file_variables".to_string()));
}

#[tokio::test(start_paused = true)]
async fn an_abort_skips_after_script_and_cleanup_stages() {
    let cancel = JobCancel::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        trigger.abort(runner_core::CancelReason::RemoteAbort);
    });
    let result = Harness::default()
        .behave("step_script", Behaviour::Hang)
        .run_with(cancel)
        .await;
    assert_eq!(result.reason(), Some(FailureReason::JobCanceled));
    assert_eq!(
        result.stages(),
        ["prepare_script", "get_sources", "step_script"]
    );
    assert_eq!(result.record.lock().unwrap().cleanups, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_upload_fails_an_otherwise_successful_job() {
    let mut harness = Harness::default().behave("upload_artifacts_on_success", Behaviour::Exit(1));
    harness.skip.remove("upload_artifacts_on_success");
    let result = harness.run().await;
    assert_eq!(result.reason(), Some(FailureReason::ScriptFailure));
    assert!(result
        .stages()
        .contains(&"cleanup_file_variables".to_string()));
}

#[tokio::test(start_paused = true)]
async fn an_executor_error_is_a_system_failure() {
    let result = Harness::default()
        .behave("step_script", Behaviour::SystemError)
        .run()
        .await;
    assert_eq!(result.reason(), Some(FailureReason::RunnerSystemFailure));
    assert!(result
        .log
        .contains("ERROR: Job failed (system failure): lost the backend"));
}

#[tokio::test(start_paused = true)]
async fn a_prepare_script_failure_stops_before_get_sources() {
    let result = Harness::default()
        .behave("prepare_script", Behaviour::Exit(1))
        .run()
        .await;
    assert_eq!(result.stages(), ["prepare_script"]);
    let error = result.outcome.error.unwrap();
    assert!(error.message.starts_with("prepare environment: exit status 1. Check https://docs.gitlab.com/runner/shells/#shell-profile-loading"));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_stage_still_removes_file_variables_cleans_up_and_fails_the_job() {
    let result = Harness::default()
        .behave("step_script", Behaviour::Panic)
        .run()
        .await;
    assert_eq!(result.outcome.state, RuntimeState::Failed);
    assert_eq!(result.reason(), Some(FailureReason::RunnerSystemFailure));
    let stages = result.stages();
    assert_eq!(
        stages.last().map(String::as_str),
        Some("cleanup_file_variables")
    );
    assert_eq!(stages.iter().filter(|s| *s == "step_script").count(), 1);
    assert!(!stages.contains(&"after_script".to_string()), "{stages:?}");
    assert_eq!(result.record.lock().unwrap().cleanups, 1);
    assert!(
        result.log.contains(
            "ERROR: Job failed (system failure): the runner hit an internal error (please report it): the fake executor broke in step_script"
        ),
        "{}",
        result.log
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_removing_file_variables_after_a_panic_still_cleans_up() {
    let result = Harness::default()
        .behave("step_script", Behaviour::Panic)
        .behave("cleanup_file_variables", Behaviour::Panic)
        .run()
        .await;
    assert_eq!(result.reason(), Some(FailureReason::RunnerSystemFailure));
    assert_eq!(result.record.lock().unwrap().cleanups, 1);
}

#[tokio::test(start_paused = true)]
async fn out_of_range_stage_timeouts_are_malformed_not_a_panic() {
    let huge_after = format!("1{}s", "0".repeat(400));
    let variables: Vec<(&'static str, &'static str)> = vec![
        ("RUNNER_SCRIPT_TIMEOUT", "99999999999999999999999h"),
        (
            "RUNNER_AFTER_SCRIPT_TIMEOUT",
            Box::leak(huge_after.into_boxed_str()),
        ),
    ];
    let result = Harness {
        variables,
        ..Harness::default()
    }
    .run()
    .await;
    assert_eq!(
        result.outcome.state,
        RuntimeState::Success,
        "{}",
        result.log
    );
    assert!(
        result.log.contains(
            "WARNING: Ignoring malformed RUNNER_SCRIPT_TIMEOUT timeout: 99999999999999999999999h"
        ),
        "{}",
        result.log
    );
    assert!(
        result
            .log
            .contains("WARNING: Ignoring malformed RUNNER_AFTER_SCRIPT_TIMEOUT timeout: 1000"),
        "{}",
        result.log
    );
    assert!(result.stages().contains(&"after_script".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_job_timeout_past_the_clocks_range_runs_without_a_deadline() {
    for timeout in [i64::MAX, i64::MAX / 1000, 1 << 40] {
        let result = Harness {
            timeout,
            variables: vec![("RUNNER_SCRIPT_TIMEOUT", "2562047h")],
            ..Harness::default()
        }
        .run()
        .await;
        assert_eq!(
            result.outcome.state,
            RuntimeState::Success,
            "{}",
            result.log
        );
    }
    // And a job that hangs under such a timeout still stops on the script timeout.
    let result = Harness {
        timeout: i64::MAX,
        variables: vec![("RUNNER_SCRIPT_TIMEOUT", "10m")],
        ..Harness::default()
    }
    .behave("step_script", Behaviour::Hang)
    .run()
    .await;
    assert!(
        result
            .log
            .contains("ERROR: Job failed: script timeout: context deadline exceeded"),
        "{}",
        result.log
    );
    assert_eq!(result.reason(), Some(FailureReason::JobExecutionTimeout));
}

/// Parity audit item 6: a dependency whose artifacts are gone fails the job as a missing
/// dependency, and the failure tail still runs (cache and artifacts on failure, and the removal
/// of file variables, which are often secrets).
#[tokio::test(start_paused = true)]
async fn a_missing_dependency_still_runs_the_failure_uploads_and_removes_file_variables() {
    let mut harness = Harness::default().behave(
        "download_artifacts",
        Behaviour::Exit(runner_core::failure::MISSING_DEPENDENCY_EXIT_CODE),
    );
    for stage in [
        "download_artifacts",
        "archive_cache_on_failure",
        "upload_artifacts_on_failure",
    ] {
        harness.skip.remove(stage);
    }
    let result = harness.run().await;
    assert_eq!(
        result.reason(),
        Some(FailureReason::MissingDependencyFailure)
    );
    assert_eq!(
        result.stages(),
        [
            "prepare_script",
            "get_sources",
            "download_artifacts",
            "archive_cache_on_failure",
            "upload_artifacts_on_failure",
            "cleanup_file_variables"
        ]
    );
    assert_eq!(result.record.lock().unwrap().cleanups, 1);
}

/// Parity audit item 18: the policy lines come right before the scripts, in upstream's words.
#[tokio::test(start_paused = true)]
async fn pipeline_execution_policy_lines_come_before_the_scripts() {
    let run = |options: serde_json::Value| async move {
        let mut harness = Harness::default();
        harness.payload.insert("policy_options".into(), options);
        harness.run().await
    };
    let line = |text: &str| format!("\x1b[32;1m{text}\x1b[0;m\n");

    let result = run(serde_json::json!({
        "execution_policy_job": true,
        "policy_name": "Security scans",
        "policy_variables_override_allowed": false,
        "policy_variables_override_exceptions": ["SAST_DISABLED", "SECRET_DETECTION_DISABLED"]
    }))
    .await;
    let expected = line("Job triggered by policy \"Security scans\".")
        + &line("User-defined CI/CD variables are ignored in this job (except for SAST_DISABLED, SECRET_DETECTION_DISABLED) according to the policy.");
    let at = result.log.find(&expected).expect(&result.log);
    assert!(
        result
            .log
            .find("Getting source from Git repository")
            .unwrap()
            < at,
        "{}",
        result.log
    );
    assert!(
        at < result
            .log
            .find("Executing \"step_script\" stage of the job script")
            .unwrap(),
        "{}",
        result.log
    );

    let result = run(serde_json::json!({
        "execution_policy_job": true,
        "policy_name": "p"
    }))
    .await;
    assert!(
        result.log.contains(&(line("Job triggered by policy \"p\".") + &line("Variables defined in the policy take precedence over matching user-defined CI/CD variables for this job."))),
        "{}",
        result.log
    );

    let result = run(serde_json::json!({
        "execution_policy_job": true,
        "policy_name": "p",
        "policy_variables_override_allowed": true
    }))
    .await;
    assert!(
        result.log.contains(&line(
            "User-defined CI/CD variables are allowed in this job according to the policy."
        )),
        "{}",
        result.log
    );

    // An empty list is still a list to upstream.
    let result = run(serde_json::json!({
        "execution_policy_job": true,
        "policy_name": "p",
        "policy_variables_override_allowed": true,
        "policy_variables_override_exceptions": []
    }))
    .await;
    assert!(
        result.log.contains(&line(
            "User-defined CI/CD variables are allowed in this job (except for ) according to the policy."
        )),
        "{}",
        result.log
    );

    let result = run(serde_json::json!({
        "execution_policy_job": false,
        "policy_name": "p",
        "policy_variables_override_allowed": true
    }))
    .await;
    assert!(!result.log.contains("policy"), "{}", result.log);
}

/// Parity audit item 28: every failed attempt, the last one too, is announced as retried and
/// waited out before the job fails.
#[tokio::test(start_paused = true)]
async fn a_preparation_that_always_fails_announces_and_waits_out_every_retry() {
    let started = tokio::time::Instant::now();
    let result = Harness {
        prepare_failures: 3,
        ..Harness::default()
    }
    .run()
    .await;
    assert_eq!(result.reason(), Some(FailureReason::RunnerSystemFailure));
    assert_eq!(started.elapsed(), Duration::from_secs(9));
    let retry = "\x1b[31;1mERROR: Preparation failed: backend unavailable\x1b[0;m\n\x1b[32;1mWill be retried in 3s ...\x1b[0;m\n";
    assert_eq!(result.log.matches(retry).count(), 3, "{}", result.log);
}

/// Parity audit items 22 and 29: the settings' problems follow one `WARNING:` a line each, in
/// upstream's order, with a bad submodule strategy and an empty flag among them, and each flag
/// problem twice as upstream's two resolution passes give it.
#[tokio::test(start_paused = true)]
async fn setting_warnings_are_one_warning_of_upstreams_lines() {
    let result = Harness {
        variables: vec![
            ("FF_USE_FASTZIP", ""),
            ("GET_SOURCES_ATTEMPTS", "20"),
            ("GIT_SUBMODULE_STRATEGY", "sideways"),
            ("GIT_STRATEGY", "bogus"),
        ],
        ..Harness::default()
    }
    .run()
    .await;
    let expected = "\x1b[0;33mWARNING: GIT_STRATEGY: expected either 'clone', 'fetch', 'none' or 'empty' got \"bogus\", using default value 'clone'\n\
        GIT_SUBMODULE_STRATEGY: expected either 'normal', 'recursive' or 'none' got \"sideways\"\n\
        GET_SOURCES_ATTEMPTS: number of attempts out of the range [1, 10], clamping to: 10\n\
        FF_USE_FASTZIP: could not parse feature flag, expected bool, got \n\
        FF_USE_FASTZIP: could not parse feature flag, expected bool, got \x1b[0;m\n";
    assert!(result.log.contains(expected), "{}", result.log);
    assert_eq!(result.log.matches("WARNING:").count(), 1, "{}", result.log);

    // Upstream checks the submodule strategy whatever the git strategy.
    let result = Harness {
        variables: vec![
            ("GIT_STRATEGY", "none"),
            ("GIT_SUBMODULE_STRATEGY", "sideways"),
        ],
        ..Harness::default()
    }
    .run()
    .await;
    assert!(
        result.log.contains("\x1b[0;33mWARNING: GIT_SUBMODULE_STRATEGY: expected either 'normal', 'recursive' or 'none' got \"sideways\"\x1b[0;m\n"),
        "{}",
        result.log
    );
}

/// Parity audit item 10: an after_script stopped at its deadline reports what the stopped
/// script returned, as upstream's kill-and-wait does, not the deadline.
#[tokio::test(start_paused = true)]
async fn an_after_script_stopped_at_its_deadline_reports_the_scripts_exit() {
    let harness = |code: i32, ignore: &'static str| Harness {
        variables: vec![
            ("RUNNER_AFTER_SCRIPT_TIMEOUT", "10s"),
            ("AFTER_SCRIPT_IGNORE_ERRORS", ignore),
        ],
        ..Harness::default().behave("after_script", Behaviour::HangThenExit(code))
    };

    let result = harness(143, "true").run().await;
    assert_eq!(
        result.outcome.state,
        RuntimeState::Success,
        "{}",
        result.log
    );
    assert!(
        result.log.contains("\x1b[0;33mWARNING: after_script failed, but job will continue unaffected: exit status 143\x1b[0;m\n"),
        "{}",
        result.log
    );
    assert!(
        result
            .log
            .contains("after_script could not run to completion because the timeout was exceeded"),
        "{}",
        result.log
    );
    assert!(
        !result.log.contains("context deadline exceeded"),
        "{}",
        result.log
    );

    // A script that still exits 0 when stopped has not failed.
    let result = harness(0, "true").run().await;
    assert_eq!(result.outcome.state, RuntimeState::Success);
    assert!(
        !result.log.contains("after_script failed"),
        "{}",
        result.log
    );

    // Not ignored, the exit fails the job as the script's own failure.
    let result = harness(143, "false").run().await;
    let error = result.outcome.error.clone().unwrap();
    assert_eq!(error.reason, FailureReason::ScriptFailure);
    assert_eq!(error.exit_code, 143);
    assert!(
        result.log.contains("ERROR: Job failed: exit status 143"),
        "{}",
        result.log
    );
}

/// Parity audit item 17: a job asking for SLSA provenance is told it gets none.
#[tokio::test(start_paused = true)]
async fn a_job_asking_for_artifact_metadata_is_told_it_is_not_generated() {
    let mut harness = Harness::default();
    harness
        .variables
        .push(("RUNNER_GENERATE_ARTIFACTS_METADATA", "true"));
    let result = harness.run().await;
    assert_eq!(result.outcome.state, RuntimeState::Success);
    assert!(
        result
            .log
            .contains("RUNNER_GENERATE_ARTIFACTS_METADATA: gitlab-runner-rs does not generate"),
        "{}",
        result.log
    );
}
