//! The start-up sweep (beyond upstream): a runner that crashed or was killed leaves its job's
//! pod, an unowned registry Secret and, with `namespace_per_job`, the job's namespace behind.
//! At start the runner lists the objects carrying its own manager label
//! (`manager.runner.gitlab.com/id-short`) and deletes those older than their job's timeout
//! (the `job.runner.gitlab.com/timeout` annotation) plus [`MARGIN`]: by then GitLab has failed
//! the job and no runner is still working in them. Objects without a readable timeout are
//! left alone, as are Secrets a pod owns (they go with their pod).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use kube::Resource;
use serde::de::DeserializeOwned;

use crate::config::KubernetesConfig;
use crate::names::sanitize_label;
use crate::retry::RetryPolicy;

/// The label naming the runner (its short token) that made an object.
pub const MANAGER_LABEL: &str = "manager.runner.gitlab.com/id-short";

/// The annotation holding the job's timeout, as Go prints a duration (`1h0m0s`).
pub const TIMEOUT_ANNOTATION: &str = "job.runner.gitlab.com/timeout";

/// How long past its job's timeout an object is kept: the runner may still run the
/// `after_script`, upload artifacts and clean up after a job timed out.
pub const MARGIN: Duration = Duration::from_secs(3600);

/// The labels and annotations of the pod that its companion objects (the registry Secret,
/// the job's namespace) carry too, so that the sweep finds them: the manager's labels, the
/// job's id and its timeout.
pub fn companion_metadata(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let pick = |from: &BTreeMap<String, String>, keys: &[&str]| {
        from.iter()
            .filter(|(key, _)| keys.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    };
    (
        pick(labels, &[MANAGER_LABEL, "manager.runner.gitlab.com/name"]),
        pick(
            annotations,
            &[TIMEOUT_ANNOTATION, "job.runner.gitlab.com/id"],
        ),
    )
}

/// What a sweep deleted, as `kind namespace/name`, and what it could not do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The objects deleted.
    pub deleted: Vec<String>,
    /// The failures (a list or a delete refused), each a line for the runner's log.
    pub errors: Vec<String>,
}

/// A Go duration string (`1h0m0s`, `90m`, `1.5h`, `300ms`); `None` when it is not one.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|end| *end > 0)?;
        let value: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Whether an object made at `created` for a job of `timeout` is left over at `now`.
pub fn is_left_over(created: SystemTime, timeout: Duration, now: SystemTime) -> bool {
    now.duration_since(created)
        .is_ok_and(|age| age > timeout.saturating_add(MARGIN))
}

/// Whether `object`, of this runner, is left over at `now` (and for Secrets: not owned).
fn left_over<K: Resource>(object: &K, now: SystemTime) -> bool {
    let meta = object.meta();
    if meta.deletion_timestamp.is_some() {
        return false;
    }
    let Some(created) = meta.creation_timestamp.as_ref() else {
        return false;
    };
    let Some(timeout) = meta
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(TIMEOUT_ANNOTATION))
        .and_then(|text| parse_go_duration(text))
    else {
        return false;
    };
    is_left_over(SystemTime::from(created.0), timeout, now)
}

/// Deletes this runner's left-over pods and unowned Secrets in the configured namespace and,
/// with `namespace_per_job`, its left-over job namespaces; `short_token` is the runner's.
pub async fn sweep(
    client: kube::Client,
    config: &KubernetesConfig,
    short_token: &str,
    now: SystemTime,
) -> Swept {
    let mut swept = Swept::default();
    let retry = config.retry_policy();
    let selector = format!("{MANAGER_LABEL}={}", sanitize_label(short_token));
    let namespace = match config.overwrites.namespace.as_str() {
        "" => "default",
        namespace => namespace,
    };
    let params = DeleteParams {
        grace_period_seconds: config
            .cleanup_grace_period_seconds
            .and_then(|seconds| u32::try_from(seconds).ok()),
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    sweep_kind(
        &pods,
        "pod",
        &selector,
        &retry,
        &params,
        now,
        &mut swept,
        |_| true,
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    sweep_kind(
        &secrets,
        "secret",
        &selector,
        &retry,
        &params,
        now,
        &mut swept,
        |secret: &Secret| {
            secret
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty)
        },
    )
    .await;
    if config.namespace_per_job {
        let namespaces: Api<Namespace> = Api::all(client);
        sweep_kind(
            &namespaces,
            "namespace",
            &selector,
            &retry,
            &params,
            now,
            &mut swept,
            |namespace: &Namespace| {
                namespace
                    .metadata
                    .name
                    .as_deref()
                    .is_some_and(|name| name.starts_with("ci-job-"))
            },
        )
        .await;
    }
    swept
}

/// Lists the objects of `api` matching `selector` and deletes the left-over ones `keep_if`
/// allows.
#[expect(
    clippy::too_many_arguments,
    reason = "one call per kind, all from sweep"
)]
async fn sweep_kind<K>(
    api: &Api<K>,
    kind: &str,
    selector: &str,
    retry: &RetryPolicy,
    params: &DeleteParams,
    now: SystemTime,
    swept: &mut Swept,
    sweepable: impl Fn(&K) -> bool,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = ListParams::default().labels(selector);
    let objects = match retry.run("listing", |_| api.list(&list)).await {
        Ok(objects) => objects,
        Err(error) => {
            swept
                .errors
                .push(format!("listing {kind}s with {selector}: {error}"));
            return;
        }
    };
    for object in objects.items {
        if !sweepable(&object) || !left_over(&object, now) {
            continue;
        }
        let meta = object.meta();
        let name = meta.name.clone().unwrap_or_default();
        let place = match &meta.namespace {
            Some(namespace) => format!("{kind} {namespace}/{name}"),
            None => format!("{kind} {name}"),
        };
        match retry.run("deleting", |_| api.delete(&name, params)).await {
            Ok(_) => swept.deleted.push(place),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => swept.errors.push(format!("deleting {place}: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_prints_them() {
        assert_eq!(parse_go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_go_duration("2h30m0s"),
            Some(Duration::from_secs(9000))
        );
        assert_eq!(parse_go_duration("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration("h"), None);
        assert_eq!(parse_go_duration("10"), None);
    }

    #[test]
    fn an_object_is_left_over_only_past_its_timeout_and_the_margin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        let hour = Duration::from_secs(3600);
        let created = |ago: Duration| now - ago;
        assert!(!is_left_over(created(hour), hour, now));
        assert!(!is_left_over(created(hour * 2), hour, now));
        assert!(is_left_over(
            created(hour * 2 + Duration::from_secs(1)),
            hour,
            now
        ));
        // A clock behind the server's is not an age.
        assert!(!is_left_over(now + hour, Duration::ZERO, now));
    }
}
