//! A real S3-compatible server for the shared-cache tests: `s3s-fs` (installed from crates.io by
//! `scripts/setup.sh`), which checks SigV4 signatures, serving a temporary directory on
//! 127.0.0.1. Each bucket is a directory of that root. The process dies with the value.
//!
//! A missing `s3s-fs` fails the test with the command that installs it; it is never skipped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `s3s-fs` process and the temporary directory it serves; killed when dropped.
pub struct S3Server {
    child: Child,
    root: tempfile::TempDir,
    port: u16,
}

/// The access key id the server requires of every signed request.
pub const ACCESS_KEY: &str = "GLRSTESTACCESSKEY";
/// The secret key that goes with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "glrs-test-secret-key-0123456789";

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("S3S_FS_BIN") {
        return PathBuf::from(path);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_default();
    let installed = cargo_home.join("bin/s3s-fs");
    assert!(
        installed.exists(),
        "{} is missing: run scripts/setup.sh (cargo install s3s-fs --version 0.14.1 --features binary --locked)",
        installed.display()
    );
    installed
}

impl S3Server {
    /// Starts the server with `bucket` created and the test credentials required.
    pub fn start(bucket: &str) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join(bucket)).expect("create the bucket");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free loopback port");
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, root, port }
    }

    /// `host:port` for `ServerAddress`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A `[runners.cache]` section of type `s3` on this server's `runner-cache` bucket under
    /// `Path = "prefix"`, with `secret` as the secret key and `extra` as more keys of the
    /// section.
    pub fn cache_section(&self, secret: &str, extra: &str) -> String {
        format!(
            "[runners.cache]\n  Type = \"s3\"\n  Path = \"prefix\"\n  {extra}\n  [runners.cache.s3]\n    ServerAddress = \"{}\"\n    AccessKey = \"{ACCESS_KEY}\"\n    SecretKey = \"{secret}\"\n    BucketName = \"runner-cache\"\n    Insecure = true\n",
            self.address(),
        )
    }

    /// Where the server keeps `object` of `bucket` on disk (a test removes or moves it there to
    /// act as a lifecycle rule or another runner).
    pub fn object_path(&self, bucket: &str, object: &str) -> PathBuf {
        self.root.path().join(bucket).join(object)
    }

    /// The stored objects under `bucket`, as `key` paths.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let mut out = Vec::new();
        let base = self.root.path().join(bucket);
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(relative) = path.strip_prefix(&base) {
                    let name = relative.to_string_lossy().to_string();
                    // s3s-fs keeps its own metadata files beside the objects.
                    if !name.contains(".s3s-fs") && !name.starts_with('.') {
                        out.push(name);
                    }
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
