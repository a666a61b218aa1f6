//! Runner benchmarks against the fake GitLab over real HTTP, with the release binary and the
//! shell executor: per-job overhead beyond raw `bash` measured in the same run, job pickup
//! latency, idle RSS of `run` and its RSS with 20 concurrent jobs.
//!
//! Run with `cargo bench -p runner-tests --bench runner`. `RUNNER_BENCH_JOBS` sets the number of
//! sequential trivial jobs (default 20).

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runner_tests::bench_support::{mean, median, mib, time_in_stage_shells};
use runner_tests::{job_payload, release_runner_binary, FakeGitlab, JobControl, RunnerProcess};
use serde_json::json;

const RUNNER_TOKEN: &str = "glrt-t1_benchrunnertoken";
const WAIT: Duration = Duration::from_secs(120);

struct Runner {
    process: RunnerProcess,
    _dir: tempfile::TempDir,
}

/// An empty home directory for the runner and the baseline alike: the shell executor starts a
/// login shell per stage (as upstream does), and the operator's own profile (pyenv, nvm, ...)
/// would otherwise dominate what is measured. Its cost is reported separately.
fn clean_home() -> &'static Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

impl Runner {
    fn start(gitlab: &FakeGitlab, concurrent: u32, check_interval: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"concurrent = {concurrent}
check_interval = {check_interval}

[[runners]]
  name = "bench"
  url = "{url}"
  token = "{RUNNER_TOKEN}"
  executor = "shell"
  builds_dir = "{builds}"
  cache_dir = "{cache}"
"#,
            url = gitlab.url(),
            builds = dir.path().join("builds").display(),
            cache = dir.path().join("cache").display(),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let process = RunnerProcess::spawn(
            &release_runner_binary(),
            &config_path,
            dir.path(),
            &[
                ("RUST_LOG", "warn".as_ref()),
                ("HOME", clean_home().as_os_str()),
            ],
        );
        Self { process, _dir: dir }
    }

    /// `VmRSS` and `VmHWM` of the runner process itself (not its jobs' shells), in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        runner_tests::bench_support::memory_kib(&self.process.id().to_string())
    }
}

fn trivial_job(script: &[&str]) -> serde_json::Value {
    job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        &[],
        json!([
            {"key": "CI_PROJECT_PATH", "value": "group/project", "public": true},
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "FF_TIMESTAMPS", "value": "true", "public": true},
            {"key": "MY_SECRET", "value": "s3cr3t-v4lue-42", "public": false, "masked": true}
        ]),
        120,
    )
}

/// Mean wall time of `bash <args> -c <script>` with its output read through a pipe, as a job's
/// is, and `HOME` as given.
fn raw_bash(args: &[&str], home: &Path, script: &str, runs: u32) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..runs {
        let start = Instant::now();
        let output = Command::new("bash")
            .args(args)
            .args(["-c", script])
            .env("HOME", home)
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        assert!(output.status.success());
        total += start.elapsed();
    }
    total / runs
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

async fn wait_all(gitlab: &FakeGitlab, jobs: &[JobControl]) {
    for job in jobs {
        let update = gitlab.wait_final(*job, WAIT).await;
        assert_eq!(update.state, "success", "{}", gitlab.log(*job));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let jobs = runner_tests::bench_support::jobs_from_env(20);
    let binary = release_runner_binary();
    assert!(Path::new(&binary).exists());

    let script = "echo hello";
    let bash = raw_bash(&[], clean_home(), script, 50);
    let login_bash = raw_bash(&["-l"], clean_home(), script, 50);
    let operator_home = std::env::var_os("HOME").unwrap_or_default();
    let operator_login_bash = raw_bash(&["-l"], Path::new(&operator_home), script, 10);

    // Idle, then sequential trivial jobs through one runner.
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let runner = Runner::start(&gitlab, 1, 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (idle_rss, _) = runner.memory_kib();

    let mut per_job = Vec::new();
    let mut pickup = Vec::new();
    let mut confirm = Vec::new();
    let mut last_job = None;
    let mut in_shells = Vec::new();
    for _ in 0..jobs {
        let job = gitlab.enqueue(trivial_job(&[script]));
        last_job = Some(job);
        wait_all(&gitlab, &[job]).await;
        let timing = gitlab.timing(job);
        let picked_up = timing.picked_up.expect("picked up");
        per_job.push(timing.finished.expect("finished") - picked_up);
        pickup.push(picked_up - timing.queued);
        confirm.push(timing.confirmed.expect("confirmed") - picked_up);
        in_shells.push(time_in_stage_shells(&gitlab.log(job)));
    }
    let (after_sequential_rss, _) = runner.memory_kib();
    if std::env::var_os("RUNNER_BENCH_SHOW_LOG").is_some() {
        if let Some(last) = last_job {
            let timing = gitlab.timing(last);
            eprintln!("{}", gitlab.log(last));
            eprintln!("{timing:?}");
        }
    }
    drop(runner);
    drop(gitlab);

    // 20 concurrent jobs, each sleeping long enough for all to overlap.
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let runner = Runner::start(&gitlab, 20, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss_20, _) = runner.memory_kib();
    let concurrent: Vec<JobControl> = (0..20)
        .map(|_| gitlab.enqueue(trivial_job(&["echo start", "sleep 6", "echo done"])))
        .collect();
    let mut peak_sampled = 0;
    let started = Instant::now();
    let mut all_running = None;
    while concurrent
        .iter()
        .any(|job| gitlab.final_update(*job).is_none())
    {
        assert!(started.elapsed() < WAIT, "concurrent jobs did not finish");
        peak_sampled = peak_sampled.max(runner.memory_kib().0);
        if all_running.is_none()
            && concurrent
                .iter()
                .all(|job| gitlab.timing(*job).confirmed.is_some())
        {
            all_running = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_all(&gitlab, &concurrent).await;
    let (_, peak_20) = runner.memory_kib();
    drop(runner);

    let overhead = median(&per_job).saturating_sub(bash);
    let own: Vec<Duration> = per_job
        .iter()
        .zip(&in_shells)
        .map(|(job, shells)| job.saturating_sub(*shells))
        .collect();
    println!("| measure | result |");
    println!("|---|---|");
    println!("| raw `bash -c '{script}'` (mean of 50) | {} |", ms(bash));
    println!(
        "| raw `bash -l -c '{script}'`, empty HOME (mean of 50) | {} |",
        ms(login_bash)
    );
    println!(
        "| raw `bash -l -c '{script}'`, this machine's HOME (mean of 10; paid once per stage by any shell-executor runner) | {} |",
        ms(operator_login_bash)
    );
    println!(
        "| trivial job, picked up → final state sent (median / mean of {jobs}) | {} / {} |",
        ms(median(&per_job)),
        ms(mean(&per_job))
    );
    println!(
        "| runner overhead per trivial job beyond raw bash (median) | {} |",
        ms(overhead)
    );
    println!(
        "| of which inside the stage shells (prepare_script, get_sources, step_script, cleanup; median) | {} |",
        ms(median(&in_shells))
    );
    println!(
        "| of which the runner's own time outside the shells (HTTP, log, process setup; median) | {} |",
        ms(median(&own))
    );
    println!(
        "| pickup: queued → handed out, check_interval = 1 s (mean) | {} |",
        ms(mean(&pickup))
    );
    println!(
        "| pickup: handed out → `running` confirmed (median) | {} |",
        ms(median(&confirm))
    );
    println!("| idle RSS of `run` (concurrent = 1) | {} |", mib(idle_rss));
    println!(
        "| RSS of `run` after {jobs} sequential jobs | {} |",
        mib(after_sequential_rss)
    );
    println!(
        "| idle RSS of `run` (concurrent = 20) | {} |",
        mib(idle_rss_20)
    );
    println!(
        "| RSS of `run` with 20 concurrent jobs (peak sampled / VmHWM) | {} / {} |",
        mib(peak_sampled),
        mib(peak_20)
    );
    if let Some(elapsed) = all_running {
        println!(
            "| 20 jobs queued at once → all 20 confirmed running | {} |",
            ms(elapsed)
        );
    }
}
