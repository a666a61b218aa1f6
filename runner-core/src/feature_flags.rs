//! Upstream feature flags: names, defaults and the resolution rules of `populateFeatureFlags`.

use std::collections::BTreeMap;

use crate::variables::{parse_bool, JobVariable, Variables};

/// Every flag upstream knows, in upstream's order, with its default.
pub const FLAGS: &[(&str, bool)] = &[
    ("FF_TEST_FEATURE", false),
    ("FF_NETWORK_PER_BUILD", false),
    ("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY", false),
    ("FF_USE_DIRECT_DOWNLOAD", true),
    ("FF_USE_FASTZIP", true),
    ("FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR", false),
    ("FF_ENABLE_BASH_EXIT_CODE_CHECK", false),
    ("FF_USE_WINDOWS_LEGACY_PROCESS_STRATEGY", false),
    ("FF_USE_LEGACY_BASH_EVAL", false),
    ("FF_USE_POWERSHELL_PATH_RESOLVER", false),
    ("FF_USE_DYNAMIC_TRACE_FORCE_SEND_INTERVAL", false),
    ("FF_SCRIPT_SECTIONS", false),
    ("FF_ENABLE_JOB_CLEANUP", false),
    ("FF_KUBERNETES_HONOR_ENTRYPOINT", false),
    ("FF_POSIXLY_CORRECT_ESCAPES", false),
    ("FF_RESOLVE_FULL_TLS_CHAIN", false),
    ("FF_DISABLE_POWERSHELL_STDIN", false),
    ("FF_USE_POD_ACTIVE_DEADLINE_SECONDS", true),
    ("FF_USE_ADVANCED_POD_SPEC_CONFIGURATION", false),
    ("FF_SECRET_RESOLVING_FAILS_IF_MISSING", true),
    ("FF_PRINT_POD_EVENTS", false),
    ("FF_USE_GIT_BUNDLE_URIS", true),
    ("FF_USE_GIT_NATIVE_CLONE", false),
    ("FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR", false),
    ("FF_USE_INIT_WITH_DOCKER_EXECUTOR", false),
    ("FF_LOG_IMAGES_CONFIGURED_FOR_JOB", false),
    ("FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO", true),
    ("FF_CLEAN_UP_FAILED_CACHE_EXTRACT", false),
    ("FF_USE_WINDOWS_JOB_OBJECT", false),
    ("FF_TIMESTAMPS", true),
    ("FF_DISABLE_AUTOMATIC_TOKEN_ROTATION", false),
    ("FF_USE_LEGACY_GCS_CACHE_ADAPTER", false),
    ("FF_DISABLE_UMASK_FOR_KUBERNETES_EXECUTOR", false),
    ("FF_USE_LEGACY_S3_CACHE_ADAPTER", false),
    ("FF_GIT_URLS_WITHOUT_TOKENS", false),
    ("FF_WAIT_FOR_POD_TO_BE_REACHABLE", false),
    ("FF_MASK_ALL_DEFAULT_TOKENS", true),
    ("FF_EXPORT_HIGH_CARDINALITY_METRICS", false),
    ("FF_USE_FLEETING_ACQUIRE_HEARTBEATS", false),
    ("FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY", true),
    ("FF_USE_ADAPTIVE_REQUEST_CONCURRENCY", true),
    ("FF_USE_GITALY_CORRELATION_ID", true),
    ("FF_USE_GIT_PROACTIVE_AUTH", false),
    ("FF_HASH_CACHE_KEYS", false),
    ("FF_ENABLE_JOB_INPUTS_INTERPOLATION", true),
    ("FF_USE_JOB_ROUTER", false),
    ("FF_SCRIPT_TO_STEP_MIGRATION", false),
    ("FF_USE_PARALLEL_CACHE_TRANSFER", false),
    ("FF_USE_PARALLEL_ARTIFACT_TRANSFER", false),
    ("FF_CONCRETE", false),
    ("FF_SUSPENDABLE_ENVIRONMENTS", false),
    ("FF_USE_NATIVE_CONTAINER_STOP", false),
];

/// The resolved value of every flag for one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureFlags {
    values: BTreeMap<&'static str, bool>,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        Self {
            values: FLAGS.iter().copied().collect(),
        }
    }
}

impl FeatureFlags {
    /// Resolves flags: the default, then a job variable (or `environment` entry) when it parses as
    /// a bool, but `[runners.feature_flags]` always wins. Unparsable values produce a warning.
    pub fn resolve(config: &BTreeMap<String, bool>, variables: &Variables) -> (Self, Vec<String>) {
        let mut flags = Self::default();
        let mut warnings = Vec::new();
        for (name, _) in FLAGS {
            if let Some(value) = config.get(*name) {
                flags.values.insert(name, *value);
                continue;
            }
            let raw = variables.value(name);
            if raw.is_empty() {
                continue;
            }
            match parse_bool(&raw) {
                Some(value) => {
                    flags.values.insert(name, value);
                }
                None => warnings.push(format!(
                    "{name}: could not parse feature flag, expected bool, got {raw}"
                )),
            }
        }
        (flags, warnings)
    }

    pub fn enabled(&self, name: &str) -> bool {
        self.values.get(name).copied().unwrap_or(false)
    }

    pub fn set(&mut self, name: &'static str, value: bool) {
        self.values.insert(name, value);
    }

    /// The variables injected into the job: every flag with its resolved value, in upstream order.
    pub fn variables(&self) -> Vec<JobVariable> {
        FLAGS
            .iter()
            .map(|(name, _)| JobVariable::internal(*name, self.enabled(name).to_string()))
            .collect()
    }

    /// `FF_A:true, FF_B:false` for flags whose value differs from the default (header line).
    pub fn non_default_summary(&self) -> String {
        FLAGS
            .iter()
            .filter(|(name, default)| self.enabled(name) != *default)
            .map(|(name, _)| format!("{name}:{}", self.enabled(name)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_wins_over_job_variables_and_job_variables_over_defaults() {
        let config = BTreeMap::from([("FF_TIMESTAMPS".to_string(), false)]);
        let variables = Variables::new(vec![
            JobVariable::new("FF_TIMESTAMPS", "true"),
            JobVariable::new("FF_SCRIPT_SECTIONS", "1"),
            JobVariable::new("FF_ENABLE_JOB_CLEANUP", "maybe"),
        ]);
        let (flags, warnings) = FeatureFlags::resolve(&config, &variables);
        assert!(!flags.enabled("FF_TIMESTAMPS"));
        assert!(flags.enabled("FF_SCRIPT_SECTIONS"));
        assert!(!flags.enabled("FF_ENABLE_JOB_CLEANUP"));
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            flags.non_default_summary(),
            "FF_SCRIPT_SECTIONS:true, FF_TIMESTAMPS:false"
        );
    }
}
