//! The client configuration reaches a real HTTP server on loopback: the explicit `host` with
//! the job's bearer token overwrite, and the kubeconfig's chosen `context` with its own token
//! (no in-cluster environment here, so the kubeconfig is next, as upstream orders them).
#![expect(clippy::unwrap_used, reason = "test setup")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use executor_kubernetes::connect::{client_config, ConnectionSettings};
use http_body_util::Full;
use hyper::body::Bytes;

/// A server that answers `GET /version` and records each request's Authorization header.
async fn version_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let auth = request
                                .headers()
                                .get("authorization")
                                .and_then(|value| value.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            recorded
                                .lock()
                                .unwrap()
                                .push(format!("{} {auth}", request.uri().path()));
                            let body = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","gitCommit":"0","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/amd64"}"#;
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address.to_string(), seen)
}

#[tokio::test]
async fn an_explicit_host_is_used_with_the_jobs_bearer_token_overwrite() {
    let (address, seen) = version_server().await;
    let settings = ConnectionSettings {
        host: address,
        bearer_token: "config-token".into(),
        ..ConnectionSettings::default()
    };
    let config = client_config(&settings, "job-token").await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    assert_eq!(*seen.lock().unwrap(), ["/version Bearer job-token"]);
}

#[tokio::test]
async fn without_a_host_the_kubeconfig_context_named_in_the_config_is_used() {
    let (address, seen) = version_server().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: first\nclusters:\n- name: local\n  cluster:\n    server: http://{address}\ncontexts:\n- name: first\n  context: {{cluster: local, user: one}}\n- name: second\n  context: {{cluster: local, user: two}}\nusers:\n- name: one\n  user: {{token: token-one}}\n- name: two\n  user: {{token: token-two}}\n"
        ),
    )
    .unwrap();
    std::env::set_var("KUBECONFIG", &kubeconfig);
    std::env::remove_var("KUBERNETES_SERVICE_HOST");
    for (context, token) in [("", "token-one"), ("second", "token-two")] {
        let settings = ConnectionSettings {
            context: context.into(),
            ..ConnectionSettings::default()
        };
        let client = kube::Client::try_from(client_config(&settings, "").await.unwrap()).unwrap();
        client.apiserver_version().await.unwrap();
        assert_eq!(
            seen.lock().unwrap().pop().unwrap(),
            format!("/version Bearer {token}")
        );
    }
}
