//! The service on its Unix socket (`steps serve`), the byte proxy to it (`steps proxy`) and the
//! copy of this binary into a job environment (`steps bootstrap`).

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::proto::step_runner_server::StepRunnerServer;
use crate::service::StepService;

/// The line `serve` prints on stderr once its socket is bound; connectors scan for it.
pub const LISTENING: &str = "step-runner is listening on socket";

/// The socket path `line` (one line of serve's output, without its newline) advertises, if
/// it is serve's [`LISTENING`] line.
pub fn socket_in_line(line: &str) -> Option<String> {
    line.strip_prefix(LISTENING)
        .map(|path| path.trim().to_string())
}

/// The socket path advertised by the first whole (newline-ended) [`LISTENING`] line of
/// `printed`, output as it came so far; `None` while there is none.
pub fn advertised_socket(printed: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(printed);
    text.split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
        .find_map(socket_in_line)
}

/// The default socket: `step-runner.sock` in the temp directory (`$TMPDIR`, else `/tmp`).
pub fn default_socket() -> PathBuf {
    std::env::temp_dir().join("step-runner.sock")
}

/// A problem of `serve`, `proxy` or `bootstrap`, said as upstream says it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be bound.
    #[error("opening socket: listen unix {path}: bind: {reason}")]
    Open {
        /// The socket path.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The server failed.
    #[error("serving: {0}")]
    Serve(String),
    /// The proxy could not reach the socket.
    #[error("dialing: dial unix {path}: connect: {reason}")]
    Dial {
        /// The socket path.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// Copying bytes failed.
    #[error("proxying: {0}")]
    Proxy(String),
    /// `bootstrap` could not copy.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
}

/// An I/O error's reason the way Go prints it: the operating system's text in lower case,
/// without Rust's `(os error N)`.
pub fn os_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Binds `socket` (a stale socket file left by a dead server is replaced; a live one is not),
/// prints [`LISTENING`] on stderr, serves until `shutdown`, then stops every request
/// gracefully and removes the socket file.
pub async fn serve(
    socket: &Path,
    service: StepService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let open_error = |error: std::io::Error| ServeError::Open {
        path: socket.display().to_string(),
        reason: os_reason(&error),
    };
    if socket.exists() && UnixStream::connect(socket).await.is_err() {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::symlink_metadata(socket).is_ok_and(|meta| meta.file_type().is_socket()) {
            let _ = std::fs::remove_file(socket);
        }
    }
    let listener = UnixListener::bind(socket).map_err(open_error)?;
    eprintln!("{LISTENING} {}", socket.display());
    let stop = CancellationToken::new();
    let pruner = {
        let service = service.clone();
        let stop = stop.clone();
        tokio::spawn(async move { service.prune_until(stop).await })
    };
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    // On shutdown the requests stop first (their logs end, so their followers' calls end);
    // only then can the server finish its calls and close.
    let stopping = {
        let service = service.clone();
        async move {
            shutdown.await;
            service.stop_all().await;
        }
    };
    let served = tonic::transport::Server::builder()
        .add_service(StepRunnerServer::new(service.clone()))
        .serve_with_incoming_shutdown(incoming, stopping)
        .await;
    stop.cancel();
    let _ = pruner.await;
    service.stop_all().await;
    let _ = std::fs::remove_file(socket);
    served.map_err(|e| ServeError::Serve(e.to_string()))
}

/// Copies `input` to the socket and the socket to `output` until the service or the input is
/// done: the end of the input half-closes the socket (the service sees the end of its
/// client), the end of the socket ends the proxy.
pub async fn proxy(
    socket: &Path,
    mut input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> Result<(), ServeError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|error| ServeError::Dial {
            path: socket.display().to_string(),
            reason: os_reason(&error),
        })?;
    let (mut from_service, mut to_service) = stream.into_split();
    let upstream = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = input.read(&mut buffer).await?;
            if read == 0 {
                to_service.shutdown().await?;
                // The input is done; the other direction decides when the proxy ends.
                return std::future::pending::<std::io::Result<()>>().await;
            }
            to_service.write_all(&buffer[..read]).await?;
        }
    };
    let downstream = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = from_service.read(&mut buffer).await?;
            if read == 0 {
                output.flush().await?;
                return Ok::<(), std::io::Error>(());
            }
            output.write_all(&buffer[..read]).await?;
            output.flush().await?;
        }
    };
    let result = tokio::select! {
        result = upstream => result,
        result = downstream => result,
    };
    match result {
        Ok(()) => Ok(()),
        // The client went away mid-call: nothing more to carry.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(ServeError::Proxy(os_reason(&error))),
    }
}

/// Copies this executable to `destination` (mode 0755) and, when this environment has them,
/// `/ca-certs.pem` and the `/git` directory next to it, as upstream's helper does.
pub fn bootstrap(destination: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |what: &str, error: std::io::Error| {
        ServeError::Bootstrap(format!("{what}: {}", os_reason(&error)))
    };
    let me = std::env::current_exe().map_err(|e| fail("finding this executable", e))?;
    if let Some(dir) = destination.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(&format!("creating {}", dir.display()), e))?;
    }
    let partial = destination.with_extension("partial");
    std::fs::copy(&me, &partial)
        .map_err(|e| fail(&format!("copying to {}", destination.display()), e))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| fail("making it executable", e))?;
    std::fs::rename(&partial, destination)
        .map_err(|e| fail(&format!("moving it to {}", destination.display()), e))?;
    let dir = destination.parent().unwrap_or(Path::new("/"));
    let certificates = Path::new("/ca-certs.pem");
    if certificates.is_file() {
        std::fs::copy(certificates, dir.join("ca-certs.pem"))
            .map_err(|e| fail("copying /ca-certs.pem", e))?;
    }
    let git = Path::new("/git");
    if git.is_dir() {
        copy_tree(git, &dir.join("git")).map_err(|e| fail("copying /git", e))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path())?;
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(link, target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
