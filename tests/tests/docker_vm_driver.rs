//! The reference `docker-vm-driver` (built on `driver-kit`) on the real Docker engine: each job
//! gets a container running sshd from the locally built image (`scripts/build-sshd-image.sh`),
//! and every seed-003 behaviour is checked against the engine: one pull for concurrent jobs,
//! reclaiming a container a crashed prepare created, waiting for a slot on a full host, cleanup
//! without state, and no container left after the runner is stopped mid-job.
//!
//! Needs the Docker engine and debootstrap (installed on demand); never skipped.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use runner_tests::{
    docker_vm_driver_binary, job_payload, runner_binary, FakeGitlab, RunnerProcess,
};
use serde_json::json;

const BASE_IMAGE: &str = runner_tests::DEBIAN_IMAGE;
const RUNNER_TOKEN: &str = "glrt-t1_dockervmdriver";
const WAIT: Duration = Duration::from_secs(180);

/// One test's driver world: its own state dir, container prefix and image tag, all removed
/// (containers and image included) when dropped.
struct World {
    dir: tempfile::TempDir,
    prefix: String,
    image: String,
    max_jobs: usize,
}

impl World {
    fn new(name: &str, max_jobs: usize) -> Self {
        runner_tests::debian_image();
        let id = format!("{name}{}", std::process::id());
        Self {
            dir: tempfile::tempdir().unwrap(),
            prefix: format!("glrs-{id}"),
            image: format!("gitlab-runner-rs-test/vm-{id}:1"),
            max_jobs,
        }
    }

    fn pulls_file(&self) -> PathBuf {
        self.dir.path().join("pulls")
    }

    /// The driver's environment; "pulling" tags the base image (slowly) and counts.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "DOCKER_VM_STATE_DIR".into(),
                self.dir.path().join("state").display().to_string(),
            ),
            ("DOCKER_VM_PREFIX".into(), self.prefix.clone()),
            ("DOCKER_VM_IMAGE".into(), self.image.clone()),
            ("DOCKER_VM_MAX_JOBS".into(), self.max_jobs.to_string()),
            ("DOCKER_VM_CAPACITY_TIMEOUT".into(), "60".into()),
            (
                "DOCKER_VM_PULL".into(),
                format!(
                    "echo pull >> {}; sleep 1; docker tag {BASE_IMAGE} \"$1\"",
                    self.pulls_file().display()
                ),
            ),
        ]
    }

    fn pulls(&self) -> usize {
        std::fs::read_to_string(self.pulls_file())
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Runs the driver directly, as the runner would, for job `job`.
    fn driver(&self, job: &str, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut command = Command::new(docker_vm_driver_binary());
        command
            .args(args)
            .envs(self.env())
            .env("CUSTOM_ENV_CI_JOB_ID", job)
            .env("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "direct")
            .env("BUILD_FAILURE_EXIT_CODE", "1")
            .env("SYSTEM_FAILURE_EXIT_CODE", "2")
            .env(
                "BUILD_EXIT_CODE_FILE",
                self.dir.path().join(format!("exit-{job}")),
            )
            .stdin(Stdio::null());
        for (key, value) in extra {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    /// Names of this world's containers, running or not.
    fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
            .arg(format!("name={}", self.prefix))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn runner_section(&self) -> String {
        let driver = docker_vm_driver_binary();
        let mut section = String::new();
        for stage in ["prepare", "run", "cleanup"] {
            section.push_str(&format!(
                "    {stage}_exec = \"{}\"\n    {stage}_args = [\"{stage}\"]\n",
                driver.display()
            ));
        }
        section
    }

    fn start_runner(&self, gitlab: &FakeGitlab, concurrent: u32) -> (RunnerProcess, PathBuf) {
        let config = self.dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "concurrent = {concurrent}\ncheck_interval = 1\nshutdown_timeout = 30\n\n[[runners]]\n  name = \"vm\"\n  url = \"{}\"\n  token = \"{RUNNER_TOKEN}\"\n  executor = \"custom\"\n  builds_dir = \"/builds\"\n  cache_dir = \"/cache\"\n  [runners.custom]\n{}",
                gitlab.url(),
                self.runner_section()
            ),
        )
        .unwrap();
        let env = self.env();
        let env: Vec<(&str, &std::ffi::OsStr)> = env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_ref()))
            .collect();
        (
            RunnerProcess::spawn(&runner_binary(), &config, self.dir.path(), &env),
            config,
        )
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for name in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

fn job(script: &[&str], timeout: i64) -> serde_json::Value {
    job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        script,
        &[],
        json!([
            {"key": "CI_PROJECT_PATH", "value": "group/project", "public": true},
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "CI_RUNNER_SHORT_TOKEN", "value": "dockervm", "public": true}
        ]),
        timeout,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_on_one_image_pull_once_run_over_ssh_and_leave_nothing() {
    let world = World::new("pull", 4);
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let first = gitlab.enqueue(job(
        &["echo \"vm=$(hostname) user=$(id -un)\"", "git --version"],
        120,
    ));
    let second = gitlab.enqueue(job(&["echo second-job-ran", "exit 7"], 120));
    let (_runner, _) = world.start_runner(&gitlab, 2);
    let one = gitlab.wait_final(first, WAIT).await;
    let two = gitlab.wait_final(second, WAIT).await;
    let log = gitlab.log(first);
    assert_eq!(one.state, "success", "{log}");
    // The job ran as root in its own container, named after the runner and the job.
    assert!(log.contains(&format!("vm={}-", world.prefix)), "{log}");
    assert!(log.contains("-1001 user=root"), "{log}");
    assert!(log.contains("git version"), "{log}");
    let log = gitlab.log(second);
    assert_eq!(
        two.failure_reason.as_deref(),
        Some("script_failure"),
        "{log}"
    );
    assert_eq!(two.exit_code, Some(7), "{log}");
    assert!(log.contains("second-job-ran"), "{log}");
    assert_eq!(world.pulls(), 1, "both jobs needed the image; one pulled");
    assert!(world.containers().is_empty(), "{:?}", world.containers());
}

#[test]
fn a_container_created_by_a_crashed_prepare_is_adopted_and_cleanup_leaves_nothing() {
    let world = World::new("reclaim", 2);
    let crashed = world.driver("41", &["prepare"], &[("DOCKER_VM_CRASH_AFTER_CREATE", "1")]);
    assert!(!crashed.status.success());
    assert_eq!(world.containers().len(), 1, "the crash left its container");
    let retried = world.driver("41", &["prepare"], &[]);
    let stderr = String::from_utf8_lossy(&retried.stderr);
    assert!(retried.status.success(), "{stderr}");
    assert!(stderr.contains("Adopting"), "{stderr}");
    assert_eq!(world.containers().len(), 1, "adopted, not created again");
    let script = world.dir.path().join("script");
    std::fs::write(&script, "echo from-the-vm; exit 3\n").unwrap();
    let run = world.driver(
        "41",
        &["run", script.to_str().unwrap(), "build_script"],
        &[],
    );
    assert_eq!(
        run.status.code(),
        Some(1),
        "a failing script is a build failure"
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("from-the-vm"));
    assert_eq!(
        std::fs::read_to_string(world.dir.path().join("exit-41"))
            .unwrap()
            .trim(),
        "3"
    );
    assert!(world.driver("41", &["cleanup"], &[]).status.success());
    assert!(world.containers().is_empty());
    // Cleanup again, and cleanup of a job that never prepared.
    assert!(world.driver("41", &["cleanup"], &[]).status.success());
    assert!(world.driver("999", &["cleanup"], &[]).status.success());
    let left: Vec<_> = std::fs::read_dir(world.dir.path().join("state"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_full_host_makes_prepare_wait_for_a_slot() {
    let world = World::new("full", 1);
    assert!(world.driver("51", &["prepare"], &[]).status.success());
    let mut waiting = Command::new(docker_vm_driver_binary())
        .arg("prepare")
        .envs(world.env())
        .env("CUSTOM_ENV_CI_JOB_ID", "52")
        .env("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "direct")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Positive evidence that the second prepare runs and waits: it says all slots are busy
    // (a prepare that never started, or that went ahead, would not).
    let mut stderr = std::io::BufReader::new(waiting.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        said.push_str(&line);
        assert!(read > 0, "the second prepare ended without waiting: {said}");
        if line.contains("All 1 slots are busy; waiting for one") {
            break;
        }
    }
    assert!(waiting.try_wait().unwrap().is_none(), "{said}");
    assert_eq!(
        world.containers(),
        vec![format!("{}-direct-51", world.prefix)],
        "the second job has no container while it waits"
    );
    assert!(world.driver("51", &["cleanup"], &[]).status.success());
    let status = waiting.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{said}{rest}");
    assert_eq!(
        world.containers(),
        vec![format!("{}-direct-52", world.prefix)]
    );
    assert!(world.driver("52", &["cleanup"], &[]).status.success());
    assert!(world.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_runner_mid_job_leaves_no_container() {
    let world = World::new("sigterm", 2);
    let gitlab = FakeGitlab::start(RUNNER_TOKEN).await;
    let job = gitlab.enqueue(job(
        &["echo vm-job-started; while true; do echo tick; sleep 0.5; done"],
        600,
    ));
    let (mut runner, _) = world.start_runner(&gitlab, 1);
    gitlab.wait_log(job, "vm-job-started", WAIT).await;
    assert_eq!(world.containers().len(), 1);
    runner.signal(libc::SIGTERM);
    tokio::task::spawn_blocking(move || {
        let _ = runner.wait();
        runner
    })
    .await
    .unwrap();
    let update = gitlab.wait_final(job, WAIT).await;
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_interrupted"),
        "{}",
        gitlab.log(job)
    );
    assert!(world.containers().is_empty(), "{:?}", world.containers());
}
