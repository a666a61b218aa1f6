//! The statically linked helper (`scripts/build-helper.sh`) on the Docker engine: an image that
//! holds nothing but the binary uploads artifacts to the fake GitLab, downloads them into
//! another container, and archives a cache; no helper image, libc or shell in the container.
//!
//! Needs a running Docker engine; without one the test fails, it is never skipped.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use runner_tests::{job_payload, FakeGitlab};
use serde_json::json;

const RUNNER_TOKEN: &str = "glrt-t1_statichelpertoken";

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn static_helper() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = run(Command::new("bash")
        .arg(workspace.join("scripts/build-helper.sh"))
        .env("PROFILE", "dev"));
    PathBuf::from(out.lines().last().expect("the helper's path").trim())
}

/// A `FROM scratch` image with only the helper; removed on drop.
struct HelperImage {
    tag: String,
}

impl HelperImage {
    fn build(binary: &Path) -> Self {
        let context = tempfile::tempdir().unwrap();
        std::fs::hard_link(binary, context.path().join("gitlab-runner-helper"))
            .or_else(|_| {
                std::fs::copy(binary, context.path().join("gitlab-runner-helper")).map(|_| ())
            })
            .unwrap();
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\nCOPY gitlab-runner-helper /usr/bin/gitlab-runner-helper\n",
        )
        .unwrap();
        let tag = format!("gitlab-runner-rs-test/helper-only:{}", std::process::id());
        run(Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(context.path()));
        Self { tag }
    }

    /// Runs the helper in a fresh container with `dir` as its working directory.
    fn helper(&self, dir: &Path, args: &[&str]) -> String {
        run(Command::new("docker")
            .args(["run", "--rm", "--network", "host", "-v"])
            .arg(format!("{}:/work", dir.display()))
            .args(["-w", "/work", &self.tag, "/usr/bin/gitlab-runner-helper"])
            .args(args))
    }
}

impl Drop for HelperImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_static_helper_moves_artifacts_and_caches_from_an_image_with_nothing_else() {
    let binary = static_helper();
    let image = HelperImage::build(&binary);
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    // A job for the credentials; no runner takes it.
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["true"],
        &[],
        json!([]),
        60,
    ));
    let token = gitlab.token(job);
    let id = job.id.to_string();

    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(source.path().join("out")).unwrap();
    std::fs::write(source.path().join("out/result.bin"), b"static-helper-bytes").unwrap();
    let upload = image.helper(
        source.path(),
        &[
            "artifacts-uploader",
            "--url",
            &gitlab.url(),
            "--token",
            &token,
            "--id",
            &id,
            "--path",
            "out/",
            "--name",
            "from-scratch",
        ],
    );
    assert!(upload.contains("201 Created"), "{upload}");
    let uploaded = gitlab.artifacts(job);
    assert_eq!(uploaded.len(), 1, "{upload}");
    assert_eq!(uploaded[0].filename, "from-scratch.zip");

    let target = tempfile::tempdir().unwrap();
    let download = image.helper(
        target.path(),
        &[
            "artifacts-downloader",
            "--url",
            &gitlab.url(),
            "--token",
            &token,
            "--id",
            &id,
        ],
    );
    assert!(
        download.contains("Downloading artifacts from coordinator... ok"),
        "{download}"
    );
    assert_eq!(
        std::fs::read(target.path().join("out/result.bin")).unwrap(),
        b"static-helper-bytes"
    );

    let cache = image.helper(
        source.path(),
        &[
            "cache-archiver",
            "--file",
            "cache/key/cache.zip",
            "--path",
            "out/",
        ],
    );
    assert!(
        cache.contains("Cache will be stored only locally"),
        "{cache}"
    );
    assert!(source.path().join("cache/key/cache.zip").exists());
    // Nothing left behind: the containers ran with --rm (`docker run` returns once its
    // container is removed), the image goes with `image`.
    let left = run(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("ancestor={}", image.tag),
        "-q",
    ]));
    assert!(left.trim().is_empty(), "{left}");
}
