//! `FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR`, as upstream's `changeFilesOwnership`: the helper
//! container's shell then runs without `umask 0000`, so what it checks out is not
//! world-writable. Instead, each time the build container is created (before the first stage
//! that runs in it), the project directory and its `.tmp` sibling are handed to the user the
//! build container runs as (its `id -u` and `id -g`), by `chown` in the helper container.
//!
//! The `.gitlab-build-uid-gid` file the script generator's `chown` lines read is not written:
//! upstream only writes it for Kubernetes, so on Docker those lines stay inert, as they do
//! upstream.

use std::sync::{Arc, Mutex};

use runner_core::stage_runner::{supervise, Chunk, OutputSink};

use super::*;

/// Printed at the end of prepare when the flag is on.
pub(crate) const UMASK_DISABLED_NOTICE: &str =
    "Not using umask - FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR is set!";

/// Bytes kept of each probe stream: its output is parsed or only traced, never the job log's.
const CAPTURE_LIMIT: usize = 1024;

/// Upstream's root test: an image with no user or `root` runs as root. Any other user
/// (`0` and `root:root` included) is asked for its ids, and a uid of 0 then stops there.
pub(crate) fn image_runs_as_root(image_user: &str) -> bool {
    image_user.is_empty() || image_user == "root"
}

/// The job-log line before a directory is handed over (the directory quoted as Go's `%q`).
pub(crate) fn chown_notice(dir: &str, uid: i64, gid: i64) -> String {
    format!("Changing ownership of files at {dir:?} to {uid}:{gid}")
}

/// The helper's script: the tree of `dir` to `uid:gid`, symbolic links not followed.
pub(crate) fn chown_script(dir: &str, uid: i64, gid: i64) -> String {
    // Single quotes, so that nothing in the path is expanded by the helper's shell.
    let quoted = format!("'{}'", dir.replace('\'', r"'\''"));
    format!("chown -RP -- {uid}:{gid} {quoted}\n")
}

/// Upstream's reading of `id -u` / `id -g`: the last line of stdout, a number.
pub(crate) fn parse_id(command: &'static str, captured: &Captured) -> Result<i64, ProbeError> {
    let stdout = String::from_utf8_lossy(&captured.stdout);
    let stderr = String::from_utf8_lossy(&captured.stderr).trim().to_string();
    let last = stdout.trim().lines().last().unwrap_or_default().trim();
    if last.is_empty() {
        return Err(ProbeError::NoOutput { stderr });
    }
    last.parse().map_err(|source| ProbeError::Parse {
        command,
        output: last.to_string(),
        stderr,
        source,
    })
}

/// Finding the build container's uid or gid failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// The container could not run the command.
    #[error("executing {command:?} on container {container:?}")]
    Exec {
        command: &'static str,
        container: String,
        #[source]
        source: ExecutorError,
    },
    /// The command failed (`exit code N`) or the job was canceled (`aborted`).
    #[error("executing {command:?} on container {container:?}: {outcome}")]
    Ended {
        command: &'static str,
        container: String,
        outcome: String,
    },
    /// Nothing on stdout.
    #[error("id command returned no output on stdout (stderr: {stderr})")]
    NoOutput { stderr: String },
    /// Not a number on stdout.
    #[error("parsing {command:?} output {output:?} (stderr: {stderr})")]
    Parse {
        command: &'static str,
        output: String,
        stderr: String,
        #[source]
        source: std::num::ParseIntError,
    },
}

/// What a probe printed, up to [`CAPTURE_LIMIT`] of each stream, and how it ended.
#[derive(Debug, Default, Clone)]
pub(crate) struct Captured {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) exit: i64,
    /// The job's cancel stopped it.
    pub(crate) stopped: bool,
}

/// The stage runner's sink for a probe: keeps the output for the caller.
#[derive(Clone, Default)]
struct CaptureSink(Arc<Mutex<Captured>>);

impl OutputSink for CaptureSink {
    fn write(&mut self, chunk: Chunk) {
        let mut captured = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stream = match chunk.kind {
            runner_core::log::StreamKind::Stdout => &mut captured.stdout,
            runner_core::log::StreamKind::Stderr => &mut captured.stderr,
        };
        let room = CAPTURE_LIMIT.saturating_sub(stream.len());
        stream.extend_from_slice(&chunk.data[..room.min(chunk.data.len())]);
    }

    fn finish(&mut self) {}
}

impl DockerExecutor {
    /// Upstream's `changeFilesOwnership`, for the build container `build` just created. Fails
    /// the stage when the ids cannot be found; a failing `chown` is only traced, as upstream.
    pub(crate) async fn change_files_ownership(
        &mut self,
        build: &str,
        log: &JobLog,
        cancel: &CancellationToken,
    ) -> Result<(), ExecutorError> {
        let job = self
            .job
            .as_ref()
            .ok_or_else(|| system("the job was not prepared"))?;
        if !job.umask_disabled || image_runs_as_root(&job.image_user) {
            return Ok(());
        }
        let image_id = job.image_id.clone();
        let dirs = [job.project_dir.clone(), format!("{}.tmp", job.project_dir)];
        let uid = self
            .probe_id(build, "id -u", cancel)
            .await
            .map_err(|error| {
                system(format!("checking {image_id:?} image UID")).with_source(error)
            })?;
        let gid = self
            .probe_id(build, "id -g", cancel)
            .await
            .map_err(|error| {
                system(format!("checking {image_id:?} image GID")).with_source(error)
            })?;
        if uid == 0 {
            return Ok(());
        }
        let helper = match self.existing_container("predefined", log).await? {
            Some(id) => id,
            None => self.create_container("predefined").await.map_err(|error| {
                system("requesting new predefined container").with_source(error)
            })?,
        };
        for dir in &dirs {
            log.println(&chown_notice(dir, uid, gid));
            match self
                .run_captured(&helper, "predefined", &chown_script(dir, uid, gid), cancel)
                .await
            {
                Ok(captured) if captured.exit == 0 && !captured.stopped => {
                    tracing::debug!(dir, "changed ownership of files");
                }
                Ok(captured) => tracing::error!(
                    dir,
                    exit = captured.exit,
                    output = %String::from_utf8_lossy(&[captured.stdout, captured.stderr].concat()),
                    "failed to change ownership of files"
                ),
                Err(error) => tracing::error!(dir, %error, "failed to change ownership of files"),
            }
        }
        Ok(())
    }

    /// `id -u` or `id -g` in the build container.
    async fn probe_id(
        &self,
        build: &str,
        command: &'static str,
        cancel: &CancellationToken,
    ) -> Result<i64, ProbeError> {
        let captured = self
            .run_captured(build, "build", &format!("{command}\n"), cancel)
            .await
            .map_err(|source| ProbeError::Exec {
                command,
                container: build.to_string(),
                source,
            })?;
        if captured.stopped || captured.exit != 0 {
            return Err(ProbeError::Ended {
                command,
                container: build.to_string(),
                outcome: if captured.stopped {
                    "aborted".to_string()
                } else {
                    format!("exit code {}", captured.exit)
                },
            });
        }
        parse_id(command, &captured)
    }

    /// Runs `script` in the container `id` as a stage is run (started again, the script on its
    /// stdin, stopped on cancel), keeping its output out of the job log.
    async fn run_captured(
        &self,
        id: &str,
        kind: &'static str,
        script: &str,
        cancel: &CancellationToken,
    ) -> Result<Captured, ExecutorError> {
        let started = stage::start(self.docker()?.clone(), id.to_string(), kind).await?;
        let sink = CaptureSink::default();
        let ended = supervise(
            started,
            script.as_bytes(),
            sink.clone(),
            cancel,
            self.kill_timeouts,
        )
        .await?;
        let mut captured = sink
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        captured.exit = ended.exit;
        captured.stopped = ended.stopped;
        Ok(captured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(stdout: &str, stderr: &str) -> Captured {
        Captured {
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            ..Captured::default()
        }
    }

    #[test]
    fn only_an_empty_or_root_image_user_counts_as_root() {
        assert!(image_runs_as_root(""));
        assert!(image_runs_as_root("root"));
        // Upstream asks these for their ids, which then say 0.
        assert!(!image_runs_as_root("0"));
        assert!(!image_runs_as_root("root:root"));
        assert!(!image_runs_as_root("1000:1000"));
    }

    #[test]
    fn ids_are_the_last_line_of_stdout() {
        let id = |stdout, stderr| parse_id("id -u", &captured(stdout, stderr));
        assert_eq!(id("1000\n", "").unwrap(), 1000);
        // An entrypoint or profile may print first.
        assert_eq!(id("welcome\n  42  \n\n", "").unwrap(), 42);
        assert_eq!(
            id("", " id: not found \n").unwrap_err().to_string(),
            "id command returned no output on stdout (stderr: id: not found)"
        );
        assert_eq!(
            id("ci\n", "").unwrap_err().to_string(),
            "parsing \"id -u\" output \"ci\" (stderr: )"
        );
    }

    #[test]
    fn ownership_messages_and_script_are_upstreams() {
        assert_eq!(
            chown_notice("/builds/group/project", 1000, 1001),
            "Changing ownership of files at \"/builds/group/project\" to 1000:1001"
        );
        assert_eq!(
            chown_script("/builds/group/project.tmp", 1000, 1001),
            "chown -RP -- 1000:1001 '/builds/group/project.tmp'\n"
        );
        assert_eq!(
            chown_script("/builds/it's $HOME", 1, 2),
            "chown -RP -- 1:2 '/builds/it'\\''s $HOME'\n"
        );
        assert_eq!(
            UMASK_DISABLED_NOTICE,
            "Not using umask - FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR is set!"
        );
    }

    #[test]
    fn probes_keep_a_bounded_output() {
        let mut sink = CaptureSink::default();
        for _ in 0..3 {
            sink.write(Chunk {
                kind: runner_core::log::StreamKind::Stdout,
                data: vec![b'1'; 600],
            });
        }
        sink.write(Chunk {
            kind: runner_core::log::StreamKind::Stderr,
            data: b"warn".to_vec(),
        });
        let captured = sink.0.lock().unwrap().clone();
        assert_eq!(captured.stdout.len(), CAPTURE_LIMIT);
        assert_eq!(captured.stderr, b"warn");
    }
}
