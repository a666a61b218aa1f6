//! What a build is made from ([`BuildInput`], the runner's settings) and what it resolves to
//! ([`BuildContext`]): flags, settings, directories and variables, recomputed when an
//! executor's `configure` changes them.

use super::*;

/// The runner-level hook scripts of `[[runners]]`.
#[derive(Debug, Clone, Default)]
pub struct RunnerHooks {
    /// `pre_get_sources_script`: commands run in get_sources before the repository is fetched;
    /// empty for none.
    pub pre_get_sources_script: String,
    /// `post_get_sources_script`: commands run in get_sources after the checkout; empty for none.
    pub post_get_sources_script: String,
    /// `pre_build_script`: commands run at the start of every script step; empty for none.
    pub pre_build_script: String,
    /// `post_build_script`: commands run at the end of every script step; empty for none.
    pub post_build_script: String,
}

/// Who is running the job.
#[derive(Debug, Clone)]
pub struct RunnerVersion {
    /// The runner's product name, first in the log's `Running with` line.
    pub name: String,
    /// This build's version (the crate version), given to jobs as `CI_RUNNER_VERSION`.
    pub version: String,
    /// The source revision built from (what the binary gave [`RunnerVersion::set_revision`],
    /// else `unknown`), given to jobs as `CI_RUNNER_REVISION`.
    pub revision: String,
    /// `<os>/<arch>` as Go spells it (`linux/amd64`).
    pub platform: String,
}

/// The revision the binary was built from; set once at start (the binary's build script finds
/// it), so a new commit rebuilds only the binary, not every crate that reads the version.
static REVISION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl RunnerVersion {
    /// Records the revision the running binary was built from (first call wins).
    pub fn set_revision(revision: &str) {
        let _ = REVISION.set(revision.to_string());
    }
}

impl Default for RunnerVersion {
    fn default() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Self {
            name: "gitlab-runner-rs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            revision: REVISION
                .get()
                .map_or_else(|| "unknown".to_string(), Clone::clone),
            platform: format!("{}/{arch}", std::env::consts::OS),
        }
    }
}

/// The `[[runners]]` settings the build needs, already validated.
#[derive(Debug, Clone, Default)]
pub struct RunnerSettings {
    /// `name`: the runner's description, shown in the log's `on <name> <short token>` line.
    pub name: String,
    /// `token`: the runner authentication token. Its short form names build directories and is
    /// `CI_RUNNER_SHORT_TOKEN`.
    pub token: Secret<String>,
    /// The runner's system ID (`s_…` from the machine id, or a random `r_…`), shown in the log
    /// header and set as a container label.
    pub system_id: String,
    /// `url`: the GitLab instance; artifact uploads and downloads go to it.
    pub url: String,
    /// `clone_url`: when set, git fetches from here plus the project path instead of the payload's
    /// `repo_url`; empty when unset.
    pub clone_url: String,
    /// `environment`: `KEY=VALUE` entries added to every job's variables (they may set `FF_*`
    /// flags too).
    pub environment: Vec<String>,
    /// The `*_script` hook commands of `[[runners]]`.
    pub hooks: RunnerHooks,
    /// `builds_dir`; `None` uses the executor's default.
    pub builds_dir: Option<String>,
    /// `cache_dir`, where local cache archives go; `None` uses the executor's default.
    pub cache_dir: Option<String>,
    /// `[runners.custom_build_dir] enabled`: whether jobs may pick their directory with
    /// `GIT_CLONE_PATH`; `None` uses the executor's default.
    pub custom_build_dir_enabled: Option<bool>,
    /// `safe_directory_checkout`: whether get_sources adds the project directory to git's
    /// `safe.directory`; `None` uses the executor's default.
    pub safe_directory_checkout: Option<bool>,
    /// `clean_git_config`: whether the git config and hooks in the project are removed before
    /// and after the job; `None` does so except on the shell executor and with
    /// `GIT_STRATEGY: none`.
    pub clean_git_config: Option<bool>,
    /// `prepare_timeout`: the time limit of preparing the executor and the prepare script; `None`,
    /// zero or more than the job timeout uses the job timeout.
    pub prepare_timeout: Option<Duration>,
    /// `get_sources_timeout`: the time limit of get_sources, all attempts together; `None`, zero
    /// or more than the job timeout uses the job timeout.
    pub get_sources_timeout: Option<Duration>,
    /// `[runners.feature_flags]`: each set flag wins over the job's `FF_*` variable.
    pub feature_flags: BTreeMap<FeatureFlag, bool>,
    /// `debug_trace_disabled`: jobs cannot turn on `CI_DEBUG_TRACE` or `CI_DEBUG_SERVICES`
    /// (they get a warning instead).
    pub debug_trace_disabled: bool,
    /// What is running the job, for the log header and the `CI_RUNNER_*` variables.
    pub version: RunnerVersion,
    /// The GitLab connection's TLS material, given to the job as file variables.
    pub server_tls: ServerTls,
    /// `[runners.cache]` with a presigned-URL adapter; `None` keeps the cache local.
    pub remote_cache: Option<crate::remote_cache::RemoteCache>,
    /// `[runners.artifact] upload_timeout`: the bound of one artifact upload try (the
    /// uploader's `--timeout`); `None` is upstream's 1 h.
    pub artifact_upload_timeout: Option<Duration>,
    /// `[runners.artifact] response_header_timeout`: how long the uploader waits for
    /// GitLab's answer once the archive is sent (`--response-header-timeout`); `None` is
    /// upstream's 10 min.
    pub artifact_response_header_timeout: Option<Duration>,
}

/// What a job gets of the runner's TLS configuration (upstream's `TLSData`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerTls {
    /// `CI_SERVER_TLS_CA_FILE`: the CA certificates trusted for GitLab.
    pub ca_chain: Option<String>,
    /// `CI_SERVER_TLS_CERT_FILE` and `CI_SERVER_TLS_KEY_FILE`: set together or not at all.
    pub auth_cert: Option<String>,
    /// The client key (PEM) matching `auth_cert`, given as `CI_SERVER_TLS_KEY_FILE`; not
    /// public, so services do not get it.
    pub auth_key: Option<String>,
}

impl RunnerSettings {
    /// The runner token's short form (known prefixes stripped, then 9 characters), as in
    /// `CI_RUNNER_SHORT_TOKEN` and build paths.
    pub fn short_token(&self) -> String {
        short_token(self.token.expose())
    }
}

/// Interpolates `inputs` unless `FF_ENABLE_JOB_INPUTS_INTERPOLATION` is off (resolved as every
/// other flag: `[runners.feature_flags]`, else a job variable, else an `environment` entry).
pub(super) fn interpolate_inputs(input: &mut BuildInput) -> Result<(), crate::inputs::InputError> {
    let (flags, _) = FeatureFlags::for_job(
        &input.runner.feature_flags,
        &input.runner.environment,
        &input.job.variables,
    );
    let enabled = flags.enabled(FeatureFlag::EnableJobInputsInterpolation);
    if !enabled {
        return Ok(());
    }
    crate::inputs::expand_job(&mut input.job)
}

/// Everything the driver needs to start a build.
#[derive(Debug, Clone)]
pub struct BuildInput {
    /// The job payload as received; inputs are interpolated when the build starts.
    pub job: JobResponse,
    /// The `[[runners]]` settings of the runner that took the job.
    pub runner: RunnerSettings,
    /// The executor's configured name (`shell`, `docker`, ...), shown in
    /// `Preparing the "<name>" executor`.
    pub executor_name: String,
    /// The executor's defaults for directories and the shell.
    pub defaults: ExecutorDefaults,
    /// The executor's `shared` feature: a non-disposable environment.
    pub shared_environment: bool,
    /// How the executor starts the shell that reads each stage script.
    pub shell: ShellCommand,
    /// `CI_CONCURRENT_ID`: the lowest slot number no other running job of this runner holds.
    pub concurrent_id: usize,
    /// `CI_CONCURRENT_PROJECT_ID`: the same among this runner's running jobs of the same
    /// project; part of the project directory when builds directories are shared.
    pub concurrent_project_id: usize,
    /// The `X-Request-Id` of the job request, passed to Gitaly by git.
    pub correlation_id: String,
}

impl BuildInput {
    /// The input of a build on `provider`'s executors: its name, its `shared` feature and the
    /// given directories and script shell; concurrency ids 0 and no correlation id, for the
    /// caller to set.
    pub fn for_provider<P: crate::executor::ExecutorProvider>(
        provider: &P,
        job: JobResponse,
        runner: RunnerSettings,
        defaults: ExecutorDefaults,
        shell: ShellCommand,
    ) -> Self {
        Self {
            job,
            runner,
            executor_name: provider.name().into(),
            defaults,
            shared_environment: provider.features().shared,
            shell,
            concurrent_id: 0,
            concurrent_project_id: 0,
            correlation_id: String::new(),
        }
    }
}

/// The resolved state of a build, shared with the executor and the script generator.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The job payload, with its inputs interpolated.
    pub job: JobResponse,
    /// The runner's settings, with the directories of a [`Reconfigure`] applied.
    pub runner: RunnerSettings,
    /// The executor's configured name (`shell`, `docker`, ...).
    pub executor_name: String,
    /// The executor's defaults, with the shared-builds-dir choice of a [`Reconfigure`]
    /// applied.
    pub defaults: ExecutorDefaults,
    /// The executor's environment outlives the job (shell executor): the job gets
    /// `CI_SHARED_ENVIRONMENT`, otherwise `CI_DISPOSABLE_ENVIRONMENT`.
    pub shared_environment: bool,
    /// How the executor starts the shell that reads each stage script.
    pub shell: ShellCommand,
    /// The build's directories: `CI_BUILDS_DIR`, `CI_PROJECT_DIR` and the local cache.
    pub dirs: BuildDirs,
    /// Every variable of the job (`GetAllVariables`), unexpanded; file variables expand to paths.
    pub variables: Variables,
    /// What the job's variables set (`GIT_STRATEGY`, attempts, script timeouts, ...).
    pub settings: BuildSettings,
    /// The feature flags in effect for this job (config first, then variables, then defaults).
    pub flags: FeatureFlags,
    /// `CI_CONCURRENT_ID`, as in [`BuildInput::concurrent_id`].
    pub concurrent_id: usize,
    /// `CI_CONCURRENT_PROJECT_ID`, as in [`BuildInput::concurrent_project_id`].
    pub concurrent_project_id: usize,
    /// The host name the prepare script reports (`via <hostname>`); empty for the shell executor.
    pub hostname: String,
    /// Whether get_sources adds the project directory to git's `safe.directory`
    /// (`safe_directory_checkout`, else the executor's default).
    pub safe_directory_checkout: bool,
    /// The job request's `X-Request-Id`, which git passes to Gitaly; empty when unknown.
    pub correlation_id: String,
    /// The script shell an executor switched to in prepare (custom executor's config_exec);
    /// the script generator uses it instead of its own.
    pub shell_override: Option<String>,
    /// What the context was made from, for [`BuildContext::reconfigure`].
    source: Box<BuildInput>,
}

/// What an executor's [`Executor::configure`] may change before prepare (the custom
/// executor's `config_exec` output); the default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigure {
    /// Another builds directory; `None` or empty keeps the configured one.
    pub builds_dir: Option<String>,
    /// Another local cache directory; `None` or empty keeps the configured one.
    pub cache_dir: Option<String>,
    /// Whether concurrent jobs share the builds directory (project directories then get a
    /// `<short token>/<concurrent project id>/` prefix); `None` keeps the executor's default.
    pub builds_dir_is_shared: Option<bool>,
    /// The host name the prepare script reports; `None` or empty keeps the current one.
    pub hostname: Option<String>,
    /// Another script shell (custom executor's config_exec `shell`).
    pub shell: Option<ShellCommand>,
}

/// Stands for a directory prepare has not given yet; never used once prepare succeeded.
const DIR_FROM_PREPARE: &str = "/builds-dir-from-prepare";

impl BuildContext {
    /// Recomputes directories and variables with `changes` applied, as upstream's custom
    /// executor does after `config_exec` (the build driver calls it with the result of
    /// [`Executor::configure`]). Fails with a configuration error when a directory is still
    /// missing.
    pub fn reconfigure(&mut self, changes: Reconfigure) -> Result<(), BuildError> {
        let mut input = (*self.source).clone();
        if let Some(dir) = changes.builds_dir.filter(|dir| !dir.is_empty()) {
            input.runner.builds_dir = Some(dir);
        }
        if let Some(dir) = changes.cache_dir.filter(|dir| !dir.is_empty()) {
            input.runner.cache_dir = Some(dir);
        }
        if let Some(shared) = changes.builds_dir_is_shared {
            input.defaults.shared_builds_dir = shared;
        }
        input.defaults.dirs_from_prepare = false;
        let shell_override = match changes.shell {
            Some(shell) => {
                let name = shell.name.clone();
                input.shell = shell;
                Some(name)
            }
            None => self.shell_override.clone(),
        };
        let hostname = changes
            .hostname
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| self.hostname.clone());
        let (mut fresh, _warnings) = BuildContext::new(input)?;
        fresh.hostname = hostname;
        fresh.shell_override = shell_override;
        *self = fresh;
        Ok(())
    }

    /// Resolves flags, settings, directories and variables. Fails with a configuration error
    /// when the directories cannot be computed.
    pub fn new(input: BuildInput) -> Result<(Self, Vec<String>), BuildError> {
        let source = Box::new(input.clone());
        let BuildInput {
            job,
            runner,
            executor_name,
            defaults,
            shared_environment,
            shell,
            concurrent_id,
            concurrent_project_id,
            correlation_id,
        } = input;
        let environment = environment_variables(&runner.environment);
        let mut job_variables: Vec<JobVariable> = job
            .variables
            .iter()
            // Known flags are exported once, resolved, in upstream's order; a variable that
            // only looks like one (`FF_MY_APP_FLAG`) is the job's own, as upstream keeps it.
            .filter(|variable| {
                crate::feature_flags::FeatureFlag::from_name(&variable.key).is_none()
            })
            .cloned()
            .collect();
        // A file variable's key becomes a path under the temporary directory and a word in
        // every stage script; a name no shell can export (`../x`, `F$(cmd)`) is refused
        // before a script is written (upstream writes it, and `../x` escapes the directory).
        let mut refused = Vec::new();
        job_variables.retain(|variable| {
            let usable = !variable.file || is_variable_name(&variable.key);
            if !usable {
                refused.push(format!("{:?}", variable.key));
            }
            usable
        });
        let for_flags = runner_and_job_variables(&runner.environment, &job.variables);
        let (flags, flag_warnings) = FeatureFlags::resolve(&runner.feature_flags, &for_flags);
        let settings = BuildSettings::from_variables(
            &for_flags,
            job.allow_git_fetch,
            job.git_info.depth,
            runner.debug_trace_disabled,
        );
        let mut warnings = settings.warnings.clone();
        // Upstream resolves the flags twice while reading the settings and keeps the errors of
        // both passes, so its log lists each bad flag twice, after the other settings.
        warnings.extend(flag_warnings.iter().cloned());
        warnings.extend(flag_warnings);
        if !refused.is_empty() {
            warnings.push(format!(
                "skipping file variables with invalid names (only letters, digits and _, not starting with a digit): {}",
                refused.join(" ")
            ));
        }
        // Said, not silently skipped: the provenance file upstream's helper writes is not.
        if crate::variables::parse_bool(&for_flags.value("RUNNER_GENERATE_ARTIFACTS_METADATA"))
            == Some(true)
        {
            warnings.push(
                "RUNNER_GENERATE_ARTIFACTS_METADATA: gitlab-runner-rs does not generate artifact \
                 provenance (SLSA) metadata yet; no metadata file is uploaded"
                    .to_string(),
            );
        }

        let short = runner.short_token();
        let pending = |dir: String| {
            if dir.is_empty() && defaults.dirs_from_prepare {
                DIR_FROM_PREPARE.to_string()
            } else {
                dir
            }
        };
        let dir_options = DirOptions {
            builds_dir: pending(
                runner
                    .builds_dir
                    .clone()
                    .unwrap_or_else(|| defaults.builds_dir.clone()),
            ),
            cache_dir: pending(
                runner
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| defaults.cache_dir.clone()),
            ),
            shared_builds_dir: defaults.shared_builds_dir,
            custom_build_dir_enabled: runner
                .custom_build_dir_enabled
                .unwrap_or(defaults.custom_build_dir_enabled),
        };
        let dirs = compute_dirs(
            &dir_options,
            &ProjectIdentity {
                repo_url: job.git_info.repo_url.expose(),
                project_id: job.job_info.project_id,
                short_token: &short,
                concurrent_project_id,
                git_strategy_empty: settings.git_strategy == GitStrategy::Empty,
                git_clone_path: &settings.git_clone_path,
            },
        )?;

        let mut all = flags.variables();
        if !job.image.name.is_empty() {
            all.push(JobVariable::internal(
                "CI_JOB_IMAGE",
                job.image.name.clone(),
            ));
        }
        all.push(JobVariable::internal(
            "CI_RUNNER_SHORT_TOKEN",
            short.clone(),
        ));
        all.extend(environment);
        all.push(JobVariable::internal(
            "CI_BUILDS_DIR",
            dirs.builds_dir.clone(),
        ));
        all.push(JobVariable::internal(
            "CI_PROJECT_DIR",
            dirs.project_dir.clone(),
        ));
        all.push(JobVariable::internal(
            "CI_CONCURRENT_ID",
            concurrent_id.to_string(),
        ));
        all.push(JobVariable::internal(
            "CI_CONCURRENT_PROJECT_ID",
            concurrent_project_id.to_string(),
        ));
        all.push(JobVariable::internal("CI_SERVER", "yes"));
        all.push(JobVariable::internal("CI_JOB_STATUS", "running"));
        all.push(JobVariable::internal(
            "CI_JOB_TIMEOUT",
            job.runner_info.timeout_seconds().to_string(),
        ));
        let tls = &runner.server_tls;
        if let Some(ca_chain) = &tls.ca_chain {
            all.push(JobVariable::internal("CI_SERVER_TLS_CA_FILE", ca_chain.clone()).file());
        }
        if let (Some(cert), Some(key)) = (&tls.auth_cert, &tls.auth_key) {
            all.push(JobVariable::internal("CI_SERVER_TLS_CERT_FILE", cert.clone()).file());
            all.push(JobVariable {
                public: false,
                ..JobVariable::internal("CI_SERVER_TLS_KEY_FILE", key.clone()).file()
            });
        }
        all.extend(job_variables);
        if shared_environment {
            all.push(JobVariable::internal("CI_SHARED_ENVIRONMENT", "true"));
        } else {
            all.push(JobVariable::internal("CI_DISPOSABLE_ENVIRONMENT", "true"));
        }
        all.push(JobVariable::internal(
            "CI_RUNNER_VERSION",
            runner.version.version.clone(),
        ));
        all.push(JobVariable::internal(
            "CI_RUNNER_REVISION",
            runner.version.revision.clone(),
        ));
        all.push(JobVariable::internal(
            "CI_RUNNER_EXECUTABLE_ARCH",
            runner.version.platform.clone(),
        ));
        all.push(JobVariable::internal(
            "RUNNER_TEMP_PROJECT_DIR",
            dirs.tmp_dir(),
        ));
        if flags.enabled(FeatureFlag::NetworkPerBuild) {
            all.push(JobVariable::internal(
                "CI_BUILD_NETWORK_NAME",
                crate::dirs::project_unique_short_name(
                    &short,
                    job.job_info.project_id,
                    concurrent_project_id,
                    job.id,
                ),
            ));
        }
        let variables = Variables::new(all).with_file_dir(dirs.tmp_dir());
        let safe_directory_checkout = runner
            .safe_directory_checkout
            .unwrap_or(defaults.safe_directory_checkout);
        let defaults_show_hostname = defaults.show_hostname;

        Ok((
            Self {
                job,
                runner,
                executor_name,
                defaults,
                shared_environment,
                shell,
                dirs,
                variables,
                settings,
                flags,
                concurrent_id,
                concurrent_project_id,
                hostname: if defaults_show_hostname {
                    crate::process::host_name()
                } else {
                    String::new()
                },
                safe_directory_checkout,
                correlation_id,
                shell_override: None,
                source,
            },
            warnings,
        ))
    }

    /// The job's time limit: the payload's `runner_info.timeout`, or two hours when GitLab
    /// sends none.
    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job.runner_info.timeout_seconds() as u64)
    }

    pub(super) fn set_job_status(&mut self, status: &str) {
        let mut list = std::mem::take(&mut self.variables).into_vec();
        match list.iter_mut().rev().find(|v| v.key == "CI_JOB_STATUS") {
            Some(variable) => variable.value = status.to_string(),
            None => list.push(JobVariable::internal("CI_JOB_STATUS", status)),
        }
        self.variables = Variables::new(list).with_file_dir(self.dirs.tmp_dir());
    }
}
