//! One driver call: the executable in its own process group with the driver environment, its
//! output where the call wants it, and upstream's stop: SIGTERM to the group when the call's
//! context ends, SIGKILL after `graceful_kill_timeout`, give up after `force_kill_timeout`.
//!
//! Unlike the shell executor's stages, nothing left in the group after a normal exit is killed:
//! a driver may start its backend in the background on purpose.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner_core::executor::ExecutorError;
use runner_core::log::{JobLog, LogWriter, StreamId, StreamKind};
use runner_core::process::{spawn_in_process_group, KillTimeouts, Leftovers};
use runner_core::stage_runner::{supervise, Chunk, LogSink, OutputSink};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

pub use runner_core::process::ProcessExit as DriverExit;

/// Where a call's output goes.
pub enum Output<'a> {
    /// stdout and stderr to the job log (prepare_exec, run_exec).
    Log(&'a JobLog),
    /// stdout collected (config_exec's JSON), stderr to the job log.
    Capture {
        /// Where the call's stderr goes.
        log: &'a JobLog,
        /// Receives every byte the call writes to stdout.
        stdout: &'a mut Vec<u8>,
    },
    /// stdout to the runner's log at debug level, stderr at warning level (cleanup_exec).
    RunnerLog,
}

/// A cancellation token that also fires after `timeout`; `expired` tells which.
pub struct Deadline {
    token: CancellationToken,
    timer: tokio::task::JoinHandle<()>,
    expired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Deadline {
    pub fn new(parent: &CancellationToken, timeout: Duration) -> Self {
        let token = parent.child_token();
        let expired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timer = {
            let token = token.clone();
            let expired = expired.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                expired.store(true, std::sync::atomic::Ordering::SeqCst);
                token.cancel();
            })
        };
        Self {
            token,
            timer,
            expired,
        }
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn expired(&self) -> bool {
        self.expired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// At most this much of config_exec's stdout is kept (its JSON is a few hundred bytes).
const CAPTURE_LIMIT: usize = 1024 * 1024;

/// config_exec's stdout collected, its stderr in the job log.
struct CaptureSink {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: LogWriter,
}

impl OutputSink for CaptureSink {
    fn write(&mut self, chunk: Chunk) {
        match chunk.kind {
            StreamKind::Stdout => {
                let mut stdout = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
                let room = CAPTURE_LIMIT.saturating_sub(stdout.len());
                stdout.extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
            }
            StreamKind::Stderr => self.stderr.write(&chunk.data),
        }
    }

    fn finish(&mut self) {
        self.stderr.finish();
    }
}

/// cleanup_exec's output, a line at a time, to the runner's own log.
#[derive(Default)]
struct RunnerLogSink {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl RunnerLogSink {
    fn emit(line: &[u8], stderr: bool) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\r', '\n']);
        if stderr {
            tracing::warn!(cleanup_std = "err", "{line}");
        } else {
            tracing::debug!(cleanup_std = "out", "{line}");
        }
    }

    fn flush_lines(pending: &mut Vec<u8>, stderr: bool) {
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            Self::emit(&pending[..end], stderr);
            pending.drain(..=end);
        }
        // A line longer than the read size is emitted in pieces, so memory stays bounded.
        if pending.len() > 64 * 1024 {
            Self::emit(pending, stderr);
            pending.clear();
        }
    }
}

impl OutputSink for RunnerLogSink {
    fn write(&mut self, chunk: Chunk) {
        let stderr = chunk.kind == StreamKind::Stderr;
        let pending = if stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        pending.extend_from_slice(&chunk.data);
        Self::flush_lines(pending, stderr);
    }

    fn finish(&mut self) {
        for (pending, stderr) in [(&mut self.stdout, false), (&mut self.stderr, true)] {
            if !pending.is_empty() {
                Self::emit(pending, stderr);
                pending.clear();
            }
        }
    }
}

/// Runs the driver in its own process group through the stage runner (whatever it leaves in
/// the background keeps running): SIGTERM when `cancel` fires, SIGKILL after `graceful`, given
/// up as dormant after `force` more.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    executable: &str,
    args: &[String],
    dir: &Path,
    env: &[(String, String)],
    output: Output<'_>,
    cancel: &CancellationToken,
    graceful: Duration,
    force: Duration,
) -> Result<DriverExit, ExecutorError> {
    let mut command = Command::new(executable);
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let started = spawn_in_process_group(command, false, Leftovers::Keep).map_err(|error| {
        let message = match &error {
            runner_core::process::ProcessError::Spawn { source, .. } => {
                format!("failed to start command: {source}")
            }
        };
        ExecutorError::system(message).with_source(error)
    })?;
    let timeouts = KillTimeouts { graceful, force };
    let ended = match output {
        Output::Log(log) => supervise(started, b"", LogSink::new(log), cancel, timeouts).await?,
        Output::Capture { log, stdout } => {
            let collected = Arc::new(Mutex::new(Vec::new()));
            let sink = CaptureSink {
                stdout: collected.clone(),
                stderr: log.stream(StreamId::SCRIPT, StreamKind::Stderr),
            };
            let ended = supervise(started, b"", sink, cancel, timeouts).await?;
            *stdout = std::mem::take(&mut *collected.lock().unwrap_or_else(|p| p.into_inner()));
            ended
        }
        Output::RunnerLog => {
            supervise(started, b"", RunnerLogSink::default(), cancel, timeouts).await?
        }
    };
    Ok(ended.exit)
}
