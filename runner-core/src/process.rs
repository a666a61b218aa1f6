//! The local transport of the stage runner: a child in its own process group, SIGTERM and
//! SIGKILL to the whole group, and (for stage scripts) nothing left behind when it ends.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::executor::ExecutorError;
use crate::log::StreamKind;
use crate::stage_runner::{Chunk, StageOutput, StageProcess, StageStdin, Started};

pub use crate::stage_runner::{
    KillTimeouts, DEFAULT_FORCE_KILL_TIMEOUT, DEFAULT_GRACEFUL_KILL_TIMEOUT,
};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExit {
    /// Exited by itself with this status code.
    Code(i32),
    /// Killed by a signal (reported upstream as `signal: killed`, exit code -1).
    Signal(i32),
}

impl ProcessExit {
    fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Code(-1),
        }
    }
}

/// Why a local process could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (not found, not executable, ...).
    #[error("starting {program}")]
    Spawn {
        /// The program that was to be started.
        program: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Sends `signal` to the process group `pgid`. A `pgid` of 0 (a child whose id is gone) is
/// ignored: kill(2) would take it for the caller's own group.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid <= 0 {
        return;
    }
    kill(-pgid, signal);
}

/// Sends `signal` to the one process `pid`. A `pid` of 0 or less is ignored: kill(2) would take
/// it for a process group (or every process the caller may signal).
pub fn signal_process(pid: i32, signal: i32) {
    if pid <= 0 {
        return;
    }
    kill(pid, signal);
}

#[expect(
    unsafe_code,
    reason = "std has no kill(2) for an arbitrary pid or a process group; both callers check the pid"
)]
fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) touches no memory of ours; a pid that is gone only yields ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Whether this process runs as root (effective uid 0): upstream's choice between
/// `/etc/gitlab-runner` and `~/.gitlab-runner` for config.toml and certificates.
#[expect(unsafe_code, reason = "std does not expose geteuid(2)")]
pub fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What happens to the rest of the process group when its leader has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Killed: a stage script's background children are orphans of the stage.
    Kill,
    /// Left running after a normal exit: a custom driver may start its backend in the
    /// background on purpose. After a stop, what is left is killed all the same (a child that
    /// ignored SIGTERM while its driver died of it).
    Keep,
}

/// A local child, leader of its own process group.
#[derive(Debug)]
pub struct LocalProcess {
    child: Child,
    pgid: i32,
    leftovers: Leftovers,
}

impl StageProcess for LocalProcess {
    type Exit = ProcessExit;

    async fn wait(&mut self) -> Result<ProcessExit, ExecutorError> {
        let status =
            self.child.wait().await.map_err(|error| {
                ExecutorError::system("waiting for the process").with_source(error)
            })?;
        Ok(ProcessExit::from_status(status))
    }

    async fn terminate(&mut self) -> bool {
        signal_group(self.pgid, libc::SIGTERM);
        true
    }

    async fn kill(&mut self) {
        signal_group(self.pgid, libc::SIGKILL);
    }

    fn stop_waits_for_output(&self) -> bool {
        true
    }

    async fn ended(&mut self, stopped: bool) {
        if stopped || self.leftovers == Leftovers::Kill {
            signal_group(self.pgid, libc::SIGKILL);
        }
    }

    fn dormant(&self) -> ExecutorError {
        ExecutorError::system(format!(
            "failed to kill process PID={}, likely process is dormant",
            self.pgid
        ))
    }
}

/// A local child's stdout and stderr, read as they come.
#[derive(Debug)]
pub struct LocalOutput {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    stdout_buffer: Vec<u8>,
    stderr_buffer: Vec<u8>,
}

const READ_SIZE: usize = 16 * 1024;

async fn read_some(reader: &mut (impl AsyncRead + Unpin), buffer: &mut [u8]) -> usize {
    // A read error ends the stream like its end does: there is nothing more to get from it.
    reader.read(buffer).await.unwrap_or(0)
}

impl StageOutput for LocalOutput {
    async fn next_chunk(&mut self) -> Option<Chunk> {
        loop {
            let (kind, read) = match (&mut self.stdout, &mut self.stderr) {
                (None, None) => return None,
                (Some(out), None) => (
                    StreamKind::Stdout,
                    read_some(out, &mut self.stdout_buffer).await,
                ),
                (None, Some(err)) => (
                    StreamKind::Stderr,
                    read_some(err, &mut self.stderr_buffer).await,
                ),
                (Some(out), Some(err)) => tokio::select! {
                    read = read_some(out, &mut self.stdout_buffer) => (StreamKind::Stdout, read),
                    read = read_some(err, &mut self.stderr_buffer) => (StreamKind::Stderr, read),
                },
            };
            let buffer = match kind {
                StreamKind::Stdout => &self.stdout_buffer,
                StreamKind::Stderr => &self.stderr_buffer,
            };
            if read == 0 {
                match kind {
                    StreamKind::Stdout => self.stdout = None,
                    StreamKind::Stderr => self.stderr = None,
                }
                continue;
            }
            return Some(Chunk {
                kind,
                data: buffer[..read].to_vec(),
            });
        }
    }
}

/// Starts `command` as the leader of a new process group, stdout and stderr piped, stdin piped
/// when `stdin` (else `/dev/null`), killed if the handle is dropped.
pub fn spawn_in_process_group(
    mut command: Command,
    stdin: bool,
    leftovers: Leftovers,
) -> Result<Started<LocalProcess, LocalOutput>, ProcessError> {
    let program = command.as_std().get_program().to_string_lossy().to_string();
    command
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|source| ProcessError::Spawn { program, source })?;
    let pgid = child.id().unwrap_or_default() as i32;
    let output = LocalOutput {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        stdout_buffer: vec![0; READ_SIZE],
        stderr_buffer: vec![0; READ_SIZE],
    };
    let stdin = child
        .stdin
        .take()
        .map(|stdin| Box::pin(stdin) as StageStdin);
    Ok(Started {
        process: LocalProcess {
            child,
            pgid,
            leftovers,
        },
        output,
        stdin,
    })
}

/// Go's name of a signal (`syscall.Signal.String()` on Linux), as in `signal: killed`.
pub fn go_signal_name(signal: i32) -> String {
    const NAMES: [&str; 15] = [
        "hangup",
        "interrupt",
        "quit",
        "illegal instruction",
        "trace/breakpoint trap",
        "aborted",
        "bus error",
        "floating point exception",
        "killed",
        "user defined signal 1",
        "segmentation fault",
        "user defined signal 2",
        "broken pipe",
        "alarm clock",
        "terminated",
    ];
    usize::try_from(signal - 1)
        .ok()
        .and_then(|index| NAMES.get(index))
        .map_or_else(|| format!("signal {signal}"), |name| name.to_string())
}

/// This machine's host name (`os.Hostname()`), empty when it cannot be read.
#[expect(unsafe_code, reason = "std does not expose gethostname(2)")]
pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer outlives the call and its length is passed.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return String::new();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_as_go_names_them() {
        assert_eq!(go_signal_name(libc::SIGKILL), "killed");
        assert_eq!(go_signal_name(libc::SIGTERM), "terminated");
        assert_eq!(go_signal_name(libc::SIGSEGV), "segmentation fault");
        assert_eq!(go_signal_name(libc::SIGHUP), "hangup");
        assert_eq!(go_signal_name(64), "signal 64");
        assert_eq!(go_signal_name(0), "signal 0");
    }
}
