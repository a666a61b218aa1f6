//! GitLab failure reasons and the error that carries one (`BuildError`).

use std::fmt;

/// The failure reasons the runner knows (`common/network.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// A user script exited non-zero (`script_failure`).
    ScriptFailure,
    /// The runner or the executor's backend failed (`runner_system_failure`).
    RunnerSystemFailure,
    /// The job, script, prepare or get_sources timeout ran out (`job_execution_timeout`).
    JobExecutionTimeout,
    /// An image could not be pulled for a reason other than the network or the configuration
    /// (`image_pull_failure`).
    ImagePullFailure,
    /// No more specific reason applies (`unknown_failure`); also what GitLab gets for reasons
    /// it does not know.
    UnknownFailure,
    /// The runner's configuration or the job's request cannot work: bad inputs, a
    /// `GIT_CLONE_PATH` outside the builds root, a missing image (`runner_configuration_error`).
    RunnerConfigurationError,
    /// Something outside the runner was unreachable, such as a registry during a pull
    /// (`runner_external_dependency_failure`).
    RunnerExternalDependencyFailure,
    /// The runner stopped the job while shutting down (`runner_interrupted`).
    RunnerInterrupted,
    /// The artifacts of a job in `dependencies` are gone: the downloader exited with
    /// [`MISSING_DEPENDENCY_EXIT_CODE`] (`missing_dependency_failure`).
    MissingDependencyFailure,
    /// Internal only: GitLab has no such reason and receives `unknown_failure`.
    JobCanceled,
}

impl FailureReason {
    /// The reason as GitLab's API spells it (`script_failure`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScriptFailure => "script_failure",
            Self::RunnerSystemFailure => "runner_system_failure",
            Self::JobExecutionTimeout => "job_execution_timeout",
            Self::ImagePullFailure => "image_pull_failure",
            Self::UnknownFailure => "unknown_failure",
            Self::RunnerConfigurationError => "runner_configuration_error",
            Self::RunnerExternalDependencyFailure => "runner_external_dependency_failure",
            Self::RunnerInterrupted => "runner_interrupted",
            Self::MissingDependencyFailure => "missing_dependency_failure",
            Self::JobCanceled => "job_canceled",
        }
    }

    /// The reason to send, given the reasons this GitLab supports (`features.failure_reasons`).
    ///
    /// `script_failure`, `runner_system_failure` and `job_execution_timeout` are always supported;
    /// others fall back through upstream's compatibility chain, then to `unknown_failure`.
    pub fn for_gitlab(self, supported: &[String]) -> &'static str {
        const ALWAYS: [&str; 3] = [
            "script_failure",
            "runner_system_failure",
            "job_execution_timeout",
        ];
        let is_supported =
            |name: &str| ALWAYS.contains(&name) || supported.iter().any(|s| s == name);
        let mut reason = self;
        for _ in 0..10 {
            if is_supported(reason.as_str()) {
                return reason.as_str();
            }
            reason = match reason {
                Self::ImagePullFailure => Self::RunnerSystemFailure,
                Self::RunnerConfigurationError => Self::ScriptFailure,
                Self::RunnerExternalDependencyFailure => Self::RunnerSystemFailure,
                // Upstream reports a failed dependency download as a script failure.
                Self::MissingDependencyFailure => Self::ScriptFailure,
                _ => return "unknown_failure",
            };
        }
        "unknown_failure"
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How `artifacts-downloader` exits when a dependency's archive is not there (404), so the job
/// can end as `missing_dependency_failure`; other failures exit 1, as upstream's helper does.
pub const MISSING_DEPENDENCY_EXIT_CODE: i32 = 3;

/// A job failure with the reason GitLab shows and, for scripts, the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// Why the job failed; [`FailureReason::for_gitlab`] maps it to what GitLab accepts.
    pub reason: FailureReason,
    /// What went wrong, shown after `Job failed:` in the log.
    pub message: String,
    /// The script's exit code; 0 when there is none (omitted from the update).
    pub exit_code: i32,
}

impl BuildError {
    /// A failure with `reason` and no exit code.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            exit_code: 0,
        }
    }

    /// A `script_failure` with the script's exit code.
    pub fn script(message: impl Into<String>, exit_code: i32) -> Self {
        Self {
            reason: FailureReason::ScriptFailure,
            message: message.into(),
            exit_code,
        }
    }

    /// A `runner_system_failure`.
    pub fn system(message: impl Into<String>) -> Self {
        Self::new(FailureReason::RunnerSystemFailure, message)
    }

    /// Whether it is a `runner_system_failure`, logged as `Job failed (system failure)`.
    pub fn is_system_failure(&self) -> bool {
        self.reason == FailureReason::RunnerSystemFailure
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

/// Reinterprets the low 32 bits of an exit status as signed, as upstream does (`common/exit_code.go`).
pub fn normalize_exit_code(code: i64) -> i32 {
    code as u32 as i32
}

/// An error and its causes on one line, `: `-separated (reqwest, io and our own errors keep
/// the interesting part in `source`).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Upstream's `ClassifyImagePullFailure`: the reason of a failed image pull, from the error's
/// words. Network trouble is the registry's (`runner_external_dependency_failure`, and worth
/// another try); a missing image or refused credentials are the configuration's; anything
/// else is `image_pull_failure`.
pub fn classify_image_pull_failure(message: &str) -> FailureReason {
    let lower = message.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|word| lower.contains(word));
    if any(&[
        "dial tcp",
        "connection refused",
        "no such host",
        "i/o timeout",
        "tls handshake",
        "client.timeout exceeded",
        "request canceled",
        "connection reset",
    ]) {
        FailureReason::RunnerExternalDependencyFailure
    } else if any(&[
        "not found",
        "manifest unknown",
        "pull access denied",
        "access to the resource is denied",
        "no basic auth credentials",
        "repository does not exist or may require",
        "unauthorized",
        "authentication required",
    ]) {
        FailureReason::RunnerConfigurationError
    } else {
        FailureReason::ImagePullFailure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fall_back_through_the_compatibility_chain() {
        let old: Vec<String> = vec![];
        assert_eq!(
            FailureReason::ImagePullFailure.for_gitlab(&old),
            "runner_system_failure"
        );
        assert_eq!(
            FailureReason::RunnerConfigurationError.for_gitlab(&old),
            "script_failure"
        );
        assert_eq!(
            FailureReason::RunnerExternalDependencyFailure.for_gitlab(&old),
            "runner_system_failure"
        );
        assert_eq!(
            FailureReason::JobCanceled.for_gitlab(&old),
            "unknown_failure"
        );
        assert_eq!(
            FailureReason::RunnerInterrupted.for_gitlab(&old),
            "unknown_failure"
        );
        let new = vec![
            "image_pull_failure".to_string(),
            "runner_interrupted".to_string(),
        ];
        assert_eq!(
            FailureReason::ImagePullFailure.for_gitlab(&new),
            "image_pull_failure"
        );
        assert_eq!(
            FailureReason::RunnerInterrupted.for_gitlab(&new),
            "runner_interrupted"
        );
        assert_eq!(
            FailureReason::ScriptFailure.for_gitlab(&new),
            "script_failure"
        );
    }

    #[test]
    fn exit_codes_are_sign_reinterpreted() {
        assert_eq!(normalize_exit_code(0xFFFF_FFFF), -1);
        assert_eq!(normalize_exit_code(42), 42);
    }
}
