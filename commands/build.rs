//! Records the source revision the binary is built from (upstream's `Running with gitlab-runner
//! 19.4.0 (<8-char sha>)` and `CI_RUNNER_REVISION`): `GITLAB_RUNNER_RS_REVISION` when the builder
//! sets it, else the checkout's commit as `git rev-parse --short=8 HEAD` names it, else nothing
//! (the runner then says `unknown`, as a build from a source archive without git must).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GITLAB_RUNNER_RS_REVISION");
    if std::env::var_os("GITLAB_RUNNER_RS_REVISION").is_some() {
        return;
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let Some(workspace) = Path::new(&manifest).parent() else {
        return;
    };
    let git_dir = workspace.join(".git");
    // A new commit or checkout moves HEAD or the branch it names; either reruns this script.
    // Only files that exist are named: cargo reruns a script for a missing one on every build,
    // which would relink the binary under runners the tests have started.
    let mut watched = vec![git_dir.join("HEAD")];
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            watched.push(git_dir.join(reference));
            watched.push(git_dir.join("packed-refs"));
        }
    }
    for path in watched.iter().filter(|path| path.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let output = Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(["rev-parse", "--short=8", "HEAD"])
        .output();
    if let Ok(output) = output {
        let revision = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && !revision.is_empty() {
            println!("cargo:rustc-env=GITLAB_RUNNER_RS_REVISION={revision}");
        }
    }
}
