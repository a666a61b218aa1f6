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
        StepsCommand::Serve { socket } => {
            let socket = socket.unwrap_or_else(default_socket);
            let service = StepService::new(Settings::default(), inherited_env());
            serve::serve(&socket, service, terminated()).await
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
