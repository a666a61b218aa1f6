//! `artifacts-uploader`'s two limits against a GitLab on loopback that stops answering:
//! `--response-header-timeout` counts from the moment the archive is sent, `--timeout` bounds
//! each request as a whole, and a try cut short is retried and ends in upstream's error.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test fails"
)]

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runner_core::secret::Secret;
use runner_helpers::artifacts::{self, JobCredentials, TransferError, UploadOptions};
use support::{Reply, Server};

/// Far longer than any test here needs: the old uploader, which ignored the header limit,
/// would wait for GitLab this long.
const HANG: Duration = Duration::from_secs(60);

fn credentials(server: &Server) -> JobCredentials {
    JobCredentials {
        url: server.url.clone(),
        token: Secret::new("job-token-1234567890".to_string()),
        id: 7,
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
    }
}

fn archive() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("artifacts.zip");
    std::fs::write(&path, vec![b'z'; 100_000]).unwrap();
    (dir, path)
}

fn options(timeout: Option<Duration>, response_header_timeout: Option<Duration>) -> UploadOptions {
    UploadOptions {
        name: "artifacts".into(),
        format: "zip".into(),
        artifact_type: "archive".into(),
        timeout,
        response_header_timeout,
        ..UploadOptions::default()
    }
}

async fn upload(server: &Server, options: &UploadOptions) -> Result<(), TransferError> {
    let (_dir, path) = archive();
    tokio::time::timeout(HANG, artifacts::upload(credentials(server), options, &path))
        .await
        .expect("the upload was not cut short by its limits")
}

#[tokio::test]
async fn a_stalled_answer_is_cut_by_the_response_header_timeout_and_retried() {
    let posts = Arc::new(AtomicUsize::new(0));
    let seen = posts.clone();
    let server = Server::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Stall
        } else {
            Reply::status(201)
                .header("Content-Type", "application/json")
                .body(r#"{"message":"201 Created"}"#)
        }
    })
    .await;
    upload(
        &server,
        &options(Some(HANG), Some(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    let requests = server.requests();
    assert_eq!(
        server.lines(),
        [
            "POST /api/v4/jobs/7/artifacts",
            "POST /api/v4/jobs/7/artifacts"
        ]
    );
    // The header limit started once the archive was out: the stalled try got all of it.
    assert_eq!(requests[0].body.len(), requests[1].body.len());
    assert!(requests[0].body.len() > 100_000);
    assert_eq!(
        requests[1].header("job-token"),
        Some("job-token-1234567890")
    );
}

#[tokio::test]
async fn uploads_give_up_after_the_response_header_timeout_with_upstreams_error() {
    let server = Server::start(|_| Reply::Stall).await;
    let error = upload(
        &server,
        &options(Some(HANG), Some(Duration::from_millis(200))),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "Post \"{}/api/v4/jobs/7/artifacts?artifact_format=zip&artifact_type=archive\": \
             net/http: timeout awaiting response headers",
            server.url
        )
    );
    assert_eq!(server.lines().len(), 3, "upstream's 3 tries");
}

#[tokio::test]
async fn uploads_give_up_after_the_overall_timeout_with_upstreams_error() {
    let server = Server::start(|_| Reply::Stall).await;
    let error = upload(&server, &options(Some(Duration::from_millis(200)), None))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "Post \"{}/api/v4/jobs/7/artifacts?artifact_format=zip&artifact_type=archive\": \
             context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            server.url
        )
    );
    assert_eq!(server.lines().len(), 3, "upstream's 3 tries");
}

#[tokio::test]
async fn answers_that_are_not_created_end_in_upstreams_error() {
    let server = Server::start(|_| Reply::status(500)).await;
    let error = upload(&server, &options(None, None)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "upload failed with no response from coordinator"
    );
    assert_eq!(server.lines().len(), 3);
}
