//! Trace throughput with masking on: bytes through the whole job-log pipeline (masker with
//! masked values and every token prefix, timestamps, on-disk buffer) per second, and peak RSS.
//! Run with `cargo bench -p runner-core --bench trace_throughput`.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::time::Instant;

use runner_core::log::{token_prefixes, JobLog, LogOptions, MaskRules, StreamId, StreamKind};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let total: usize = std::env::var("TRACE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        * 1024
        * 1024;
    // A realistic mix: build output lines, an occasional secret and token.
    let mut chunk = Vec::new();
    while chunk.len() < 64 * 1024 {
        chunk.extend_from_slice(
            b"Compiling crate-name v1.2.3 (/builds/group/project/crates/name) in 0.42s\n",
        );
        chunk.extend_from_slice(b"    running 12 tests; using token glpat-abcdefghijklmnopqrst and password hunter2-hunter2\n");
    }
    // Baseline in the same run: the same writes appended raw to a temporary file.
    let raw_rate = {
        use std::io::Write;
        let mut file = tempfile::tempfile().expect("temp file");
        let start = Instant::now();
        let mut written = 0;
        while written < total {
            for part in chunk.chunks(4093) {
                file.write_all(part).expect("write");
            }
            written += chunk.len();
        }
        written as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
    };
    println!("baseline, raw writes to a temp file: {raw_rate:.0} MiB/s");
    let rss_before = peak_rss_kib();
    let log = JobLog::new(LogOptions {
        timestamps: true,
        trace_sections: true,
        output_limit: u64::MAX,
        mask: MaskRules::new(
            vec![
                "hunter2-hunter2".into(),
                "another-masked-value".into(),
                "x".repeat(40),
            ],
            token_prefixes(&[], true),
        ),
    })
    .expect("job log");
    let mut writer = log.stream(StreamId::SCRIPT, StreamKind::Stdout);
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        // Uneven writes, as pipes deliver them.
        for part in chunk.chunks(4093) {
            writer.write(part);
        }
        written += chunk.len();
    }
    writer.finish();
    let elapsed = start.elapsed();
    let mib = written as f64 / (1024.0 * 1024.0);
    println!(
        "trace with masking: {mib:.0} MiB in {:.2} s = {:.0} MiB/s; stored {} MiB; peak RSS {} KiB (before: {} KiB)",
        elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64(),
        log.len() / (1024 * 1024),
        peak_rss_kib(),
        rss_before
    );
    let sample = log.read_at(0, 4096).unwrap();
    let sample = String::from_utf8_lossy(&sample);
    assert!(!sample.contains("hunter2-hunter2") && sample.contains("glpat-[MASKED]"));
}
