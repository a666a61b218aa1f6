//! Running a local process for a stage: its own process group, output pumped into the job log,
//! SIGTERM → grace period → SIGKILL on cancel, and nothing left behind when it ends.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::log::{JobLog, StreamId, StreamKind};

/// Upstream's defaults: 10 minutes of grace after SIGTERM, then 10 s for SIGKILL to take effect.
pub const DEFAULT_GRACEFUL_KILL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_FORCE_KILL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct KillTimeouts {
    pub graceful: Duration,
    pub force: Duration,
}

impl Default for KillTimeouts {
    fn default() -> Self {
        Self {
            graceful: DEFAULT_GRACEFUL_KILL_TIMEOUT,
            force: DEFAULT_FORCE_KILL_TIMEOUT,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExit {
    Code(i32),
    /// Killed by a signal (reported upstream as `signal: killed`, exit code -1).
    Signal(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for the process")]
    Wait(#[source] std::io::Error),
    #[error("failed to kill process PID={pid}, likely process is dormant")]
    Dormant { pid: u32 },
}

/// Sends `signal` to the process group `pgid`. A `pgid` of 0 (a child whose id is gone) is
/// ignored: kill(2) would take it for the caller's own group.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid <= 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Stops `child`, the leader of its own process group: SIGTERM to the group, `timeouts.graceful`
/// for it to end, SIGKILL to the group, `timeouts.force` more; then gives up as dormant.
pub async fn stop_group(
    child: &mut tokio::process::Child,
    timeouts: KillTimeouts,
) -> Result<std::process::ExitStatus, ProcessError> {
    let pid = child.id().unwrap_or_default();
    let pgid = pid as i32;
    signal_group(pgid, libc::SIGTERM);
    if let Ok(status) = tokio::time::timeout(timeouts.graceful, child.wait()).await {
        return status.map_err(ProcessError::Wait);
    }
    signal_group(pgid, libc::SIGKILL);
    match tokio::time::timeout(timeouts.force, child.wait()).await {
        Ok(status) => status.map_err(ProcessError::Wait),
        Err(_) => Err(ProcessError::Dormant { pid }),
    }
}

/// Copies a process's output stream into the job log as the script stream, until it ends.
pub async fn pump(mut reader: impl AsyncRead + Unpin, log: JobLog, kind: StreamKind) {
    let mut writer = log.stream(StreamId::SCRIPT, kind);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => writer.write(&buffer[..read]),
        }
    }
    writer.finish();
}

/// Runs `command` with `stdin_data` on its standard input and its output in the job log.
///
/// The process gets its own process group. When `cancel` fires the group gets SIGTERM, output
/// keeps flowing through the grace period, then the group gets SIGKILL. When the main process
/// has exited, whatever it left running in its group is killed, so no orphan outlives a stage.
pub async fn run_in_process_group(
    mut command: Command,
    stdin_data: &[u8],
    log: &JobLog,
    cancel: &CancellationToken,
    timeouts: KillTimeouts,
) -> Result<ProcessExit, ProcessError> {
    let program = command.as_std().get_program().to_string_lossy().to_string();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    let pgid = pid as i32;

    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(pump(out, log.clone(), StreamKind::Stdout)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(pump(err, log.clone(), StreamKind::Stderr)));
    if let Some(mut stdin) = child.stdin.take() {
        let data = stdin_data.to_vec();
        tokio::spawn(async move {
            // A script that exits before reading all of its input closes the pipe; that is fine.
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }

    let status = tokio::select! {
        // The process ended by itself.
        status = child.wait() => status.map_err(ProcessError::Wait)?,
        // Asked to stop: SIGTERM the group, give it the grace period, then SIGKILL.
        _ = cancel.cancelled() => stop_group(&mut child, timeouts).await?,
    };
    // Anything still in the group is an orphan of this stage (a backgrounded child, say).
    signal_group(pgid, libc::SIGKILL);
    for pump in [stdout, stderr].into_iter().flatten() {
        let _ = pump.await;
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ProcessExit::Code(code),
        (None, Some(signal)) => ProcessExit::Signal(signal),
        (None, None) => ProcessExit::Code(-1),
    })
}

/// This machine's host name (`os.Hostname()`), empty when it cannot be read.
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
