//! Kubernetes executor benchmark: the release binary's kubernetes executor against the API
//! double, whose kubelet runs the pods on the real Docker engine, with locally built images;
//! compared in the same run with a raw exec into a running pod of the same double.
//!
//! Sequential phase (`concurrent = 1`):
//!
//! - baseline: one exec of `sh -c 'echo hello'` through kube-rs into a running pod (open the
//!   stream, run, read the status);
//! - per stage: the time inside one stage (section start to end in the job log: write the
//!   script by exec, type its line into the attached stdin, read its output back through
//!   `read-logs` up to its exit marker);
//! - pod start: the `prepare_executor` section (create the pod, wait for it to run, write the
//!   shell detection);
//! - per job: handed out → final state, for a job whose script is `echo hello`.
//!
//! Concurrent phase: a second runner process (`concurrent = 20`, `limit = 20`, its own fake
//! GitLab) against the same API double, with 20 jobs of `sleep 8` then `echo done` queued at
//! once so their pods run side by side:
//!
//! - the runner's idle RSS before the jobs, its `VmRSS` sampled every 200 ms while they run
//!   (the peak kept), its `VmHWM` after them, and the increase per job ((peak − idle) / 20);
//! - the RSS of this benchmark process at the runner's peak: the API double and its kubelet
//!   (plus the harness and the fake GitLab), not the runner;
//! - the most pods running at once, and the wall time from the first job handed out to the
//!   last final state.
//!
//! Every job must succeed and no pod may be left afterwards.
//!
//! `cargo bench -p runner-tests --bench kubernetes`; `RUNNER_BENCH_JOBS=N` (default 10) sets
//! the number of sequential jobs.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, PostParams};
use kube::Api;
use runner_tests::bench_support::{mean, median, memory_kib, mib, run_trivial_jobs, section_time};
use runner_tests::kube_api::{KubeApi, TOKEN};
use runner_tests::kubelet::KubeletSettings;
use runner_tests::{
    debian_image, job_payload, release_runner_binary, FakeGitlab, HelperImage, JobControl,
    RunnerProcess,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

const RUNNER_TOKEN: &str = "glrt-t1_benchkube01";
/// The token of the concurrent phase's runner, on its own fake GitLab.
const CONCURRENT_TOKEN: &str = "glrt-t1_k8sbench20";
/// Jobs run at once in the concurrent phase.
const CONCURRENT_JOBS: usize = 20;
/// How long the concurrent jobs may take in all: 20 pods on a small machine are slow to start.
const CONCURRENT_WAIT: Duration = Duration::from_secs(600);

/// A running pod with one idle container of `image`.
async fn running_pod(pods: &Api<Pod>, image: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bench-raw"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": image, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "exec sleep 3600"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get("bench-raw").await.unwrap();
        let phase = pod
            .status
            .and_then(|status| status.phase)
            .unwrap_or_default();
        if phase == "Running" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the raw pod did not run: {phase}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One exec of `sh -c 'echo hello'` into the raw pod, to its status.
async fn raw_exec(pods: &Api<Pod>) -> Duration {
    let start = Instant::now();
    let params = AttachParams::default()
        .container("main")
        .stdin(false)
        .stdout(true)
        .stderr(false);
    let mut process = pods
        .exec("bench-raw", ["sh", "-c", "echo hello"], &params)
        .await
        .unwrap();
    let status = process.take_status().unwrap();
    let mut output = String::new();
    process
        .stdout()
        .unwrap()
        .read_to_string(&mut output)
        .await
        .unwrap();
    let status = status.await.unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    assert_eq!(output, "hello\n");
    let _ = process.join().await;
    start.elapsed()
}

/// Writes `dir/config.toml` for a kubernetes runner with `token` on `gitlab`, at most
/// `concurrent` jobs at once (also as the runner's `limit`), against the double `api`.
fn write_config(
    dir: &Path,
    gitlab: &FakeGitlab,
    token: &str,
    concurrent: usize,
    api: &KubeApi,
    image: &str,
    helper: &HelperImage,
) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = {concurrent}\ncheck_interval = 1\n\n[[runners]]\n  name = \"bench\"\n  url = \"{}\"\n  token = \"{token}\"\n  limit = {concurrent}\n  executor = \"kubernetes\"\n  [runners.kubernetes]\n    host = \"{}\"\n    ca_file = \"{}\"\n    bearer_token = \"{TOKEN}\"\n    namespace = \"default\"\n    image = \"{image}\"\n    helper_image = \"{}\"\n    pull_policy = [\"if-not-present\"]\n    poll_interval = 1\n",
            gitlab.url(),
            api.url(),
            api.ca_file().display(),
            helper.0
        ),
    )
    .unwrap();
    config
}

/// A job of `sleep 8` then `echo done`, with `GIT_STRATEGY: none` and timestamps as the
/// sequential phase's trivial jobs, and a job timeout long enough for a slow pod start.
fn sleeping_job() -> serde_json::Value {
    job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["sleep 8", "echo done"],
        &[],
        json!([
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "FF_TIMESTAMPS", "value": "true", "public": true}
        ]),
        CONCURRENT_WAIT.as_secs() as i64,
    )
}

/// How many of the double's pods are in phase `Running` now.
fn running_pods(api: &KubeApi) -> usize {
    api.pod_names()
        .iter()
        .filter_map(|name| name.split_once('/'))
        .filter_map(|(namespace, name)| api.object("pods", namespace, name))
        .filter(|pod| pod["status"]["phase"] == "Running")
        .count()
}

/// Waits until the double stores no pod, or panics after `timeout` naming those left.
async fn wait_no_pods(api: &KubeApi, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = api.pod_names();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "pods left: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the concurrent phase measured.
struct Concurrent {
    /// The runner's `VmRSS` before any job, in KiB.
    idle: u64,
    /// The highest `VmRSS` of the runner sampled while the jobs ran, in KiB.
    peak: u64,
    /// The runner's `VmHWM` after the jobs, in KiB.
    hwm: u64,
    /// This process's `VmRSS` (the double, its kubelet and the harness) at the runner's peak.
    double_at_peak: u64,
    /// The highest `VmRSS` of this process sampled while the jobs ran, in KiB.
    double_peak: u64,
    /// The most pods in phase `Running` at one sample.
    most_running: usize,
    /// The first job handed out → the last final state.
    wall: Duration,
}

/// Runs [`CONCURRENT_JOBS`] sleeping jobs at once through a fresh runner with
/// `concurrent = limit = 20`, sampling its memory and this process's every 200 ms.
async fn concurrent_phase(
    api: &KubeApi,
    binary: &Path,
    image: &str,
    helper: &HelperImage,
) -> Concurrent {
    let gitlab = FakeGitlab::start(CONCURRENT_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &gitlab,
        CONCURRENT_TOKEN,
        CONCURRENT_JOBS,
        api,
        image,
        helper,
    );
    let runner = RunnerProcess::spawn(
        binary,
        &config,
        dir.path(),
        &[("RUST_LOG", "warn".as_ref())],
    );
    let pid = runner.id().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle, _) = memory_kib(&pid);

    let jobs: Vec<JobControl> = (0..CONCURRENT_JOBS)
        .map(|_| gitlab.enqueue(sleeping_job()))
        .collect();
    let started = Instant::now();
    let (mut peak, mut double_at_peak, mut double_peak, mut most_running) = (0, 0, 0, 0);
    while jobs.iter().any(|job| gitlab.final_update(*job).is_none()) {
        assert!(
            started.elapsed() < CONCURRENT_WAIT,
            "the concurrent jobs did not finish within {CONCURRENT_WAIT:?}"
        );
        let (runner_rss, _) = memory_kib(&pid);
        let (double_rss, _) = memory_kib("self");
        if runner_rss > peak {
            peak = runner_rss;
            double_at_peak = double_rss;
        }
        double_peak = double_peak.max(double_rss);
        most_running = most_running.max(running_pods(api));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, hwm) = memory_kib(&pid);
    for job in &jobs {
        let update = gitlab.final_update(*job).unwrap();
        assert_eq!(
            update.state,
            "success",
            "job {}:\n{}",
            job.id,
            gitlab.log(*job)
        );
    }
    let timings: Vec<_> = jobs.iter().map(|job| gitlab.timing(*job)).collect();
    let first = timings.iter().filter_map(|t| t.picked_up).min().unwrap();
    let last = timings.iter().filter_map(|t| t.finished).max().unwrap();
    wait_no_pods(api, Duration::from_secs(60)).await;
    drop(runner);
    Concurrent {
        idle,
        peak,
        hwm,
        double_at_peak,
        double_peak,
        most_running,
        wall: last - first,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs = runner_tests::bench_support::jobs_from_env(10);
    let image = debian_image();
    let helper = HelperImage::build("release");
    let binary = release_runner_binary();
    let api = KubeApi::start_with_kubelet(KubeletSettings {
        network: "host".into(),
        ..KubeletSettings::default()
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    running_pod(&pods, image).await;
    let mut raw = Vec::new();
    for _ in 0..jobs.max(5) {
        raw.push(raw_exec(&pods).await);
    }
    pods.delete("bench-raw", &Default::default()).await.unwrap();

    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &gitlab, RUNNER_TOKEN, 1, &api, image, &helper);
    let runner = RunnerProcess::spawn(
        &binary,
        &config,
        dir.path(),
        &[("RUST_LOG", "warn".as_ref())],
    );
    let runs = run_trivial_jobs(&gitlab, jobs).await;
    drop(runner);
    drop(gitlab);
    wait_no_pods(&api, Duration::from_secs(60)).await;

    let concurrent = concurrent_phase(&api, &binary, image, &helper).await;
    let (per_job, per_stage) = (runs.per_job, runs.per_stage);
    let pod_start: Vec<Duration> = runs
        .logs
        .iter()
        .filter_map(|log| section_time(log, "prepare_executor"))
        .collect();
    let raw_mean = mean(&raw);
    let stage_mean = mean(&per_stage);
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!("kubernetes executor on the API double, {jobs} jobs (`echo hello`, GIT_STRATEGY none), image {image}\n");
    println!("| measure | result |");
    println!("| --- | --- |");
    println!(
        "| baseline: raw exec of `sh -c 'echo hello'` into a running pod (mean of {}) | {:.0} ms |",
        raw.len(),
        ms(raw_mean)
    );
    println!(
        "| per stage: script written by exec, line typed into the attach, output and marker through read-logs (mean) | {:.0} ms |",
        ms(stage_mean)
    );
    println!(
        "| per stage / raw exec | {:.2}× |",
        stage_mean.as_secs_f64() / raw_mean.as_secs_f64()
    );
    println!(
        "| pod start: create, wait for Running, write the shell detection (median) | {:.0} ms |",
        ms(median(&pod_start))
    );
    println!(
        "| per job: handed out → final state (median; 4 stages, pod created and deleted) | {:.0} ms |",
        ms(median(&per_job))
    );
    println!(
        "| idle RSS of the runner (concurrent = {CONCURRENT_JOBS}) | {} |",
        mib(concurrent.idle)
    );
    println!(
        "| RSS of the runner with {CONCURRENT_JOBS} concurrent jobs (`sleep 8`; peak sampled every 200 ms; at most {} pods Running at once) | {} |",
        concurrent.most_running,
        mib(concurrent.peak)
    );
    println!(
        "| VmHWM of the runner after the {CONCURRENT_JOBS} concurrent jobs | {} |",
        mib(concurrent.hwm)
    );
    println!(
        "| runner RSS increase per concurrent job ((peak − idle) / {CONCURRENT_JOBS}) | {} |",
        mib(concurrent.peak.saturating_sub(concurrent.idle) / CONCURRENT_JOBS as u64)
    );
    println!(
        "| the double's own cost: RSS of the bench process (API double, its kubelet, fake GitLab, harness; not the runner) at the runner's peak / peak sampled | {} / {} |",
        mib(concurrent.double_at_peak),
        mib(concurrent.double_peak)
    );
    println!(
        "| {CONCURRENT_JOBS} concurrent jobs: first handed out → last final state | {:.1} s |",
        concurrent.wall.as_secs_f64()
    );
}
