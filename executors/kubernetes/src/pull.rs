//! Each container's image pull policies, as upstream computes them: the job's `pull_policy`
//! (build, helper and `init-permissions` take the job image's, each service its own), else
//! `[runners.kubernetes] pull_policy`, limited to `allowed_pull_policies`; the containers try
//! them in order when a pull fails. Errors carry upstream's texts and are configuration
//! errors.
//!
//! One deliberate difference: with no policy set anywhere, upstream's `[""]` (the cluster's
//! default) is held against `allowed_pull_policies` and always fails
//! (`pull_policy ([]) defined in Runner config (default) is not one of …`); here the allowed
//! policies are used, as upstream does when it is given no policies at all.

/// Upstream's job and config names to Kubernetes': `always`, `if-not-present`, `never`.
pub fn kubernetes_name(policy: &str) -> Result<&'static str, String> {
    Ok(match policy {
        "" => "",
        "always" => "Always",
        "if-not-present" => "IfNotPresent",
        "never" => "Never",
        other => return Err(format!("unsupported pull policy: {other:?}")),
    })
}

/// Go's `%v` of a list of policies: `[Always IfNotPresent]`.
pub fn go_list(policies: &[String]) -> String {
    format!("[{}]", policies.join(" "))
}

/// The policies of `container`: `job` are the image's (upstream names), `configured` and
/// `allowed` the runner's (Kubernetes names, as [`crate::config`] reads them).
pub fn effective(
    container: &str,
    job: &[String],
    configured: &[String],
    allowed: &[String],
) -> Result<Vec<String>, String> {
    let job_policies = job
        .iter()
        .map(|policy| kubernetes_name(policy).map(str::to_string))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            format!(
                "converting pull policy for container {container:?}: conversion to Kubernetes policy: {error}"
            )
        })?;
    let wanted = if !job_policies.is_empty() {
        job_policies
    } else {
        configured.to_vec()
    };
    if wanted.is_empty() {
        return Ok(if allowed.is_empty() {
            vec![String::new()]
        } else {
            allowed.to_vec()
        });
    }
    if allowed.is_empty() {
        return Ok(wanted);
    }
    let effective: Vec<String> = wanted
        .iter()
        .filter(|policy| allowed.contains(policy))
        .cloned()
        .collect();
    if !effective.is_empty() {
        return Ok(effective);
    }
    let source = if !job.is_empty() {
        "GitLab pipeline config"
    } else if !configured.is_empty() {
        "Runner config"
    } else {
        "Runner config (default)"
    };
    Err(format!(
        "invalid pull policy for container {container:?}: pull_policy ({}) defined in {source} is not one of the allowed_pull_policies ({})",
        go_list(&wanted),
        go_list(allowed)
    ))
}

/// Upstream's log line for the policies chosen.
pub fn effective_line(container: &str, policies: &[String]) -> String {
    format!(
        "Using effective pull policy of {} for container {container}",
        go_list(policies)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn the_job_then_the_config_limited_to_the_allowed_policies() {
        assert_eq!(
            effective(
                "build",
                &list(&["always", "if-not-present"]),
                &list(&["Never"]),
                &[]
            ),
            Ok(list(&["Always", "IfNotPresent"]))
        );
        assert_eq!(
            effective(
                "build",
                &[],
                &list(&["Always", "IfNotPresent"]),
                &list(&["IfNotPresent"])
            ),
            Ok(list(&["IfNotPresent"]))
        );
        assert_eq!(effective("build", &[], &[], &[]), Ok(list(&[""])));
        assert_eq!(
            effective_line("build", &list(&["Always", "IfNotPresent"])),
            "Using effective pull policy of [Always IfNotPresent] for container build"
        );
    }

    #[test]
    fn refusals_name_where_the_policy_came_from() {
        assert_eq!(
            effective("build", &list(&["always"]), &[], &list(&["IfNotPresent"])).unwrap_err(),
            "invalid pull policy for container \"build\": pull_policy ([Always]) defined in GitLab pipeline config is not one of the allowed_pull_policies ([IfNotPresent])"
        );
        assert_eq!(
            effective("svc-0", &[], &list(&["Never"]), &list(&["Always"])).unwrap_err(),
            "invalid pull policy for container \"svc-0\": pull_policy ([Never]) defined in Runner config is not one of the allowed_pull_policies ([Always])"
        );
        assert_eq!(
            effective("build", &list(&["sometimes"]), &[], &[]).unwrap_err(),
            "converting pull policy for container \"build\": conversion to Kubernetes policy: unsupported pull policy: \"sometimes\""
        );
    }

    #[test]
    fn no_policy_anywhere_takes_the_allowed_ones_instead_of_failing_as_upstream() {
        assert_eq!(
            effective("build", &[], &[], &list(&["IfNotPresent", "Always"])),
            Ok(list(&["IfNotPresent", "Always"]))
        );
    }
}
