//! The runner against the `gitlab-runner-mock` crate (an independent fake of GitLab's runner
//! API), driven through `run-single`.

use std::process::Command;
use std::time::{Duration, Instant};

use gitlab_runner_mock::{GitlabRunnerMock, MockJobState, MockJobStepName, MockJobStepWhen};
use runner_tests::runner_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_single_runs_a_job_from_gitlab_runner_mock() {
    let mock = GitlabRunnerMock::start().await;
    let mut builder = mock.job_builder("mock-job".to_string());
    builder.add_variable("GIT_STRATEGY".into(), "none".into(), true, false);
    builder.add_variable("HIDDEN".into(), "mock-secret-value".into(), false, true);
    builder.add_step(
        MockJobStepName::Script,
        vec![
            "echo hello from the mock job".into(),
            "echo \"hidden: $HIDDEN\"".into(),
        ],
        3600,
        MockJobStepWhen::OnSuccess,
        false,
    );
    let job = builder.build();
    mock.enqueue_job(job.clone());

    let dir = tempfile::tempdir().unwrap();
    let binary = runner_binary();
    let url = mock.uri().to_string();
    let token = mock.runner_token().to_string();
    let builds = dir.path().join("builds");
    let config = dir.path().join("config.toml");
    let status = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args([
                "run-single",
                "-c",
                config.to_str().unwrap(),
                "--url",
                &url,
                "--token",
                &token,
                "--executor",
                "shell",
                "--builds-dir",
                builds.to_str().unwrap(),
                "--max-builds",
                "1",
            ])
            .status()
            .unwrap()
    });
    let status = tokio::time::timeout(Duration::from_secs(120), status)
        .await
        .expect("run-single finished")
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while job.state() == MockJobState::Running && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = String::from_utf8_lossy(&job.log()).to_string();
    assert_eq!(job.state(), MockJobState::Success, "{log}");
    assert!(log.contains("hello from the mock job"), "{log}");
    assert!(log.contains("hidden: [MASKED]"), "{log}");
    assert!(!log.contains("mock-secret-value"));
}
