//! The job payload GitLab returns from `POST /api/v4/jobs/request` (`JobResponse`).
//!
//! Every field upstream knows is modelled; unknown fields are ignored and `null` is accepted wherever
//! GitLab may send it, so payloads from any GitLab version deserialize.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Secret;
use crate::variables::JobVariable;

mod identity;
pub use identity::{recover_identity, RecoveredIdentity};

/// Treats an explicit `null` like a missing field.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

macro_rules! payload_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(default, deserialize_with = "nullable")]
                pub $field: $ty,
            )*
        }
    };
}

payload_struct! {
    /// The whole job as GitLab sends it.
    pub struct JobResponse {
        /// The job's id (`CI_JOB_ID`).
        pub id: i64,
        /// The job token (`CI_JOB_TOKEN`): authenticates the job's API, git and registry calls.
        pub token: Secret<String>,
        /// Whether `GIT_STRATEGY` defaults to `fetch` (otherwise `clone`).
        pub allow_git_fetch: bool,
        /// What the job is and which pipeline and project it belongs to.
        pub job_info: JobInfo,
        /// The repository and revision to check out.
        pub git_info: GitInfo,
        /// The job's timeout and session settings.
        pub runner_info: RunnerInfo,
        /// The job's `inputs`, raw `{key, value: {type, content, sensitive}}` entries, checked
        /// and interpolated by [`crate::inputs`].
        pub inputs: Vec<serde_json::Value>,
        /// The job's variables in GitLab's order; a later definition of a key wins.
        pub variables: Vec<JobVariable>,
        /// The script steps (`script`, `after_script`, `release`, ...), in order.
        pub steps: Vec<Step>,
        /// The job's `image`; its name is empty when the job names none.
        pub image: Image,
        /// The job's `services`.
        pub services: Vec<Image>,
        /// What to upload as artifacts, one entry per archive or report.
        pub artifacts: Vec<Artifact>,
        /// The job's `cache` entries.
        pub cache: Vec<Cache>,
        /// Credentials GitLab provides, such as the job's registry login.
        pub credentials: Vec<Credential>,
        /// Earlier jobs whose artifacts are downloaded before the script.
        pub dependencies: Vec<Dependency>,
        /// What this GitLab supports and asks of the runner.
        pub features: GitlabFeatures,
        /// The job's `secrets` by variable name, raw; a job with any fails with
        /// `runner_configuration_error`, as secret providers are not supported.
        pub secrets: BTreeMap<String, serde_json::Value>,
        /// The job's own hooks (`hooks:pre_get_sources_script`, ...).
        pub hooks: Vec<Hook>,
        /// The `run` keyword (CI steps) as GitLab encodes it; empty for jobs using `script`.
        pub run: String,
        /// Set when a pipeline execution policy added the job.
        pub policy_options: PolicyOptions,
        /// Whether GitLab wants the job's environment kept suspended after the job.
        pub suspend_options: SuspendOptions,
    }
}

payload_struct! {
    /// `job_info`: the job's names and ids and those of its pipeline and project.
    pub struct JobInfo {
        /// The job's name (`CI_JOB_NAME`).
        pub name: String,
        /// The pipeline stage the job is in (`CI_JOB_STAGE`).
        pub stage: String,
        /// The pipeline's id (`CI_PIPELINE_ID`).
        pub pipeline_id: i64,
        /// The project's numeric id (`CI_PROJECT_ID`): names cache objects and stands in for a
        /// project slug the repository URL cannot give.
        pub project_id: i64,
        /// The project's name (`CI_PROJECT_NAME`).
        pub project_name: String,
        /// The project's path with its namespace (`group/project`).
        pub project_full_path: String,
        /// The id of the group or user namespace the project is in.
        pub namespace_id: i64,
        /// The id of the top-level namespace above the project.
        pub root_namespace_id: i64,
        /// The id of the GitLab organization the project belongs to.
        pub organization_id: i64,
        /// An identifier of the GitLab instance that sent the job.
        pub instance_id: String,
        /// The UUID of the GitLab instance that sent the job.
        pub instance_uuid: String,
        /// The id of the user the job runs for (`GITLAB_USER_ID`).
        pub user_id: i64,
        /// The user a job running under a composite identity is scoped to; `None` when GitLab
        /// sends none.
        pub scoped_user_id: Option<i64>,
        /// Seconds the job waited in GitLab's queue before this runner took it.
        pub time_in_queue_seconds: f64,
        /// How many of the project's jobs are running on instance runners, as the text
        /// bucket GitLab reports.
        pub project_jobs_running_on_instance_runners_count: String,
        /// How many jobs were waiting in GitLab's queue when this one was picked.
        pub queue_size: i64,
        /// How far into that queue GitLab looked before picking this job.
        pub queue_depth: i64,
    }
}

payload_struct! {
    /// `git_info`: the repository and revision to check out.
    pub struct GitInfo {
        /// The repository to fetch, with the job token as its credentials.
        pub repo_url: Secret<String>,
        /// The repository's hash algorithm (`sha1`, `sha256`); empty means `sha1`.
        pub repo_object_format: String,
        /// The branch or tag the job runs for (JSON `ref`, `CI_COMMIT_REF_NAME`).
        #[serde(rename = "ref")]
        pub git_ref: String,
        /// The commit to check out (`CI_COMMIT_SHA`).
        pub sha: String,
        /// The branch's previous commit (`CI_COMMIT_BEFORE_SHA`); all zeros when there is none.
        pub before_sha: String,
        /// `branch` or `tag`.
        pub ref_type: String,
        /// The refspecs get_sources fetches.
        pub refspecs: Vec<String>,
        /// The fetch depth (`GIT_DEPTH`); 0 fetches the whole history.
        pub depth: i64,
        /// Whether the ref is protected; `None` when GitLab does not say (taken as unprotected).
        pub protected: Option<bool>,
    }
}

payload_struct! {
    /// `runner_info`: how long the job may run and where its session is served.
    pub struct RunnerInfo {
        /// `runner_info.uuid` as GitLab sends it; not read by this runner.
        pub uuid: String,
        /// The job timeout in seconds as sent; read it through [`Self::timeout_seconds`], which
        /// applies the default.
        pub timeout: i64,
        /// Where the runner's session server is reached (web terminal); empty for none.
        pub runner_session_url: String,
    }
}

/// The default job timeout when GitLab sends none (`DefaultTimeout`).
pub const DEFAULT_JOB_TIMEOUT_SECONDS: i64 = 7200;

impl RunnerInfo {
    /// The job timeout in seconds; zero or negative means the default of two hours.
    pub fn timeout_seconds(&self) -> i64 {
        if self.timeout <= 0 {
            DEFAULT_JOB_TIMEOUT_SECONDS
        } else {
            self.timeout
        }
    }
}

payload_struct! {
    /// One entry of `steps`: `script`, `after_script`, `release`, `run`, ...
    pub struct Step {
        /// The step's name; its stage is `step_<name>` ([`JobResponse::step_stage_name`]).
        pub name: String,
        /// The step's commands, in order.
        pub script: Vec<String>,
        /// The step's time limit in seconds, as sent; the driver applies the job timeout and
        /// `RUNNER_SCRIPT_TIMEOUT` instead.
        pub timeout: i64,
        /// `on_success`, `on_failure` or `always`: when GitLab wants the step to run.
        pub when: String,
        /// Whether a failure of this step should leave the job successful, as sent.
        pub allow_failure: bool,
    }
}

payload_struct! {
    /// The job's `image` or one of its `services`.
    pub struct Image {
        /// The image reference (`alpine:3.20`).
        pub name: String,
        /// A service's host names, comma- or space-separated ([`Self::aliases`]).
        pub alias: String,
        /// `command`: replaces the image's command; empty keeps it.
        pub command: Vec<String>,
        /// `entrypoint`: replaces the image's entrypoint; empty keeps it.
        pub entrypoint: Vec<String>,
        /// The ports declared for the image (`ports`).
        pub ports: Vec<Port>,
        /// Variables for this service alone (`services:variables`).
        pub variables: Vec<JobVariable>,
        /// `pull_policy` (`always`, `if-not-present`, `never`); empty uses the configured one.
        pub pull_policy: Vec<String>,
        /// Options per executor (`docker: {platform, user}`), checked by
        /// [`JobResponse::validate`].
        pub executor_opts: BTreeMap<String, serde_json::Value>,
    }
}

impl Image {
    /// The aliases of a service: a comma- and/or space-separated list.
    pub fn aliases(&self) -> Vec<&str> {
        self.alias
            .split([',', ' '])
            .filter(|alias| !alias.is_empty())
            .collect()
    }
}

payload_struct! {
    /// One `ports` entry of an image.
    pub struct Port {
        /// The port number.
        pub number: i64,
        /// `http` or `https`.
        pub protocol: String,
        /// The port's name.
        pub name: String,
    }
}

payload_struct! {
    /// One `artifacts` entry: what to archive and upload.
    pub struct Artifact {
        /// The archive's name (`artifacts:name`).
        pub name: String,
        /// Also take every file git does not track (`artifacts:untracked`).
        pub untracked: bool,
        /// Paths and patterns to take, relative to the project directory.
        pub paths: Vec<String>,
        /// Patterns to leave out (`artifacts:exclude`).
        pub exclude: Vec<String>,
        /// `on_success`, `on_failure` or `always`; empty means `on_success`.
        pub when: String,
        /// The report type (`archive` for plain artifacts, `junit`, ...).
        pub artifact_type: String,
        /// How it is packed: `zip`, `gzip` or `raw`.
        pub artifact_format: String,
        /// How long GitLab keeps it (`1 week`); empty leaves it to GitLab's default.
        pub expire_in: String,
    }
}

payload_struct! {
    /// One `cache` entry.
    pub struct Cache {
        /// The cache key (`cache:key`), which names the archive.
        pub key: String,
        /// Also cache every file git does not track.
        pub untracked: bool,
        /// `pull-push`, `pull` or `push`: whether the cache is restored, saved or both.
        pub policy: String,
        /// Paths and patterns to cache, relative to the project directory.
        pub paths: Vec<String>,
        /// `on_success`, `on_failure` or `always`: when the cache is saved; empty means
        /// `on_success`.
        pub when: String,
        /// Keys tried in order when `key` has no archive.
        pub fallback_keys: Vec<String>,
    }
}

payload_struct! {
    /// One `credentials` entry.
    pub struct Credential {
        /// The credential's type (JSON `type`); `registry` for image registries.
        #[serde(rename = "type")]
        pub kind: String,
        /// The registry it is for (`registry.example.com`).
        pub url: String,
        /// The user name to log in with.
        pub username: String,
        /// The password or token to log in with.
        pub password: Secret<String>,
    }
}

payload_struct! {
    /// One `dependencies` entry: an earlier job whose artifacts are downloaded.
    pub struct Dependency {
        /// That job's id.
        pub id: i64,
        /// The token its artifacts are downloaded with.
        pub token: Secret<String>,
        /// That job's name.
        pub name: String,
        /// Its artifacts archive; an empty file name means it has none.
        pub artifacts_file: ArtifactsFile,
    }
}

payload_struct! {
    /// The artifacts archive of a dependency.
    pub struct ArtifactsFile {
        /// The archive's file name (`artifacts.zip`).
        pub filename: String,
        /// The archive's size in bytes.
        pub size: i64,
    }
}

payload_struct! {
    /// `features`: what this GitLab supports and asks of the runner.
    pub struct GitlabFeatures {
        /// Whether the log gets collapsible section markers.
        pub trace_sections: bool,
        /// Further token prefixes to mask in the log.
        pub token_mask_prefixes: Vec<String>,
        /// The failure reasons this GitLab accepts; [`crate::failure::FailureReason::for_gitlab`]
        /// maps others onto them.
        pub failure_reasons: Vec<String>,
        /// Tracing settings GitLab may send, kept as raw JSON and not read.
        pub tracing: serde_json::Value,
    }
}

payload_struct! {
    /// One of the job's `hooks`.
    pub struct Hook {
        /// When it runs: `pre_get_sources_script` or `post_get_sources_script`.
        pub name: String,
        /// The hook's commands, in order.
        pub script: Vec<String>,
    }
}

payload_struct! {
    /// `policy_options`: how a pipeline execution policy applies to the job; the build prints
    /// it before the scripts.
    pub struct PolicyOptions {
        /// The job was added by a pipeline execution policy.
        pub execution_policy_job: bool,
        /// The name of that policy.
        pub policy_name: String,
        /// Whether the project's variables may override the policy's; `None` when
        /// GitLab does not say.
        pub policy_variables_override_allowed: Option<bool>,
        /// The variables to which that answer does not apply. `None` when GitLab sends none,
        /// apart from an empty list: the log mentions even an empty list of exceptions.
        pub policy_variables_override_exceptions: Option<Vec<String>>,
    }
}

payload_struct! {
    /// `suspend_options`: whether to keep the job's environment suspended after the job
    /// (`FF_SUSPENDABLE_ENVIRONMENTS`); not acted on by this runner.
    pub struct SuspendOptions {
        /// Suspend the environment when the job succeeds.
        pub suspend_on_success: bool,
        /// Suspend the environment when the job fails.
        pub suspend_on_failure: bool,
        /// The key that names the suspended environment.
        pub runtime_environment_key: String,
    }
}

/// Why a payload was refused before the build started (upstream exit code 3,
/// `ExitCodeUnsupportedOptions`).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadValidationError {
    /// The image or a service has `executor_opts` this runner does not take (it takes
    /// docker `platform` and `user`, kubernetes `user`); lists them.
    #[error("the following executor_opts are not supported: {0}")]
    UnsupportedExecutorOpts(String),
    /// The job has both `run` and a non-empty `script`.
    #[error("the `run` and `script` keywords cannot be used together")]
    RunWithScript,
    /// The job has both `run` and a `STEPS` variable.
    #[error("the `run` keyword requires the exclusive use of the variable STEPS")]
    RunWithStepsVariable,
    /// The job uses `run` (CI steps) on an executor that cannot run them natively (upstream's
    /// shim mode needs a `step-runner` binary in the job's image): refused rather than run as
    /// an empty `step_run` stage that would succeed.
    #[error("the `run` keyword (CI steps) is not supported by this executor in gitlab-runner-rs")]
    StepsNotSupported,
}

/// The exit code reported for payload validation failures.
pub const EXIT_CODE_UNSUPPORTED_OPTIONS: i32 = 3;

impl JobResponse {
    /// Parses a payload, naming the problem when the JSON is malformed.
    /// Invalid `inputs` make the payload malformed, as they fail upstream's decoding.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let job: Self = serde_json::from_slice(bytes)?;
        if let Err(error) = crate::inputs::Inputs::new(&job.inputs) {
            return Err(<serde_json::Error as serde::de::Error>::custom(error));
        }
        Ok(job)
    }

    /// The build stage name of a step: `step_` + lowercased step name.
    pub fn step_stage_name(step_name: &str) -> String {
        format!("step_{}", step_name.to_lowercase())
    }

    /// The job's hook called `name` (`pre_get_sources_script`, ...), if it has one.
    pub fn hook(&self, name: &str) -> Option<&Hook> {
        self.hooks.iter().find(|hook| hook.name == name)
    }

    /// The checks upstream runs right after receiving a job (1.6), for an executor that runs
    /// `run:` steps natively or not.
    pub fn validate(&self, native_steps: bool) -> Result<(), PayloadValidationError> {
        let mut unsupported = Vec::new();
        let images = std::iter::once(&self.image).chain(self.services.iter());
        for image in images {
            for (key, value) in &image.executor_opts {
                let allowed: &[&str] = match key.as_str() {
                    "docker" => &["platform", "user"],
                    "kubernetes" => &["user"],
                    _ => {
                        unsupported.push(key.clone());
                        continue;
                    }
                };
                if let Some(options) = value.as_object() {
                    for option in options.keys() {
                        if !allowed.contains(&option.as_str()) {
                            unsupported.push(format!("{key}.{option}"));
                        }
                    }
                }
            }
        }
        if !unsupported.is_empty() {
            return Err(PayloadValidationError::UnsupportedExecutorOpts(
                unsupported.join(", "),
            ));
        }
        if !self.run.is_empty() {
            let has_script = self
                .steps
                .iter()
                .any(|step| step.name == "script" && !step.script.is_empty());
            if has_script {
                return Err(PayloadValidationError::RunWithScript);
            }
            if self
                .variables
                .iter()
                .any(|variable| variable.key == "STEPS")
            {
                return Err(PayloadValidationError::RunWithStepsVariable);
            }
            if !native_steps {
                return Err(PayloadValidationError::StepsNotSupported);
            }
        }
        Ok(())
    }

    /// For a job with `run:` on an executor with native steps: its one step is `run`, so the
    /// log shows the `step_run` stage (upstream sets the same).
    pub fn use_native_steps(&mut self) {
        if self.run.is_empty() {
            return;
        }
        self.steps = vec![Step {
            name: "run".into(),
            script: Vec::new(),
            timeout: 3600,
            when: "on_success".into(),
            allow_failure: false,
        }];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(extra: serde_json::Value) -> JobResponse {
        let mut payload = serde_json::json!({
            "id": 1, "token": "t",
            "git_info": {"repo_url": "https://example.com/g/p.git", "sha": "abc"},
            "runner_info": {"timeout": 60},
            "variables": [],
            "steps": [{"name": "run", "script": []}]
        });
        if let (Some(payload), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
            payload.extend(extra.clone());
        }
        JobResponse::from_json(payload.to_string().as_bytes()).expect("a payload")
    }

    #[test]
    fn a_run_job_is_refused_in_upstreams_order_and_without_native_steps() {
        let steps = serde_json::json!("[{\"name\":\"hello\",\"script\":\"echo hi\"}]");
        assert_eq!(
            job(serde_json::json!({"run": steps})).validate(false),
            Err(PayloadValidationError::StepsNotSupported)
        );
        assert_eq!(
            job(serde_json::json!({"run": steps,
                "steps": [{"name": "script", "script": ["echo"]}]}))
            .validate(false),
            Err(PayloadValidationError::RunWithScript)
        );
        assert_eq!(
            job(serde_json::json!({"run": steps,
                "variables": [{"key": "STEPS", "value": "x", "public": true}]}))
            .validate(false),
            Err(PayloadValidationError::RunWithStepsVariable)
        );
        assert_eq!(
            job(serde_json::json!({"steps": [{"name": "script", "script": ["echo"]}]}))
                .validate(false),
            Ok(())
        );
        let mut native = job(serde_json::json!({"run": steps, "steps": []}));
        assert_eq!(native.validate(true), Ok(()));
        native.use_native_steps();
        assert_eq!(native.steps.len(), 1);
        assert_eq!(
            JobResponse::step_stage_name(&native.steps[0].name),
            "step_run"
        );
    }
}
