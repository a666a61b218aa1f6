//! The SSH executor's port to the stage runner: one session per stage.
//!
//! The session runs `echo <marker>$$; exec <shell>`: its first stdout line is the remote
//! shell's pid, which is also its process group (sshd starts each session's command with
//! `setsid`). The stop signals that whole group through a second session, and also sends the
//! signal on the stage's own session (OpenSSH delivers it to the group too); the second session
//! covers servers that ignore signal requests.

use std::sync::Arc;
use std::time::Duration;

use runner_core::executor::{ExecutorError, ScriptExit};
use runner_core::log::StreamKind;
use runner_core::stage_runner::{Chunk, Ended, StageOutput, StageProcess};
use russh::client::{self, Handle};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::sync::watch;

use crate::ClientHandler;

/// The first stdout line of every stage: the remote shell's pid.
pub(crate) const PID_MARKER: &str = "gitlab-runner-rs-ssh-pid:";

/// How long the signalling session may take.
const SIGNAL_WAIT: Duration = Duration::from_secs(10);

/// What the session said so far, written by the output side, read by the process side.
#[derive(Debug, Default, Clone)]
struct SessionState {
    pid: Option<u32>,
    exit_status: Option<u32>,
    exit_signal: Option<Sig>,
    closed: bool,
}

impl SessionState {
    fn over(&self) -> bool {
        self.closed || self.exit_status.is_some() || self.exit_signal.is_some()
    }
}

/// How a stage's session ended.
#[derive(Debug, Clone)]
pub enum SessionEnd {
    /// The remote command exited with this status (0 is success).
    Status(u32),
    /// The remote command was killed by this signal; reported as status 128 + its number.
    Signal(Sig),
    /// The session closed without an exit status or signal.
    Closed,
}

/// The process side: waits on the session's state and signals the remote group.
pub(crate) struct SshStage<'a> {
    handle: &'a Handle<ClientHandler>,
    writer: Arc<ChannelWriteHalf<client::Msg>>,
    state: watch::Receiver<SessionState>,
}

/// The output side: reads the session, takes the pid line off its stdout, records its end.
pub(crate) struct SshOutput {
    reader: ChannelReadHalf,
    pid_line: PidLine,
    state: watch::Sender<SessionState>,
}

/// Splits a started session into the stage runner's two halves; the writer also feeds stdin.
pub(crate) fn stage(
    handle: &Handle<ClientHandler>,
    reader: ChannelReadHalf,
    writer: Arc<ChannelWriteHalf<client::Msg>>,
) -> (SshStage<'_>, SshOutput) {
    let (sender, receiver) = watch::channel(SessionState::default());
    (
        SshStage {
            handle,
            writer,
            state: receiver,
        },
        SshOutput {
            reader,
            pid_line: PidLine::default(),
            state: sender,
        },
    )
}

impl SshStage<'_> {
    async fn signal(&self, signal: Sig, name: &str) {
        let pid = self.state.borrow().pid;
        if let Some(pid) = pid {
            let command = format!(
                "kill -s {name} -- -{pid} 2>/dev/null || kill -s {name} {pid} 2>/dev/null; true"
            );
            match self.handle.channel_open_session().await {
                Ok(mut signaller) => {
                    if signaller.exec(true, command).await.is_ok() {
                        let _ = tokio::time::timeout(SIGNAL_WAIT, async {
                            while signaller.wait().await.is_some() {}
                        })
                        .await;
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot open a session to signal the stage"),
            }
        }
        let _ = self.writer.signal(signal).await;
    }
}

impl StageProcess for SshStage<'_> {
    type Exit = SessionEnd;

    async fn wait(&mut self) -> Result<SessionEnd, ExecutorError> {
        let state = match self.state.wait_for(SessionState::over).await {
            Ok(state) => Some(state.clone()),
            Err(_) => None,
        };
        // The output side is gone: whatever it recorded last is all there is.
        let state = state.unwrap_or_else(|| self.state.borrow().clone());
        Ok(match (state.exit_signal, state.exit_status) {
            (Some(signal), _) => SessionEnd::Signal(signal),
            (None, Some(code)) => SessionEnd::Status(code),
            (None, None) => SessionEnd::Closed,
        })
    }

    async fn terminate(&mut self) -> bool {
        self.signal(Sig::TERM, "TERM").await;
        true
    }

    async fn kill(&mut self) {
        self.signal(Sig::KILL, "KILL").await;
    }

    async fn ended(&mut self, stopped: bool) {
        // A stopped stage may leave what ignored its TERM (a grandchild, say) in its group.
        if stopped {
            self.signal(Sig::KILL, "KILL").await;
        }
        // No more input for a stage that is over (a killed one may not have read it all).
        let _ = self.writer.eof().await;
    }
}

impl StageOutput for SshOutput {
    async fn next_chunk(&mut self) -> Option<Chunk> {
        loop {
            let Some(message) = self.reader.wait().await else {
                self.state.send_modify(|state| state.closed = true);
                let rest = self.pid_line.flush();
                if rest.is_empty() {
                    return None;
                }
                return Some(Chunk {
                    kind: StreamKind::Stdout,
                    data: rest,
                });
            };
            match message {
                ChannelMsg::Data { data } => {
                    let data = self.pid_line.feed(&data);
                    if let Some(pid) = self.pid_line.pid {
                        self.state.send_if_modified(|state| {
                            let new = state.pid.is_none();
                            state.pid = Some(pid);
                            new
                        });
                    }
                    if !data.is_empty() {
                        return Some(Chunk {
                            kind: StreamKind::Stdout,
                            data,
                        });
                    }
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    return Some(Chunk {
                        kind: StreamKind::Stderr,
                        data: data.to_vec(),
                    })
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    self.state
                        .send_modify(|state| state.exit_status = Some(exit_status));
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    self.state
                        .send_modify(|state| state.exit_signal = Some(signal_name));
                }
                _ => {}
            }
        }
    }
}

/// Upstream's wording (Go's `ssh.ExitError`, `ssh.ExitMissingError`) of how a session ended.
pub(crate) fn session_exit(
    ended: Ended<SessionEnd>,
    address: &str,
    connection_closed: bool,
) -> Result<ScriptExit, ExecutorError> {
    match ended.exit {
        SessionEnd::Signal(signal) => {
            let code = 128 + signal_number(&signal);
            Ok(ScriptExit::Failed {
                code,
                message: format!(
                    "Process exited with status {code} from signal {}",
                    signal_name(&signal)
                ),
            })
        }
        SessionEnd::Status(0) => Ok(ScriptExit::Success),
        SessionEnd::Status(code) => Ok(ScriptExit::Failed {
            code: code as i32,
            message: format!("Process exited with status {code}"),
        }),
        SessionEnd::Closed if ended.stopped => Ok(ScriptExit::Failed {
            code: -1,
            message: "Process exited with status 137 from signal KILL".into(),
        }),
        SessionEnd::Closed => {
            let why = if connection_closed {
                "the connection was lost"
            } else {
                "the session ended"
            };
            Err(ExecutorError::system(format!(
                "ssh connection to {address}: {why}: wait: remote command exited without exit status or exit signal"
            )))
        }
    }
}

/// Takes the pid line off the front of a stage's stdout; everything else passes through.
#[derive(Default)]
pub(crate) struct PidLine {
    pending: Vec<u8>,
    pub(crate) pid: Option<u32>,
    done: bool,
}

impl PidLine {
    /// Returns what belongs in the job log.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        if self.done {
            return data.to_vec();
        }
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            if let Some(pid) = text.trim_end().strip_prefix(PID_MARKER) {
                self.pid = pid.parse().ok();
                self.done = true;
                out.append(&mut self.pending);
                return out;
            }
            // Something the login shell printed first.
            out.extend_from_slice(&line);
        }
        out
    }

    pub(crate) fn flush(&mut self) -> Vec<u8> {
        self.done = true;
        std::mem::take(&mut self.pending)
    }
}

/// Go's `ssh.Waitmsg` numbering for a remote signal: 128 + its number.
fn signal_number(signal: &Sig) -> i32 {
    match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::USR1 | Sig::Custom(_) => 0,
    }
}

fn signal_name(signal: &Sig) -> String {
    match signal {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_line_is_taken_off_and_everything_else_kept() {
        let mut filter = PidLine::default();
        assert_eq!(filter.feed(b"motd\ngitlab-runner"), b"motd\n");
        assert_eq!(filter.feed(b"-rs-ssh-pid:4242\nhello "), b"hello ");
        assert_eq!(filter.pid, Some(4242));
        assert_eq!(filter.feed(b"world\n"), b"world\n");
        let mut unterminated = PidLine::default();
        assert!(unterminated.feed(b"partial").is_empty());
        assert_eq!(unterminated.flush(), b"partial");
    }

    #[test]
    fn session_ends_are_worded_as_upstream() {
        let word = |exit, stopped| session_exit(Ended { exit, stopped }, "host:22", false);
        assert_eq!(
            word(SessionEnd::Status(3), false).ok(),
            Some(ScriptExit::Failed {
                code: 3,
                message: "Process exited with status 3".into()
            })
        );
        assert_eq!(
            word(SessionEnd::Signal(Sig::TERM), true).ok(),
            Some(ScriptExit::Failed {
                code: 143,
                message: "Process exited with status 143 from signal TERM".into()
            })
        );
        assert_eq!(
            word(SessionEnd::Status(0), false).ok(),
            Some(ScriptExit::Success)
        );
        let lost = word(SessionEnd::Closed, false)
            .err()
            .map(|e| e.message().to_string());
        assert_eq!(
            lost.as_deref(),
            Some("ssh connection to host:22: the session ended: wait: remote command exited without exit status or exit signal")
        );
    }
}
