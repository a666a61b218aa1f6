//! Where `exec` keeps a local job's `artifacts:`: a receiver on a private address that answers
//! the helper's `POST /api/v4/jobs/<id>/artifacts` as GitLab would (`201 Created`) and writes
//! the uploaded archive into a directory. The job's upload stage runs unchanged (the same
//! `artifacts-uploader`, the same archive, the same log lines); only the other end is local.
//!
//! The shell executor reaches it on 127.0.0.1; a Docker job's helper container reaches it on
//! the gateway address of the network it runs on, which only this machine and its containers
//! can reach.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

/// A running receiver; it stops when dropped.
pub struct ArtifactsReceiver {
    url: String,
    directory: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ArtifactsReceiver {
    /// Listens on `address` (port 0: any free one) and keeps uploads in `directory`, which is
    /// created when missing.
    pub async fn start(address: IpAddr, directory: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("creating the artifacts directory {}", directory.display()))?;
        let listener = TcpListener::bind(SocketAddr::new(address, 0))
            .await
            .with_context(|| format!("listening on {address} for the job's artifacts"))?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}");
        let kept = directory.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let directory = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let directory = directory.clone();
                        async move { Ok::<_, Infallible>(answer(request, &directory).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            directory,
            task,
        })
    }

    /// The base URL to give the job as the runner's GitLab URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The archives kept so far, by file name.
    pub fn kept(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.directory)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        files
    }
}

impl Drop for ArtifactsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST /api/v4/jobs/<n>/artifacts` with a multipart `file` part: the part is written to
/// the directory under its file name (the name only, never a path). Anything else is 404.
async fn answer(request: Request<Incoming>, directory: &Path) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let is_upload = request.method() == Method::POST
        && path
            .strip_prefix("/api/v4/jobs/")
            .and_then(|rest| rest.strip_suffix("/artifacts"))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit()));
    if !is_upload {
        return reply(StatusCode::NOT_FOUND, r#"{"message":"404 Not Found"}"#);
    }
    let boundary = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| multer::parse_boundary(value).ok());
    let Some(boundary) = boundary else {
        return reply(StatusCode::BAD_REQUEST, r#"{"message":"not multipart"}"#);
    };
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, r#"{"message":"body"}"#),
    };
    match keep_file_part(body, &boundary, directory).await {
        Ok(()) => reply(StatusCode::CREATED, "{}"),
        Err(error) => reply(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "message": error.to_string() }).to_string(),
        ),
    }
}

async fn keep_file_part(body: Bytes, boundary: &str, directory: &Path) -> anyhow::Result<()> {
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    while let Some(field) = multipart.next_field().await? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field
            .file_name()
            .and_then(|name| Path::new(name).file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| name != "." && name != "..")
            .context("the file part has no file name")?;
        let data = field.bytes().await?;
        std::fs::write(directory.join(&name), &data).with_context(|| format!("writing {name}"))?;
        return Ok(());
    }
    anyhow::bail!("no file part")
}
