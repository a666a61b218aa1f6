//! Container images the engine tests and benchmarks build locally (no registry is reachable):
//! the debootstrap image of `scripts/build-sshd-image.sh` (bash, git, sshd), and a helper image
//! that adds the statically linked `gitlab-runner-rs` as `/usr/bin/gitlab-runner-helper`
//! (`scripts/build-helper-image.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The debootstrap image: Debian bookworm with bash, git, openssh-server.
pub const DEBIAN_IMAGE: &str = "gitlab-runner-rs-test/debian-sshd:bookworm-1";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `command`, asserts it succeeded (naming it and its stderr), returns its stdout.
pub fn run(command: &mut Command) -> String {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds [`DEBIAN_IMAGE`] unless the engine has it (one builder per machine at a time).
pub fn debian_image() -> &'static str {
    run(Command::new("bash")
        .arg(workspace().join("scripts/build-sshd-image.sh"))
        .arg(DEBIAN_IMAGE));
    DEBIAN_IMAGE
}

/// [`DEBIAN_IMAGE`] plus the static helper (`PROFILE` of `scripts/build-helper.sh`), under one
/// tag per profile shared by every test, built again (from cache) by each and kept on the
/// engine like [`DEBIAN_IMAGE`]. (A tag per test removed at its end raced: a concurrent build
/// reusing the cached image lost it to another test's removal.)
pub struct HelperImage(pub String);

impl HelperImage {
    /// Built by `scripts/build-helper-image.sh`, the script operators use.
    pub fn build(profile: &str) -> Self {
        let tag = format!("gitlab-runner-rs-test/helper:{profile}");
        run(Command::new("bash")
            .arg(workspace().join("scripts/build-helper-image.sh"))
            .args([&tag, profile]));
        Self(tag)
    }
}
