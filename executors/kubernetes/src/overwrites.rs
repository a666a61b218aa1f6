//! What a job may change about its pod through `KUBERNETES_*` variables, within what
//! `[runners.kubernetes]` allows (upstream's `executors/kubernetes/overwrites.go`): the
//! namespace, service account and bearer token where a regular expression (or, for the token,
//! a switch) allows it, labels, annotations, node selector and tolerations entry by entry, and
//! each resource request and limit up to its `*_overwrite_max_allowed`, compared by value.
//!
//! Every accepted overwrite is reported with upstream's line (`"CPULimit" overwritten with
//! "500m"`); every refusal is an error with upstream's text, which the executor wraps as
//! `couldn't prepare overwrites: …` (a configuration error).

use std::collections::BTreeMap;

use runner_core::variables::Variables;

use crate::quantity::Quantity;

/// The job variable that overwrites the namespace.
pub const NAMESPACE_OVERWRITE: &str = "KUBERNETES_NAMESPACE_OVERWRITE";
/// The job variable that overwrites the service account.
pub const SERVICE_ACCOUNT_OVERWRITE: &str = "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE";
/// The job variable that overwrites the bearer token.
pub const BEARER_TOKEN_OVERWRITE: &str = "KUBERNETES_BEARER_TOKEN";
/// The prefix of the variables that add or replace pod labels (`key=value`).
pub const POD_LABELS_PREFIX: &str = "KUBERNETES_POD_LABELS_";
/// The prefix of the variables that add or replace pod annotations (`key=value`).
pub const POD_ANNOTATIONS_PREFIX: &str = "KUBERNETES_POD_ANNOTATIONS_";
/// The prefix of the variables that add or replace node selector entries (`key=value`).
pub const NODE_SELECTOR_PREFIX: &str = "KUBERNETES_NODE_SELECTOR_";
/// The prefix of the variables that add tolerations (`key[=value][:Effect]`).
pub const NODE_TOLERATIONS_PREFIX: &str = "KUBERNETES_NODE_TOLERATIONS_";

/// A refused overwrite, with upstream's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverwriteError {
    /// The value does not match the allowing expression (or `k=v` for a map entry).
    #[error("provided value {value:?} does not match {pattern:?}")]
    Malformed {
        /// The variable's value.
        value: String,
        /// The expression it had to match.
        pattern: String,
    },
    /// The `*_overwrite_allowed` expression does not compile.
    #[error("{0}")]
    Regex(String),
    /// A resource over its maximum.
    #[error(
        "the resource {resource:?} requested {requested:?} is higher than limit allowed {max:?}"
    )]
    TooHigh {
        /// Upstream's field name (`CPULimit`, `HelperMemoryRequest`, …).
        resource: String,
        /// The variable's value.
        requested: String,
        /// The configured maximum.
        max: String,
    },
    /// The maximum or the requested value is not a quantity.
    #[error("parsing resource limit: {0:?}")]
    Quantity(String),
    /// A refusal inside one group of resources, prefixed as upstream's
    /// (`invalid build limits specified: …`).
    #[error("{context}: {inner}")]
    In {
        /// `invalid build limits specified` and the like.
        context: String,
        /// What was refused.
        inner: Box<OverwriteError>,
    },
}

/// One container kind's (or the pod's) requests and limits as configured, each with the
/// maximum an overwrite may ask for (empty: the overwrite is ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSettings {
    /// `*cpu_limit`.
    pub cpu_limit: String,
    /// `*cpu_limit_overwrite_max_allowed`.
    pub cpu_limit_max: String,
    /// `*cpu_request`.
    pub cpu_request: String,
    /// `*cpu_request_overwrite_max_allowed`.
    pub cpu_request_max: String,
    /// `*memory_limit`.
    pub memory_limit: String,
    /// `*memory_limit_overwrite_max_allowed`.
    pub memory_limit_max: String,
    /// `*memory_request`.
    pub memory_request: String,
    /// `*memory_request_overwrite_max_allowed`.
    pub memory_request_max: String,
    /// `*ephemeral_storage_limit` (not at pod level).
    pub ephemeral_storage_limit: String,
    /// `*ephemeral_storage_limit_overwrite_max_allowed`.
    pub ephemeral_storage_limit_max: String,
    /// `*ephemeral_storage_request` (not at pod level).
    pub ephemeral_storage_request: String,
    /// `*ephemeral_storage_request_overwrite_max_allowed`.
    pub ephemeral_storage_request_max: String,
}

/// The keys of `[runners.kubernetes]` that overwrites are held against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverwriteSettings {
    /// `namespace`.
    pub namespace: String,
    /// `namespace_overwrite_allowed`: a regular expression; empty disables the overwrite.
    pub namespace_overwrite_allowed: String,
    /// `service_account`.
    pub service_account: String,
    /// `service_account_overwrite_allowed`.
    pub service_account_overwrite_allowed: String,
    /// `bearer_token`.
    pub bearer_token: String,
    /// `bearer_token_overwrite_allowed`.
    pub bearer_token_overwrite_allowed: bool,
    /// `pod_labels`.
    pub pod_labels: BTreeMap<String, String>,
    /// `pod_labels_overwrite_allowed`.
    pub pod_labels_overwrite_allowed: String,
    /// `pod_annotations`.
    pub pod_annotations: BTreeMap<String, String>,
    /// `pod_annotations_overwrite_allowed`.
    pub pod_annotations_overwrite_allowed: String,
    /// `node_selector`.
    pub node_selector: BTreeMap<String, String>,
    /// `node_selector_overwrite_allowed`.
    pub node_selector_overwrite_allowed: String,
    /// `node_tolerations`: `"key[=value]" = "Effect"`.
    pub node_tolerations: BTreeMap<String, String>,
    /// `node_tolerations_overwrite_allowed`.
    pub node_tolerations_overwrite_allowed: String,
    /// The build container's resources (`cpu_limit`, …).
    pub build: ResourceSettings,
    /// Every service container's (`service_cpu_limit`, …).
    pub service: ResourceSettings,
    /// The helper and init containers' (`helper_cpu_limit`, …).
    pub helper: ResourceSettings,
    /// The pod's own (`pod_cpu_limit`, …; no ephemeral storage).
    pub pod: ResourceSettings,
}

/// A container's requests or limits after overwrites: empty strings are unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceValues {
    /// `cpu`.
    pub cpu: String,
    /// `memory`.
    pub memory: String,
    /// `ephemeral-storage`.
    pub ephemeral_storage: String,
}

/// Requests and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `resources.requests`.
    pub requests: ResourceValues,
    /// `resources.limits`.
    pub limits: ResourceValues,
}

/// What the job's variables made of the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overwrites {
    /// The namespace the pod goes to.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
    /// The bearer token to connect with.
    pub bearer_token: String,
    /// Pod labels, before the runner's own are added.
    pub pod_labels: BTreeMap<String, String>,
    /// Pod annotations, after the runner's own defaults.
    pub pod_annotations: BTreeMap<String, String>,
    /// The node selector.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations: `key[=value]` to effect.
    pub node_tolerations: BTreeMap<String, String>,
    /// The build container's resources.
    pub build: Resources,
    /// Each service container's, unless its own variables say otherwise.
    pub service: Resources,
    /// The helper's and the init containers'.
    pub helper: Resources,
    /// The pod's.
    pub pod: Resources,
    /// The lines to print in the job log, in order.
    pub log: Vec<String>,
}

struct Evaluation<'a> {
    variables: &'a Variables,
    log: Vec<String>,
}

fn regex_check(pattern: &str, value: &str) -> Result<(), OverwriteError> {
    let regex =
        regex::Regex::new(pattern).map_err(|error| OverwriteError::Regex(error.to_string()))?;
    if regex.is_match(value) {
        Ok(())
    } else {
        Err(OverwriteError::Malformed {
            value: value.to_string(),
            pattern: pattern.to_string(),
        })
    }
}

/// `key=value` split at the first `=`.
fn split_entry(value: &str) -> Result<(String, String), OverwriteError> {
    value
        .split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| OverwriteError::Malformed {
            value: value.to_string(),
            pattern: "k=v".into(),
        })
}

/// `key[=value][:Effect]` split at the first `:`; it cannot fail.
fn split_toleration(value: &str) -> Result<(String, String), OverwriteError> {
    let (key, effect) = value.split_once(':').unwrap_or((value, ""));
    Ok((key.to_string(), effect.to_string()))
}

impl Evaluation<'_> {
    fn single(
        &mut self,
        field: &str,
        configured: &str,
        pattern: &str,
        variable: &str,
    ) -> Result<String, OverwriteError> {
        let wanted = self.variables.value(variable);
        if pattern.is_empty() || wanted.is_empty() {
            return Ok(configured.to_string());
        }
        regex_check(pattern, &wanted)?;
        let shown = if field == "BearerToken" {
            "XXXXXXXX...".to_string()
        } else {
            wanted.clone()
        };
        self.log
            .push(format!("{field:?} overwritten with {shown:?}"));
        Ok(wanted)
    }

    fn map(
        &mut self,
        field: &str,
        configured: &BTreeMap<String, String>,
        pattern: &str,
        prefix: &str,
        split: fn(&str) -> Result<(String, String), OverwriteError>,
    ) -> Result<BTreeMap<String, String>, OverwriteError> {
        if pattern.is_empty() {
            return Ok(configured.clone());
        }
        let mut values = configured.clone();
        for variable in self.variables.iter() {
            if !variable.key.starts_with(prefix) {
                continue;
            }
            regex_check(pattern, &variable.value)?;
            let (key, value) = split(&variable.value)?;
            self.log
                .push(format!("{field:?} {key:?} overwritten with {value:?}"));
            values.insert(key, value);
        }
        Ok(values)
    }

    fn resource(
        &mut self,
        field: &str,
        configured: &str,
        max: &str,
        wanted: &str,
    ) -> Result<String, OverwriteError> {
        if max.is_empty() || wanted.is_empty() {
            return Ok(configured.to_string());
        }
        let parse = |text: &str| {
            Quantity::parse(text).map_err(|error| OverwriteError::Quantity(error.to_string()))
        };
        let (limit, requested) = (parse(max)?, parse(wanted)?);
        if requested > limit {
            return Err(OverwriteError::TooHigh {
                resource: field.to_string(),
                requested: wanted.to_string(),
                max: max.to_string(),
            });
        }
        self.log
            .push(format!("{field:?} overwritten with {wanted:?}"));
        Ok(wanted.to_string())
    }

    /// Requests, then limits, of one group: `prefix` names the fields (`Helper`), `variable`
    /// the variables (`KUBERNETES_HELPER_`), `context` the error prefix (`helper`).
    fn resources(
        &mut self,
        settings: &ResourceSettings,
        prefix: &str,
        variable: &str,
        context: &str,
        with_storage: bool,
        wanted: &dyn Fn(&str) -> String,
    ) -> Result<Resources, OverwriteError> {
        let mut resources = Resources::default();
        for kind in ["Request", "Limit"] {
            let upper = kind.to_ascii_uppercase();
            let (cpu, cpu_max, memory, memory_max, storage, storage_max) = if kind == "Request" {
                (
                    &settings.cpu_request,
                    &settings.cpu_request_max,
                    &settings.memory_request,
                    &settings.memory_request_max,
                    &settings.ephemeral_storage_request,
                    &settings.ephemeral_storage_request_max,
                )
            } else {
                (
                    &settings.cpu_limit,
                    &settings.cpu_limit_max,
                    &settings.memory_limit,
                    &settings.memory_limit_max,
                    &settings.ephemeral_storage_limit,
                    &settings.ephemeral_storage_limit_max,
                )
            };
            let values = (|| {
                let cpu = self.resource(
                    &format!("{prefix}CPU{kind}"),
                    cpu,
                    cpu_max,
                    &wanted(&format!("{variable}CPU_{upper}")),
                )?;
                let memory = self.resource(
                    &format!("{prefix}Memory{kind}"),
                    memory,
                    memory_max,
                    &wanted(&format!("{variable}MEMORY_{upper}")),
                )?;
                let ephemeral_storage = if with_storage {
                    self.resource(
                        &format!("{prefix}EphemeralStorage{kind}"),
                        storage,
                        storage_max,
                        &wanted(&format!("{variable}EPHEMERAL_STORAGE_{upper}")),
                    )?
                } else {
                    String::new()
                };
                Ok(ResourceValues {
                    cpu,
                    memory,
                    ephemeral_storage,
                })
            })()
            .map_err(|inner| OverwriteError::In {
                context: format!("invalid {context} {}s specified", kind.to_ascii_lowercase()),
                inner: Box::new(inner),
            })?;
            if kind == "Request" {
                resources.requests = values;
            } else {
                resources.limits = values;
            }
        }
        Ok(resources)
    }
}

/// Holds the job's (expanded) variables against `settings`, in upstream's order.
pub fn evaluate(
    settings: &OverwriteSettings,
    variables: &Variables,
) -> Result<Overwrites, OverwriteError> {
    let variables = variables.expanded();
    let mut evaluation = Evaluation {
        variables: &variables,
        log: Vec::new(),
    };
    let namespace = evaluation.single(
        "Namespace",
        &settings.namespace,
        &settings.namespace_overwrite_allowed,
        NAMESPACE_OVERWRITE,
    )?;
    let service_account = evaluation.single(
        "ServiceAccount",
        &settings.service_account,
        &settings.service_account_overwrite_allowed,
        SERVICE_ACCOUNT_OVERWRITE,
    )?;
    let token_pattern = if settings.bearer_token_overwrite_allowed {
        ".+"
    } else {
        ""
    };
    let bearer_token = evaluation.single(
        "BearerToken",
        &settings.bearer_token,
        token_pattern,
        BEARER_TOKEN_OVERWRITE,
    )?;
    let pod_labels = evaluation.map(
        "PodLabels",
        &settings.pod_labels,
        &settings.pod_labels_overwrite_allowed,
        POD_LABELS_PREFIX,
        split_entry,
    )?;
    let pod_annotations = evaluation.map(
        "PodAnnotations",
        &settings.pod_annotations,
        &settings.pod_annotations_overwrite_allowed,
        POD_ANNOTATIONS_PREFIX,
        split_entry,
    )?;
    let node_selector = evaluation.map(
        "NodeSelector",
        &settings.node_selector,
        &settings.node_selector_overwrite_allowed,
        NODE_SELECTOR_PREFIX,
        split_entry,
    )?;
    let node_tolerations = evaluation.map(
        "NodeTolerations",
        &settings.node_tolerations,
        &settings.node_tolerations_overwrite_allowed,
        NODE_TOLERATIONS_PREFIX,
        split_toleration,
    )?;
    let job = |name: &str| variables.value(name);
    let build = evaluation.resources(&settings.build, "", "KUBERNETES_", "build", true, &job)?;
    let service = evaluation.resources(
        &settings.service,
        "Service",
        "KUBERNETES_SERVICE_",
        "service",
        true,
        &job,
    )?;
    let helper = evaluation.resources(
        &settings.helper,
        "Helper",
        "KUBERNETES_HELPER_",
        "helper",
        true,
        &job,
    )?;
    let pod = evaluation.resources(&settings.pod, "Pod", "KUBERNETES_POD_", "Pod", false, &job)?;
    Ok(Overwrites {
        namespace,
        service_account,
        bearer_token,
        pod_labels,
        pod_annotations,
        node_selector,
        node_tolerations,
        build,
        service,
        helper,
        pod,
        log: evaluation.log,
    })
}

/// One service's own `KUBERNETES_SERVICE_*` variables (from its `variables:`), held against
/// the same maxima, over the job-wide service resources; `None` when it sets none. Errors
/// are prefixed `invalid service limits specified` / `requests`, as upstream's.
pub fn evaluate_service(
    settings: &OverwriteSettings,
    job_wide: &Resources,
    service_variables: &Variables,
) -> Result<(Option<Resources>, Vec<String>), OverwriteError> {
    let variables = service_variables.expanded();
    let names = [
        "CPU_LIMIT",
        "MEMORY_LIMIT",
        "EPHEMERAL_STORAGE_LIMIT",
        "CPU_REQUEST",
        "MEMORY_REQUEST",
        "EPHEMERAL_STORAGE_REQUEST",
    ];
    let any = names.iter().any(|name| {
        !variables
            .value(&format!("KUBERNETES_SERVICE_{name}"))
            .is_empty()
    });
    if !any {
        return Ok((None, Vec::new()));
    }
    // The job-wide values stand for the configured ones; the maxima stay the runner's.
    let current = ResourceSettings {
        cpu_limit: job_wide.limits.cpu.clone(),
        memory_limit: job_wide.limits.memory.clone(),
        ephemeral_storage_limit: job_wide.limits.ephemeral_storage.clone(),
        cpu_request: job_wide.requests.cpu.clone(),
        memory_request: job_wide.requests.memory.clone(),
        ephemeral_storage_request: job_wide.requests.ephemeral_storage.clone(),
        ..settings.service.clone()
    };
    let mut evaluation = Evaluation {
        variables: &variables,
        log: Vec::new(),
    };
    let own = |name: &str| variables.value(name);
    let resources = evaluation.resources(
        &current,
        "Service",
        "KUBERNETES_SERVICE_",
        "service",
        true,
        &own,
    )?;
    Ok((Some(resources), evaluation.log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::variables::JobVariable;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        Variables::new(
            pairs
                .iter()
                .map(|(key, value)| JobVariable::new(*key, *value))
                .collect(),
        )
    }

    fn settings() -> OverwriteSettings {
        OverwriteSettings {
            namespace: "ci".into(),
            namespace_overwrite_allowed: "^ci-.*$".into(),
            service_account: "runner".into(),
            bearer_token: "config-token".into(),
            pod_labels: BTreeMap::from([("team".into(), "a".into())]),
            pod_labels_overwrite_allowed: ".*".into(),
            node_tolerations_overwrite_allowed: ".*".into(),
            build: ResourceSettings {
                cpu_limit: "1".into(),
                cpu_limit_max: "2".into(),
                memory_limit: "1Gi".into(),
                memory_limit_max: "2Gi".into(),
                ..ResourceSettings::default()
            },
            helper: ResourceSettings {
                memory_request: "100Mi".into(),
                memory_request_max: "256Mi".into(),
                ..ResourceSettings::default()
            },
            pod: ResourceSettings {
                cpu_request_max: "4".into(),
                ..ResourceSettings::default()
            },
            ..OverwriteSettings::default()
        }
    }

    #[test]
    fn allowed_overwrites_replace_the_configured_values_and_are_logged() {
        let result = evaluate(
            &settings(),
            &vars(&[
                ("SUFFIX", "review"),
                ("KUBERNETES_NAMESPACE_OVERWRITE", "ci-$SUFFIX"),
                ("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "ignored-no-regex"),
                ("KUBERNETES_BEARER_TOKEN", "ignored-not-allowed"),
                ("KUBERNETES_POD_LABELS_1", "team=b"),
                ("KUBERNETES_POD_LABELS_X", "tier=ci=yes"),
                ("KUBERNETES_NODE_TOLERATIONS_1", "gpu=true:NoSchedule"),
                ("KUBERNETES_NODE_TOLERATIONS_2", ""),
                ("KUBERNETES_CPU_LIMIT", "2000m"),
                ("KUBERNETES_MEMORY_LIMIT", "2048Mi"),
                ("KUBERNETES_HELPER_MEMORY_REQUEST", "200Mi"),
                ("KUBERNETES_POD_CPU_REQUEST", "3"),
                ("KUBERNETES_HELPER_CPU_LIMIT", "64"),
            ]),
        )
        .unwrap();
        assert_eq!(result.namespace, "ci-review");
        assert_eq!(result.service_account, "runner");
        assert_eq!(result.bearer_token, "config-token");
        assert_eq!(
            result.pod_labels,
            BTreeMap::from([
                ("team".to_string(), "b".to_string()),
                ("tier".to_string(), "ci=yes".to_string())
            ])
        );
        assert_eq!(
            result.node_tolerations,
            BTreeMap::from([
                (String::new(), String::new()),
                ("gpu=true".to_string(), "NoSchedule".to_string())
            ])
        );
        assert_eq!(result.build.limits.cpu, "2000m");
        assert_eq!(result.build.limits.memory, "2048Mi");
        assert_eq!(result.helper.requests.memory, "200Mi");
        // No maximum for the helper's CPU limit: the variable is ignored.
        assert_eq!(result.helper.limits.cpu, "");
        assert_eq!(result.pod.requests.cpu, "3");
        assert_eq!(
            result.log,
            [
                r#""Namespace" overwritten with "ci-review""#,
                r#""PodLabels" "team" overwritten with "b""#,
                r#""PodLabels" "tier" overwritten with "ci=yes""#,
                r#""NodeTolerations" "gpu=true" overwritten with "NoSchedule""#,
                r#""NodeTolerations" "" overwritten with """#,
                r#""CPULimit" overwritten with "2000m""#,
                r#""MemoryLimit" overwritten with "2048Mi""#,
                r#""HelperMemoryRequest" overwritten with "200Mi""#,
                r#""PodCPURequest" overwritten with "3""#,
            ]
        );
    }

    #[test]
    fn refusals_carry_upstreams_texts() {
        let refuse =
            |pairs: &[(&str, &str)]| evaluate(&settings(), &vars(pairs)).unwrap_err().to_string();
        assert_eq!(
            refuse(&[("KUBERNETES_NAMESPACE_OVERWRITE", "prod")]),
            r#"provided value "prod" does not match "^ci-.*$""#
        );
        assert_eq!(
            refuse(&[("KUBERNETES_POD_LABELS_A", "no-equals")]),
            r#"provided value "no-equals" does not match "k=v""#
        );
        assert_eq!(
            refuse(&[("KUBERNETES_CPU_LIMIT", "2001m")]),
            r#"invalid build limits specified: the resource "CPULimit" requested "2001m" is higher than limit allowed "2""#
        );
        assert_eq!(
            refuse(&[("KUBERNETES_HELPER_MEMORY_REQUEST", "1Gi")]),
            r#"invalid helper requests specified: the resource "HelperMemoryRequest" requested "1Gi" is higher than limit allowed "256Mi""#
        );
        assert_eq!(
            refuse(&[("KUBERNETES_POD_CPU_REQUEST", "5")]),
            r#"invalid Pod requests specified: the resource "PodCPURequest" requested "5" is higher than limit allowed "4""#
        );
        assert_eq!(
            refuse(&[("KUBERNETES_MEMORY_LIMIT", "lots")]),
            r#"invalid build limits specified: parsing resource limit: "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'""#
        );
        let mut bad_regex = settings();
        bad_regex.service_account_overwrite_allowed = "(".into();
        let error = evaluate(
            &bad_regex,
            &vars(&[("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE", "x")]),
        )
        .unwrap_err();
        assert!(matches!(error, OverwriteError::Regex(_)), "{error}");
    }

    #[test]
    fn the_bearer_token_switch_allows_any_value_and_hides_it_in_the_log() {
        let mut allowed = settings();
        allowed.bearer_token_overwrite_allowed = true;
        let result =
            evaluate(&allowed, &vars(&[("KUBERNETES_BEARER_TOKEN", "job-token")])).unwrap();
        assert_eq!(result.bearer_token, "job-token");
        assert_eq!(
            result.log,
            [r#""BearerToken" overwritten with "XXXXXXXX...""#]
        );
    }

    #[test]
    fn a_services_own_variables_overwrite_its_resources_within_the_same_maxima() {
        let mut config = settings();
        config.service = ResourceSettings {
            memory_limit: "128Mi".into(),
            memory_limit_max: "512Mi".into(),
            ..ResourceSettings::default()
        };
        let job_wide = evaluate(&config, &vars(&[])).unwrap().service;
        assert_eq!(
            evaluate_service(&config, &job_wide, &vars(&[("OTHER", "x")])).unwrap(),
            (None, Vec::new())
        );
        let (own, log) = evaluate_service(
            &config,
            &job_wide,
            &vars(&[("KUBERNETES_SERVICE_MEMORY_LIMIT", "256Mi")]),
        )
        .unwrap();
        assert_eq!(own.unwrap().limits.memory, "256Mi");
        assert_eq!(log, [r#""ServiceMemoryLimit" overwritten with "256Mi""#]);
        let error = evaluate_service(
            &config,
            &job_wide,
            &vars(&[("KUBERNETES_SERVICE_MEMORY_LIMIT", "1Gi")]),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"invalid service limits specified: the resource "ServiceMemoryLimit" requested "1Gi" is higher than limit allowed "512Mi""#
        );
    }
}
