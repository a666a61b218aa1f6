//! The cancel matrix: the same three canceled jobs against every executor (shell, ssh, custom,
//! docker), through the real `gitlab-runner-rs` binary and the fake GitLab.
//!
//! Every runner stops a canceled stage with `graceful_kill_timeout = 5` and
//! `force_kill_timeout = 2` (the custom executor's in `[runners.custom]`, the others' in
//! `[[runners]]`), and every job is stopped by its own job timeout (the payload's `timeout`), a
//! few seconds after it started. Each job runs one `bash -c` child (not the job's shell itself:
//! in the Docker build container that is PID 1, which upstream's SIGTERM script skips):
//!
//! 1. **traps SIGTERM** and prints a marker built at run time (`got-$((6*7))-term`): the
//!    graceful stop reached the child, and its output was still read after it;
//! 2. **ignores SIGTERM** and loops: the stop had to go on to the forced kill, so the child is
//!    gone no sooner than the grace period after the timeout, and the job still ends within
//!    graceful + force;
//! 3. **leaves a grandchild**: starts `sleep <n>` in the background with SIGTERM ignored, then
//!    loops until SIGTERM ends it; so the stage's own processes end within the grace period and
//!    the grandchild is what the stage leaves behind.
//!
//! For every job: the final update is `failed` with `job_execution_timeout`, it arrives within
//! job timeout + graceful + force + [`SLACK`] of the job being handed out, and the job leaves
//! nothing behind: no process of its script on this machine (the SSH host is the loopback sshd,
//! and the Docker containers' processes belong to this kernel too), and for Docker no
//! container, volume or network with the job's labels. Before that, each case's process is seen
//! running, so "nothing left" is about something that was there.
//!
//! The markers name this test process (`cxm<pid>-…`, `sleep <n>.<pid>`), so runs never see each
//! other's processes; whatever of this run's is still there when a test ends (a failed case) is
//! killed by its pid.
//!
//! Needs sshd (the ssh test) and the Docker engine (the docker test); never skipped.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runner_tests::docker_objects::{objects_of_job, runner_label, DOCKER_KINDS};
use runner_tests::{
    job_payload, runner_binary, FakeGitlab, HelperImage, JobControl, RunnerProcess, SshServer,
    SshdOptions, DEBIAN_IMAGE,
};
use serde_json::json;

/// `graceful_kill_timeout` of every runner, seconds. The Docker executor's graceful stop is a
/// `docker exec` of the SIGTERM script, and the three cases' execs start at the same moment on a
/// loaded two-core machine: a clean-clone CI run saw them take over a second, which with the
/// trap's wait of up to 1 s in `read -t 1` left the trap's marker out of a 2 s grace period. The
/// grace period is the operator's budget for exactly that, so the test gives it room (the same
/// for every executor) rather than weakening what it asserts.
const GRACEFUL: u64 = 5;
/// `force_kill_timeout` of every runner, seconds.
const FORCE: u64 = 2;
/// What a loaded 2-core machine may add to a stop: reaching the next stage, the executor's
/// cleanup (removing containers), the final update.
const SLACK: Duration = Duration::from_secs(10);
/// How much longer than the bound (and the runner's start and hand-outs) the test waits for the
/// final updates before it gives up: the bound itself is asserted on the fake's timings, so a
/// late job is reported with its timing rather than as a wait that ran out.
const PATIENCE: Duration = Duration::from_secs(60);
/// The marker the trapping child prints; the script only has `got-$((6*7))-term`.
const TRAPPED: &str = "got-42-term";

const SHELL_TOKEN: &str = "glrt-t1_cxmshell1";
const SSH_TOKEN: &str = "glrt-t1_cxmssh001";
const CUSTOM_TOKEN: &str = "glrt-t1_cxmcustm1";
/// Its 9 characters after `glrt-t1_` are the runner.id label of the job's Docker objects.
const DOCKER_TOKEN: &str = "glrt-t1_cxmdockr1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    TrapsTerm,
    IgnoresTerm,
    LeavesGrandchild,
}

impl Case {
    const ALL: [Case; 3] = [Case::TrapsTerm, Case::IgnoresTerm, Case::LeavesGrandchild];

    fn name(self) -> &'static str {
        match self {
            Case::TrapsTerm => "traps",
            Case::IgnoresTerm => "ignores",
            Case::LeavesGrandchild => "grandchild",
        }
    }
}

/// Where a runner's jobs run, and what else a job may leave there.
enum Host<'a> {
    /// This machine (shell, custom).
    Local,
    /// The loopback sshd's throwaway user.
    Ssh(&'a SshServer),
    /// Containers, volumes and networks labelled with this runner token.
    Docker { token: &'static str },
}

/// A runner started for one executor, and what its jobs look like.
struct Target<'a> {
    executor: &'static str,
    /// The jobs' `timeout`, seconds.
    job_timeout: u64,
    /// Case 3's grandchild, as its command line reads: `sleep <n>.<pid>`.
    grandchild: String,
    host: Host<'a>,
    runner: Option<RunnerProcess>,
    _dir: tempfile::TempDir,
}

impl Target<'_> {
    /// The child shell's `$0`, so its command line names the executor and the case.
    fn marker(&self, case: Case) -> String {
        format!(
            "cxm{}-{}-{}",
            std::process::id(),
            self.executor,
            case.name()
        )
    }

    /// What the child prints once it runs (`$0-ready-$((6*7))` in the script).
    fn ready(&self, case: Case) -> String {
        format!("{}-ready-42", self.marker(case))
    }

    fn script(&self, case: Case) -> String {
        let body = match case {
            // It waits in `read` on a pipe of its own (a process substitution that exits at
            // once), with no child process: the Docker executor's SIGTERM script signals one
            // process at a time and waits up to 6 s (in 1 s steps) for each to go, so a sleep
            // of the loop signalled first could hold the child's SIGTERM back past the grace
            // period.
            Case::TrapsTerm => r#"trap "echo got-\$((6*7))-term; exit 0" TERM; echo "$0-ready-$((6*7))"; exec 3<> <(:); while true; do read -t 1 -u 3; done"#.to_string(),
            // The ignored disposition is inherited by the loop's sleeps too.
            Case::IgnoresTerm => r#"trap "" TERM; echo "$0-ready-$((6*7))"; while true; do sleep 0.2; done"#.to_string(),
            // The grandchild ignores SIGTERM and holds none of the stage's output; the child
            // itself ends with the stage's SIGTERM, so the stage's shell ends by itself within
            // the grace period (no forced kill follows) and the grandchild is what it leaves.
            Case::LeavesGrandchild => format!(
                r#"(trap "" TERM; exec {}) >/dev/null 2>&1 & echo "$0-ready-$((6*7))"; while true; do sleep 0.2; done"#,
                self.grandchild
            ),
        };
        format!("bash -c '{body}' {}", self.marker(case))
    }

    fn payload(&self, case: Case) -> serde_json::Value {
        job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            &[&self.script(case)],
            &[],
            json!([
                {"key": "CI_PROJECT_PATH", "value": "group/project", "public": true},
                {"key": "GIT_STRATEGY", "value": "none", "public": true}
            ]),
            self.job_timeout as i64,
        )
    }

    /// The case's processes now running: its child shell (and what it forked before an exec),
    /// and for case 3 the grandchild.
    fn processes_of(&self, case: Case) -> Vec<String> {
        let marker = self.marker(case);
        processes()
            .into_iter()
            .filter(|(_, command)| {
                command.contains(&marker)
                    || (case == Case::LeavesGrandchild && *command == self.grandchild)
            })
            .map(|(pid, command)| format!("pid {pid}: {command}"))
            .collect()
    }

    /// Seen running among `processes`: for case 3 the grandchild itself, else the child shell.
    fn is_running(&self, case: Case, processes: &[(u32, String)]) -> bool {
        let marker = self.marker(case);
        processes.iter().any(|(_, command)| match case {
            Case::LeavesGrandchild => *command == self.grandchild,
            _ => command.contains(&marker),
        })
    }

    /// Everything of `job` still there: its processes, and for Docker its objects.
    fn left_behind(&self, case: Case, job: JobControl) -> Vec<String> {
        let mut left = self.processes_of(case);
        if let Host::Docker { token } = self.host {
            left.extend(
                objects_of_job(token, job.id)
                    .into_iter()
                    .map(|object| format!("docker {object}")),
            );
        }
        left
    }
}

impl Drop for Target<'_> {
    /// The runner first (so it starts nothing more), then whatever of this run's jobs a failed
    /// case left: their processes by pid, and for Docker the runner's objects.
    fn drop(&mut self) {
        drop(self.runner.take());
        let prefix = format!("cxm{}-{}-", std::process::id(), self.executor);
        for (pid, command) in processes() {
            if command.contains(&prefix) || command == self.grandchild {
                // SAFETY: kill(2) on a process this test's job started; no memory is touched.
                #[expect(unsafe_code, reason = "std can only kill its own Child")]
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        if let Host::Docker { token } = self.host {
            remove_docker_objects_of_runner(token);
        }
    }
}

/// Every process of this machine but this one, with its command line (arguments joined by
/// spaces); zombies and kernel threads, which have none, are left out.
fn processes() -> Vec<(u32, String)> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bytes = std::fs::read(entry.path().join("cmdline")).ok()?;
            let command = String::from_utf8_lossy(&bytes)
                .replace('\0', " ")
                .trim()
                .to_string();
            (pid != own && !command.is_empty()).then_some((pid, command))
        })
        .collect()
}

/// Starts `gitlab-runner-rs run` in `dir` with one runner of `executor`: `concurrent = 3`, so
/// the three cases run at once; `keys` are appended to its `[[runners]]` entry (and may open its
/// executor's section).
fn start_runner(
    gitlab: &FakeGitlab,
    dir: &Path,
    executor: &str,
    token: &str,
    keys: &str,
    env: &[(&str, &OsStr)],
) -> RunnerProcess {
    let config = format!(
        "concurrent = 3\ncheck_interval = 1\n\n[[runners]]\n  name = \"cancel-matrix-{executor}\"\n  url = \"{url}\"\n  token = \"{token}\"\n  executor = \"{executor}\"\n{keys}",
        url = gitlab.url(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    // The runner's own log goes to the test's output: at info, unless the test has RUST_LOG.
    let log_filter = std::env::var_os("RUST_LOG").unwrap_or_else(|| "info".into());
    let mut all_env: Vec<(&str, &OsStr)> = vec![("RUST_LOG", &log_filter)];
    all_env.extend_from_slice(env);
    RunnerProcess::spawn(&runner_binary(), &path, dir, &all_env)
}

/// The kill timeouts as the shell, ssh and docker executors read them: in `[[runners]]`.
fn runner_kill_timeouts() -> String {
    format!("  graceful_kill_timeout = {GRACEFUL}\n  force_kill_timeout = {FORCE}\n")
}

/// `sleep <seconds>.<this test's pid>`: GNU sleep takes the fraction, and the command line is
/// this executor's and this run's alone.
fn grandchild(seconds: u32) -> String {
    format!("sleep {seconds}.{}", std::process::id())
}

fn shell_target(gitlab: &FakeGitlab) -> Target<'static> {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!(
        "  builds_dir = \"{}\"\n  cache_dir = \"{}\"\n{}",
        dir.path().join("builds").display(),
        dir.path().join("cache").display(),
        runner_kill_timeouts()
    );
    let runner = start_runner(gitlab, dir.path(), "shell", SHELL_TOKEN, &keys, &[]);
    Target {
        executor: "shell",
        job_timeout: 6,
        grandchild: grandchild(31337),
        host: Host::Local,
        runner: Some(runner),
        _dir: dir,
    }
}

fn ssh_target<'a>(gitlab: &FakeGitlab, server: &'a SshServer) -> Target<'a> {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!(
        "{}  [runners.ssh]\n    host = \"127.0.0.1\"\n    port = \"{}\"\n    user = \"{}\"\n    known_hosts_file = \"{}\"\n    identity_file = \"{}\"\n",
        runner_kill_timeouts(),
        server.port(),
        server.user(),
        server.known_hosts(false).display(),
        server.identity_file().display()
    );
    let runner = start_runner(gitlab, dir.path(), "ssh", SSH_TOKEN, &keys, &[]);
    Target {
        executor: "ssh",
        job_timeout: 8,
        grandchild: grandchild(31338),
        host: Host::Ssh(server),
        runner: Some(runner),
        _dir: dir,
    }
}

/// The `local` example driver (examples/custom-drivers/local), its root in the runner's
/// directory; the kill timeouts in `[runners.custom]`, where this executor reads them.
fn custom_target(gitlab: &FakeGitlab) -> Target<'static> {
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/custom-drivers/local");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("driver-root");
    std::fs::create_dir_all(&root).unwrap();
    let mut keys = String::from("  [runners.custom]\n");
    for stage in ["config", "prepare", "run", "cleanup"] {
        keys.push_str(&format!(
            "    {stage}_exec = \"{}\"\n",
            driver.join(format!("{stage}.sh")).display()
        ));
    }
    keys.push_str(&format!(
        "    graceful_kill_timeout = {GRACEFUL}\n    force_kill_timeout = {FORCE}\n"
    ));
    let runner = start_runner(
        gitlab,
        dir.path(),
        "custom",
        CUSTOM_TOKEN,
        &keys,
        &[("LOCAL_DRIVER_ROOT", root.as_os_str())],
    );
    Target {
        executor: "custom",
        job_timeout: 6,
        grandchild: grandchild(31339),
        host: Host::Local,
        runner: Some(runner),
        _dir: dir,
    }
}

fn docker_target(gitlab: &FakeGitlab, helper: &HelperImage) -> Target<'static> {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!(
        "{}  [runners.docker]\n    image = \"{DEBIAN_IMAGE}\"\n    helper_image = \"{}\"\n    pull_policy = [\"if-not-present\"]\n",
        runner_kill_timeouts(),
        helper.0
    );
    let runner = start_runner(gitlab, dir.path(), "docker", DOCKER_TOKEN, &keys, &[]);
    Target {
        executor: "docker",
        job_timeout: 15,
        grandchild: grandchild(31340),
        host: Host::Docker {
            token: DOCKER_TOKEN,
        },
        runner: Some(runner),
        _dir: dir,
    }
}

/// Removes every container, volume and network labelled with the runner (what a failed run
/// left), containers first: they hold the others. Never panics (it runs in `drop`).
fn remove_docker_objects_of_runner(token: &str) {
    for (kind, list) in DOCKER_KINDS {
        let Ok(listed) = Command::new("docker")
            .args(list)
            .args(["-q", "--filter", &runner_label(token)])
            .output()
        else {
            return;
        };
        for id in String::from_utf8_lossy(&listed.stdout).lines() {
            let removal: &[&str] = match kind {
                "container" => &["rm", "-f", "-v"],
                "volume" => &["volume", "rm", "-f"],
                _ => &["network", "rm"],
            };
            let _ = Command::new("docker").args(removal).arg(id).output();
        }
    }
}

/// Fails loudly without a reachable Docker engine.
fn require_docker() {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    assert!(
        matches!(&output, Ok(output) if output.status.success()),
        "the docker cancel matrix needs a running Docker engine and its CLI: {output:?}"
    );
}

/// One case's job as the test follows it.
struct Followed {
    case: Case,
    job: JobControl,
    seen_running: bool,
    /// The first look that no longer found it running.
    gone_at: Option<Instant>,
    done: bool,
}

/// Runs the three cases at once against `target`'s runner and asserts, for each: its process
/// was seen running; its final update (`failed`, `job_execution_timeout`) arrived within job
/// timeout + graceful + force + [`SLACK`] of the hand-out; its log has its run-time markers (and
/// the trap's); the SIGTERM-ignoring child was gone no sooner than job timeout + graceful after
/// the hand-out; and right after its final update nothing of it is left. Every problem of every
/// case is reported together.
async fn run_cases(gitlab: &FakeGitlab, target: &Target<'_>) {
    let mut followed: Vec<Followed> = Case::ALL
        .iter()
        .map(|&case| {
            let payload = target.payload(case);
            let sent = payload.to_string();
            // Markers built at run time: the log's echo of the command cannot contain them.
            assert!(!sent.contains(TRAPPED), "{sent}");
            assert!(!sent.contains(&target.ready(case)), "{sent}");
            Followed {
                case,
                job: gitlab.enqueue(payload),
                seen_running: false,
                gone_at: None,
                done: false,
            }
        })
        .collect();

    let timeout = Duration::from_secs(target.job_timeout);
    let bound = timeout + Duration::from_secs(GRACEFUL + FORCE) + SLACK;
    let deadline = Instant::now() + bound + PATIENCE;
    let mut problems: Vec<String> = Vec::new();
    let mut report: Vec<String> = Vec::new();
    loop {
        let running = processes();
        for one in followed.iter_mut().filter(|one| !one.done) {
            if target.is_running(one.case, &running) {
                one.seen_running = true;
            } else if one.seen_running && one.gone_at.is_none() {
                one.gone_at = Some(Instant::now());
            }
            let Some(update) = gitlab.final_update(one.job) else {
                continue;
            };
            // Right after the final update: what is left of the job.
            let left = target.left_behind(one.case, one.job);
            one.done = true;
            let what = format!("{} / {}", target.executor, one.case.name());
            let log = gitlab.log(one.job);
            let timing = gitlab.timing(one.job);
            let picked_up = timing.picked_up.expect("handed out before it finished");
            let took = timing.finished.expect("finished with the final update") - picked_up;
            report.push(format!(
                "{what}: final update {took:.1?} after the hand-out (bound {bound:?})"
            ));
            let mut found: Vec<String> = Vec::new();
            let mut fail = |problem: String| found.push(problem);
            if !one.seen_running {
                fail("its process was never seen running".into());
            }
            if update.state != "failed"
                || update.failure_reason.as_deref() != Some("job_execution_timeout")
            {
                fail(format!(
                    "final state {:?} / {:?}, expected failed / job_execution_timeout",
                    update.state, update.failure_reason
                ));
            }
            let failed_line = format!(
                "ERROR: Job failed: execution took longer than {}s seconds",
                target.job_timeout
            );
            if !log.contains(&failed_line) {
                fail(format!("the log lacks {failed_line:?}"));
            }
            if !log.contains(&target.ready(one.case)) {
                fail(format!(
                    "the log lacks {:?}: the script did not run before the timeout",
                    target.ready(one.case)
                ));
            }
            if took > bound {
                fail(format!(
                    "the final update came {took:.1?} after the hand-out, over the bound {bound:?}"
                ));
            }
            match one.case {
                Case::TrapsTerm if !log.contains(TRAPPED) => {
                    fail(format!("the log lacks {TRAPPED:?}: the SIGTERM trap did not run (or its output was lost)"));
                }
                // Killed, not terminated: no sooner than the grace period after the timeout
                // (which starts after the hand-out). Not for custom: there the stage's leader
                // is the driver, which (like the example driver) may die of the SIGTERM at
                // once; the stage is over then, and what it left in its group is killed.
                Case::IgnoresTerm if target.executor != "custom" => {
                    let earliest = timeout + Duration::from_secs(GRACEFUL);
                    if let Some(gone) = one.gone_at {
                        let lived = gone - picked_up;
                        if lived < earliest {
                            fail(format!(
                                "the SIGTERM-ignoring child was gone {lived:.1?} after the hand-out, before job timeout + graceful ({earliest:?})"
                            ));
                        }
                    }
                }
                _ => {}
            }
            if !left.is_empty() {
                fail(format!("left behind after the final update: {left:#?}"));
            }
            if !found.is_empty() {
                problems.push(format!(
                    "{what}:\n- {}\n--- job log ---\n{log}",
                    found.join("\n- ")
                ));
            }
        }
        if followed.iter().all(|one| one.done) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no final update for {:?} after {:?}; so far: {report:#?} {problems:#?}",
            target.executor,
            followed
                .iter()
                .filter(|one| !one.done)
                .map(|one| (one.case.name(), gitlab.log(one.job)))
                .collect::<Vec<_>>(),
            deadline
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Host::Ssh(server) = target.host {
        let left = server.user_processes();
        if !left.is_empty() {
            problems.push(format!(
                "ssh: the SSH user's processes after every final update: {left:#?}"
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        problems.is_empty(),
        "{}\n\n{}",
        report.join("\n"),
        problems.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_cancel_matrix() {
    let gitlab = FakeGitlab::start(SHELL_TOKEN).await;
    let target = shell_target(&gitlab);
    run_cases(&gitlab, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_cancel_matrix() {
    let server = SshServer::start(SshdOptions::default());
    let gitlab = FakeGitlab::start(SSH_TOKEN).await;
    let target = ssh_target(&gitlab, &server);
    run_cases(&gitlab, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_cancel_matrix() {
    let gitlab = FakeGitlab::start(CUSTOM_TOKEN).await;
    let target = custom_target(&gitlab);
    run_cases(&gitlab, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cancel_matrix() {
    require_docker();
    let helper = HelperImage::build("dev");
    let gitlab = FakeGitlab::start(DOCKER_TOKEN).await;
    let target = docker_target(&gitlab, &helper);
    run_cases(&gitlab, &target).await;
}
