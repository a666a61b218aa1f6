//! The Step Runner's costs, each against a baseline measured in the same run:
//!
//! - per step: a request of many `script` steps (`bash -e -c true` each) against running the
//!   same command directly;
//! - `Run` to the first log byte over the local socket;
//! - `FollowLogs` throughput with masking on (a masked phrase and the default token
//!   prefixes) against reading the same bytes from a pipe, and the service's memory for it.
//!
//! `cargo bench -p runner-steps --bench steps` prints a Markdown table (the README's).

#![expect(clippy::unwrap_used, reason = "a benchmark: a panic is how it fails")]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use runner_steps::client;
use runner_steps::proto::{self, step_result::Status as StepStatus};
use runner_steps::serve;
use runner_steps::service::{Settings, StepService};
use tokio_util::sync::CancellationToken;

const STEPS: usize = 200;
const LOG_MIB: usize = 64;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_default()
}

fn request(id: &str, dir: &Path, steps: serde_json::Value) -> proto::RunRequest {
    proto::RunRequest {
        id: id.into(),
        work_dir: dir.display().to_string(),
        steps: steps.to_string(),
        ..proto::RunRequest::default()
    }
}

async fn drain(
    client: &mut proto::step_runner_client::StepRunnerClient<tonic::transport::Channel>,
    id: &str,
) -> (u64, Option<Duration>, Instant) {
    let started = Instant::now();
    let mut stream = client
        .follow_logs(proto::FollowLogsRequest {
            id: id.into(),
            offset: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = 0;
    let mut first = None;
    while let Some(message) = stream.message().await.unwrap() {
        if first.is_none() && !message.data.is_empty() {
            first = Some(started.elapsed());
        }
        bytes += message.data.len() as u64;
    }
    (bytes, first, started)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bench.sock");
    let env: BTreeMap<String, String> =
        BTreeMap::from([("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())]);
    let service = StepService::new(Settings::default(), env);
    let stop = CancellationToken::new();
    let server = {
        let socket = socket.clone();
        let stop = stop.clone();
        tokio::spawn(async move { serve::serve(&socket, service, stop.cancelled_owned()).await })
    };
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut client = client::connect_lazy(client::unix(&socket));
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    // Baseline: the step's command run directly, as many times.
    let raw_started = Instant::now();
    for _ in 0..STEPS {
        let status = tokio::process::Command::new("bash")
            .args(["-e", "-c", "true"])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
    let raw = raw_started.elapsed() / STEPS as u32;

    // The same commands as steps of one request, Run to the end of its log.
    let steps: Vec<serde_json::Value> = (0..STEPS)
        .map(|n| serde_json::json!({"name": format!("s{n}"), "script": "true"}))
        .collect();
    let started = Instant::now();
    client
        .run(request("many", &work, serde_json::Value::Array(steps)))
        .await
        .unwrap();
    drain(&mut client, "many").await;
    let per_step = started.elapsed() / STEPS as u32;
    let status = client
        .status(proto::StatusRequest { id: "many".into() })
        .await
        .unwrap()
        .into_inner()
        .jobs
        .remove(0);
    assert_eq!(status.status, StepStatus::Success as i32);

    // Run to the first log byte, median of 20.
    let mut firsts = Vec::new();
    for n in 0..20 {
        let id = format!("first-{n}");
        let started = Instant::now();
        client
            .run(request(
                &id,
                &work,
                serde_json::json!([{"name": "echo", "exec": {"command": ["echo", "hi"]}}]),
            ))
            .await
            .unwrap();
        let mut stream = client
            .follow_logs(proto::FollowLogsRequest {
                id: id.clone(),
                offset: 0,
            })
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap();
        firsts.push(started.elapsed());
        while stream.message().await.unwrap().is_some() {}
        client.close(proto::CloseRequest { id }).await.unwrap();
    }
    firsts.sort();
    let first_byte = firsts[firsts.len() / 2];

    // Throughput: LOG_MIB of 100-character lines, masked, against the same bytes from a pipe.
    let produce = format!(
        "head -c {} /dev/zero | tr '\\0' 'a' | fold -w 99",
        LOG_MIB * 1024 * 1024
    );
    let pipe_started = Instant::now();
    let output = tokio::process::Command::new("sh")
        .args(["-c", &produce])
        .output()
        .await
        .unwrap();
    let pipe = pipe_started.elapsed();
    let produced = output.stdout.len() as f64 / (1024.0 * 1024.0);
    drop(output);
    let mut masked = request(
        "throughput",
        &work,
        serde_json::json!([{"name": "flood", "script": produce}]),
    );
    masked.masking = Some(proto::Masking {
        phrases: vec!["secret-phrase-never-printed".into()],
        token_prefixes: vec![],
    });
    let rss_before = rss_kib();
    client.run(masked).await.unwrap();
    let (bytes, _, started) = drain(&mut client, "throughput").await;
    let followed = started.elapsed();
    let rss_after = rss_kib();

    println!("| Step Runner (local socket, in-process service) | measured | baseline, same run |");
    println!("|---|---|---|");
    println!(
        "| per `script` step ({STEPS} steps of `true`) | {:.2} ms | {:.2} ms raw `bash -e -c true` (overhead {:.2} ms) |",
        per_step.as_secs_f64() * 1e3,
        raw.as_secs_f64() * 1e3,
        (per_step.saturating_sub(raw)).as_secs_f64() * 1e3
    );
    println!(
        "| `Run` to the first log byte (median of 20) | {:.2} ms | |",
        first_byte.as_secs_f64() * 1e3
    );
    println!(
        "| `FollowLogs` with masking ({:.0} MiB of output, {:.0} MiB framed) | {:.0} MiB/s | {:.0} MiB/s from a pipe |",
        produced,
        bytes as f64 / (1024.0 * 1024.0),
        produced / followed.as_secs_f64(),
        produced / pipe.as_secs_f64()
    );
    println!(
        "| service RSS growth while following it | {:.1} MiB | |",
        rss_after.saturating_sub(rss_before) as f64 / 1024.0
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}
