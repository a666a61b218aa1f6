//! A throttled answer as the API server sends it (429, a plain-text body, `Retry-After`) is
//! waited for and tried again through the runner's client, even with no retries configured;
//! kube-rs's own client loses the header, so the same answer fails at once there.
#![expect(clippy::unwrap_used, reason = "test setup")]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use executor_kubernetes::connect::{client_config, ConnectionSettings};
use executor_kubernetes::retry::RetryPolicy;
use http_body_util::Full;
use hyper::body::Bytes;

/// A server whose first `throttled` answers are the API server's throttling with
/// `Retry-After: 2`, then `GET /version` answers; it counts the requests.
async fn throttling_server(throttled: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_: hyper::Request<_>| {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let response = if n < throttled {
                            hyper::Response::builder()
                                .status(429)
                                .header("content-type", "text/plain; charset=utf-8")
                                .header("retry-after", "2")
                                .body(Full::new(Bytes::from(
                                    "Too many requests, please try again later.\n",
                                )))
                        } else {
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(
                                    r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"0","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/amd64"}"#,
                                )))
                        };
                        Ok::<_, Infallible>(response.unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address.to_string(), count)
}

/// No retries of its own: only an answer that asks for a wait is tried again.
fn no_retries() -> RetryPolicy {
    RetryPolicy {
        limit: 1,
        limits: Default::default(),
        backoff_max: Duration::from_millis(10),
    }
}

async fn config(address: String) -> kube::Config {
    let settings = ConnectionSettings {
        host: address,
        bearer_token: "token".into(),
        ..ConnectionSettings::default()
    };
    client_config(&settings, "").await.unwrap()
}

#[tokio::test]
async fn the_retry_after_of_a_throttled_answer_is_waited_for() {
    let (address, count) = throttling_server(1).await;
    let client = executor_kubernetes::throttle::client(config(address).await).unwrap();
    let started = Instant::now();
    let version = no_retries()
        .run("getting the version", |_| client.apiserver_version())
        .await
        .unwrap();
    assert_eq!(version.minor, "33");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn without_the_layer_the_same_answer_fails_at_once() {
    let (address, count) = throttling_server(1).await;
    let client = kube::Client::try_from(config(address).await).unwrap();
    let error = no_retries()
        .run("getting the version", |_| client.apiserver_version())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("Too many requests"), "{error}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
