//! The Step Runner's gRPC service checked against a client nobody here wrote: Python's grpcio,
//! with stubs grpcio-tools generates from our `steps/proto/step.proto` at run time (both
//! installed by `scripts/setup.sh`). `tests/python/steps_grpc_contract.py` drives every call of
//! the service over a Unix socket: Run, FollowLogs (the timestamped `01O`/`01E` line format, to
//! the end and resumed from offsets inside the log), Status (one, all, NOT_FOUND), FollowSteps
//! (a step's outputs and exec result), Cancel (SIGTERM reaching the step), a request past its
//! timeout, Close and Finish (forgetting, idempotent), masking, an idempotent Run and
//! INVALID_ARGUMENT for bad definitions.
//!
//! It runs once against `gitlab-runner-rs steps serve` directly and once through `steps proxy`
//! (a proxy per connection behind a second socket, its stdin and stdout carrying the
//! connection), which proves the proxy carries gRPC's HTTP/2 bytes faithfully, server streams
//! included. Both send the `:authority` grpc-go sends for a Unix socket (`localhost`, what
//! GitLab Runner sends). grpc-core's own default for a `unix:` target (the percent-encoded
//! socket path, since grpc 1.57) is refused by the `http` crate under tonic's h2 (a stream
//! reset; hyperium/tonic#742), so a Python client must set the authority; the README says so.
//! Without Python, `steps`' command line: the proxy's and serve's messages when the
//! socket cannot be dialled or bound, a graceful stop on SIGTERM and SIGINT, `steps --help`,
//! and `steps bootstrap` making an executable copy of itself.
#![expect(clippy::unwrap_used, reason = "test setup")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use runner_tests::runner_binary;

/// The line `steps serve` prints on stderr once its socket is bound.
const LISTENING: &str = "step-runner is listening on socket";

/// How long the contract script may take in all (it takes seconds).
const SCRIPT_WITHIN: Duration = Duration::from_secs(300);

/// `tests/python/steps_grpc_contract.py`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/steps_grpc_contract.py")
}

/// `steps/proto`, where our `step.proto` is.
fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../steps/proto")
}

/// Fails (never skips) when python3, `grpc` or `grpc_tools` is missing.
fn require_python_grpc() {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools.protoc; print(grpc.__version__)",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("python3 does not run ({error}): run `bash scripts/setup.sh`")
        });
    assert!(
        output.status.success(),
        "Python's grpcio / grpcio-tools are missing: run `bash scripts/setup.sh` (it \
         pip-installs them)\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running `gitlab-runner-rs steps serve --socket <tempdir>/s.sock`.
struct Serve {
    child: Child,
    socket: PathBuf,
    /// What it printed on stderr, the listening line included (drained while it runs).
    stderr: Arc<Mutex<String>>,
    drain: JoinHandle<()>,
    /// When it printed its listening line.
    listening: std::time::Instant,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts the service and waits (20 s at most) for its listening line.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let mut child = Command::new(runner_binary())
            .args(["steps", "serve", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("gitlab-runner-rs steps serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let expected = format!("{LISTENING} {}", socket.display());
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let listening = line == expected;
                stderr.lock().unwrap().push_str(&format!("{line}\n"));
                if listening {
                    return true;
                }
            }
            false
        })
        .await;
        if waited != Ok(true) {
            let exited = child.try_wait().unwrap();
            let _ = child.start_kill();
            panic!(
                "steps serve did not print `{expected}` within 20 s (exited: {exited:?}); its \
                 stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
        let listening = std::time::Instant::now();
        let drain = {
            let stderr = stderr.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    stderr.lock().unwrap().push_str(&format!("{line}\n"));
                }
            })
        };
        Self {
            child,
            socket,
            stderr,
            drain,
            listening,
            _dir: dir,
        }
    }

    /// What it printed on stderr so far.
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal`, then checks that it exits 0 within 20 s and removed its socket file.
    async fn stop(mut self, signal: libc::c_int) {
        let pid = self.child.id().expect("steps serve still runs") as libc::pid_t;
        // SAFETY: kill(2) touches no memory; the pid is a child this test started and has not
        // reaped.
        #[expect(unsafe_code, reason = "tokio's Child can only be sent SIGKILL")]
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "steps serve did not exit within 20 s of signal {signal}; its stderr:\n{}",
                    self.stderr()
                )
            })
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.drain).await;
        let left = self.socket.exists();
        assert!(
            status.success() && !left,
            "steps serve, sent signal {signal} {:.0?} after its listening line, exited {status} \
             and {} its socket {}; expected exit 0 and the socket removed. Its stderr:\n{}",
            self.listening.elapsed(),
            if left { "left" } else { "removed" },
            self.socket.display(),
            self.stderr()
        );
    }
}

/// Runs the contract script against `socket` with request ids `prefix-…` (and `authority` as
/// the channel's `:authority`, else grpc's default); fails with all it printed (and what the
/// service printed) when it fails.
async fn run_contract(socket: &Path, prefix: &str, authority: Option<&str>, serve: &Serve) {
    let mut command = Command::new("python3");
    command
        .arg(script())
        .arg("--socket")
        .arg(socket)
        .arg("--proto-dir")
        .arg(proto_dir())
        .args(["--prefix", prefix])
        .stdin(Stdio::null())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    if let Some(authority) = authority {
        command.args(["--authority", authority]);
    }
    let output = tokio::time::timeout(SCRIPT_WITHIN, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the contract script did not end within {SCRIPT_WITHIN:?}; the service's \
                 stderr:\n{}",
                serve.stderr()
            )
        })
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python grpcio client's contract with the Step Runner failed ({prefix}, {}):\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}\n--- the service's stderr\n{}",
        output.status,
        serve.stderr()
    );
    // Shown with --no-capture (and by nextest for a test failing later).
    println!("{stdout}{stderr}");
}

/// The relay's connections: how many were accepted, and for each ended one the proxy's exit
/// status and what it printed on stderr.
#[derive(Default)]
struct Relayed {
    accepted: AtomicUsize,
    ended: Mutex<Vec<(ExitStatus, String)>>,
}

/// Accepts connections on `listener`; for each, spawns `steps proxy --socket <serve>` and
/// copies the connection to its stdin (closing it when the client half-closes) and its
/// stdout back, recording how the proxy ended in `relayed`.
async fn relay(listener: UnixListener, serve: PathBuf, relayed: Arc<Relayed>) {
    while let Ok((connection, _)) = listener.accept().await {
        relayed.accepted.fetch_add(1, Ordering::SeqCst);
        let serve = serve.clone();
        let relayed = relayed.clone();
        tokio::spawn(async move {
            let ended = relay_one(connection, &serve).await;
            relayed.ended.lock().unwrap().push(ended);
        });
    }
}

async fn relay_one(connection: UnixStream, serve: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(runner_binary())
        .args(["steps", "proxy", "--socket"])
        .arg(serve)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("gitlab-runner-rs steps proxy starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (mut from_client, mut to_client) = connection.into_split();
    let upstream = async move {
        let _ = tokio::io::copy(&mut from_client, &mut stdin).await;
        // The client's end: the proxy's stdin ends (it half-closes the service's socket).
        drop(stdin);
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut stdout, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    let mut printed = String::new();
    let collect = stderr.read_to_string(&mut printed);
    let _ = tokio::join!(upstream, downstream, collect);
    (child.wait().await.unwrap(), printed)
}

/// The contract over `steps serve`'s own socket, with the `:authority` grpc-go (and so GitLab
/// Runner) sends over a Unix socket, `localhost`; then a graceful stop on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_grpc_client_drives_every_call_on_the_serve_socket() {
    require_python_grpc();
    let serve = Serve::start().await;
    run_contract(&serve.socket.clone(), "direct", Some("localhost"), &serve).await;
    serve.stop(libc::SIGTERM).await;
}

/// The same contract through `steps proxy`: the client dials a second socket whose every
/// connection is a proxy's stdin and stdout, so each call (server streams included) crosses
/// the proxy as bytes; every proxy then exits 0 once its client went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_grpc_client_drives_every_call_through_steps_proxy() {
    require_python_grpc();
    let serve = Serve::start().await;
    let dir = tempfile::tempdir().unwrap();
    let front = dir.path().join("front.sock");
    let listener = UnixListener::bind(&front).unwrap();
    let relayed = Arc::new(Relayed::default());
    let relaying = tokio::spawn(relay(listener, serve.socket.clone(), relayed.clone()));
    run_contract(&front, "proxied", Some("localhost"), &serve).await;
    // The script closed its channel: each proxy sees its stdin end and exits.
    let accepted = relayed.accepted.load(Ordering::SeqCst);
    assert!(
        accepted > 0,
        "the client made no connection through the relay"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while relayed.ended.lock().unwrap().len() < relayed.accepted.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {accepted} proxies still run 20 s after the client closed its channel",
            relayed.accepted.load(Ordering::SeqCst) - relayed.ended.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relaying.abort();
    let ended = relayed.ended.lock().unwrap().clone();
    println!("{} connection(s) went through steps proxy", ended.len());
    for (status, stderr) in &ended {
        assert!(
            status.success(),
            "a steps proxy exited {status}; its stderr:\n{stderr}"
        );
    }
    serve.stop(libc::SIGTERM).await;
}

/// Runs `gitlab-runner-rs args…` (stdin null) to its end, 60 s at most.
async fn runner(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(runner_binary());
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("gitlab-runner-rs {args:?} did not end within 60 s"))
        .unwrap()
}

/// `steps`' command line without a client: the proxy's message for a socket nobody serves,
/// serve's for a socket it cannot bind, `steps --help` listing the three commands, `steps
/// bootstrap` copying an executable (0755) that itself answers `steps --help`, and a graceful
/// stop (exit 0, the socket file removed) on SIGTERM and on SIGINT sent as soon as serve has
/// printed its listening line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steps_command_line_says_what_upstream_says() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.sock");
    let missing_text = missing.display().to_string();
    let output = runner(&["steps", "proxy", "--socket", &missing_text]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "proxy to nothing: {output:?}");
    let expected = format!("dialing: dial unix {missing_text}: connect: no such file or directory");
    assert!(
        stderr.contains(&expected),
        "proxy to nothing: expected `{expected}` in its stderr:\n{stderr}"
    );

    let output = runner(&["steps", "serve", "--socket", "/nonexistent-dir/x.sock"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "serve on an unbindable socket: {output:?}"
    );
    assert!(
        stderr.contains("opening socket: "),
        "serve on an unbindable socket: expected `opening socket: ` in its stderr:\n{stderr}"
    );

    let output = runner(&["steps", "--help"]).await;
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "steps --help: {output:?}");
    for command in ["serve", "proxy", "bootstrap"] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(command)),
            "steps --help lists no `{command}`:\n{help}"
        );
    }

    let helper = dir.path().join("bin/helper");
    let helper_text = helper.display().to_string();
    let output = runner(&["steps", "bootstrap", &helper_text]).await;
    assert!(output.status.success(), "steps bootstrap: {output:?}");
    let mode = std::fs::metadata(&helper).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the bootstrapped copy's mode is {mode:o}");
    let output = Command::new(&helper)
        .args(["steps", "--help"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && help.contains("serve") && help.contains("bootstrap"),
        "the bootstrapped copy does not answer `steps --help`: {output:?}"
    );

    // Stopped as soon as it says it listens: a connector may stop it at once.
    Serve::start().await.stop(libc::SIGTERM).await;
    Serve::start().await.stop(libc::SIGINT).await;
}
