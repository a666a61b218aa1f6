//! Docker executor benchmark: the release binary's docker executor against the fake GitLab, on
//! the real engine, with locally built images; compared in the same run with raw `docker run`
//! of the same image.
//!
//! - per stage: the time inside one stage (section start to end in the job log: start the
//!   job's container again, feed the script, read the output, wait) against one raw
//!   `docker run --rm -i <image> sh` reading the same kind of script from stdin;
//! - per job: handed out → final state, for a job whose script is `echo hello`.
//!
//! `cargo bench -p runner-tests --bench docker`; `RUNNER_BENCH_JOBS=N` (default 10).

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runner_tests::bench_support::{mean, median, run_trivial_jobs};
use runner_tests::{debian_image, release_runner_binary, FakeGitlab, HelperImage, RunnerProcess};

const RUNNER_TOKEN: &str = "glrt-t1_benchdocker";

/// One raw `docker run --rm -i <image> sh` with a one-line script on stdin.
fn raw_docker_run(image: &str) -> Duration {
    let start = Instant::now();
    let mut child = Command::new("docker")
        .args(["run", "--rm", "-i", image, "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker run");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo hello\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs = runner_tests::bench_support::jobs_from_env(10);
    let image = debian_image();
    let helper = HelperImage::build("release");
    let binary = release_runner_binary();

    let raw: Vec<Duration> = (0..jobs.max(5)).map(|_| raw_docker_run(image)).collect();

    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n\n[[runners]]\n  name = \"bench\"\n  url = \"{}\"\n  token = \"{RUNNER_TOKEN}\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"{image}\"\n    helper_image = \"{}\"\n    pull_policy = \"if-not-present\"\n",
            gitlab.url(),
            helper.0
        ),
    )
    .unwrap();
    let _runner = RunnerProcess::spawn(
        &binary,
        &config,
        dir.path(),
        &[("RUST_LOG", "warn".as_ref())],
    );
    let runs = run_trivial_jobs(&gitlab, jobs).await;
    let (per_job, per_stage) = (runs.per_job, runs.per_stage);
    let raw_mean = mean(&raw);
    let stage_mean = mean(&per_stage);
    println!("docker executor, {jobs} jobs (`echo hello`, GIT_STRATEGY none), image {image}\n");
    println!("| measure | result |");
    println!("| --- | --- |");
    println!(
        "| baseline: raw `docker run --rm -i` + script on stdin (mean of {}) | {:.0} ms |",
        raw.len(),
        raw_mean.as_secs_f64() * 1000.0
    );
    println!(
        "| per stage: restart the job's container, script on stdin, wait (mean) | {:.0} ms |",
        stage_mean.as_secs_f64() * 1000.0
    );
    println!(
        "| per stage / raw docker run | {:.2}× (target ≤ 1.5×) |",
        stage_mean.as_secs_f64() / raw_mean.as_secs_f64()
    );
    println!(
        "| per job: handed out → final state (median) | {:.0} ms |",
        median(&per_job).as_secs_f64() * 1000.0
    );
}
