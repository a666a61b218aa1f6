//! A `gitlab-runner-rs run` with one shell-executor runner against a fake GitLab, in its own
//! temporary directory (config, builds, cache); the process dies with it.

use std::path::{Path, PathBuf};

use crate::{runner_binary, FakeGitlab, RunnerProcess};

/// The runner token every shell runner of the tests registers with.
pub const SHELL_RUNNER_TOKEN: &str = "glrt-t1_e2erunnertoken";

/// A running shell-executor runner and the temporary directory it works in.
pub struct ShellRunner {
    /// The `gitlab-runner-rs run` process; it is killed when the value is dropped.
    pub process: RunnerProcess,
    /// The runner's temporary directory, holding `config.toml`, `builds` and `cache`.
    pub dir: tempfile::TempDir,
    /// The `builds_dir` where the runner checks out and runs jobs.
    pub builds: PathBuf,
}

impl ShellRunner {
    /// Starts a runner whose `[[runners]]` entry gets `extra_runner_config` appended.
    pub fn start(gitlab: &FakeGitlab, extra_runner_config: &str) -> Self {
        let dir = tempfile::tempdir().expect("create the shell runner's temporary directory");
        let builds = dir.path().join("builds");
        std::fs::write(
            dir.path().join("config.toml"),
            Self::config(gitlab, dir.path(), 2, extra_runner_config),
        )
        .expect("write the shell runner's config.toml");
        let process = RunnerProcess::spawn(
            &runner_binary(),
            &dir.path().join("config.toml"),
            dir.path(),
            &[("RUST_LOG", "info".as_ref())],
        );
        Self {
            process,
            dir,
            builds,
        }
    }

    /// The config file `start` writes, with `concurrent` as given.
    pub fn config(
        gitlab: &FakeGitlab,
        dir: &Path,
        concurrent: u64,
        extra_runner_config: &str,
    ) -> String {
        format!(
            r#"concurrent = {concurrent}
check_interval = 1

[[runners]]
  name = "e2e"
  url = "{url}"
  token = "{SHELL_RUNNER_TOKEN}"
  executor = "shell"
  builds_dir = "{builds}"
  cache_dir = "{cache}"
  graceful_kill_timeout = 2
  {extra_runner_config}
"#,
            url = gitlab.url(),
            builds = dir.join("builds").display(),
            cache = dir.join("cache").display(),
        )
    }

    /// Where the runner's `config.toml` is.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Replaces the config file at once (write, then rename), as an operator's editor or a
    /// deployment tool does; the runner notices the new modification time.
    pub fn replace_config(&self, text: &str) {
        let staged = self.dir.path().join("config.toml.new");
        std::fs::write(&staged, text).expect("write the new config to config.toml.new");
        std::fs::rename(&staged, self.config_path())
            .expect("rename config.toml.new over the runner's config.toml");
    }

    /// Sends `signal` to the runner process itself (not its group).
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }
}
