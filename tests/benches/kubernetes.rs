//! Kubernetes executor benchmark: the release binary's kubernetes executor against the API
//! double, whose kubelet runs the pods on the real Docker engine, with locally built images;
//! compared in the same run with a raw exec into a running pod of the same double.
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
//! `cargo bench -p runner-tests --bench kubernetes`; `RUNNER_BENCH_JOBS=N` (default 10).

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, PostParams};
use kube::Api;
use runner_tests::bench_support::{mean, median, run_trivial_jobs, section_time};
use runner_tests::kube_api::{KubeApi, TOKEN};
use runner_tests::kubelet::KubeletSettings;
use runner_tests::{debian_image, release_runner_binary, FakeGitlab, HelperImage, RunnerProcess};
use serde_json::json;
use tokio::io::AsyncReadExt;

const RUNNER_TOKEN: &str = "glrt-t1_benchkube01";

fn client(api: &KubeApi) -> kube::Client {
    let mut config = kube::Config::new(api.url().parse().unwrap());
    config.auth_info.token = Some(TOKEN.to_string().into());
    config.root_cert = Some(vec![api.ca_der()]);
    kube::Client::try_from(config).unwrap()
}

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

    let pods: Api<Pod> = Api::namespaced(client(&api), "default");
    running_pod(&pods, image).await;
    let mut raw = Vec::new();
    for _ in 0..jobs.max(5) {
        raw.push(raw_exec(&pods).await);
    }
    pods.delete("bench-raw", &Default::default()).await.unwrap();

    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n\n[[runners]]\n  name = \"bench\"\n  url = \"{}\"\n  token = \"{RUNNER_TOKEN}\"\n  executor = \"kubernetes\"\n  [runners.kubernetes]\n    host = \"{}\"\n    ca_file = \"{}\"\n    bearer_token = \"{TOKEN}\"\n    namespace = \"default\"\n    image = \"{image}\"\n    helper_image = \"{}\"\n    pull_policy = [\"if-not-present\"]\n    poll_interval = 1\n",
            gitlab.url(),
            api.url(),
            api.ca_file().display(),
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
}
