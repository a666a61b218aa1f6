//! The client and the trace uploader against a GitLab that misbehaves on the wire: answers
//! that stall before their headers or in the middle of their body, and trace `Range` answers
//! that lie. A raw HTTP/1.1 server on loopback plays GitLab, so each stall is exact.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use network::client::{JobRequestResult, Timeouts, VersionInfo};
use network::{FinalState, GitlabClient, TlsOptions, TraceTarget, TraceUploader};
use runner_core::log::{JobLog, LogOptions};
use runner_core::secret::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;

use support::{read_request, RawRequest as Request};

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What the fake does with a request.
enum Answer {
    /// Status, extra headers, body.
    Respond(u16, Vec<(String, String)>, Vec<u8>),
    /// Nothing at all: the connection stays open and silent.
    Silence,
    /// Headers claiming `length` body bytes, then only `sent`, then silence.
    Truncated { length: usize, sent: Vec<u8> },
}

type Handler = Arc<dyn Fn(&Request) -> Answer + Send + Sync>;

async fn serve_connection(mut stream: TcpStream, handler: Handler) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        match handler(&request) {
            Answer::Respond(status, headers, body) => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (key, value) in headers {
                    head.push_str(&format!("{key}: {value}\r\n"));
                }
                head.push_str("\r\n");
                if stream.write_all(head.as_bytes()).await.is_err()
                    || stream.write_all(&body).await.is_err()
                {
                    return;
                }
            }
            Answer::Silence => {
                // Hold the connection until the client gives up on it.
                let _ = stream.read(&mut [0u8; 1]).await;
                return;
            }
            Answer::Truncated { length, sent } => {
                let head = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&sent).await;
                let _ = stream.read(&mut [0u8; 1]).await;
                return;
            }
        }
    }
}

/// Starts the fake; returns its base URL.
async fn fake_gitlab(handler: Handler) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream, handler.clone()));
        }
    });
    format!("http://{address}/")
}

fn short_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(2),
        request: Duration::from_secs(20),
        job_payload: Duration::from_millis(300),
    }
}

fn client(url: &str) -> Arc<GitlabClient> {
    Arc::new(
        GitlabClient::with_timeouts(url, &TlsOptions::default(), "test", short_timeouts()).unwrap(),
    )
}

#[tokio::test]
async fn a_job_payload_that_stops_mid_body_is_given_up_and_the_next_request_works() {
    let requests = Arc::new(Mutex::new(0));
    let seen = requests.clone();
    let url = fake_gitlab(Arc::new(move |_request: &Request| {
        let mut count = seen.lock().unwrap();
        *count += 1;
        if *count == 1 {
            Answer::Truncated {
                length: 100_000,
                sent: b"{\"id\": 1".to_vec(),
            }
        } else {
            Answer::Respond(204, Vec::new(), Vec::new())
        }
    }))
    .await;
    let client = client(&url);
    let token = Secret::new("glrt-token".to_string());
    let first = client
        .request_job(&token, "s_1", &VersionInfo::default())
        .await;
    match first {
        JobRequestResult::ClientError(message) => {
            assert_eq!(
                message,
                "reading the job payload: no complete answer within 300ms"
            )
        }
        other => panic!("expected a client error, got {other:?}"),
    }
    let second = client
        .request_job(&token, "s_1", &VersionInfo::default())
        .await;
    assert!(matches!(second, JobRequestResult::NoJob), "{second:?}");
    assert_eq!(*requests.lock().unwrap(), 2);
}

#[tokio::test]
async fn an_answer_whose_headers_never_come_is_given_up() {
    let url = fake_gitlab(Arc::new(|_request: &Request| Answer::Silence)).await;
    // Only the read timeout can end this request before the test gives up on it.
    let timeouts = Timeouts {
        request: Duration::from_secs(3600),
        ..short_timeouts()
    };
    let client =
        GitlabClient::with_timeouts(&url, &TlsOptions::default(), "test", timeouts).unwrap();
    let token = Secret::new("glrt-token".to_string());
    let info = VersionInfo::default();
    let request = client.request_job(&token, "s_1", &info);
    let result = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("the read timeout must end a request whose headers never come");
    assert!(
        matches!(result, JobRequestResult::ClientError(_)),
        "{result:?}"
    );
}

/// A GitLab trace store: PATCHes append at their `Content-Range` start when it matches what
/// is stored, and the final `PUT` checks the log's size as GitLab's trace validation does.
#[derive(Default)]
struct TraceStore {
    stored: Vec<u8>,
    /// Answers for the first PATCHes, before the store behaves.
    lies: Vec<Answer>,
    final_states: Vec<String>,
    /// Whether the final `PUT` checks the log's size (GitLab's trace validation, 412).
    validates: bool,
}

fn trace_handler(store: Arc<Mutex<TraceStore>>) -> Handler {
    Arc::new(move |request: &Request| {
        let mut store = store.lock().unwrap();
        if request.method == "PATCH" {
            if !store.lies.is_empty() {
                return store.lies.remove(0);
            }
            let start: usize = request
                .header("Content-Range")
                .and_then(|range| range.split('-').next())
                .and_then(|start| start.parse().ok())
                .unwrap_or(0);
            if start != store.stored.len() {
                let range = format!("0-{}", store.stored.len());
                return Answer::Respond(416, vec![("Range".into(), range)], Vec::new());
            }
            store.stored.extend_from_slice(&request.body);
            let range = format!("0-{}", store.stored.len());
            return Answer::Respond(202, vec![("Range".into(), range)], Vec::new());
        }
        if request.method == "PUT" && request.path.starts_with("/api/v4/jobs/") {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let state = body["state"].as_str().unwrap_or_default().to_string();
            if state != "running" {
                let bytesize = body["output"]["bytesize"].as_u64().unwrap_or(0);
                if store.validates && bytesize != store.stored.len() as u64 {
                    return Answer::Respond(412, Vec::new(), Vec::new());
                }
                store.final_states.push(state);
            }
            return Answer::Respond(200, Vec::new(), Vec::new());
        }
        Answer::Respond(404, Vec::new(), Vec::new())
    })
}

async fn upload_a_log(store: Arc<Mutex<TraceStore>>, retry_limit: u32) -> (bool, Vec<u8>) {
    let url = fake_gitlab(trace_handler(store)).await;
    let log = JobLog::new(LogOptions {
        timestamps: false,
        ..LogOptions::default()
    })
    .unwrap();
    for line in 0..50 {
        log.println(&format!("line {line} of the job's output"));
    }
    let uploader = TraceUploader::start(
        TraceTarget {
            client: client(&url),
            job_id: 7,
            job_token: Secret::new("glcbt-job".to_string()),
            info: VersionInfo::default(),
            debug_trace: false,
            final_update_retry_limit: retry_limit,
        },
        log.clone(),
    );
    let acknowledged = uploader
        .finish(&FinalState {
            success: true,
            failure_reason: None,
            exit_code: 0,
        })
        .await;
    (acknowledged, log.contents())
}

#[tokio::test]
async fn a_range_past_the_log_does_not_skip_the_log() {
    // Security probe finding 10: one 416 claiming more than the log moved the offset past
    // it, and the job was reported successful with nothing stored.
    let store = Arc::new(Mutex::new(TraceStore {
        lies: vec![Answer::Respond(
            416,
            vec![("Range".into(), "0-999999999999".into())],
            Vec::new(),
        )],
        // No trace validation to fall back on: the uploader itself must not skip the log.
        validates: false,
        ..TraceStore::default()
    }));
    let (acknowledged, log) = upload_a_log(store.clone(), 10).await;
    assert!(acknowledged);
    let store = store.lock().unwrap();
    assert_eq!(store.stored, log, "GitLab must end up with the whole log");
    assert_eq!(store.final_states, vec!["success".to_string()]);
}

#[tokio::test]
async fn a_range_gitlab_keeps_refusing_does_not_keep_the_final_state_back() {
    // An unparseable 416 on every PATCH looped forever and the job never got its final
    // state; now the 416s are counted against job_status_final_update_retry_limit.
    let lies = (0..1000)
        .map(|_| Answer::Respond(416, vec![("Range".into(), "0-abc".into())], Vec::new()))
        .collect();
    let store = Arc::new(Mutex::new(TraceStore {
        lies,
        validates: true,
        ..TraceStore::default()
    }));
    let finished = tokio::time::timeout(Duration::from_secs(60), upload_a_log(store.clone(), 2))
        .await
        .expect("the final update must not loop forever");
    // The store never took a byte, so GitLab's validation refuses the final state: the
    // uploader reports that instead of pretending.
    assert!(!finished.0);
    assert!(store.lock().unwrap().final_states.is_empty());
}

#[test]
fn decoder_messages_leave_the_payloads_strings_out() {
    assert_eq!(
        network::client::without_quoted_values(
            r#"invalid type: string "glpat-secret\"x", expected i64 at line 1 column 20"#
        ),
        r#"invalid type: string "…", expected i64 at line 1 column 20"#
    );
    assert_eq!(
        network::client::without_quoted_values("missing field `id`"),
        "missing field `id`"
    );
}

/// `connection_max_age` (parity audit item 32): past it, the next request opens a new
/// connection instead of reusing the kept-alive one, as upstream closes its idle connections;
/// zero keeps reusing it.
#[tokio::test]
async fn the_connection_pool_is_replaced_after_connection_max_age() {
    for (max_age, expected_connections) in [(Duration::ZERO, 1), (Duration::from_millis(200), 2)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                let handler: Handler =
                    Arc::new(|_request: &Request| Answer::Respond(204, vec![], vec![]));
                tokio::spawn(serve_connection(stream, handler));
            }
        });
        let client = GitlabClient::with_timeouts(
            &format!("http://{address}/"),
            &TlsOptions::default(),
            "test",
            short_timeouts(),
        )
        .unwrap()
        .with_connection_max_age(max_age);
        let token = Secret::new("glrt-token".to_string());
        for _ in 0..2 {
            let result = client
                .request_job(&token, "s_1", &VersionInfo::default())
                .await;
            assert!(matches!(result, JobRequestResult::NoJob), "{result:?}");
            // Ages the pool past a 200 ms max age (not a wait for something to happen).
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            *accepted.lock().unwrap(),
            expected_connections,
            "connection_max_age {max_age:?}"
        );
    }
}
