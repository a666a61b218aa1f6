//! Stage script generation for `bash` and `sh`: upstream's shell writer and stage contents.
//!
//! [`BashShell`] implements runner-core's `ScriptGenerator`: given a stage and the resolved build,
//! it returns a self-contained script (or `None` when the stage has nothing to do). Generation is
//! pure and synchronous: no I/O, no processes.
//!
//! [`s3`] signs the distributed cache's presigned URLs the scripts pass to the cache helpers.
//!
//! This crate depends only on `runner-core` (and hmac/sha2 for the S3 signatures); it must not
//! depend on `network`, the executors or `commands`.

mod escape;
pub mod s3;
mod stages;
mod writer;

pub use escape::{go_quote, posix_shell_escape, shell_escape};
pub use stages::sanitize_cache_key;

use runner_core::build::BuildContext;
use runner_core::executor::ShellType;
use runner_core::feature_flags::FeatureFlag;
use runner_core::script::{ScriptError, ScriptGenerator, ShellCommand};
use runner_core::stage::Stage;

/// The shells this crate writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellKind {
    /// GNU bash (`shell = "bash"`, the default); scripts may use bash's `$'...'` quoting.
    Bash,
    /// A POSIX `sh` such as dash (`shell = "sh"`); scripts use only POSIX double quotes.
    Sh,
}

impl ShellKind {
    /// Parses a configured shell name; `None` for shells this runner does not support.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bash" => Some(Self::Bash),
            "sh" => Some(Self::Sh),
            _ => None,
        }
    }

    /// The name as config.toml's `shell` spells it, also the program that is started.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bash => "bash",
            Self::Sh => "sh",
        }
    }
}

/// Generates bash or sh scripts (the two share one generator, as upstream).
#[derive(Debug, Clone, Copy)]
pub struct BashShell {
    /// The shell the scripts are written for, unless the build's shell override (the custom
    /// executor's `config_exec`) names another.
    pub kind: ShellKind,
}

impl BashShell {
    /// A generator for `kind` scripts, the runner's `shell` setting.
    pub fn new(kind: ShellKind) -> Self {
        Self { kind }
    }

    /// How a local or remote executor starts this shell: `bash`, or `bash -l` for login shells;
    /// with a `user`, `su -s /bin/<shell> <user> -c "<shell> -l"`.
    pub fn command(&self, shell_type: ShellType, user: Option<&str>) -> ShellCommand {
        let name = self.kind.name();
        let mut args = Vec::new();
        let mut command_line = name.to_string();
        if shell_type == ShellType::Login {
            args.push("-l".to_string());
            command_line.push_str(" -l");
        }
        match user {
            Some(user) if !user.is_empty() => ShellCommand {
                name: name.into(),
                program: "su".into(),
                args: vec![
                    "-s".into(),
                    format!("/bin/{name}"),
                    user.into(),
                    "-c".into(),
                    command_line,
                ],
            },
            _ => ShellCommand {
                name: name.into(),
                program: name.into(),
                args,
            },
        }
    }
}

impl ScriptGenerator for BashShell {
    fn generate(&self, stage: &Stage, build: &BuildContext) -> Result<Option<String>, ScriptError> {
        let info = stages::Info::new(build);
        // An executor may have switched the shell in prepare (custom executor's config_exec).
        let kind = build
            .shell_override
            .as_deref()
            .and_then(ShellKind::from_name)
            .unwrap_or(self.kind);
        let mut writer = writer::BashWriter::new(kind.name(), &build.dirs.tmp_dir())
            .with_private_tmp(build.defaults.private_temporary_dir);
        writer.check_for_errors = build.flags.enabled(FeatureFlag::EnableBashExitCodeCheck);
        writer.legacy_eval = build.flags.enabled(FeatureFlag::UseLegacyBashEval);
        writer.stage_markers = build.defaults.stage_markers;
        // ANSI-C `$'...'` quoting is a bash (and busybox) extension that dash, Debian's `sh`,
        // cannot parse, so `sh` scripts always use POSIX double quotes.
        writer.posix_escape =
            kind == ShellKind::Sh || build.flags.enabled(FeatureFlag::PosixlyCorrectEscapes);
        if !stages::write_stage(&mut writer, stage, &info)? {
            return Ok(None);
        }
        Ok(Some(writer.finish(build.settings.ci_debug_trace)))
    }
}
