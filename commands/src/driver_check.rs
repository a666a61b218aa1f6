//! `custom-driver check`: runs the custom executor driver of a `config.toml` through the whole
//! lifecycle with synthetic jobs, no GitLab needed, and says what breaks upstream's contract.
//!
//! Each scenario is a real build (the same build driver, script generator and custom executor
//! `run` uses) whose executor calls are recorded. Every job carries a marker variable, so any
//! process still holding it in its environment afterwards is a child the driver left behind;
//! those are reported and killed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use executor_custom::{CustomConfig, CustomExecutor, CustomProvider, DriverExit};
use runner_core::build::{
    BuildContext, BuildDriver, BuildInput, Reconfigure, RunnerSettings, RunnerVersion,
};
use runner_core::cancel::JobCancel;
use runner_core::executor::{
    Executor, ExecutorCommand, ExecutorError, ExecutorErrorKind, ExecutorProvider, ScriptExit,
};
use runner_core::failure::{BuildError, FailureReason};
use runner_core::job::{JobInfo, JobResponse, RunnerInfo, Step};
use runner_core::log::{JobLog, LogOptions, MaskRules};
use runner_core::secret::Secret;
use runner_core::variables::JobVariable;
use shells::{BashShell, ShellKind};
use tokio_util::sync::CancellationToken;

use crate::config::RunnerConfig;

/// One executor call as the scenario saw it.
#[derive(Debug, Clone)]
struct Call {
    what: String,
    took: Duration,
    result: String,
}

/// The custom executor with every call recorded, and cleanup run twice (the second time is the
/// idempotence check: it must succeed although the first one removed everything).
struct Recording {
    inner: CustomExecutor,
    calls: Vec<Call>,
    second_cleanup: Option<Result<Option<DriverExit>, String>>,
    prepare_started: tokio::sync::watch::Sender<bool>,
}

fn describe(result: &Result<ScriptExit, ExecutorError>) -> String {
    match result {
        Ok(ScriptExit::Success) => "ok".into(),
        Ok(ScriptExit::Failed { message, .. }) => format!("build failure: {message}"),
        Err(error) => describe_error(error.kind(), &error.full_message()),
    }
}

/// A call that has no script exit (configure, prepare): `ok` or its error with its causes.
fn describe_done<T>(result: &Result<T, ExecutorError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(error) => describe_error(error.kind(), &error.full_message()),
    }
}

fn describe_error(kind: ExecutorErrorKind, message: &str) -> String {
    match kind {
        ExecutorErrorKind::Job(reason) => format!("{reason}: {message}"),
        ExecutorErrorKind::System => format!("system failure: {message}"),
    }
}

impl Executor for Recording {
    async fn configure(
        &mut self,
        build: &BuildContext,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<Reconfigure, ExecutorError> {
        let _ = self.prepare_started.send(true);
        let start = Instant::now();
        let result = self.inner.configure(build, log, cancel).await;
        self.calls.push(Call {
            what: "prepare (config_exec)".into(),
            took: start.elapsed(),
            result: describe_done(&result),
        });
        result
    }

    async fn prepare(
        &mut self,
        build: &mut BuildContext,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        let start = Instant::now();
        let result = self.inner.prepare(build, log, cancel).await;
        self.calls.push(Call {
            what: "prepare (prepare_exec)".into(),
            took: start.elapsed(),
            result: describe_done(&result),
        });
        result
    }

    async fn run(
        &mut self,
        command: ExecutorCommand<'_>,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<ScriptExit, ExecutorError> {
        let start = Instant::now();
        let mut stage = command.stage.name();
        if stage == "step_script" {
            stage = "build_script".into();
        }
        let result = self.inner.run(command, log, cancel).await;
        self.calls.push(Call {
            what: format!("run_exec {stage}"),
            took: start.elapsed(),
            result: describe(&result),
        });
        result
    }

    fn finish(&mut self, outcome: Option<&BuildError>) {
        self.inner.finish(outcome);
    }

    async fn cleanup(&mut self, log: &JobLog) {
        let start = Instant::now();
        let first = self.inner.run_cleanup_exec().await;
        self.calls.push(Call {
            what: "cleanup_exec".into(),
            took: start.elapsed(),
            result: match &first {
                Ok(None) => "not configured".into(),
                Ok(Some(DriverExit::Code(0))) => "ok".into(),
                Ok(Some(exit)) => format!("failed: {exit:?}"),
                Err(error) => format!("failed: {}", error.full_message()),
            },
        });
        if self.second_cleanup.is_none() {
            let start = Instant::now();
            let second = self.inner.run_cleanup_exec().await;
            self.calls.push(Call {
                what: "cleanup_exec (again)".into(),
                took: start.elapsed(),
                result: match &second {
                    Ok(None) => "not configured".into(),
                    Ok(Some(DriverExit::Code(0))) => "ok".into(),
                    Ok(Some(exit)) => format!("failed: {exit:?}"),
                    Err(error) => format!("failed: {}", error.full_message()),
                },
            });
            self.second_cleanup = Some(second.map_err(|error| error.full_message()));
        }
        // The executor's temp dir goes; its own cleanup_exec call is not repeated.
        let _ = log;
        self.inner.discard_temp_dir();
    }
}

/// What a scenario does and what upstream's contract expects of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Success,
    ScriptFailure,
    Timeout,
    CancelDuringRun,
    CancelDuringPrepare,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Success => "success",
            Scenario::ScriptFailure => "script failure (exit 3)",
            Scenario::Timeout => "a stage past the job timeout",
            Scenario::CancelDuringRun => "cancel during run",
            Scenario::CancelDuringPrepare => "cancel during prepare",
        }
    }

    fn script(self) -> Vec<String> {
        match self {
            Scenario::Success => vec!["echo driver-check-ok".into()],
            Scenario::ScriptFailure => vec!["echo failing-on-purpose".into(), "exit 3".into()],
            Scenario::Timeout | Scenario::CancelDuringRun | Scenario::CancelDuringPrepare => {
                vec!["echo driver-check-started".into(), "sleep 3600".into()]
            }
        }
    }
}

/// The result of one scenario: its calls and what is wrong.
struct Report {
    scenario: Scenario,
    calls: Vec<Call>,
    outcome: String,
    took: Duration,
    problems: Vec<String>,
    log: String,
}

fn synthetic_job(id: i64, scenario: Scenario, timeout: i64, marker: &str) -> JobResponse {
    let variable = |key: &str, value: &str| JobVariable {
        key: key.into(),
        value: value.into(),
        public: true,
        ..JobVariable::default()
    };
    JobResponse {
        id,
        token: Secret::new(format!("driver-check-token-{id}")),
        job_info: JobInfo {
            name: "driver-check".into(),
            stage: "test".into(),
            project_id: 1,
            project_name: "driver-check".into(),
            ..JobInfo::default()
        },
        runner_info: RunnerInfo {
            timeout,
            ..RunnerInfo::default()
        },
        variables: vec![
            variable("CI_JOB_ID", &id.to_string()),
            variable("CI_PROJECT_PATH", "driver-check/project"),
            variable("CI_PROJECT_ID", "1"),
            variable("GIT_STRATEGY", "none"),
            variable("GLRS_DRIVER_CHECK", marker),
        ],
        steps: vec![Step {
            name: "script".into(),
            script: scenario.script(),
            timeout,
            when: "on_success".into(),
            allow_failure: false,
        }],
        ..JobResponse::default()
    }
}

/// Processes whose environment carries `marker` (the driver's leftovers), killed.
fn reap_leftovers(marker: &str) -> Vec<String> {
    let needle = format!("CUSTOM_ENV_GLRS_DRIVER_CHECK={marker}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|item| item == needle.as_bytes())
        {
            let command = std::fs::read(entry.path().join("cmdline"))
                .map(|bytes| {
                    String::from_utf8_lossy(&bytes)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            // A process the checked driver left behind.
            runner_core::process::signal_process(pid, libc::SIGKILL);
            found.push(format!("pid {pid}: {command}"));
        }
    }
    found
}

async fn run_scenario(
    runner: &RunnerConfig,
    config: &CustomConfig,
    scenario: Scenario,
    id: i64,
    timeout: Duration,
) -> Report {
    let marker = format!("{}-{id}", std::process::id());
    let job_timeout = timeout.as_secs().max(1) as i64;
    let job = synthetic_job(id, scenario, job_timeout, &marker);
    let provider = CustomProvider::new(Some(config.clone()));
    let kind = runner
        .shell
        .as_deref()
        .and_then(ShellKind::from_name)
        .unwrap_or(ShellKind::Bash);
    let generator = BashShell::new(kind);
    let mut defaults = provider.defaults();
    if let Some(dir) = &runner.builds_dir {
        defaults.builds_dir = dir.clone();
    }
    if let Some(dir) = &runner.cache_dir {
        defaults.cache_dir = dir.clone();
    }
    let shell = generator.command(defaults.shell_type, None);
    let settings = RunnerSettings {
        name: runner.name.clone(),
        token: Secret::new("glrt-driver-check".into()),
        system_id: "s_drivercheck0".into(),
        builds_dir: runner.builds_dir.clone(),
        cache_dir: runner.cache_dir.clone(),
        feature_flags: BTreeMap::new(),
        version: RunnerVersion::default(),
        ..RunnerSettings::default()
    };
    let input = BuildInput::for_provider(&provider, job, settings, defaults, shell);
    let log = match JobLog::new(LogOptions {
        timestamps: false,
        trace_sections: false,
        output_limit: 1 << 20,
        mask: MaskRules::new(Vec::new(), Vec::new()),
    }) {
        Ok(log) => log,
        Err(error) => {
            return Report {
                scenario,
                calls: Vec::new(),
                outcome: format!("cannot create a job log: {error}"),
                took: Duration::ZERO,
                problems: vec![format!("cannot create a job log: {error}")],
                log: String::new(),
            }
        }
    };
    let cancel = JobCancel::new();
    let (started_tx, mut started_rx) = tokio::sync::watch::channel(false);
    let mut executor = Recording {
        inner: provider.create(()),
        calls: Vec::new(),
        second_cleanup: None,
        prepare_started: started_tx,
    };
    // The cancel scenarios cancel once their moment has come.
    let canceller = {
        let cancel = cancel.clone();
        let log = log.clone();
        tokio::spawn(async move {
            match scenario {
                Scenario::CancelDuringRun => {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while Instant::now() < deadline {
                        let text = String::from_utf8_lossy(&log.contents()).into_owned();
                        if text.contains("\ndriver-check-started") {
                            cancel.cancel_gracefully();
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Scenario::CancelDuringPrepare => {
                    let _ = started_rx.wait_for(|started| *started).await;
                    cancel.cancel_gracefully();
                }
                _ => {}
            }
        })
    };
    let start = Instant::now();
    let outcome = BuildDriver::new(&mut executor, &generator, &log, &cancel)
        .run(input)
        .await;
    let took = start.elapsed();
    canceller.abort();
    log.finish();
    let leftovers = reap_leftovers(&marker);
    let text = String::from_utf8_lossy(&log.contents()).into_owned();

    let mut problems = Vec::new();
    let (reason, exit_code, message) = match &outcome.error {
        None => (None, 0, String::new()),
        Some(error) => (Some(error.reason), error.exit_code, error.message.clone()),
    };
    let failed_prepare = executor
        .calls
        .iter()
        .find(|call| call.what.starts_with("prepare") && call.result != "ok")
        .map(|call| call.result.clone());
    let prepare_failed = failed_prepare.is_some();
    if let Some(result) = failed_prepare.filter(|_| scenario != Scenario::CancelDuringPrepare) {
        if result.contains("error while parsing JSON output") {
            problems.push("config_exec printed something that is not JSON on stdout; print only the JSON object there and log to stderr".into());
        } else {
            problems.push(format!(
                "prepare failed: {result}; the driver must prepare a job that needs nothing but a shell"
            ));
        }
    }
    let stages: Vec<&str> = executor
        .calls
        .iter()
        .filter_map(|call| call.what.strip_prefix("run_exec "))
        .collect();
    match scenario {
        Scenario::Success if !prepare_failed => {
            if reason.is_some() {
                problems.push(format!("a trivial job failed: {message}"));
            }
            let expected = ["prepare_script", "get_sources", "build_script", "cleanup_file_variables"];
            if stages != expected {
                problems.push(format!("run_exec was called for {stages:?}, expected {expected:?}"));
            }
            if !text.contains("\ndriver-check-ok") {
                problems.push("the job's output never reached the log: run_exec must run the script it is given and pass its output through".into());
            }
        }
        Scenario::ScriptFailure if !prepare_failed => match reason {
            Some(FailureReason::ScriptFailure) if exit_code == 3 => {}
            Some(FailureReason::ScriptFailure) if exit_code == 1 => problems.push(
                "the user's exit code 3 arrived as 1: run_exec exits BUILD_FAILURE_EXIT_CODE but does not write the script's code to BUILD_EXIT_CODE_FILE".into(),
            ),
            Some(FailureReason::ScriptFailure) => problems.push(format!(
                "the user's exit code 3 arrived as {exit_code}"
            )),
            Some(FailureReason::RunnerSystemFailure) => problems.push(format!(
                "a failing user script was reported as a system failure ({message}): run_exec must exit BUILD_FAILURE_EXIT_CODE (1) when the script fails, SYSTEM_FAILURE_EXIT_CODE (2) only when the backend fails, or jobs are retried pointlessly and operators paged"
            )),
            None => problems.push(
                "a script that exits 3 succeeded: run_exec ignores the script's exit status".into(),
            ),
            Some(other) => problems.push(format!("a failing script ended as {other}: {message}")),
        },
        Scenario::Timeout if !prepare_failed => {
            if reason != Some(FailureReason::JobExecutionTimeout) {
                problems.push(format!(
                    "a job past its timeout ended as {}, not job_execution_timeout",
                    reason.map(|r| r.as_str()).unwrap_or("success")
                ));
            }
            if took >= timeout + config.graceful_kill_timeout {
                problems.push(format!(
                    "run_exec ignored SIGTERM: it was SIGKILLed after graceful_kill_timeout ({}s, [runners.custom] graceful_kill_timeout); stop the backend and exit on SIGTERM",
                    config.graceful_kill_timeout.as_secs()
                ));
            }
        }
        Scenario::CancelDuringRun
            if !prepare_failed && reason != Some(FailureReason::JobCanceled) =>
        {
            problems.push(format!(
                "a canceled job ended as {}",
                reason.map(|r| r.as_str()).unwrap_or("success")
            ));
        }
        Scenario::CancelDuringPrepare => {
            if reason.is_none() {
                problems.push("a job canceled during prepare succeeded".into());
            }
            if !executor.calls.iter().any(|call| call.what == "cleanup_exec") {
                problems.push("cleanup_exec was not called after a canceled prepare".into());
            }
        }
        _ => {}
    }
    if !leftovers.is_empty() {
        problems.push(format!(
            "processes left behind after the job (killed now): {}; everything the driver starts must end with it or stay in its process group, which the runner signals",
            leftovers.join("; ")
        ));
    }
    match &executor.second_cleanup {
        Some(Ok(None | Some(DriverExit::Code(0)))) | None => {}
        Some(Ok(Some(exit))) => problems.push(format!(
            "cleanup_exec is not idempotent: called a second time for the same job it exited {exit:?}; it must succeed when there is nothing left to clean"
        )),
        Some(Err(error)) => problems.push(format!(
            "cleanup_exec is not idempotent: the second call failed: {error}"
        )),
    }
    if let Some(call) = executor
        .calls
        .iter()
        .find(|call| call.what == "cleanup_exec" && call.result.starts_with("failed"))
    {
        problems.push(format!("cleanup_exec {}", call.result));
    }
    Report {
        scenario,
        calls: executor.calls,
        outcome: match &outcome.error {
            None => "success".into(),
            Some(error) => format!(
                "{} (exit code {}): {}",
                error.reason, error.exit_code, error.message
            ),
        },
        took,
        problems,
        log: text,
    }
}

/// Runs every scenario against `runner`'s driver, prints the report; returns the exit code.
pub async fn check(runner: &RunnerConfig, timeout: Duration, verbose: bool) -> i32 {
    let Some(config) = &runner.custom else {
        eprintln!(
            "runner {:?} has no [runners.custom] section: nothing to check",
            runner.name
        );
        return 2;
    };
    if config.run_exec.is_empty() {
        eprintln!(
            "runner {:?}: [runners.custom] run_exec is required",
            runner.name
        );
        return 2;
    }
    // The check waits for kills, so it shortens the kill timeouts it uses.
    let mut config = config.clone();
    config.graceful_kill_timeout = config.graceful_kill_timeout.min(Duration::from_secs(5));
    config.force_kill_timeout = config.force_kill_timeout.min(Duration::from_secs(5));
    let config = &config;
    println!(
        "Checking the custom executor driver of runner {:?} (job timeout {}s, graceful_kill_timeout {}s, force_kill_timeout {}s for the check)",
        runner.name,
        timeout.as_secs(),
        config.graceful_kill_timeout.as_secs(),
        config.force_kill_timeout.as_secs()
    );
    let scenarios = [
        Scenario::Success,
        Scenario::ScriptFailure,
        Scenario::Timeout,
        Scenario::CancelDuringRun,
        Scenario::CancelDuringPrepare,
    ];
    let mut broken = 0;
    for (index, scenario) in scenarios.into_iter().enumerate() {
        let report = run_scenario(runner, config, scenario, 9001 + index as i64, timeout).await;
        println!(
            "\n== {} ({:.1}s): {}",
            report.scenario.name(),
            report.took.as_secs_f64(),
            report.outcome
        );
        for call in &report.calls {
            println!(
                "   {:<40} {:>7.2}s  {}",
                call.what,
                call.took.as_secs_f64(),
                call.result
            );
        }
        if report.problems.is_empty() {
            println!("   PASS");
        } else {
            broken += 1;
            for problem in &report.problems {
                println!("   BROKEN: {problem}");
            }
        }
        if verbose || !report.problems.is_empty() {
            println!("   --- job log ---");
            for line in report.log.lines().filter(|line| !line.is_empty()) {
                println!("   | {line}");
            }
        }
    }
    println!();
    if broken == 0 {
        println!("The driver follows the custom executor contract in every scenario.");
        0
    } else {
        println!("{broken} scenario(s) found the driver breaking the custom executor contract.");
        1
    }
}
