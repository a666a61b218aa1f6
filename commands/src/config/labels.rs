//! Runner `labels`: the global table with each runner's on top, checked as upstream (and
//! GitLab) check them, and sent as `info.labels` with every request.

use std::collections::BTreeMap;

use super::{invalid, ConfigError};

/// Upstream's (and GitLab's) limit on a runner's computed labels.
const MAX_LABELS: usize = 32;

fn label_character(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `^[a-zA-Z0-9_][a-zA-Z0-9._-]{2,64}$`, upstream's key rule, without a regex engine.
fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest: Vec<char> = chars.collect();
    first_ok && (2..=64).contains(&rest.len()) && rest.iter().all(|&c| label_character(c))
}

/// `^[a-zA-Z0-9._-]{1,256}$`, upstream's value rule.
fn valid_value(value: &str) -> bool {
    (1..=256).contains(&value.chars().count()) && value.chars().all(label_character)
}

/// Checks `labels` (at `key`, e.g. `labels` or `runners[0].labels`) against upstream's rules.
pub(super) fn check(key: &str, labels: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, value) in labels {
        if !valid_key(name) {
            return Err(invalid(
                key,
                name,
                "invalid label key, doesn't match \"^[a-zA-Z0-9_][a-zA-Z0-9._-]{2,64}$\"",
            ));
        }
        if !valid_value(value) {
            return Err(invalid(
                format!("{key}.{name}"),
                value,
                "invalid label value, doesn't match \"^[a-zA-Z0-9._-]{1,256}$\"",
            ));
        }
    }
    Ok(())
}

/// The runner's labels as GitLab gets them: the global ones, overridden by the runner's.
pub fn computed(
    global: &BTreeMap<String, String>,
    runner: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = global.clone();
    labels.extend(runner.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

/// [`computed`], checked: each runner's own labels, and at most 32 in all.
pub(super) fn computed_checked(
    key: &str,
    global: &BTreeMap<String, String>,
    runner: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    check(key, runner)?;
    let labels = computed(global, runner);
    if labels.len() > MAX_LABELS {
        return Err(invalid(
            key,
            labels.len(),
            "exceeded maximum computed labels number of 32",
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_follow_upstreams_patterns() {
        assert!(valid_key("env"));
        assert!(valid_key("_team.name-1"));
        assert!(!valid_key("ab"));
        assert!(!valid_key(".env"));
        assert!(!valid_key("has space"));
        assert!(valid_value("prod"));
        assert!(!valid_value(""));
        assert!(!valid_value("a/b"));
    }

    #[test]
    fn the_runners_labels_override_the_global_ones() {
        let global = BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("team".to_string(), "ci".to_string()),
        ]);
        let runner = BTreeMap::from([("env".to_string(), "staging".to_string())]);
        let labels = computed_checked("runners[0].labels", &global, &runner).unwrap();
        assert_eq!(labels["env"], "staging");
        assert_eq!(labels["team"], "ci");
        let many: BTreeMap<String, String> = (0..33)
            .map(|i| (format!("key{i}"), "v".to_string()))
            .collect();
        let error = computed_checked("runners[0].labels", &BTreeMap::new(), &many).unwrap_err();
        assert!(error
            .to_string()
            .contains("exceeded maximum computed labels number of 32"));
    }
}
