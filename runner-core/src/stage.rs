//! Build stages: the exact names upstream uses in section markers, metrics and driver argv.

use std::fmt;

/// One stage of a build; the driver runs them in the order listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Resolving the job's `secrets`; never run, as jobs with secrets fail before it.
    ResolveSecrets,
    /// Preparing the executor (with retries); a log section, not a script.
    PrepareExecutor,
    /// The prepare script (`prepare_script`), which reports where the job runs.
    Prepare,
    /// Fetching and checking out the repository, with the get_sources hooks.
    GetSources,
    /// Emptying the project directory before get_sources is tried again.
    ClearWorktree,
    /// Restoring the cache archives.
    RestoreCache,
    /// Downloading the artifacts of the job's `dependencies`.
    DownloadArtifacts,
    /// A user step: `step_<lowercased name>`.
    Step(String),
    /// The job's after_script, run after the steps whether they failed or not (but not after an
    /// abort or the job timeout).
    AfterScript,
    /// Saving the cache after the scripts succeeded (`archive_cache`).
    ArchiveOnSuccessCache,
    /// Saving the cache after the scripts failed.
    ArchiveOnFailureCache,
    /// Uploading the `on_success` and `always` artifacts after the scripts succeeded.
    UploadOnSuccessArtifacts,
    /// Uploading the `on_failure` and `always` artifacts after the scripts failed.
    UploadOnFailureArtifacts,
    /// Removing the file variables and the git credentials (`cleanup_file_variables`); runs
    /// even after a panic.
    Cleanup,
}

impl Stage {
    /// The stage of the step called `name`, lowercased as upstream names it.
    pub fn step(name: &str) -> Self {
        Self::Step(name.to_lowercase())
    }

    /// The stage string, e.g. `get_sources` or `step_script`.
    pub fn name(&self) -> String {
        match self {
            Self::Step(step) => format!("step_{step}"),
            other => other.static_name().to_string(),
        }
    }

    fn static_name(&self) -> &'static str {
        match self {
            Self::ResolveSecrets => "resolve_secrets",
            Self::PrepareExecutor => "prepare_executor",
            Self::Prepare => "prepare_script",
            Self::GetSources => "get_sources",
            Self::ClearWorktree => "clear_worktree",
            Self::RestoreCache => "restore_cache",
            Self::DownloadArtifacts => "download_artifacts",
            Self::Step(_) => "step_",
            Self::AfterScript => "after_script",
            Self::ArchiveOnSuccessCache => "archive_cache",
            Self::ArchiveOnFailureCache => "archive_cache_on_failure",
            Self::UploadOnSuccessArtifacts => "upload_artifacts_on_success",
            Self::UploadOnFailureArtifacts => "upload_artifacts_on_failure",
            Self::Cleanup => "cleanup_file_variables",
        }
    }

    /// The bold cyan header printed before the stage runs.
    pub fn description(&self) -> String {
        match self {
            Self::ResolveSecrets => "Resolving secrets".into(),
            Self::PrepareExecutor => "Preparing the executor".into(),
            Self::Prepare => "Preparing environment".into(),
            Self::GetSources => "Getting source from Git repository".into(),
            Self::ClearWorktree => {
                "Deleting all tracked and untracked files due to source fetch failure".into()
            }
            Self::RestoreCache => "Restoring cache".into(),
            Self::DownloadArtifacts => "Downloading artifacts".into(),
            Self::Step(_) => format!("Executing \"{}\" stage of the job script", self.name()),
            Self::AfterScript => "Running after_script".into(),
            Self::ArchiveOnSuccessCache => "Saving cache for successful job".into(),
            Self::ArchiveOnFailureCache => "Saving cache for failed job".into(),
            Self::UploadOnSuccessArtifacts => "Uploading artifacts for successful job".into(),
            Self::UploadOnFailureArtifacts => "Uploading artifacts for failed job".into(),
            Self::Cleanup => "Cleaning up project directory and file based variables".into(),
        }
    }

    /// Predefined stages run in the helper environment (the docker helper container).
    pub fn is_predefined(&self) -> bool {
        !matches!(self, Self::Step(_) | Self::AfterScript)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_match_upstream() {
        assert_eq!(Stage::step("Script").name(), "step_script");
        assert_eq!(Stage::step("release").name(), "step_release");
        assert_eq!(
            Stage::step("script").description(),
            "Executing \"step_script\" stage of the job script"
        );
        assert_eq!(
            Stage::ArchiveOnFailureCache.name(),
            "archive_cache_on_failure"
        );
        assert_eq!(Stage::Cleanup.name(), "cleanup_file_variables");
        assert!(Stage::GetSources.is_predefined());
        assert!(!Stage::AfterScript.is_predefined());
    }
}
