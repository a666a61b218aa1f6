//! The job pod's labels and annotations, as upstream's `buildLabels` and
//! `buildPodAnnotations`: the runner's own (project, job, manager), then `pod_labels` and the
//! job's label overwrites, which may not touch the `runner.gitlab.com` namespace, with every
//! label value sanitised; annotations may replace the runner's.

use std::collections::BTreeMap;

use runner_core::build::BuildContext;

use crate::names::sanitize_label;
use crate::overwrites::Overwrites;

/// The label and annotation namespace of the runner's own keys.
pub const RUNNER_LABEL_NAMESPACE: &str = "runner.gitlab.com";

/// The label that selects a job's pod (per concurrency slot, as upstream's).
pub const POD_SELECTOR_LABEL: &str = "job.runner.gitlab.com/pod";

/// What the labels and annotations are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobMetadata {
    /// The build's `ProjectUniqueName` (`runner-<token>-project-<id>-concurrent-<n>`).
    pub project_unique_name: String,
    /// `JobInfo.ProjectID`.
    pub project_id: i64,
    /// `JobInfo.ProjectName`.
    pub project_name: String,
    /// `JobInfo.RootNamespaceID`.
    pub root_namespace_id: i64,
    /// `CI_PROJECT_NAMESPACE_ID`.
    pub namespace_id: String,
    /// `CI_PROJECT_NAMESPACE`.
    pub namespace: String,
    /// `CI_PROJECT_ROOT_NAMESPACE`.
    pub root_namespace: String,
    /// The runner's `name`.
    pub runner_name: String,
    /// The runner's short token.
    pub runner_short_token: String,
    /// The job id.
    pub job_id: i64,
    /// `<repository URL without credentials and .git>/-/jobs/<id>`.
    pub job_url: String,
    /// The commit.
    pub sha: String,
    /// The commit before.
    pub before_sha: String,
    /// The ref.
    pub git_ref: String,
    /// The job's name.
    pub job_name: String,
    /// The job timeout as a Go duration (`1h0m0s`).
    pub timeout: String,
}

impl JobMetadata {
    /// The metadata of `build`.
    pub fn of(build: &BuildContext) -> Self {
        let job = &build.job;
        let repo = runner_core::url::strip_userinfo(job.git_info.repo_url.expose());
        Self {
            project_unique_name: runner_core::dirs::project_unique_name(
                &build.runner.short_token(),
                job.job_info.project_id,
                build.concurrent_project_id,
            ),
            project_id: job.job_info.project_id,
            project_name: job.job_info.project_name.clone(),
            root_namespace_id: job.job_info.root_namespace_id,
            namespace_id: build.variables.value("CI_PROJECT_NAMESPACE_ID"),
            namespace: build.variables.value("CI_PROJECT_NAMESPACE"),
            root_namespace: build.variables.value("CI_PROJECT_ROOT_NAMESPACE"),
            runner_name: build.runner.name.clone(),
            runner_short_token: build.runner.short_token(),
            job_id: job.id,
            job_url: format!("{}/-/jobs/{}", repo.trim_end_matches(".git"), job.id),
            sha: job.git_info.sha.clone(),
            before_sha: job.git_info.before_sha.clone(),
            git_ref: job.git_info.git_ref.clone(),
            job_name: job.job_info.name.clone(),
            timeout: runner_core::settings::format_go_duration(build.job_timeout()),
        }
    }
}

/// A key in the runner's namespace (`runner.gitlab.com`, `*.runner.gitlab.com`, with or
/// without a `/name`), compared without case.
pub fn is_runner_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let (prefix, _) = lower.split_once('/').unwrap_or((&lower, ""));
    prefix == RUNNER_LABEL_NAMESPACE || prefix.ends_with(".runner.gitlab.com")
}

/// The pod's labels; `expand` expands job variables in the configured values. Keys the job
/// may not set are returned too, for the debug log.
pub fn labels(
    meta: &JobMetadata,
    overwrites: &Overwrites,
    expand: impl Fn(&str) -> String,
) -> (BTreeMap<String, String>, Vec<String>) {
    let namespaced = |scope: &str, name: &str| format!("{scope}.{RUNNER_LABEL_NAMESPACE}/{name}");
    let mut labels = BTreeMap::from([
        ("pod".to_string(), sanitize_label(&meta.project_unique_name)),
        (namespaced("project", "id"), meta.project_id.to_string()),
        (
            namespaced("project", "namespace-id"),
            sanitize_label(&meta.namespace_id),
        ),
        (
            namespaced("project", "name"),
            sanitize_label(&meta.project_name),
        ),
        (
            namespaced("project", "namespace"),
            sanitize_label(&meta.namespace),
        ),
        (
            namespaced("project", "root-namespace"),
            sanitize_label(&meta.root_namespace),
        ),
        (
            namespaced("project", "root-namespace-id"),
            meta.root_namespace_id.to_string(),
        ),
        (
            POD_SELECTOR_LABEL.to_string(),
            sanitize_label(&meta.project_unique_name),
        ),
        (
            namespaced("manager", "name"),
            sanitize_label(&meta.runner_name),
        ),
        (
            namespaced("manager", "id-short"),
            sanitize_label(&meta.runner_short_token),
        ),
    ]);
    let mut refused = Vec::new();
    for (key, value) in &overwrites.pod_labels {
        if is_runner_key(key) {
            refused.push(format!(
                "not setting pod label {key:?}, overwrite of labels in the {RUNNER_LABEL_NAMESPACE:?} namespace is not allowed"
            ));
            continue;
        }
        labels.insert(key.clone(), sanitize_label(&expand(value)));
    }
    (labels, refused)
}

/// The pod's annotations: the job's metadata, then `pod_annotations` and their overwrites
/// (which may replace them), values expanded.
pub fn annotations(
    meta: &JobMetadata,
    overwrites: &Overwrites,
    expand: impl Fn(&str) -> String,
) -> BTreeMap<String, String> {
    let job = |name: &str| format!("job.{RUNNER_LABEL_NAMESPACE}/{name}");
    let mut annotations = BTreeMap::from([
        (job("id"), meta.job_id.to_string()),
        (job("url"), meta.job_url.clone()),
        (job("sha"), meta.sha.clone()),
        (job("before_sha"), meta.before_sha.clone()),
        (job("ref"), meta.git_ref.clone()),
        (job("name"), meta.job_name.clone()),
        (job("timeout"), meta.timeout.clone()),
        (
            format!("project.{RUNNER_LABEL_NAMESPACE}/id"),
            meta.project_id.to_string(),
        ),
    ]);
    for (key, value) in &overwrites.pod_annotations {
        annotations.insert(key.clone(), expand(value));
    }
    annotations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> JobMetadata {
        JobMetadata {
            project_unique_name: "runner-abc123xy-project-77-concurrent-0".into(),
            project_id: 77,
            project_name: "My Project".into(),
            root_namespace_id: 5,
            namespace_id: "9".into(),
            namespace: "group/sub".into(),
            root_namespace: "group".into(),
            runner_name: "k8s runner".into(),
            runner_short_token: "abc123xy".into(),
            job_id: 1001,
            job_url: "https://gitlab.example/group/sub/project/-/jobs/1001".into(),
            sha: "0123".into(),
            before_sha: "0000".into(),
            git_ref: "main".into(),
            job_name: "test".into(),
            timeout: "1h0m0s".into(),
        }
    }

    #[test]
    fn the_runners_labels_come_first_and_cannot_be_overwritten() {
        let overwrites = Overwrites {
            pod_labels: BTreeMap::from([
                ("team".into(), "$TEAM/ci".into()),
                ("job.runner.gitlab.com/pod".into(), "hijack".into()),
                ("X.Runner.GitLab.com".into(), "no".into()),
                ("runner.gitlab.com.evil/x".into(), "allowed".into()),
            ]),
            ..Overwrites::default()
        };
        let (labels, refused) = labels(&meta(), &overwrites, |value| value.replace("$TEAM", "qa"));
        let expected: BTreeMap<String, String> = [
            (
                "job.runner.gitlab.com/pod",
                "runner-abc123xy-project-77-concurrent-0",
            ),
            ("manager.runner.gitlab.com/id-short", "abc123xy"),
            ("manager.runner.gitlab.com/name", "k8s_runner"),
            ("pod", "runner-abc123xy-project-77-concurrent-0"),
            ("project.runner.gitlab.com/id", "77"),
            ("project.runner.gitlab.com/name", "My_Project"),
            ("project.runner.gitlab.com/namespace", "group_sub"),
            ("project.runner.gitlab.com/namespace-id", "9"),
            ("project.runner.gitlab.com/root-namespace", "group"),
            ("project.runner.gitlab.com/root-namespace-id", "5"),
            ("runner.gitlab.com.evil/x", "allowed"),
            ("team", "qa_ci"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        assert_eq!(labels, expected);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused[0].contains("\"X.Runner.GitLab.com\""),
            "{refused:?}"
        );
    }

    #[test]
    fn annotations_carry_the_job_and_may_be_replaced() {
        let overwrites = Overwrites {
            pod_annotations: BTreeMap::from([
                ("job.runner.gitlab.com/name".into(), "renamed".into()),
                ("owner".into(), "$USER".into()),
            ]),
            ..Overwrites::default()
        };
        let annotations = annotations(&meta(), &overwrites, |value| value.replace("$USER", "me"));
        assert_eq!(annotations["job.runner.gitlab.com/id"], "1001");
        assert_eq!(
            annotations["job.runner.gitlab.com/url"],
            "https://gitlab.example/group/sub/project/-/jobs/1001"
        );
        assert_eq!(annotations["job.runner.gitlab.com/timeout"], "1h0m0s");
        assert_eq!(annotations["job.runner.gitlab.com/name"], "renamed");
        assert_eq!(annotations["owner"], "me");
        assert_eq!(annotations["project.runner.gitlab.com/id"], "77");
        assert_eq!(annotations.len(), 9);
    }
}
