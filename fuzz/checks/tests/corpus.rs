//! Replays every committed corpus file in `fuzz/corpus/<target>/` through the target's check,
//! so the corpora (seeds and the crashes found so far) run on every normal, stable test run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("reading {}: {error}", directory.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "the corpus {} is empty",
        directory.display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file)
            .unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(a panic without a message)");
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            failures.push(format!("{target}/{name}: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files of {target} fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn go_duration_corpus() {
    replay("go_duration", runner_fuzz_checks::check_go_duration);
}

#[test]
fn job_payload_corpus() {
    replay("job_payload", runner_fuzz_checks::check_job_payload);
}

#[test]
fn config_toml_corpus() {
    replay("config_toml", runner_fuzz_checks::check_config_toml);
}

#[test]
fn masker_corpus() {
    replay("masker", runner_fuzz_checks::check_masker);
}

#[test]
fn archive_extract_corpus() {
    replay("archive_extract", runner_fuzz_checks::check_archive_extract);
}
