//! A fake container registry on 127.0.0.1: the pull side of the Docker Registry HTTP API V2
//! behind HTTP Basic authentication, serving one image exported from the local engine with
//! `docker save`. The Docker engine treats 127.0.0.0/8 as an insecure registry, so it pulls
//! from it over plain HTTP, and sends the credentials the runner gave it; the fake counts the
//! requests it let in and the ones it refused.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

use crate::http::{serve, Received, Reply};

struct Content {
    repository: String,
    tag: String,
    manifest: Bytes,
    manifest_digest: String,
    /// Blobs by `sha256:<hex>`: the image configuration and its layers.
    blobs: Vec<(String, Bytes)>,
    /// `Basic <base64(user:password)>`.
    expected: String,
}

/// A running fake registry serving one image; when dropped it stops and removes the pulled image
/// from the local engine.
pub struct FakeRegistry {
    address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    allowed: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    repository: String,
    tag: String,
}

fn sha256_file(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(output.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8_lossy(&output.stdout);
    format!("sha256:{}", text.split_whitespace().next().unwrap_or(""))
}

impl FakeRegistry {
    /// Serves `local_image` (exported now) as `<repository>:<tag>` to `user`/`password`.
    pub async fn start(
        local_image: &str,
        repository: &str,
        tag: &str,
        user: &str,
        password: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for the exported image");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {local_image} | tar -x -C {}",
                dir.path().display()
            ))
            .status()
            .expect("docker save");
        assert!(status.success(), "docker save {local_image}");
        let saved: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("manifest.json"))
                .expect("read manifest.json of the `docker save` export"),
        )
        .expect("manifest.json of the `docker save` export is JSON");
        let entry = &saved[0];
        // A label of this registry makes it an image of its own: the engine pulls its layers
        // instead of finding the exported image by its configuration's digest.
        let config_path = dir.path().join(
            entry["Config"]
                .as_str()
                .expect("the `docker save` manifest names the image's configuration file"),
        );
        let mut config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&config_path).expect("read the exported image's configuration"),
        )
        .expect("the exported image's configuration is JSON");
        config["config"]["Labels"]["fake-registry"] =
            serde_json::Value::String(format!("{}-{repository}", std::process::id()));
        let config = Bytes::from(
            serde_json::to_vec(&config).expect("serialize the labelled image configuration"),
        );
        std::fs::write(&config_path, &config).expect("write the labelled image configuration");
        let config_digest = sha256_file(&config_path);
        let mut blobs = vec![(config_digest.clone(), config.clone())];
        let mut layers = Vec::new();
        for layer in entry["Layers"]
            .as_array()
            .expect("the `docker save` manifest lists the image's layers")
        {
            let path = dir.path().join(
                layer
                    .as_str()
                    .expect("each layer in the `docker save` manifest is a file path"),
            );
            let digest = sha256_file(&path);
            let bytes = Bytes::from(std::fs::read(&path).expect("read an exported image layer"));
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                "size": bytes.len(),
                "digest": digest,
            }));
            blobs.push((digest, bytes));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": config_digest,
            },
            "layers": layers,
        }))
        .expect("serialize the fake registry's image manifest");
        let manifest_path = dir.path().join("registry-manifest.json");
        std::fs::write(&manifest_path, &manifest)
            .expect("write the fake registry's image manifest");
        let manifest_digest = sha256_file(&manifest_path);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let content = Arc::new(Content {
            repository: repository.to_string(),
            tag: tag.to_string(),
            manifest: Bytes::from(manifest),
            manifest_digest,
            blobs,
            expected,
        });
        let allowed = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (counted_allowed, counted_refused) = (allowed.clone(), refused.clone());
        let (address, task) = serve(move |request| {
            let content = content.clone();
            let allowed = counted_allowed.clone();
            let refused = counted_refused.clone();
            async move { answer(&content, &request, &allowed, &refused) }
        })
        .await;
        Self {
            address,
            task,
            allowed,
            refused,
            repository: repository.to_string(),
            tag: tag.to_string(),
        }
    }

    /// `127.0.0.1:<port>`, the registry part of image names.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// The full name of the served image.
    pub fn image(&self) -> String {
        format!("{}/{}:{}", self.host(), self.repository, self.tag)
    }

    /// Requests answered with content (credentials accepted).
    pub fn allowed(&self) -> usize {
        self.allowed.load(Ordering::SeqCst)
    }

    /// Requests refused for missing or wrong credentials.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
        let _ = Command::new("docker").args(["rmi", &self.image()]).output();
    }
}

fn reply(status: StatusCode, content_type: &str, body: Bytes) -> Reply {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .header("Content-Length", body.len())
        .body(Full::new(body))
        .expect("the fake registry's response headers are valid")
}

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut response = reply(status, "application/json", Bytes::from(body.to_string()));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            "WWW-Authenticate",
            "Basic realm=\"fake-registry\""
                .parse()
                .expect("the WWW-Authenticate value is a valid header value"),
        );
    }
    response
}

fn answer(
    content: &Content,
    request: &Received,
    allowed: &AtomicUsize,
    refused: &AtomicUsize,
) -> Reply {
    let authorized = request
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(content.expected.as_str());
    if !authorized {
        refused.fetch_add(1, Ordering::SeqCst);
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
    }
    allowed.fetch_add(1, Ordering::SeqCst);
    // HEAD answers are these with the body left off by hyper.
    if request.path == "/v2/" {
        return reply(StatusCode::OK, "application/json", Bytes::from("{}"));
    }
    let Some(rest) = request
        .path
        .strip_prefix("/v2/")
        .and_then(|rest| rest.strip_prefix(content.repository.as_str()))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    };
    if let Some(reference) = rest.strip_prefix("/manifests/") {
        if reference != content.tag && reference != content.manifest_digest {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        }
        let mut response = reply(
            StatusCode::OK,
            "application/vnd.docker.distribution.manifest.v2+json",
            content.manifest.clone(),
        );
        response.headers_mut().insert(
            "Docker-Content-Digest",
            content
                .manifest_digest
                .parse()
                .expect("a sha256 digest is a valid header value"),
        );
        return response;
    }
    if let Some(digest) = rest.strip_prefix("/blobs/") {
        return match content.blobs.iter().find(|(known, _)| known == digest) {
            Some((known, bytes)) => {
                let mut response = reply(StatusCode::OK, "application/octet-stream", bytes.clone());
                response.headers_mut().insert(
                    "Docker-Content-Digest",
                    known
                        .parse()
                        .expect("a sha256 digest is a valid header value"),
                );
                response
            }
            None => error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            ),
        };
    }
    error(
        StatusCode::NOT_FOUND,
        "UNSUPPORTED",
        "not served by the fake registry",
    )
}
