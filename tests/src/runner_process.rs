//! A `gitlab-runner-rs run` process in its own process group, killed with the group when
//! dropped, so no runner or job shell outlives a test.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

/// A running `gitlab-runner-rs run`, killed with its whole process group when dropped.
pub struct RunnerProcess {
    child: Child,
}

impl RunnerProcess {
    /// Starts `binary run -c <config>` in `cwd` with the extra environment `env`; its stdout is
    /// dropped and its stderr (the runner's own log) goes to the test's.
    pub fn spawn(binary: &Path, config: &Path, cwd: &Path, env: &[(&str, &OsStr)]) -> Self {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(binary);
        command
            .args(["run", "-c"])
            .arg(config)
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start gitlab-runner-rs run");
        Self { child }
    }

    /// As [`RunnerProcess::spawn`], with the runner's own log written to `log` as well, so a
    /// test can wait for a line it prints.
    pub fn spawn_logged(binary: &Path, config: &Path, cwd: &Path, log: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let file = std::fs::File::create(log).expect("create the runner's log file");
        let child = Command::new(binary)
            .args(["run", "-c"])
            .arg(config)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("start gitlab-runner-rs run");
        Self { child }
    }

    /// Starts `binary` with exactly `args` (a service unit's `ExecStart` line, say) in `cwd`,
    /// its own log written to `log`.
    pub fn spawn_args_logged(binary: &Path, args: &[String], cwd: &Path, log: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let file = std::fs::File::create(log).expect("create the runner's log file");
        let child = Command::new(binary)
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("start gitlab-runner-rs with the given arguments");
        Self { child }
    }

    /// Whether the runner is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The runner's process id (also its process group's id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the runner itself (not its group).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) touches no memory; the pid is our own child.
        #[expect(unsafe_code, reason = "std's Child can only be sent SIGKILL")]
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the runner to exit, for example after a signal, and returns how it exited.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) touches no memory; the group is our own child's.
        #[expect(unsafe_code, reason = "std cannot signal a process group")]
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
