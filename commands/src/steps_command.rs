//! `steps serve`, `steps proxy` and `steps bootstrap`: the Step Runner in the job's
//! environment, with upstream's flags and messages.

use std::path::PathBuf;

use clap::Subcommand;
use runner_steps::serve::{self, default_socket};
use runner_steps::service::{inherited_env, Settings, StepService};

/// The Step Runner's commands.
#[derive(Subcommand, Debug)]
pub enum StepsCommand {
    /// Serve the Step Runner's gRPC service on a Unix socket until SIGTERM or SIGINT.
    Serve {
        /// The socket path (default: step-runner.sock in $TMPDIR).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// A command to run as well, once its first byte of input arrives on stdin (the
        /// Docker build container's shell): its exit code is serve's. Input that ends with no
        /// byte means there is nothing to run: serve exits 0.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Carry bytes between stdin/stdout and the service's socket.
    Proxy {
        /// The socket path (default: step-runner.sock in $TMPDIR).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Copy this binary (and the helper's CA certificates and git, when present) to DEST.
    Bootstrap {
        /// Where the binary goes.
        destination: PathBuf,
    },
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed here, before the future is
/// polled: a signal right after `serve` says it listens must stop it gracefully too.
fn terminated() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}

/// Runs one of the commands; the process's exit code.
pub async fn run(command: StepsCommand) -> i32 {
    let result = match command {
        StepsCommand::Serve { socket, command } => {
            let socket = socket.unwrap_or_else(default_socket);
            let service = StepService::new(Settings::default(), inherited_env());
            if command.is_empty() {
                serve::serve(&socket, service, terminated()).await
            } else {
                return serve_wrapping(socket, service, command).await;
            }
        }
        StepsCommand::Proxy { socket } => {
            let socket = socket.unwrap_or_else(default_socket);
            serve::proxy(&socket, tokio::io::stdin(), tokio::io::stdout()).await
        }
        StepsCommand::Bootstrap { destination } => serve::bootstrap(&destination),
    };
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("{error}");
            1
        }
    }
}

/// `serve <command…>`: the service, and `command` fed with stdin once stdin has a byte; the
/// exit code is the command's (or 0 when stdin ended empty). SIGTERM or SIGINT stop the
/// command (SIGTERM, SIGKILL 5 s later) and the service.
async fn serve_wrapping(socket: PathBuf, service: StepService, command: Vec<String>) -> i32 {
    use tokio::io::AsyncReadExt;
    let stop = tokio_util::sync::CancellationToken::new();
    let signalled = terminated();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move { serve::serve(&socket, service, stop.cancelled_owned()).await })
    };
    let mut stdin = tokio::io::stdin();
    let mut first = vec![0; 64 * 1024];
    tokio::pin!(signalled);
    tokio::pin!(server);
    let read = tokio::select! {
        read = stdin.read(&mut first) => read.unwrap_or(0),
        () = &mut signalled => 0,
        // It could not bind (or failed): nothing waits for a shell that would have no service.
        ended = &mut server => {
            return match ended {
                Ok(Err(error)) => {
                    eprintln!("{error}");
                    1
                }
                _ => 1,
            };
        }
    };
    let code = if read == 0 {
        0
    } else {
        first.truncate(read);
        run_wrapped(&command, first, stdin, &mut signalled).await
    };
    stop.cancel();
    match (&mut server).await {
        Ok(Ok(())) => code,
        Ok(Err(error)) => {
            eprintln!("{error}");
            if code == 0 {
                1
            } else {
                code
            }
        }
        Err(_) => code.max(1),
    }
}

async fn run_wrapped(
    command: &[String],
    first: Vec<u8>,
    mut stdin: tokio::io::Stdin,
    signalled: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    use tokio::io::AsyncWriteExt;
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!("starting {}: {error}", command[0]);
            return 1;
        }
    };
    let feeder = child.stdin.take().map(|mut input| {
        tokio::spawn(async move {
            if input.write_all(&first).await.is_ok() {
                let _ = tokio::io::copy(&mut stdin, &mut input).await;
            }
            let _ = input.shutdown().await;
        })
    });
    let status = tokio::select! {
        status = child.wait() => status,
        () = signalled.as_mut() => {
            if let Some(pid) = child.id() {
                runner_core::process::signal_process(pid as i32, libc::SIGTERM);
            }
            match tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = child.kill().await;
                    child.wait().await
                }
            }
        }
    };
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    match status {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(error) => {
            eprintln!("waiting for {}: {error}", command[0]);
            1
        }
    }
}
