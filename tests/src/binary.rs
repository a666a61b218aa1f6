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
    build_package("gitlab-runner-rs", "gitlab-runner-rs", profile, extra)
}

/// The debug build of the reference `docker-vm-driver` (examples/docker-vm-driver).
pub fn docker_vm_driver_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| build_package("docker-vm-driver", "docker-vm-driver", "debug", &[]))
        .clone()
}

fn build_package(package: &str, binary: &str, profile: &str, extra: &[&str]) -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "-q", "-p", package])
        .args(extra)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building {package} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let path = target.join(profile).join(binary);
    assert!(path.exists(), "{} was not built", path.display());
    path
}
