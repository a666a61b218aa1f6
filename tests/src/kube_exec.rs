//! `pods/{name}/exec` of the Kubernetes API double over WebSocket, as the API server speaks it
//! to kube-rs and kubectl: `v5.channel.k8s.io` preferred, `v4.channel.k8s.io` otherwise; binary
//! frames whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 the status, 255 the
//! v5 close of a channel); one empty frame per output channel on open; the status
//! (`Success`, or `Failure` / `NonZeroExitCode` with the code in `details.causes`) on channel
//! 3 when the process ends, then the close. On v4 the end of stdin is the end of the socket.
//!
//! The session runs a local program: the command itself when the double has no kubelet, or
//! `docker exec` / `docker attach` into the pod's container when it has one
//! ([`crate::kubelet`]); the protocol is the same either way.

use std::process::Stdio;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;

use crate::http::{Received, StreamReply};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";

/// How long a session's process has, once its client is gone and its stdin ended, to finish by
/// itself (what the client wrote before it went still reaches it) before it is killed.
const CLIENT_GONE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The API server ends a session with a normal closure (clients such as kubectl treat a close
/// without a code as an error).
fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

/// What an exec request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// `command` (repeated in the query).
    pub command: Vec<String>,
    /// `container`.
    pub container: String,
    /// `stdin`.
    pub stdin: bool,
    /// `stdout`.
    pub stdout: bool,
    /// `stderr`.
    pub stderr: bool,
}

fn flag(query: &[(String, String)], name: &str) -> bool {
    query
        .iter()
        .any(|(key, value)| key == name && (value == "true" || value == "1"))
}

/// Reads the query of an exec request.
pub fn exec_request(query: &[(String, String)]) -> ExecRequest {
    ExecRequest {
        command: query
            .iter()
            .filter(|(key, _)| key == "command")
            .map(|(_, value)| value.clone())
            .collect(),
        container: query
            .iter()
            .find(|(key, _)| key == "container")
            .map(|(_, value)| value.clone())
            .unwrap_or_default(),
        stdin: flag(query, "stdin"),
        stdout: flag(query, "stdout"),
        stderr: flag(query, "stderr"),
    }
}

/// The subprotocol the server picks from the client's offer: v5 unless `v4_only` (a server
/// older than Kubernetes 1.30), else v4.
pub fn negotiate(received: &Received, v4_only: bool) -> Option<&'static str> {
    let offered: Vec<String> = received
        .headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|protocol| protocol.trim().to_string())
        .collect();
    let supported: &[&'static str] = if v4_only { &[V4] } else { &[V5, V4] };
    supported
        .iter()
        .copied()
        .find(|protocol| offered.iter().any(|offer| offer == protocol))
}

fn status_json(code: Option<i32>) -> String {
    match code {
        Some(0) => r#"{"metadata":{},"status":"Success"}"#.to_string(),
        Some(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        })
        .to_string(),
        None => serde_json::json!({
            "metadata": {}, "status": "Failure", "message": "the process was killed by a signal",
            "reason": "InternalError"
        })
        .to_string(),
    }
}

/// Answers the upgrade and runs the exec on the upgraded connection.
pub fn upgrade(
    mut received: Received,
    protocol: &'static str,
    request: ExecRequest,
    argv: Vec<String>,
    cut_after: Option<usize>,
) -> StreamReply {
    use http_body_util::BodyExt;
    let key = received
        .headers
        .get("sec-websocket-key")
        .map(|value| derive_accept_key(value.as_bytes()))
        .unwrap_or_default();
    let Some(on_upgrade) = received.upgrade.take() else {
        return hyper::Response::builder()
            .status(400)
            .body(http_body_util::Full::new(Bytes::new()).boxed())
            .expect("a response");
    };
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let socket =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        run(socket, protocol == V5, request, argv, cut_after).await;
    });
    hyper::Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", key)
        .header("sec-websocket-protocol", protocol)
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .expect("a response")
}

async fn run<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    v5: bool,
    request: ExecRequest,
    argv: Vec<String>,
    cut_after: Option<usize>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = |channel: u8, data: &[u8]| {
        let mut bytes = Vec::with_capacity(data.len() + 1);
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::Binary(bytes.into())
    };
    let Some((program, args)) = argv.split_first() else {
        let _ = socket.send(frame(3, status_json(Some(1)).as_bytes())).await;
        let _ = socket.close(Some(normal_close())).await;
        return;
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let status = serde_json::json!({"metadata": {}, "status": "Failure",
                "message": format!("exec: {error}"), "reason": "InternalError"});
            let _ = socket.send(frame(3, status.to_string().as_bytes())).await;
            let _ = socket.close(Some(normal_close())).await;
            return;
        }
    };
    // One empty frame per channel on open, as the API server sends.
    for channel in [1u8, 2, 3] {
        let _ = socket.send(frame(channel, &[])).await;
    }
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buffer = vec![0u8; 16 * 1024];
    let mut cut_budget = cut_after;
    let mut err_buffer = vec![0u8; 16 * 1024];
    // The exit code once the process ended and its output was sent; `None` when the client
    // went first.
    let ended = loop {
        tokio::select! {
            read = async { stdout.as_mut().expect("stdout").read(&mut out_buffer).await }, if stdout.is_some() => {
                match read {
                    Ok(0) | Err(_) => stdout = None,
                    Ok(count) => {
                        let Some(budget) = cut_budget.as_mut() else {
                            if request.stdout { let _ = socket.send(frame(1, &out_buffer[..count])).await; }
                            continue;
                        };
                        // An injected drop: what fits the budget goes out, then the connection
                        // ends without a status or a close frame.
                        let sent = count.min(*budget);
                        if request.stdout && sent > 0 { let _ = socket.send(frame(1, &out_buffer[..sent])).await; }
                        *budget -= sent;
                        if *budget == 0 { break None; }
                    }
                }
            }
            read = async { stderr.as_mut().expect("stderr").read(&mut err_buffer).await }, if stderr.is_some() => {
                match read {
                    Ok(0) | Err(_) => stderr = None,
                    Ok(count) => if request.stderr { let _ = socket.send(frame(2, &err_buffer[..count])).await; },
                }
            }
            // Its output all sent, the process's end (still watching the socket meanwhile).
            status = child.wait(), if stdout.is_none() && stderr.is_none() => {
                break Some(status.ok().and_then(|status| status.code()));
            }
            message = socket.next() => {
                match message {
                    // A real API server reads every frame as bytes: a text frame (the Python
                    // client sends a `str` as one) is a channel byte and data too.
                    Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                        let data = message.into_data();
                        match data.first() {
                            Some(0) => {
                                if let Some(pipe) = stdin.as_mut() {
                                    if pipe.write_all(&data[1..]).await.is_err() {
                                        stdin = None;
                                    }
                                }
                            }
                            Some(255) if v5 && data.get(1) == Some(&0) => stdin = None,
                            _ => {}
                        }
                    }
                    // The client is gone (v4 ends stdin this way too): the session ends.
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => {}
                }
            }
        }
    };
    drop(stdin);
    match ended {
        Some(code) => {
            let _ = socket.send(frame(3, status_json(code).as_bytes())).await;
            let _ = socket.close(Some(normal_close())).await;
        }
        None => {
            // Nobody reads its output any more; with stdin ended, a process that finishes at
            // its end does, any other (`docker attach`, a shell left running) is killed. Either
            // way it is reaped here.
            drop(stdout);
            drop(stderr);
            if tokio::time::timeout(CLIENT_GONE_GRACE, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}
