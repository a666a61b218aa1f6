//! The seam between the build driver and script generation (implemented by the `shells` crate).

use crate::build::BuildContext;
use crate::stage::Stage;

/// Why a stage script could not be generated; fails the stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScriptError(pub String);

/// Writes the script of one stage. `Ok(None)` means the stage has nothing to do and is skipped
/// entirely (no header, no section, no executor call).
pub trait ScriptGenerator: Send + Sync {
    /// The script of `stage` for `build`; `Ok(None)` when the stage has nothing to do.
    fn generate(&self, stage: &Stage, build: &BuildContext) -> Result<Option<String>, ScriptError>;
}

/// How an executor starts the shell that reads a stage script on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellCommand {
    /// `bash` or `sh`.
    pub name: String,
    /// The program to run: the shell itself, or `su` when scripts run as another user.
    pub program: String,
    /// Its arguments (`-l` for a login shell; for `su`, the shell and user to switch to).
    pub args: Vec<String>,
}
