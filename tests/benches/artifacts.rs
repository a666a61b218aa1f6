//! Artifact transfer benchmark: the release binary's `artifacts-uploader` and
//! `artifacts-downloader` moving one large incompressible file through the fake GitLab over real
//! HTTP, with the helper's peak RSS (VmHWM sampled from /proc while it runs; `wait4`'s maxrss
//! would report the forking bench's memory). Baseline in the same run: `curl` sending and
//! fetching the same bytes.
//!
//! `cargo bench -p runner-tests --bench artifacts`; `RUNNER_BENCH_ARTIFACT_MIB` sets the size
//! (default 2048).

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runner_tests::{job_payload, release_runner_binary, FakeGitlab};
use serde_json::json;

const RUNNER_TOKEN: &str = "glrt-t1_benchartifacts";

/// Writes `mib` MiB of xorshift noise (deflate cannot shrink it) to `path`.
fn write_noise(path: &Path, mib: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

/// Runs `command` to completion; returns (wall time, peak RSS in KiB).
fn measure(command: &mut Command) -> (Duration, u64) {
    let start = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut { stderr }, &mut text).ok();
        text
    });
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            let log = reader.join().unwrap();
            assert!(status.success(), "{command:?} failed: {log}");
            return (start.elapsed(), peak);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mib_per_s(mib: u64, time: Duration) -> f64 {
    mib as f64 / time.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: u64 = std::env::var("RUNNER_BENCH_ARTIFACT_MIB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2048);
    let binary = release_runner_binary();
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["true"],
        &[],
        json!([]),
        3600,
    ));
    let token = gitlab.token(job);
    let id = job.id.to_string();
    let source = tempfile::tempdir().unwrap();
    write_noise(&source.path().join("big.bin"), mib);
    let url = gitlab.url();

    let (upload, upload_rss) = measure(
        Command::new(&binary)
            .args([
                "artifacts-uploader",
                "--url",
                &url,
                "--token",
                &token,
                "--id",
                &id,
            ])
            .args(["--path", "big.bin", "--name", "big"])
            .current_dir(source.path()),
    );
    let target = tempfile::tempdir().unwrap();
    let (download, download_rss) = measure(
        Command::new(&binary)
            .args([
                "artifacts-downloader",
                "--url",
                &url,
                "--token",
                &token,
                "--id",
                &id,
            ])
            .current_dir(target.path()),
    );
    assert_eq!(
        std::fs::metadata(target.path().join("big.bin"))
            .unwrap()
            .len(),
        mib << 20
    );
    let artifacts_url = format!("{}api/v4/jobs/{id}/artifacts", url);
    let header = format!("JOB-TOKEN: {token}");
    let (curl_up, curl_up_rss) = measure(
        Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "-H",
                &header,
                "-F",
                "file=@big.bin",
            ])
            .arg(&artifacts_url)
            .current_dir(source.path()),
    );
    let (curl_down, curl_down_rss) = measure(
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-H", &header])
            .arg(&artifacts_url),
    );

    println!("artifact of {mib} MiB (incompressible), through the fake GitLab on loopback\n");
    println!("| measure | time | throughput | peak RSS |");
    println!("| --- | --- | --- | --- |");
    for (name, time, rss) in [
        ("artifacts-uploader (zip, deflate)", upload, upload_rss),
        (
            "artifacts-downloader (download + extract)",
            download,
            download_rss,
        ),
        ("baseline: curl multipart upload", curl_up, curl_up_rss),
        ("baseline: curl download", curl_down, curl_down_rss),
    ] {
        println!(
            "| {name} | {:.1} s | {:.0} MiB/s | {:.1} MiB |",
            time.as_secs_f64(),
            mib_per_s(mib, time),
            rss as f64 / 1024.0
        );
    }
}
