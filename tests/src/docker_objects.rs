//! What a job of the Docker executor leaves in the engine, found by upstream's labels: the
//! runner (its short token: the 9 characters after `glrt-t1_`) and the job id.

use std::process::Command;

use crate::images::run;

/// The three kinds of objects a job makes, as `docker <list> -q` lists them.
pub const DOCKER_KINDS: [(&str, &[&str]); 3] = [
    ("container", &["ps", "-a"]),
    ("volume", &["volume", "ls"]),
    ("network", &["network", "ls"]),
];

/// The `--filter` for everything the runner with `token` labelled.
pub fn runner_label(token: &str) -> String {
    let short: String = token
        .trim_start_matches("glrt-t1_")
        .chars()
        .take(9)
        .collect();
    format!("label=com.gitlab.gitlab-runner.runner.id={short}")
}

/// The runner's volumes labelled reusable (caches, and the builds directory of fetch jobs).
pub fn reusable_volumes(token: &str) -> Vec<String> {
    run(Command::new("docker").args([
        "volume",
        "ls",
        "-q",
        "--filter",
        &runner_label(token),
        "--filter",
        "label=com.gitlab.gitlab-runner.reusable=true",
    ]))
    .lines()
    .map(str::to_string)
    .collect()
}

/// The job's containers, volumes and networks (`kind id`), but the volumes kept for later
/// jobs on purpose.
pub fn objects_of_job(token: &str, job_id: i64) -> Vec<String> {
    let runner = runner_label(token);
    let job = format!("label=com.gitlab.gitlab-runner.job.id={job_id}");
    let kept = reusable_volumes(token);
    let mut out = Vec::new();
    for (kind, list) in DOCKER_KINDS {
        let listed = run(Command::new("docker")
            .args(list)
            .args(["-q", "--filter", &runner, "--filter", &job]));
        out.extend(
            listed
                .lines()
                .filter(|id| !kept.iter().any(|kept| kept == id))
                .map(|id| format!("{kind} {id}")),
        );
    }
    out
}
