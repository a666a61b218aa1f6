//! The shell executor against real processes: exit codes, output streams, cancellation of a
//! script that ignores SIGTERM, and grandchildren that would otherwise outlive their stage.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::time::{Duration, Instant};

use executor_shell::{ShellConfig, ShellExecutor, ShellProvider};
use runner_core::executor::{Executor, ExecutorCommand, ExecutorProvider, ScriptExit};
use runner_core::log::{JobLog, LogOptions};
use runner_core::process::KillTimeouts;
use runner_core::script::ShellCommand;
use runner_core::stage::Stage;
use tokio_util::sync::CancellationToken;

fn executor(graceful: Duration) -> ShellExecutor {
    let provider = ShellProvider::new(ShellConfig {
        working_dir: std::env::temp_dir(),
        kill_timeouts: KillTimeouts {
            graceful,
            force: Duration::from_secs(5),
        },
    });
    let mut executor = provider.create(());
    executor.set_shell_for_tests(ShellCommand {
        name: "bash".into(),
        program: "bash".into(),
        args: vec![],
    });
    executor
}

fn log() -> JobLog {
    JobLog::new(LogOptions {
        timestamps: false,
        ..LogOptions::default()
    })
    .unwrap()
}

async fn run(
    executor: &mut ShellExecutor,
    script: &str,
    log: &JobLog,
    cancel: &CancellationToken,
) -> ScriptExit {
    let stage = Stage::step("script");
    executor
        .run(
            ExecutorCommand {
                script,
                stage: &stage,
                predefined: false,
            },
            log,
            cancel,
        )
        .await
        .expect("executor error")
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && !cmdline.contains("cargo") {
                found.push(cmdline);
            }
        }
    }
    found
}

#[tokio::test]
async fn exit_codes_and_both_streams_reach_the_log() {
    let mut executor = executor(Duration::from_secs(5));
    let log = log();
    let cancel = CancellationToken::new();
    assert_eq!(
        run(
            &mut executor,
            "echo out; echo err >&2; exit 0",
            &log,
            &cancel
        )
        .await,
        ScriptExit::Success
    );
    assert_eq!(
        run(&mut executor, "exit 7", &log, &cancel).await,
        ScriptExit::Failed {
            code: 7,
            message: "exit status 7".into()
        }
    );
    let text = String::from_utf8(log.contents()).unwrap();
    assert!(text.contains("out\n"), "{text}");
    assert!(text.contains("err\n"), "{text}");
}

#[tokio::test]
async fn a_script_ignoring_sigterm_is_killed_after_the_grace_period() {
    let marker = format!("ignore-term-{}", std::process::id());
    let mut executor = executor(Duration::from_millis(500));
    let log = log();
    let cancel = CancellationToken::new();
    let script = format!(
        "trap '' TERM; echo started; exec -a {marker} bash -c \"trap '' TERM; while true; do sleep 0.1; done\""
    );
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        canceller.cancel();
    });
    let started = Instant::now();
    let exit = run(&mut executor, &script, &log, &cancel).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        exit,
        ScriptExit::Failed {
            code: -1,
            message: "signal: killed".into()
        }
    );
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
    assert!(String::from_utf8(log.contents())
        .unwrap()
        .contains("started"));
}

#[tokio::test]
async fn a_backgrounded_grandchild_does_not_outlive_its_stage() {
    let marker = format!("grandchild-{}", std::process::id());
    let mut executor = executor(Duration::from_secs(5));
    let log = log();
    let cancel = CancellationToken::new();
    let script = format!("(exec -a {marker} sleep 600) & echo spawned");
    let started = Instant::now();
    let exit = run(&mut executor, &script, &log, &cancel).await;
    assert_eq!(exit, ScriptExit::Success);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stage hung on the grandchild's pipe"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        processes_with(&marker).is_empty(),
        "{:?}",
        processes_with(&marker)
    );
}

#[tokio::test]
async fn the_script_sees_a_closed_stdin() {
    let mut executor = executor(Duration::from_secs(5));
    let log = log();
    let cancel = CancellationToken::new();
    let exit = run(&mut executor, "cat; echo done", &log, &cancel).await;
    assert_eq!(exit, ScriptExit::Success);
}
