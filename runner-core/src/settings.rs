//! Settings a job controls through its variables (`common/build_settings.go`).

use std::time::Duration;

use crate::variables::{parse_bool, Variables};

/// How get_sources provides the repository (`GIT_STRATEGY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitStrategy {
    /// Clone afresh into an emptied project directory.
    Clone,
    /// Reuse the project directory and fetch into it.
    Fetch,
    /// Run no git commands: the project directory is used as it is.
    None,
    /// Start from an empty project directory, without git.
    Empty,
}

impl GitStrategy {
    /// The strategy as `GIT_STRATEGY` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clone => "clone",
            Self::Fetch => "fetch",
            Self::None => "none",
            Self::Empty => "empty",
        }
    }
}

/// How get_sources handles submodules (`GIT_SUBMODULE_STRATEGY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmoduleStrategy {
    /// Leave submodules alone: the default, and always with the `none` and `empty` strategies.
    None,
    /// Set up and update the top-level submodules only.
    Normal,
    /// Set up and update submodules and theirs, recursively.
    Recursive,
    /// An unknown value: the get_sources stage fails with "unknown GIT_SUBMODULE_STRATEGY".
    Invalid(String),
}

/// The default after_script timeout (`AfterScriptTimeout`).
pub const DEFAULT_AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What a job's variables set about its build (upstream's `BuildSettings`); a value that
/// cannot be read keeps the default and adds a warning.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSettings {
    /// `CI_DEBUG_TRACE`: scripts print each command they run; off when the runner sets
    /// `debug_trace_disabled`.
    pub ci_debug_trace: bool,
    /// `CI_DEBUG_SERVICES`: the services' output goes into the job log; off when the
    /// runner sets `debug_trace_disabled`.
    pub ci_debug_services: bool,
    /// `GIT_CLONE_PATH`: a project directory of the job's choosing inside the builds root;
    /// empty for the computed one.
    pub git_clone_path: String,
    /// `GIT_STRATEGY`; when unset or unknown, `fetch` if the payload's `allow_git_fetch` says so,
    /// else `clone`.
    pub git_strategy: GitStrategy,
    /// `GIT_CHECKOUT` (default true): check the commit out after fetching; always false with
    /// the `none` and `empty` strategies.
    pub git_checkout: bool,
    /// `GIT_SUBMODULE_STRATEGY`.
    pub git_submodule_strategy: SubmoduleStrategy,
    /// `GIT_SUBMODULE_PATHS`: the submodules to update (pathspecs, `:(exclude)` ones too);
    /// empty for all.
    pub git_submodule_paths: Vec<String>,
    /// `GIT_SUBMODULE_DEPTH`: the submodules' fetch depth; defaults to the payload's
    /// `git_info.depth`.
    pub git_submodule_depth: i64,
    /// `GIT_CLEAN_FLAGS`: the arguments of `git clean` (default `-ffdx`); empty (`none`)
    /// skips the clean.
    pub git_clean_flags: Vec<String>,
    /// `GIT_CLONE_EXTRA_FLAGS`: extra arguments of `git clone`, which upstream uses with
    /// `FF_USE_GIT_NATIVE_CLONE` (the native clone adds them last).
    pub git_clone_extra_flags: Vec<String>,
    /// `GIT_FETCH_EXTRA_FLAGS`: the arguments added to `git fetch` (default
    /// `--prune --quiet`); empty with `none`.
    pub git_fetch_extra_flags: Vec<String>,
    /// `GIT_SUBMODULE_UPDATE_FLAGS`: extra arguments of `git submodule update`.
    pub git_submodule_update_flags: Vec<String>,
    /// `GIT_LFS_SKIP_SMUDGE`: LFS files are not pulled after the checkout.
    pub git_lfs_skip_smudge: bool,
    /// `GIT_SUBMODULE_FORCE_HTTPS`: fetch submodules over HTTPS with the job token
    /// whatever their configured URL; no stage applies it yet.
    pub git_submodule_force_https: bool,
    /// `GET_SOURCES_ATTEMPTS` (1 to 10, default 1): tries of get_sources.
    pub get_sources_attempts: u32,
    /// `ARTIFACT_DOWNLOAD_ATTEMPTS` (1 to 10, default 1): tries of download_artifacts.
    pub artifact_download_attempts: u32,
    /// `RESTORE_CACHE_ATTEMPTS` (1 to 10, default 1): tries of restore_cache.
    pub restore_cache_attempts: u32,
    /// `EXECUTOR_JOB_SECTION_ATTEMPTS` (1 to 10, default 1): tries of an executor's own
    /// job sections (the Docker executor retries a stage whose container vanished).
    pub executor_job_section_attempts: u32,
    /// `SECRETS_RETRIEVAL_ATTEMPTS` (1 to 10, default 1): tries at resolving `secrets`;
    /// unused, as jobs with secrets fail.
    pub secrets_retrieval_attempts: u32,
    /// `AFTER_SCRIPT_IGNORE_ERRORS` (default true): a failed after_script only warns
    /// instead of failing the job.
    pub after_script_ignore_errors: bool,
    /// Minutes.
    pub cache_request_timeout: i64,
    /// `DOCKER_AUTH_CONFIG`: registry credentials in Docker's `config.json` form, for
    /// pulling images.
    pub docker_auth_config: String,
    /// `RUNNER_SCRIPT_TIMEOUT` as given; read with [`stage_timeouts`] when the scripts start.
    pub script_timeout_raw: String,
    /// `RUNNER_AFTER_SCRIPT_TIMEOUT` as given.
    pub after_script_timeout_raw: String,
    /// Problems found while reading the variables, in upstream's order; the log prints them
    /// under one `WARNING:`, a line each.
    pub warnings: Vec<String>,
}

fn flags(raw: &str, default: &[&str]) -> Vec<String> {
    match raw {
        "" => default.iter().map(|flag| flag.to_string()).collect(),
        "none" => Vec::new(),
        other => other.split_whitespace().map(str::to_string).collect(),
    }
}

/// Parses a Go duration string such as `1h30m`, `90s`, `1.5h` or `300ms`, as Go's
/// `time.ParseDuration` does, after trimming surrounding whitespace; negative values are
/// refused. A value past Go's range (about 292 years) is `None`, as Go's "invalid duration".
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    match go_duration(text.trim())? {
        (false, nanos) => Some(Duration::from_nanos(nanos)),
        (true, _) => None,
    }
}

/// Go's `time.ParseDuration` with its sign: `Some((negative, magnitude))`. Unlike
/// [`parse_go_duration`] nothing is trimmed, as Go does not trim.
pub fn parse_signed_go_duration(text: &str) -> Option<(bool, Duration)> {
    let (negative, nanos) = go_duration(text)?;
    Some((negative && nanos != 0, Duration::from_nanos(nanos)))
}

/// Go's algorithm (`time.ParseDuration`) in integer nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?unit)+`
/// or a lone `0`; every step that would leave the int64 range is refused.
fn go_duration(text: &str) -> Option<(bool, u64)> {
    const LIMIT: u64 = 1 << 63;
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some((negative, 0));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(digits);
        let mut value: u64 = 0;
        for digit in whole.bytes() {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))
                .filter(|value| *value <= LIMIT)?;
        }
        rest = after;
        // The fraction keeps the digits that fit and ignores the rest, as Go does.
        let (mut fraction, mut scale, mut has_fraction) = (0u64, 1f64, false);
        if let Some(after_point) = rest.strip_prefix('.') {
            let digits = after_point.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflowed = false;
            for digit in after_point[..digits].bytes() {
                if overflowed {
                    continue;
                }
                match fraction.checked_mul(10).and_then(|f| {
                    f.checked_add(u64::from(digit - b'0'))
                        .filter(|f| *f <= LIMIT)
                }) {
                    Some(next) => {
                        fraction = next;
                        scale *= 10.0;
                    }
                    None => overflowed = true,
                }
            }
            has_fraction = digits > 0;
            rest = &after_point[digits..];
        }
        if digits == 0 && !has_fraction {
            return None;
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        if value > LIMIT / unit {
            return None;
        }
        value *= unit;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return None;
            }
        }
        total = total.checked_add(value).filter(|total| *total <= LIMIT)?;
    }
    if !negative && total > LIMIT - 1 {
        return None;
    }
    Some((negative, total))
}

/// The script and after_script time limits, as upstream's `getStageTimeoutContexts` reads
/// `RUNNER_SCRIPT_TIMEOUT` (default: none) and `RUNNER_AFTER_SCRIPT_TIMEOUT` (default 5m)
/// when the user scripts start: malformed, negative and zero values keep the default, a value
/// longer than the time the job has left keeps it too (the job timeout applies first anyway),
/// each with upstream's warning. Returns `(script, after_script, warnings)`.
pub fn stage_timeouts(
    settings: &BuildSettings,
    job_remaining: Option<Duration>,
) -> (Option<Duration>, Option<Duration>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut read = |name: &str, raw: &str, default: Option<Duration>| -> Option<Duration> {
        if raw.trim().is_empty() {
            return default;
        }
        match parse_signed_go_duration(raw) {
            None => {
                warnings.push(format!("Ignoring malformed {name} timeout: {raw}"));
                default
            }
            Some((true, _)) => {
                warnings.push(format!("Ignoring relative {name} timeout: {raw}"));
                default
            }
            Some((false, duration))
                if job_remaining.is_some_and(|remaining| duration > remaining) =>
            {
                warnings.push(format!(
                    "{name} timeout: {raw} is longer than job timeout. Setting to job timeout"
                ));
                default
            }
            Some((false, duration)) if duration.is_zero() => default,
            Some((false, duration)) => Some(duration),
        }
    };
    let script = read("RUNNER_SCRIPT_TIMEOUT", &settings.script_timeout_raw, None);
    let after = read(
        "RUNNER_AFTER_SCRIPT_TIMEOUT",
        &settings.after_script_timeout_raw,
        Some(DEFAULT_AFTER_SCRIPT_TIMEOUT),
    );
    (script, after, warnings)
}

/// Formats a duration like Go's `time.Duration.String()` (`1h0m0s`, `2m30s`, `1.5s`, `300ms`).
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (value, unit) = if nanos < 1_000 {
            (nanos as f64, "ns")
        } else if nanos < 1_000_000 {
            (nanos as f64 / 1e3, "µs")
        } else {
            (nanos as f64 / 1e6, "ms")
        };
        return format!("{}{unit}", trim_float(value));
    }
    let total_seconds = duration.as_secs();
    let fraction = duration.subsec_nanos();
    let hours = total_seconds / 3600;
    let minutes = (total_seconds / 60) % 60;
    let seconds = total_seconds % 60;
    let seconds_text = if fraction == 0 {
        seconds.to_string()
    } else {
        trim_float(seconds as f64 + f64::from(fraction) / 1e9)
    };
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds_text}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds_text}s")
    } else {
        format!("{seconds_text}s")
    }
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl BuildSettings {
    /// Reads the settings from the job's (merged) variables.
    pub fn from_variables(
        variables: &Variables,
        allow_git_fetch: bool,
        git_depth: i64,
        debug_trace_disabled: bool,
    ) -> Self {
        let mut reader = Reader {
            variables,
            warnings: Vec::new(),
        };
        // Read in upstream's order (`validateVariables`, then the debug and attempt checks), as
        // the warnings are printed in the order they are found.
        let mut ci_debug_services = reader.boolean("CI_DEBUG_SERVICES", false);
        let mut ci_debug_trace = reader.boolean("CI_DEBUG_TRACE", false);
        let default_strategy = if allow_git_fetch {
            GitStrategy::Fetch
        } else {
            GitStrategy::Clone
        };
        let git_strategy = match variables.value("GIT_STRATEGY").as_str() {
            "clone" => GitStrategy::Clone,
            "fetch" => GitStrategy::Fetch,
            "none" => GitStrategy::None,
            "empty" => GitStrategy::Empty,
            "" => default_strategy,
            other => {
                reader.warnings.push(format!(
                    "GIT_STRATEGY: expected either 'clone', 'fetch', 'none' or 'empty' got {other:?}, using default value '{}'",
                    default_strategy.as_str()
                ));
                default_strategy
            }
        };
        let git_checkout = reader.boolean("GIT_CHECKOUT", true);
        // Warned about whatever the git strategy, though only a strategy that fetches fails on it.
        let git_submodule_strategy = match variables.value("GIT_SUBMODULE_STRATEGY").as_str() {
            "" | "none" => SubmoduleStrategy::None,
            "normal" => SubmoduleStrategy::Normal,
            "recursive" => SubmoduleStrategy::Recursive,
            other => {
                reader.warnings.push(format!(
                    "GIT_SUBMODULE_STRATEGY: expected either 'normal', 'recursive' or 'none' got {other:?}"
                ));
                SubmoduleStrategy::Invalid(other.to_string())
            }
        };
        let git_submodule_depth = reader.integer("GIT_SUBMODULE_DEPTH", git_depth);
        let git_lfs_skip_smudge = reader.boolean("GIT_LFS_SKIP_SMUDGE", false);
        let git_submodule_force_https = reader.boolean("GIT_SUBMODULE_FORCE_HTTPS", false);
        let get_sources_attempts = reader.integer("GET_SOURCES_ATTEMPTS", 1);
        let artifact_download_attempts = reader.integer("ARTIFACT_DOWNLOAD_ATTEMPTS", 1);
        let restore_cache_attempts = reader.integer("RESTORE_CACHE_ATTEMPTS", 1);
        let executor_job_section_attempts = reader.integer("EXECUTOR_JOB_SECTION_ATTEMPTS", 1);
        let secrets_retrieval_attempts = reader.integer("SECRETS_RETRIEVAL_ATTEMPTS", 1);
        let after_script_ignore_errors = reader.boolean("AFTER_SCRIPT_IGNORE_ERRORS", true);
        let cache_request_timeout = reader.integer("CACHE_REQUEST_TIMEOUT", 10);

        if debug_trace_disabled {
            if ci_debug_trace {
                reader
                    .warnings
                    .push("CI_DEBUG_TRACE: usage is disabled on this Runner".into());
            }
            if ci_debug_services {
                reader
                    .warnings
                    .push("CI_DEBUG_SERVICES: usage is disabled on this Runner".into());
            }
            ci_debug_trace = false;
            ci_debug_services = false;
        }

        let executor_job_section_attempts = reader.attempts(
            "EXECUTOR_JOB_SECTION_ATTEMPTS",
            executor_job_section_attempts,
        );
        let get_sources_attempts = reader.attempts("GET_SOURCES_ATTEMPTS", get_sources_attempts);
        let artifact_download_attempts =
            reader.attempts("ARTIFACT_DOWNLOAD_ATTEMPTS", artifact_download_attempts);
        let restore_cache_attempts =
            reader.attempts("RESTORE_CACHE_ATTEMPTS", restore_cache_attempts);
        let secrets_retrieval_attempts =
            reader.attempts("SECRETS_RETRIEVAL_ATTEMPTS", secrets_retrieval_attempts);

        let script_timeout_raw = variables.value("RUNNER_SCRIPT_TIMEOUT");
        let after_script_timeout_raw = variables.value("RUNNER_AFTER_SCRIPT_TIMEOUT");

        let none_or_empty = matches!(git_strategy, GitStrategy::None | GitStrategy::Empty);
        Self {
            ci_debug_trace,
            ci_debug_services,
            git_clone_path: variables.value("GIT_CLONE_PATH"),
            git_strategy,
            git_checkout: git_checkout && !none_or_empty,
            git_submodule_strategy: if none_or_empty {
                SubmoduleStrategy::None
            } else {
                git_submodule_strategy
            },
            git_submodule_paths: flags(&variables.value("GIT_SUBMODULE_PATHS"), &[]),
            git_submodule_depth,
            git_clean_flags: flags(&variables.value("GIT_CLEAN_FLAGS"), &["-ffdx"]),
            git_clone_extra_flags: flags(&variables.value("GIT_CLONE_EXTRA_FLAGS"), &[]),
            git_fetch_extra_flags: flags(
                &variables.value("GIT_FETCH_EXTRA_FLAGS"),
                &["--prune", "--quiet"],
            ),
            git_submodule_update_flags: flags(&variables.value("GIT_SUBMODULE_UPDATE_FLAGS"), &[]),
            git_lfs_skip_smudge,
            git_submodule_force_https,
            get_sources_attempts,
            artifact_download_attempts,
            restore_cache_attempts,
            executor_job_section_attempts,
            secrets_retrieval_attempts,
            after_script_ignore_errors,
            cache_request_timeout,
            docker_auth_config: variables.value("DOCKER_AUTH_CONFIG"),
            script_timeout_raw,
            after_script_timeout_raw,
            warnings: reader.warnings,
        }
    }
}

/// Reads typed values from the variables, collecting upstream's warnings for bad ones.
struct Reader<'a> {
    variables: &'a Variables,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn boolean(&mut self, name: &str, default: bool) -> bool {
        let raw = self.variables.value(name);
        if raw.is_empty() {
            return default;
        }
        parse_bool(&raw).unwrap_or_else(|| {
            self.warnings.push(format!(
                "{name}: expected bool got {raw:?}, using default value: {default}"
            ));
            default
        })
    }

    fn integer(&mut self, name: &str, default: i64) -> i64 {
        let raw = self.variables.value(name);
        if raw.is_empty() {
            return default;
        }
        raw.parse().unwrap_or_else(|_| {
            self.warnings.push(format!(
                "{name}: expected int got {raw:?}, using default value: {default}"
            ));
            default
        })
    }

    fn attempts(&mut self, name: &str, value: i64) -> u32 {
        let clamped = value.clamp(1, 10);
        if clamped != value {
            self.warnings.push(format!(
                "{name}: number of attempts out of the range [1, 10], clamping to: {clamped}"
            ));
        }
        clamped as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variables::JobVariable;

    #[test]
    fn go_durations_round_trip() {
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("5.s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("1h1.5m"), Some(Duration::from_secs(3690)));
        assert_eq!(
            parse_go_duration("1µs2ns"),
            Some(Duration::from_nanos(1002))
        );
        assert_eq!(parse_go_duration("."), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("1e3s"), None);
        assert_eq!(parse_go_duration("1d"), None);
    }

    #[test]
    fn durations_past_gos_range_are_invalid_not_a_panic() {
        // Go's time.ParseDuration answers "invalid duration" for each of these.
        assert_eq!(parse_go_duration("99999999999999999999999h"), None);
        assert_eq!(parse_go_duration(&format!("1{}s", "0".repeat(400))), None);
        assert_eq!(parse_go_duration("2562048h"), None);
        assert_eq!(parse_go_duration("9223372036854775808ns"), None);
        assert_eq!(
            parse_go_duration("9223372036854775807ns"),
            Some(Duration::from_nanos(i64::MAX as u64))
        );
        assert_eq!(
            parse_go_duration("2562047h"),
            Some(Duration::from_secs(2_562_047 * 3600))
        );
        // Go's minimum duration exists only as a negative value.
        assert_eq!(
            parse_signed_go_duration("-9223372036854775808ns"),
            Some((true, Duration::from_nanos(1 << 63)))
        );
        // A fraction with more digits than fit keeps the ones that do.
        assert_eq!(
            parse_go_duration(&format!("1.{}s", "5".repeat(40))),
            Some(Duration::from_nanos(1_555_555_555))
        );
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(150)), "2m30s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(300)), "300ms");
    }

    #[test]
    fn attempts_are_clamped_and_strategies_validated() {
        let variables = Variables::new(vec![
            JobVariable::new("GET_SOURCES_ATTEMPTS", "20"),
            JobVariable::new("GIT_STRATEGY", "bogus"),
            JobVariable::new("GIT_CLEAN_FLAGS", "none"),
            JobVariable::new("RUNNER_SCRIPT_TIMEOUT", "90s"),
        ]);
        let settings = BuildSettings::from_variables(&variables, true, 50, false);
        assert_eq!(settings.get_sources_attempts, 10);
        assert_eq!(settings.git_strategy, GitStrategy::Fetch);
        assert!(settings.git_clean_flags.is_empty());
        assert_eq!(settings.git_fetch_extra_flags, vec!["--prune", "--quiet"]);
        let (script, after, warnings) = stage_timeouts(&settings, None);
        assert_eq!(script, Some(Duration::from_secs(90)));
        assert_eq!(after, Some(DEFAULT_AFTER_SCRIPT_TIMEOUT));
        assert!(warnings.is_empty());
        assert_eq!(settings.git_submodule_depth, 50);
        assert_eq!(settings.warnings.len(), 2);
    }

    #[test]
    fn stage_timeouts_warn_like_upstream() {
        let read = |script: &str, after: &str, remaining: Option<u64>| {
            let variables = Variables::new(vec![
                JobVariable::new("RUNNER_SCRIPT_TIMEOUT", script),
                JobVariable::new("RUNNER_AFTER_SCRIPT_TIMEOUT", after),
            ]);
            let settings = BuildSettings::from_variables(&variables, true, 0, false);
            stage_timeouts(&settings, remaining.map(Duration::from_secs))
        };
        let (script, after, warnings) = read("10", "-5m", None);
        assert_eq!((script, after), (None, Some(DEFAULT_AFTER_SCRIPT_TIMEOUT)));
        assert_eq!(
            warnings,
            vec![
                "Ignoring malformed RUNNER_SCRIPT_TIMEOUT timeout: 10",
                "Ignoring relative RUNNER_AFTER_SCRIPT_TIMEOUT timeout: -5m",
            ]
        );
        let (script, after, warnings) = read("2h", "30s", Some(3600));
        assert_eq!(script, None);
        assert_eq!(after, Some(Duration::from_secs(30)));
        assert_eq!(
            warnings,
            vec!["RUNNER_SCRIPT_TIMEOUT timeout: 2h is longer than job timeout. Setting to job timeout"]
        );
        let (script, after, warnings) = read("0", "0s", Some(3600));
        assert_eq!((script, after), (None, Some(DEFAULT_AFTER_SCRIPT_TIMEOUT)));
        assert!(warnings.is_empty());
    }
}
