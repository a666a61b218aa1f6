//! The realistic seeds are accepted by the code they seed: were one of them refused, the fuzzer
//! would start from error paths only, and the corpus replay would not notice.

use std::path::{Path, PathBuf};

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

#[test]
fn the_realistic_job_payload_parses() {
    let data = seed("job_payload", "realistic-job");
    let job = runner_core::job::JobResponse::from_json(&data).expect("the payload parses");
    assert_eq!(job.id, 1001);
    assert_eq!(job.steps.len(), 2);
    assert_eq!(job.variables.len(), 4);

    // Nested past serde_json's depth limit: the payload does not parse, its identity is found.
    let data = seed("job_payload", "tracing-nested-200-levels");
    assert!(runner_core::job::JobResponse::from_json(&data).is_err());
    assert_eq!(runner_core::job::recover_identity(&data).id, Some(1001));
}

#[test]
fn the_realistic_config_parses() {
    let data = seed("config_toml", "realistic-shell-docker-custom");
    let text = std::str::from_utf8(&data).expect("UTF-8");
    let config = gitlab_runner_rs::config::Config::parse(Path::new("/etc/config.toml"), text)
        .expect("the config parses");
    assert_eq!(config.concurrent, 4);
    assert_eq!(config.runners.len(), 4);
}

#[test]
fn the_ordinary_archives_extract() {
    for (name, expected) in [
        ("zip-file-and-directory", "out/report.txt"),
        ("zip-relative-symlink-inside", "lib/libx.so.1"),
        ("gzip-named-member", "metadata.json"),
    ] {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let archive = scratch.path().join("archive");
        std::fs::write(&archive, seed("archive_extract", name)).expect("writing the archive");
        let root = scratch.path().join("root");
        std::fs::create_dir(&root).expect("creating the root");
        runner_helpers::archive::extract(&archive, &root)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(root.join(expected).is_file(), "{name}: no {expected}");
    }
}
