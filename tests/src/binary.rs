//! Finds (and if needed builds) the `gitlab-runner-rs` binary the tests run.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The path of the debug binary: `GITLAB_RUNNER_RS_BIN`, else the workspace's target directory,
/// built with `cargo build -p gitlab-runner-rs` once per test process when missing or stale.
pub fn runner_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("GITLAB_RUNNER_RS_BIN") {
                return PathBuf::from(path);
            }
            build("debug", &[])
        })
        .clone()
}

/// The release binary, for benchmarks: built with `cargo build --release -p gitlab-runner-rs`.
pub fn release_runner_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| build("release", &["--release"]))
        .clone()
}

fn build(profile: &str, extra: &[&str]) -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "-q", "-p", "gitlab-runner-rs"])
        .args(extra)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building gitlab-runner-rs failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let binary = target.join(profile).join("gitlab-runner-rs");
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}
