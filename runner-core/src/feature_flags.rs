//! Upstream feature flags: one typed enum of every flag (so a misspelled flag does not compile),
//! their defaults, and the one resolution of `populateFeatureFlags` that every caller uses.

use std::collections::BTreeMap;

use crate::variables::{parse_bool, runner_and_job_variables, JobVariable, Variables};

/// Declares [`FeatureFlag`] from `Variant = ("FF_NAME", default)` lines, in upstream's order.
macro_rules! feature_flags {
    ($($variant:ident = ($name:literal, $default:literal),)*) => {
        /// One upstream feature flag.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum FeatureFlag {
            $(
                #[doc = concat!("`", $name, "` (default `", stringify!($default), "`).")]
                $variant,
            )*
        }

        impl FeatureFlag {
            /// Every flag upstream knows, in upstream's order.
            pub const ALL: &'static [FeatureFlag] = &[$(FeatureFlag::$variant,)*];

            /// The flag's name as a variable or a `[runners.feature_flags]` key.
            pub const fn name(self) -> &'static str {
                match self {
                    $(FeatureFlag::$variant => $name,)*
                }
            }

            /// The flag's value when nothing sets it.
            pub const fn default_value(self) -> bool {
                match self {
                    $(FeatureFlag::$variant => $default,)*
                }
            }
        }
    };
}

feature_flags! {
    TestFeature = ("FF_TEST_FEATURE", false),
    NetworkPerBuild = ("FF_NETWORK_PER_BUILD", false),
    UseLegacyKubernetesExecutionStrategy = ("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY", false),
    UseDirectDownload = ("FF_USE_DIRECT_DOWNLOAD", true),
    UseFastzip = ("FF_USE_FASTZIP", true),
    DisableUmaskForDockerExecutor = ("FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR", false),
    EnableBashExitCodeCheck = ("FF_ENABLE_BASH_EXIT_CODE_CHECK", false),
    UseWindowsLegacyProcessStrategy = ("FF_USE_WINDOWS_LEGACY_PROCESS_STRATEGY", false),
    UseLegacyBashEval = ("FF_USE_LEGACY_BASH_EVAL", false),
    UsePowershellPathResolver = ("FF_USE_POWERSHELL_PATH_RESOLVER", false),
    UseDynamicTraceForceSendInterval = ("FF_USE_DYNAMIC_TRACE_FORCE_SEND_INTERVAL", false),
    ScriptSections = ("FF_SCRIPT_SECTIONS", false),
    EnableJobCleanup = ("FF_ENABLE_JOB_CLEANUP", false),
    KubernetesHonorEntrypoint = ("FF_KUBERNETES_HONOR_ENTRYPOINT", false),
    PosixlyCorrectEscapes = ("FF_POSIXLY_CORRECT_ESCAPES", false),
    ResolveFullTlsChain = ("FF_RESOLVE_FULL_TLS_CHAIN", false),
    DisablePowershellStdin = ("FF_DISABLE_POWERSHELL_STDIN", false),
    UsePodActiveDeadlineSeconds = ("FF_USE_POD_ACTIVE_DEADLINE_SECONDS", true),
    UseAdvancedPodSpecConfiguration = ("FF_USE_ADVANCED_POD_SPEC_CONFIGURATION", false),
    SecretResolvingFailsIfMissing = ("FF_SECRET_RESOLVING_FAILS_IF_MISSING", true),
    PrintPodEvents = ("FF_PRINT_POD_EVENTS", false),
    UseGitBundleUris = ("FF_USE_GIT_BUNDLE_URIS", true),
    UseGitNativeClone = ("FF_USE_GIT_NATIVE_CLONE", false),
    UseDumbInitWithKubernetesExecutor = ("FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR", false),
    UseInitWithDockerExecutor = ("FF_USE_INIT_WITH_DOCKER_EXECUTOR", false),
    LogImagesConfiguredForJob = ("FF_LOG_IMAGES_CONFIGURED_FOR_JOB", false),
    UseDockerAutoscalerDialStdio = ("FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO", true),
    CleanUpFailedCacheExtract = ("FF_CLEAN_UP_FAILED_CACHE_EXTRACT", false),
    UseWindowsJobObject = ("FF_USE_WINDOWS_JOB_OBJECT", false),
    Timestamps = ("FF_TIMESTAMPS", true),
    DisableAutomaticTokenRotation = ("FF_DISABLE_AUTOMATIC_TOKEN_ROTATION", false),
    UseLegacyGcsCacheAdapter = ("FF_USE_LEGACY_GCS_CACHE_ADAPTER", false),
    DisableUmaskForKubernetesExecutor = ("FF_DISABLE_UMASK_FOR_KUBERNETES_EXECUTOR", false),
    UseLegacyS3CacheAdapter = ("FF_USE_LEGACY_S3_CACHE_ADAPTER", false),
    GitUrlsWithoutTokens = ("FF_GIT_URLS_WITHOUT_TOKENS", false),
    WaitForPodToBeReachable = ("FF_WAIT_FOR_POD_TO_BE_REACHABLE", false),
    MaskAllDefaultTokens = ("FF_MASK_ALL_DEFAULT_TOKENS", true),
    ExportHighCardinalityMetrics = ("FF_EXPORT_HIGH_CARDINALITY_METRICS", false),
    UseFleetingAcquireHeartbeats = ("FF_USE_FLEETING_ACQUIRE_HEARTBEATS", false),
    UseExponentialBackoffStageRetry = ("FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY", true),
    UseAdaptiveRequestConcurrency = ("FF_USE_ADAPTIVE_REQUEST_CONCURRENCY", true),
    UseGitalyCorrelationId = ("FF_USE_GITALY_CORRELATION_ID", true),
    UseGitProactiveAuth = ("FF_USE_GIT_PROACTIVE_AUTH", false),
    HashCacheKeys = ("FF_HASH_CACHE_KEYS", false),
    EnableJobInputsInterpolation = ("FF_ENABLE_JOB_INPUTS_INTERPOLATION", true),
    UseJobRouter = ("FF_USE_JOB_ROUTER", false),
    ScriptToStepMigration = ("FF_SCRIPT_TO_STEP_MIGRATION", false),
    UseParallelCacheTransfer = ("FF_USE_PARALLEL_CACHE_TRANSFER", false),
    UseParallelArtifactTransfer = ("FF_USE_PARALLEL_ARTIFACT_TRANSFER", false),
    Concrete = ("FF_CONCRETE", false),
    SuspendableEnvironments = ("FF_SUSPENDABLE_ENVIRONMENTS", false),
    UseNativeContainerStop = ("FF_USE_NATIVE_CONTAINER_STOP", false),
}

impl FeatureFlag {
    /// The flag named `name`, if upstream has one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|flag| flag.name() == name)
    }
}

impl std::fmt::Display for FeatureFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The resolved value of every flag for one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureFlags {
    values: BTreeMap<FeatureFlag, bool>,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        Self {
            values: FeatureFlag::ALL
                .iter()
                .map(|flag| (*flag, flag.default_value()))
                .collect(),
        }
    }
}

impl FeatureFlags {
    /// Resolves flags: the default, then a variable when it parses as a bool, but
    /// `[runners.feature_flags]` always wins. A defined value that does not parse (an empty one
    /// too) produces a warning and leaves the default.
    pub fn resolve(
        config: &BTreeMap<FeatureFlag, bool>,
        variables: &Variables,
    ) -> (Self, Vec<String>) {
        let mut flags = Self::default();
        let mut warnings = Vec::new();
        for flag in FeatureFlag::ALL {
            if let Some(value) = config.get(flag) {
                flags.values.insert(*flag, *value);
                continue;
            }
            // Only an undefined flag keeps its default quietly; an empty value is no bool either.
            if variables.find(flag.name()).is_none() {
                continue;
            }
            let raw = variables.value(flag.name());
            match parse_bool(&raw) {
                Some(value) => {
                    flags.values.insert(*flag, value);
                }
                None => warnings.push(format!(
                    "{flag}: could not parse feature flag, expected bool, got {raw}"
                )),
            }
        }
        (flags, warnings)
    }

    /// The flags of one job as every part of the runner sees them: the runner's `environment`
    /// entries first and the job's variables after them (a job variable wins), under
    /// `[runners.feature_flags]`.
    pub fn for_job(
        config: &BTreeMap<FeatureFlag, bool>,
        environment: &[String],
        job_variables: &[JobVariable],
    ) -> (Self, Vec<String>) {
        Self::resolve(
            config,
            &runner_and_job_variables(environment, job_variables),
        )
    }

    /// Whether `flag` is on for this build.
    pub fn enabled(&self, flag: FeatureFlag) -> bool {
        self.values
            .get(&flag)
            .copied()
            .unwrap_or(flag.default_value())
    }

    /// Sets `flag` (a test, or an executor that forces one).
    pub fn set(&mut self, flag: FeatureFlag, value: bool) {
        self.values.insert(flag, value);
    }

    /// The variables injected into the job: every flag with its resolved value, in upstream order.
    pub fn variables(&self) -> Vec<JobVariable> {
        FeatureFlag::ALL
            .iter()
            .map(|flag| JobVariable::internal(flag.name(), self.enabled(*flag).to_string()))
            .collect()
    }

    /// `FF_A:true, FF_B:false` for flags whose value differs from the default (header line).
    pub fn non_default_summary(&self) -> String {
        FeatureFlag::ALL
            .iter()
            .filter(|flag| self.enabled(**flag) != flag.default_value())
            .map(|flag| format!("{flag}:{}", self.enabled(*flag)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `[runners.feature_flags]` as written (any key) made typed: the flags upstream has, and the
/// names that are no flag (upstream ignores them silently; the loader warns about each).
pub fn from_config(raw: &BTreeMap<String, bool>) -> (BTreeMap<FeatureFlag, bool>, Vec<&str>) {
    let mut flags = BTreeMap::new();
    let mut unknown = Vec::new();
    for (name, value) in raw {
        match FeatureFlag::from_name(name) {
            Some(flag) => {
                flags.insert(flag, *value);
            }
            None => unknown.push(name.as_str()),
        }
    }
    (flags, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_wins_over_job_variables_and_job_variables_over_defaults() {
        let config = BTreeMap::from([(FeatureFlag::Timestamps, false)]);
        let variables = Variables::new(vec![
            JobVariable::new("FF_TIMESTAMPS", "true"),
            JobVariable::new("FF_SCRIPT_SECTIONS", "1"),
            JobVariable::new("FF_ENABLE_JOB_CLEANUP", "maybe"),
            JobVariable::new("FF_USE_FASTZIP", ""),
        ]);
        let (flags, warnings) = FeatureFlags::resolve(&config, &variables);
        assert!(!flags.enabled(FeatureFlag::Timestamps));
        assert!(flags.enabled(FeatureFlag::ScriptSections));
        assert!(!flags.enabled(FeatureFlag::EnableJobCleanup));
        assert!(flags.enabled(FeatureFlag::UseFastzip));
        // Go's ParseBool refuses an empty string too; the text ends in a space, as upstream's.
        assert_eq!(
            warnings,
            [
                "FF_USE_FASTZIP: could not parse feature flag, expected bool, got ",
                "FF_ENABLE_JOB_CLEANUP: could not parse feature flag, expected bool, got maybe",
            ]
        );
        assert_eq!(
            flags.non_default_summary(),
            "FF_SCRIPT_SECTIONS:true, FF_TIMESTAMPS:false"
        );
    }

    #[test]
    fn a_job_variable_wins_over_the_runner_environment() {
        let (flags, _) = FeatureFlags::for_job(
            &BTreeMap::new(),
            &[
                "FF_SCRIPT_SECTIONS=true".into(),
                "FF_TIMESTAMPS=false".into(),
            ],
            &[JobVariable::new("FF_SCRIPT_SECTIONS", "false")],
        );
        assert!(!flags.enabled(FeatureFlag::ScriptSections));
        assert!(!flags.enabled(FeatureFlag::Timestamps));
    }

    #[test]
    fn names_round_trip_and_unknown_config_keys_are_named() {
        for flag in FeatureFlag::ALL {
            assert_eq!(FeatureFlag::from_name(flag.name()), Some(*flag));
            assert!(flag.name().starts_with("FF_"));
        }
        assert_eq!(FeatureFlag::ALL.len(), 52);
        let raw = BTreeMap::from([
            ("FF_NETWORK_PER_BUILD".to_string(), true),
            ("FF_NETWORK_PER_BUIDL".to_string(), true),
        ]);
        let (flags, warnings) = from_config(&raw);
        assert_eq!(
            flags,
            BTreeMap::from([(FeatureFlag::NetworkPerBuild, true)])
        );
        assert_eq!(warnings, ["FF_NETWORK_PER_BUIDL"]);
    }
}
