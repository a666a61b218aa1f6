//! What the Kubernetes end-to-end tests share: the `config.toml` of a runner on the API
//! double, the job log's lines without their frame, and the check that a job left nothing in
//! the double or on the engine.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::kube_api::{KubeApi, TOKEN};
use crate::{HelperImage, DEBIAN_IMAGE};

/// A directory with the `config.toml` of a kubernetes runner (`concurrent = 2`) on the
/// double, with the tests' debootstrap image and `helper`; `extra` is more of
/// `[runners.kubernetes]` (keys, then subsections).
pub fn runner_config(
    gitlab_url: &str,
    token: &str,
    api: &KubeApi,
    helper: &HelperImage,
    extra: &str,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 2\ncheck_interval = 1\n\n[[runners]]\n  name = \"kubernetes\"\n  url = \"{gitlab_url}\"\n  token = \"{token}\"\n  executor = \"kubernetes\"\n  [runners.kubernetes]\n    host = \"{}\"\n    ca_file = \"{}\"\n    bearer_token = \"{TOKEN}\"\n    namespace = \"default\"\n    image = \"{DEBIAN_IMAGE}\"\n    helper_image = \"{}\"\n    pull_policy = [\"if-not-present\"]\n    poll_interval = 1\n{extra}",
            api.url(),
            api.ca_file().display(),
            helper.0
        ),
    )
    .expect("write config.toml");
    (dir, config)
}

/// The double holds no pod, Service, PodDisruptionBudget or Secret of the runner, and the
/// engine nothing of its kubelet (removal is asynchronous after the delete, so it gets a few
/// seconds).
pub async fn assert_nothing_left(api: &KubeApi) {
    assert!(
        api.pod_names().is_empty(),
        "pods left: {:?}",
        api.pod_names()
    );
    for kind in ["services", "poddisruptionbudgets"] {
        assert!(
            api.names(kind).is_empty(),
            "{kind} left: {:?}",
            api.names(kind)
        );
    }
    // The runner's Secrets carry its manager label (a test's own Secrets do not).
    let secrets: Vec<String> = api
        .secret_names()
        .into_iter()
        .filter(|secret| {
            secret.split_once('/').is_some_and(|(namespace, name)| {
                api.object("secrets", namespace, name)
                    .is_some_and(|object| {
                        object["metadata"]["labels"]["manager.runner.gitlab.com/id-short"]
                            .is_string()
                    })
            })
        })
        .collect();
    assert!(secrets.is_empty(), "the runner's Secrets left: {secrets:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = api.leftovers();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left on the engine: {left:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `line` without its ANSI escape sequences (`\x1b[0K`, `\x1b[31;1m`, …).
pub fn plain(line: &str) -> String {
    let mut text = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: `[`, parameters, then one final letter.
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    text
}

/// The job log's lines after their timestamp and stream marker (`01O `, `00E `, `00O+`),
/// without colours.
pub fn log_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| line.split_once(' ').and_then(|(_, rest)| rest.get(4..)))
        .map(plain)
        .collect()
}

/// How many job-log lines are exactly `text` after their frame and without colours: a
/// script's output or one of the runner's own lines, not the `$ command` line that echoes a
/// script's command.
pub fn output_lines(log: &str, text: &str) -> usize {
    log_lines(log).iter().filter(|line| *line == text).count()
}
