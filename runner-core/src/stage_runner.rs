//! The one stage loop every executor runs its stages through.
//!
//! An executor starts a stage in its transport (a local child in its own process group, a custom
//! driver call, an SSH session, a Docker container attach) and hands over a [`Started`] stage:
//! the stdin to write the script to, the output to pump, and a [`StageProcess`] port with
//! `wait`, `terminate` and `kill`. [`supervise`] does everything else, the same way for all:
//!
//! 1. the script goes to stdin on a tracked task, and stdin is closed after it;
//! 2. one tracked pump copies the output into the sink as it comes (a chunk at a time, so memory
//!    stays bounded whatever the stage prints);
//! 3. it waits for the stage to end or for `cancel` (the job's cancel, the job timeout and the
//!    stage's own script timeout all arrive through it);
//! 4. on cancel: `terminate` (SIGTERM or the transport's equivalent), output still flowing, for up
//!    to `graceful`; then `kill`, and `force` more for the kill to take effect; after that the
//!    stage is given up as dormant;
//! 5. once the stage ended, [`StageProcess::ended`] (the shell executor kills what the script
//!    left in its group; after a stop every transport does), then at most [`OUTPUT_DRAIN`] for the output to end (a background
//!    child holding the pipes must not hold the job).
//!
//! [`run_stage`] is the same with the job log as the sink and the executor's wording of the exit
//! (`exit status 1`, `exit code 1`, `Process exited with status 1`, ...).

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::executor::{ExecutorError, ScriptExit};
use crate::log::{JobLog, LogWriter, StreamId, StreamKind};

/// Upstream's defaults: 10 minutes of grace after SIGTERM, then 10 s for SIGKILL to take effect.
pub const DEFAULT_GRACEFUL_KILL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Upstream's default `force_kill_timeout`: how long a killed stage gets to end.
pub const DEFAULT_FORCE_KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long output may keep arriving after the stage's process ended.
pub const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// The stop of a canceled stage: `graceful` between terminate and kill (`graceful_kill_timeout`),
/// `force` for the kill to take effect (`force_kill_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillTimeouts {
    /// From terminate to kill (`graceful_kill_timeout`).
    pub graceful: Duration,
    /// From kill until the stage is given up as dormant (`force_kill_timeout`).
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

/// A piece of a stage's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Whether it came from stdout or stderr.
    pub kind: StreamKind,
    /// The bytes as the transport delivered them, not split at lines or characters.
    pub data: Vec<u8>,
}

/// A stage's output, in the order the transport delivers it.
pub trait StageOutput: Send + 'static {
    /// The next chunk; `None` once the output has ended.
    fn next_chunk(&mut self) -> impl Future<Output = Option<Chunk>> + Send;
}

/// The executor's port: one running stage in its transport.
pub trait StageProcess: Send {
    /// How the stage ended, in the transport's terms (an exit status, a container's code).
    type Exit: Send;

    /// Resolves when the stage has ended. Must be cancel-safe: the stop sequence drops it at a
    /// deadline and calls it again.
    fn wait(&mut self) -> impl Future<Output = Result<Self::Exit, ExecutorError>> + Send;

    /// Asks the stage to stop (SIGTERM to its process group, or the transport's equivalent).
    /// Returns `false` when the transport has no graceful stop, so the kill follows at once.
    fn terminate(&mut self) -> impl Future<Output = bool> + Send;

    /// Stops the stage now (SIGKILL, or the transport's equivalent).
    fn kill(&mut self) -> impl Future<Output = ()> + Send;

    /// Called once after the stage ended, by itself or `stopped` (its cancel fired), before
    /// the output is drained: where the transport removes what the stage left running.
    fn ended(&mut self, _stopped: bool) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Whether the graceful stop waits for the output to end as well as for the stage: for
    /// local pipes, which stay open while anything of the stage's process group still runs, so
    /// a child still in its SIGTERM trap gets the rest of the grace period (as upstream's
    /// `cmd.Wait` waits for the pipes). Transports whose output outlives the stage say no.
    fn stop_waits_for_output(&self) -> bool {
        false
    }

    /// The error when the stage outlived its kill by `force_kill_timeout`.
    fn dormant(&self) -> ExecutorError {
        ExecutorError::system("failed to kill process, likely process is dormant")
    }
}

/// The writing end of a stage's standard input.
pub type StageStdin = std::pin::Pin<Box<dyn AsyncWrite + Send>>;

/// A stage its transport has started.
pub struct Started<P, O> {
    /// The port to wait for, terminate and kill the stage.
    pub process: P,
    /// The stage's output.
    pub output: O,
    /// Receives the script; `None` when the stage takes none (a custom driver call).
    pub stdin: Option<StageStdin>,
}

/// How a supervised stage ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended<E> {
    /// How the stage ended, in the transport's terms.
    pub exit: E,
    /// The stage was stopped because `cancel` fired (not by itself).
    pub stopped: bool,
}

/// Where a stage's output goes.
pub trait OutputSink: Send + 'static {
    /// Takes one chunk of output.
    fn write(&mut self, chunk: Chunk);
    /// Called once the output has ended, to store what is held back.
    fn finish(&mut self);
}

/// The job log's script stream: stdout and stderr framed as the log's script lines.
pub struct LogSink {
    stdout: LogWriter,
    stderr: LogWriter,
}

impl LogSink {
    /// A sink writing to `log`'s script stream.
    pub fn new(log: &JobLog) -> Self {
        Self {
            stdout: log.stream(StreamId::SCRIPT, StreamKind::Stdout),
            stderr: log.stream(StreamId::SCRIPT, StreamKind::Stderr),
        }
    }
}

impl OutputSink for LogSink {
    fn write(&mut self, chunk: Chunk) {
        match chunk.kind {
            StreamKind::Stdout => self.stdout.write(&chunk.data),
            StreamKind::Stderr => self.stderr.write(&chunk.data),
        }
    }

    fn finish(&mut self) {
        self.stdout.finish();
        self.stderr.finish();
    }
}

/// Runs a started stage to its end: the script in, the output out, and the stop sequence when
/// `cancel` fires. See the module documentation for the order.
pub async fn supervise<P, O, S>(
    started: Started<P, O>,
    script: &[u8],
    mut sink: S,
    cancel: &CancellationToken,
    timeouts: KillTimeouts,
) -> Result<Ended<P::Exit>, ExecutorError>
where
    P: StageProcess,
    O: StageOutput,
    S: OutputSink,
{
    let Started {
        mut process,
        mut output,
        stdin,
    } = started;
    let feeder = stdin.map(|mut stdin| {
        let script = script.to_vec();
        tokio::spawn(async move {
            // A script that exits before reading all of its input closes the pipe; that is fine.
            let _ = stdin.write_all(&script).await;
            let _ = stdin.shutdown().await;
        })
    });
    let stop_reading = CancellationToken::new();
    let mut pump = {
        let stop_reading = stop_reading.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    // Told to stop: the stage is over and the drain time is up.
                    _ = stop_reading.cancelled() => break,
                    chunk = output.next_chunk() => match chunk {
                        Some(chunk) => sink.write(chunk),
                        None => break,
                    },
                }
            }
            sink.finish();
        })
    };

    let mut pump_done = false;
    let result = tokio::select! {
        // The stage ended by itself (or its transport failed).
        exit = process.wait() => exit.map(|exit| Ended { exit, stopped: false }),
        // Canceled, timed out or the runner is stopping: the stop sequence, output still flowing.
        _ = cancel.cancelled() => {
            let output = process.stop_waits_for_output().then_some((&mut pump, &mut pump_done));
            stop(&mut process, timeouts, output).await.map(|exit| Ended { exit, stopped: true })
        }
    };
    let stopped = matches!(result, Ok(Ended { stopped: true, .. }) | Err(_));
    process.ended(stopped).await;
    if let Some(feeder) = feeder {
        feeder.abort();
        let _ = feeder.await;
    }
    // The output ends with the stage, unless something it started holds the stream open.
    if !pump_done && tokio::time::timeout(OUTPUT_DRAIN, &mut pump).await.is_err() {
        tracing::debug!("the stage's output did not end with it; no longer reading it");
        stop_reading.cancel();
        let _ = pump.await;
    }
    result
}

/// Terminate, `graceful` for the stage (and, when given, its output) to end, kill, `force`
/// for the kill to take effect.
async fn stop<P: StageProcess>(
    process: &mut P,
    timeouts: KillTimeouts,
    output: Option<(&mut tokio::task::JoinHandle<()>, &mut bool)>,
) -> Result<P::Exit, ExecutorError> {
    let graceful = async {
        if process.terminate().await {
            let exit = process.wait().await;
            if let Some((pump, done)) = output {
                let _ = pump.await;
                *done = true;
            }
            Some(exit)
        } else {
            None
        }
    };
    // It stopped within the grace period (or its transport failed while it did). Otherwise
    // there is no graceful stop in this transport, or the grace period is over: kill.
    if let Ok(Some(exit)) = tokio::time::timeout(timeouts.graceful, graceful).await {
        return exit;
    }
    let forced = async {
        process.kill().await;
        process.wait().await
    };
    match tokio::time::timeout(timeouts.force, forced).await {
        Ok(exit) => exit,
        // Not even the kill took within `force`: give up on it.
        Err(_) => Err(process.dormant()),
    }
}

/// [`supervise`] into the job log's script stream, with the executor's wording of the exit.
pub async fn run_stage<P, O>(
    started: Started<P, O>,
    script: &[u8],
    log: &JobLog,
    cancel: &CancellationToken,
    timeouts: KillTimeouts,
    word: impl FnOnce(Ended<P::Exit>) -> Result<ScriptExit, ExecutorError>,
) -> Result<ScriptExit, ExecutorError>
where
    P: StageProcess,
    O: StageOutput,
{
    let ended = supervise(started, script, LogSink::new(log), cancel, timeouts).await?;
    word(ended)
}
