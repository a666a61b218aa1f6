//! Container images the engine tests and benchmarks build locally (no registry is reachable):
//! the debootstrap image of `scripts/build-sshd-image.sh` (bash, git, sshd), and a helper image
//! that adds the statically linked `gitlab-runner-rs` as `/usr/bin/gitlab-runner-helper`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The debootstrap image: Debian bookworm with bash, git, openssh-server.
pub const DEBIAN_IMAGE: &str = "gitlab-runner-rs-test/debian-sshd:bookworm-1";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(command: &mut Command) -> String {
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

/// [`DEBIAN_IMAGE`] plus the static helper (`PROFILE` of `scripts/build-helper.sh`), under a tag
/// of this process; removed when dropped.
pub struct HelperImage(pub String);

impl HelperImage {
    pub fn build(profile: &str) -> Self {
        let base = debian_image();
        let helper = run(Command::new("bash")
            .arg(workspace().join("scripts/build-helper.sh"))
            .env("PROFILE", profile));
        let helper = helper
            .lines()
            .last()
            .expect("the helper's path")
            .trim()
            .to_string();
        let context = tempfile::tempdir().unwrap();
        std::fs::copy(&helper, context.path().join("gitlab-runner-helper")).unwrap();
        std::fs::write(
            context.path().join("Dockerfile"),
            format!("FROM {base}\nCOPY gitlab-runner-helper /usr/bin/gitlab-runner-helper\n"),
        )
        .unwrap();
        let tag = format!(
            "gitlab-runner-rs-test/helper:{profile}-{}",
            std::process::id()
        );
        run(Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(context.path()));
        Self(tag)
    }
}

impl Drop for HelperImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}
