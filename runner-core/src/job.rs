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
        pub id: i64,
        pub token: Secret<String>,
        pub allow_git_fetch: bool,
        pub job_info: JobInfo,
        pub git_info: GitInfo,
        pub runner_info: RunnerInfo,
        pub inputs: Vec<serde_json::Value>,
        pub variables: Vec<JobVariable>,
        pub steps: Vec<Step>,
        pub image: Image,
        pub services: Vec<Image>,
        pub artifacts: Vec<Artifact>,
        pub cache: Vec<Cache>,
        pub credentials: Vec<Credential>,
        pub dependencies: Vec<Dependency>,
        pub features: GitlabFeatures,
        pub secrets: BTreeMap<String, serde_json::Value>,
        pub hooks: Vec<Hook>,
        pub run: String,
        pub policy_options: PolicyOptions,
        pub suspend_options: SuspendOptions,
    }
}

payload_struct! {
    pub struct JobInfo {
        pub name: String,
        pub stage: String,
        pub pipeline_id: i64,
        pub project_id: i64,
        pub project_name: String,
        pub project_full_path: String,
        pub namespace_id: i64,
        pub root_namespace_id: i64,
        pub organization_id: i64,
        pub instance_id: String,
        pub instance_uuid: String,
        pub user_id: i64,
        pub scoped_user_id: Option<i64>,
        pub time_in_queue_seconds: f64,
        pub project_jobs_running_on_instance_runners_count: String,
        pub queue_size: i64,
        pub queue_depth: i64,
    }
}

payload_struct! {
    pub struct GitInfo {
        pub repo_url: Secret<String>,
        pub repo_object_format: String,
        #[serde(rename = "ref")]
        pub git_ref: String,
        pub sha: String,
        pub before_sha: String,
        pub ref_type: String,
        pub refspecs: Vec<String>,
        pub depth: i64,
        pub protected: Option<bool>,
    }
}

payload_struct! {
    pub struct RunnerInfo {
        pub uuid: String,
        pub timeout: i64,
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
        pub name: String,
        pub script: Vec<String>,
        pub timeout: i64,
        pub when: String,
        pub allow_failure: bool,
    }
}

payload_struct! {
    pub struct Image {
        pub name: String,
        pub alias: String,
        pub command: Vec<String>,
        pub entrypoint: Vec<String>,
        pub ports: Vec<Port>,
        pub variables: Vec<JobVariable>,
        pub pull_policy: Vec<String>,
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
    pub struct Port {
        pub number: i64,
        pub protocol: String,
        pub name: String,
    }
}

payload_struct! {
    pub struct Artifact {
        pub name: String,
        pub untracked: bool,
        pub paths: Vec<String>,
        pub exclude: Vec<String>,
        pub when: String,
        pub artifact_type: String,
        pub artifact_format: String,
        pub expire_in: String,
    }
}

payload_struct! {
    pub struct Cache {
        pub key: String,
        pub untracked: bool,
        pub policy: String,
        pub paths: Vec<String>,
        pub when: String,
        pub fallback_keys: Vec<String>,
    }
}

payload_struct! {
    pub struct Credential {
        #[serde(rename = "type")]
        pub kind: String,
        pub url: String,
        pub username: String,
        pub password: Secret<String>,
    }
}

payload_struct! {
    pub struct Dependency {
        pub id: i64,
        pub token: Secret<String>,
        pub name: String,
        pub artifacts_file: ArtifactsFile,
    }
}

payload_struct! {
    pub struct ArtifactsFile {
        pub filename: String,
        pub size: i64,
    }
}

payload_struct! {
    pub struct GitlabFeatures {
        pub trace_sections: bool,
        pub token_mask_prefixes: Vec<String>,
        pub failure_reasons: Vec<String>,
        pub tracing: serde_json::Value,
    }
}

payload_struct! {
    pub struct Hook {
        pub name: String,
        pub script: Vec<String>,
    }
}

payload_struct! {
    pub struct PolicyOptions {
        pub execution_policy_job: bool,
        pub policy_name: String,
        pub policy_variables_override_allowed: Option<bool>,
        pub policy_variables_override_exceptions: Vec<String>,
    }
}

payload_struct! {
    pub struct SuspendOptions {
        pub suspend_on_success: bool,
        pub suspend_on_failure: bool,
        pub runtime_environment_key: String,
    }
}

/// Why a payload was refused before the build started (upstream exit code 3,
/// `ExitCodeUnsupportedOptions`).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadValidationError {
    #[error("the following executor_opts are not supported: {0}")]
    UnsupportedExecutorOpts(String),
    #[error("the `run` keyword cannot be used together with the `script` keyword")]
    RunWithScript,
    #[error("the `run` keyword cannot be used together with the STEPS variable")]
    RunWithStepsVariable,
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

    pub fn hook(&self, name: &str) -> Option<&Hook> {
        self.hooks.iter().find(|hook| hook.name == name)
    }

    /// The checks upstream runs right after receiving a job (1.6).
    pub fn validate(&self) -> Result<(), PayloadValidationError> {
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
        }
        Ok(())
    }
}
