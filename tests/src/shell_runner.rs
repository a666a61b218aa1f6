//! A `gitlab-runner-rs run` with one shell-executor runner against a fake GitLab, in its own
//! temporary directory (config, builds, cache); the process dies with it.

use std::path::{Path, PathBuf};

use crate::{runner_binary, FakeGitlab, RunnerProcess};

/// The runner token every shell runner of the tests registers with.
pub const SHELL_RUNNER_TOKEN: &str = "glrt-t1_e2erunnertoken";

pub struct ShellRunner {
    pub process: RunnerProcess,
    pub dir: tempfile::TempDir,
    pub builds: PathBuf,
}

impl ShellRunner {
    /// Starts a runner whose `[[runners]]` entry gets `extra_runner_config` appended.
    pub fn start(gitlab: &FakeGitlab, extra_runner_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let builds = dir.path().join("builds");
        std::fs::write(
            dir.path().join("config.toml"),
            Self::config(gitlab, dir.path(), 2, extra_runner_config),
        )
        .unwrap();
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

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Replaces the config file at once (write, then rename), as an operator's editor or a
    /// deployment tool does; the runner notices the new modification time.
    pub fn replace_config(&self, text: &str) {
        let staged = self.dir.path().join("config.toml.new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, self.config_path()).unwrap();
    }

    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }
}
