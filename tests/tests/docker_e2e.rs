//! End to end: the `gitlab-runner-rs` binary with the Docker executor on the real Docker
//! engine, against the fake GitLab and a git server over HTTP on the host (the containers use
//! the host's network to reach them). Images are built locally: the build image is the
//! debootstrap image of `scripts/build-sshd-image.sh`, the helper image adds the static helper.
//! After every job the test lists Docker objects by the job's label and asserts none is left.
//!
//! Needs the Docker engine; never skipped.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::process::Command;
use std::time::Duration;

use runner_tests::docker_objects::{objects_of_job, reusable_volumes};
use runner_tests::{
    declare_failure_reasons, job_payload, run, runner_binary, FakeGitlab, GitServer, HelperImage,
    RunnerProcess, DEBIAN_IMAGE,
};
use serde_json::json;

const BUILD_IMAGE: &str = DEBIAN_IMAGE;
/// Each test has its own runner token, so its objects are told apart by the runner.id label
/// (job ids repeat across the fake GitLabs of tests running at once).
const TOKEN_BASIC: &str = "glrt-t1_dkrbasic1";
const TOKEN_FAIL: &str = "glrt-t1_dkrfail01";
const TOKEN_SERVICES: &str = "glrt-t1_dkrsvc001";
const WAIT: Duration = Duration::from_secs(180);
/// The containers reach the fake GitLab and the git server on the host's loopback.
const HOST_NETWORK: &str = "    network_mode = \"host\"\n";

/// Nothing of these jobs is left but the cache volumes kept on purpose. Checked as soon as
/// their final updates arrived, with no grace: the executor's cleanup removes the containers,
/// network and temporary volumes (and waits for each removal) before the final update is sent.
async fn assert_nothing_left(token: &str, jobs: &[runner_tests::JobControl]) {
    for job in jobs {
        let left = objects_of_job(token, job.id);
        assert!(left.is_empty(), "job {}: {left:?}", job.id);
    }
}

struct Runner {
    _process: RunnerProcess,
    _dir: tempfile::TempDir,
}

fn start_runner(gitlab: &FakeGitlab, token: &str, helper: &HelperImage, extra: &str) -> Runner {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 2\ncheck_interval = 1\n\n[[runners]]\n  name = \"docker\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"{BUILD_IMAGE}\"\n    helper_image = \"{}\"\n    pull_policy = [\"if-not-present\"]\n{extra}",
            gitlab.url(),
            helper.0
        ),
    )
    .unwrap();
    Runner {
        _process: RunnerProcess::spawn(&runner_binary(), &config, dir.path(), &[]),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_clones_runs_in_its_image_uploads_an_artifact_and_leaves_nothing() {
    let helper = HelperImage::build("dev");
    let git = GitServer::start(&[("README.md", "hello from docker\n")], true).await;
    let gitlab = FakeGitlab::start(TOKEN_BASIC).await;
    let mut payload = job_payload(
        &git.url_with_token("JOB_TOKEN"),
        &git.head(),
        &[
            "cat README.md",
            "echo \"os=$(. /etc/os-release; echo $ID) pwd=$PWD shell=$0\"",
            "mkdir -p out && echo made-in-docker > out/result.txt",
        ],
        &["echo after $CI_JOB_STATUS"],
        json!([{"key": "CI_PROJECT_PATH", "value": "group/project", "public": true}]),
        120,
    );
    payload["artifacts"] = json!([{"name": "docker-out", "paths": ["out/"], "when": "on_success",
        "artifact_type": "archive", "artifact_format": "zip"}]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(&gitlab, TOKEN_BASIC, &helper, HOST_NETWORK);
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains(&format!(
            "Using Docker executor with image {BUILD_IMAGE} ..."
        )),
        "{log}"
    );
    assert!(
        log.contains("Using effective pull policy of [if-not-present]"),
        "{log}"
    );
    // Parity audit item 31: a configured helper image is named as upstream names it.
    assert!(
        log.contains(&format!(
            "Using helper image:  {}  (overridden, default would be  gitlab-runner-rs/helper:{} )",
            helper.0,
            env!("CARGO_PKG_VERSION")
        )),
        "{log}"
    );
    assert!(log.contains("hello from docker"), "{log}");
    // The container's host name, then the runner's (upstream's docker prepare line).
    assert!(
        log.contains("Running on runner-dkrbasic1-project-77-concurrent-0 via "),
        "{log}"
    );
    assert!(log.contains("os=debian pwd=/builds/"), "{log}");
    assert!(log.contains("after success"), "{log}");
    assert!(
        log.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{log}"
    );
    assert_eq!(gitlab.artifacts(job).len(), 1);
    assert_nothing_left(TOKEN_BASIC, &[job]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_upstreams_reasons_and_clean_up() {
    let helper = HelperImage::build("dev");
    let gitlab = FakeGitlab::start(TOKEN_FAIL).await;
    let no_git = json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]);
    let payload = |script: &[&str], timeout: i64| {
        let mut payload = job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            script,
            &[],
            no_git.clone(),
            timeout,
        );
        declare_failure_reasons(&mut payload);
        payload
    };
    let failing = gitlab.enqueue(payload(&["echo failing", "exit 42"], 120));
    let mut missing = payload(&["echo never"], 120);
    missing["image"] = json!({"name": "gitlab-runner-rs-test/no-such-image:1"});
    let missing = gitlab.enqueue(missing);
    let slow = gitlab.enqueue(payload(&["echo started", "sleep 300"], 5));
    let mut refused = payload(&["echo never"], 120);
    refused["image"] = json!({"name": "elsewhere/image:1"});
    let refused = gitlab.enqueue(refused);
    let mut crowded = payload(&["echo never"], 120);
    crowded["services"] =
        json!([{"name": BUILD_IMAGE, "alias": "one"}, {"name": BUILD_IMAGE, "alias": "two"}]);
    let crowded = gitlab.enqueue(crowded);
    let _runner = start_runner(
        &gitlab,
        TOKEN_FAIL,
        &helper,
        &format!("{HOST_NETWORK}    allowed_images = [\"gitlab-runner-rs-test/*\"]\n    services_limit = 1\n"),
    );

    let log = gitlab.wait_failure(failing, "script_failure", WAIT).await;
    let update = gitlab.final_update(failing).unwrap();
    assert_eq!(update.exit_code, Some(42), "{log}");
    assert!(log.contains("ERROR: Job failed: exit code 42"), "{log}");

    // No registry is reachable from here: upstream's classification makes that the
    // registry's failure, tried three times.
    let log = gitlab
        .wait_failure(missing, "runner_external_dependency_failure", WAIT)
        .await;
    assert!(
        log.contains(
            "Failed to pull image \"gitlab-runner-rs-test/no-such-image:1\" (attempt #2), retrying"
        ),
        "{log}"
    );
    assert!(
        log.contains("failed to pull image \"gitlab-runner-rs-test/no-such-image:1\""),
        "{log}"
    );

    gitlab
        .wait_failure(slow, "job_execution_timeout", WAIT)
        .await;

    // Upstream's words; both are system errors, so prepare is attempted three times.
    let log = gitlab
        .wait_failure(refused, "runner_system_failure", WAIT)
        .await;
    assert!(
        log.contains("The \"elsewhere/image:1\" image is not present on list of allowed images:"),
        "{log}"
    );
    assert!(log.contains("- gitlab-runner-rs-test/*"), "{log}");
    assert_eq!(
        log.matches("Preparation failed: disallowed image").count(),
        3,
        "{log}"
    );
    let log = gitlab
        .wait_failure(crowded, "runner_system_failure", WAIT)
        .await;
    assert!(
        log.contains("too many services requested: 2, only 1 allowed"),
        "{log}"
    );

    assert_nothing_left(TOKEN_FAIL, &[failing, missing, slow, refused, crowded]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_reached_by_alias_on_the_job_network_and_a_broken_one_is_reported() {
    let helper = HelperImage::build("dev");
    let gitlab = FakeGitlab::start(TOKEN_SERVICES).await;
    // Upstream's default: the default bridge, services by /etc/hosts entries (legacy links).
    let mut linked = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &[
            "exec 3<>/dev/tcp/sshd-svc/22; head -c 7 <&3; echo",
            "grep -c sshd-svc /etc/hosts",
        ],
        &[],
        json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
        120,
    );
    linked["services"] = json!([{"name": BUILD_IMAGE, "alias": "sshd-svc"}]);
    let linked = gitlab.enqueue(linked);
    // FF_NETWORK_PER_BUILD: a network of the job's own, services by network aliases.
    let mut payload = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &[
            "exec 3<>/dev/tcp/sshd-svc/22; head -c 7 <&3; echo",
            "exec 4<>/dev/tcp/gitlab-runner-rs-test__debian-sshd/22; head -c 7 <&4; echo",
        ],
        &[],
        json!([
            {"key": "GIT_STRATEGY", "value": "none", "public": true},
            {"key": "CI_DEBUG_SERVICES", "value": "true", "public": true},
            {"key": "FF_NETWORK_PER_BUILD", "value": "true", "public": true}
        ]),
        120,
    );
    payload["services"] = json!([
        {"name": BUILD_IMAGE, "alias": "sshd-svc,other-name", "variables": [{"key": "AUTHORIZED_KEY", "value": "ssh-ed25519 AAAA"}]},
        {"name": BUILD_IMAGE, "alias": "broken-svc", "command": ["sh", "-c", "echo service-broke-on-purpose; exit 1"]}
    ]);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        TOKEN_SERVICES,
        &helper,
        "    wait_for_services_timeout = 10\n",
    );
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(
        log.contains("Starting service gitlab-runner-rs-test/debian-sshd:bookworm-1..."),
        "{log}"
    );
    assert_eq!(log.matches("SSH-2.0").count(), 2, "{log}");
    // The second service shares the default alias: a warning, and it is reached by its own.
    assert!(
        log.contains("Skipping alias \"gitlab-runner-rs-test__debian-sshd\" for service \"gitlab-runner-rs-test/debian-sshd:bookworm-1\" (services[1]): alias is already in use by another service."),
        "{log}"
    );
    assert!(
        log.contains("Waiting for services to be up and running (timeout 10 seconds)..."),
        "{log}"
    );
    // Only the broken one is reported, with the health check's words and logs.
    assert_eq!(
        log.matches("probably didn't start properly").count(),
        1,
        "{log}"
    );
    assert!(log.contains("-wait-for-service\" timeout"), "{log}");
    assert!(log.contains("Health check container logs:"), "{log}");
    assert!(log.contains("waiting for TCP connection to "), "{log}");
    assert!(log.contains("service-broke-on-purpose"), "{log}");
    // CI_DEBUG_SERVICES: the service's own output, under its alias.
    assert!(
        log.lines()
            .any(|line| line.contains("[service:broken-svc] ")
                && line.contains("service-broke-on-purpose")),
        "{log}"
    );
    let log = gitlab.wait_success(linked, WAIT).await;
    assert!(log.contains("SSH-2.0"), "{log}");
    assert_nothing_left(TOKEN_SERVICES, &[job, linked]).await;
}

const TOKEN_STOP: &str = "glrt-t1_dkrstop01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_cancel_and_a_runner_sigterm_leave_no_container() {
    let helper = HelperImage::build("dev");
    let gitlab = FakeGitlab::start(TOKEN_STOP).await;
    let ticking = |marker: &str| {
        job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            &[&format!(
                "echo {marker}; while true; do echo tick; sleep 0.5; done"
            )],
            &[],
            json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
            600,
        )
    };
    // A process that handles SIGTERM gets it before the container is killed. (It writes
    // ticks: the runner hears of a cancel with its next trace update, and without new output
    // that is up to 30 seconds away, as upstream.)
    let mut trapping = ticking("unused");
    trapping["steps"][0]["script"] = json!([
        "bash -c 'trap \"echo got-sig''term; exit 0\" TERM; echo cancel-me; while true; do echo tick; sleep 0.2; done'"
    ]);
    let canceled = gitlab.enqueue(trapping);
    let mut runner = start_runner(&gitlab, TOKEN_STOP, &helper, "");
    gitlab.wait_log(canceled, "cancel-me", WAIT).await;
    gitlab.cancel(canceled);
    let update = gitlab.wait_final(canceled, WAIT).await;
    let log = gitlab.log(canceled);
    assert_eq!(update.state, "failed", "{log}");
    assert!(log.contains("got-sigterm"), "{log}");
    assert_nothing_left(TOKEN_STOP, &[canceled]).await;

    let interrupted = gitlab.enqueue(ticking("interrupt-me"));
    gitlab.wait_log(interrupted, "interrupt-me", WAIT).await;
    runner._process.signal(libc::SIGTERM);
    let update = gitlab.wait_final(interrupted, WAIT).await;
    assert_eq!(
        update.failure_reason.as_deref(),
        Some("runner_interrupted"),
        "{}",
        gitlab.log(interrupted)
    );
    // The runner exits once its cleanup is done.
    tokio::task::spawn_blocking(move || {
        let _ = runner._process.wait();
    })
    .await
    .unwrap();
    assert_nothing_left(TOKEN_STOP, &[interrupted]).await;
}

const TOKEN_VOLUMES: &str = "glrt-t1_dkrvol001";

/// Cache volumes and the builds directory of fetch jobs outlive the job; the build container
/// runs as another user than root and still writes them; the job's entrypoint runs with the
/// job's variables in its environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_and_fetch_volumes_are_kept_for_the_next_job_and_written_by_a_non_root_user() {
    let helper = HelperImage::build("dev");
    // What an earlier, failed run of this test kept.
    for volume in reusable_volumes(TOKEN_VOLUMES) {
        run(Command::new("docker").args(["volume", "rm", "-f", &volume]));
    }
    let git = GitServer::start(&[("README.md", "volumes\n")], true).await;
    let gitlab = FakeGitlab::start(TOKEN_VOLUMES).await;
    let job = |script: &[&str]| {
        let mut payload = job_payload(
            &git.url_with_token("JOB_TOKEN"),
            &git.head(),
            script,
            &[],
            json!([{"key": "GIT_STRATEGY", "value": "fetch", "public": true}]),
            120,
        );
        payload["image"] = json!({"name": BUILD_IMAGE,
            "entrypoint": ["/bin/sh", "-c", "echo entrypoint-sees-job-$CI_JOB_ID; exec \"$@\"", "--"]});
        payload["cache"] = json!([{"key": "volume-key", "paths": ["cached/"], "policy": "pull-push",
            "when": "on_success", "untracked": false}]);
        payload
    };
    let first = gitlab.enqueue(job(&[
        "id -un",
        "mkdir -p cached && echo from-the-first-job > cached/file",
        "echo kept-in-the-builds-volume > /builds/kept",
    ]));
    let _runner = start_runner(
        &gitlab,
        TOKEN_VOLUMES,
        &helper,
        &format!("{HOST_NETWORK}    user = \"nobody\"\n    volumes = [\"/cache\"]\n"),
    );
    let log = gitlab.wait_success(first, WAIT).await;
    assert!(
        log.contains("\nnobody") || log.contains(" nobody\n"),
        "{log}"
    );
    assert!(
        log.contains(&format!("entrypoint-sees-job-{}", first.id)),
        "{log}"
    );
    assert!(log.contains("Created cache"), "{log}");
    let kept = reusable_volumes(TOKEN_VOLUMES);
    assert_eq!(kept.len(), 2, "the /cache and /builds volumes: {kept:?}");

    let second = gitlab.enqueue(job(&["cat cached/file", "cat /builds/kept"]));
    let log = gitlab.wait_success(second, WAIT).await;
    assert!(log.contains("from-the-first-job"), "{log}");
    assert!(log.contains("kept-in-the-builds-volume"), "{log}");
    assert_eq!(reusable_volumes(TOKEN_VOLUMES), kept);
    assert_nothing_left(TOKEN_VOLUMES, &[first, second]).await;
    for volume in kept {
        run(Command::new("docker").args(["volume", "rm", &volume]));
    }
}

const TOKEN_REGISTRY: &str = "glrt-t1_dkrreg001";

/// A private image on a registry (the fake, on loopback) is pulled with the credentials of
/// `DOCKER_AUTH_CONFIG`, then of the job payload; wrong ones are an image pull failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_is_pulled_with_the_jobs_registry_credentials() {
    use base64::Engine;
    let helper = HelperImage::build("dev");
    let registry = runner_tests::FakeRegistry::start(
        BUILD_IMAGE,
        "private/debian",
        "1",
        "puller",
        "pull-secret-42",
    )
    .await;
    let gitlab = FakeGitlab::start(TOKEN_REGISTRY).await;
    let job = |variables: serde_json::Value, credentials: serde_json::Value| {
        let mut payload = job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            &["echo running-in-the-private-image"],
            &[],
            variables,
            120,
        );
        payload["image"] = json!({"name": registry.image(), "pull_policy": ["always"]});
        payload["credentials"] = credentials;
        declare_failure_reasons(&mut payload);
        payload
    };
    let no_git = json!({"key": "GIT_STRATEGY", "value": "none", "public": true});
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:pull-secret-42");
    let auth_config = json!({"auths": {registry.host(): {"auth": auth}}}).to_string();
    let from_variable = gitlab.enqueue(job(
        json!([no_git, {"key": "DOCKER_AUTH_CONFIG", "value": auth_config, "public": false, "masked": false}]),
        json!([]),
    ));
    let _runner = start_runner(
        &gitlab,
        TOKEN_REGISTRY,
        &helper,
        "    allowed_pull_policies = [\"always\", \"if-not-present\"]\n",
    );
    let log = gitlab.wait_success(from_variable, WAIT).await;
    assert!(
        log.contains("Authenticating with credentials from $DOCKER_AUTH_CONFIG"),
        "{log}"
    );
    assert!(
        log.contains(&format!("Pulling docker image {} ...", registry.image())),
        "{log}"
    );
    assert!(
        log.contains("Pull complete") || log.contains("Already exists"),
        "{log}"
    );
    assert!(log.contains("with digest"), "{log}");
    assert!(log.contains("running-in-the-private-image"), "{log}");
    assert!(!log.contains("pull-secret-42"), "{log}");
    assert!(registry.allowed() > 0 && registry.refused() > 0);

    let payload_credentials = |password: &str| json!([{"type": "registry", "url": registry.host(), "username": "puller", "password": password}]);
    let from_payload = gitlab.enqueue(job(json!([no_git]), payload_credentials("pull-secret-42")));
    let log = gitlab.wait_success(from_payload, WAIT).await;
    assert!(
        log.contains("Authenticating with credentials from job payload (GitLab Registry)"),
        "{log}"
    );

    // Refused credentials are the configuration's fault, as upstream classifies them.
    let allowed_before = registry.allowed();
    let wrong = gitlab.enqueue(job(json!([no_git]), payload_credentials("wrong")));
    let log = gitlab
        .wait_failure(wrong, "runner_configuration_error", WAIT)
        .await;
    assert!(
        log.contains(&format!("failed to pull image \"{}\"", registry.image())),
        "{log}"
    );
    assert_eq!(registry.allowed(), allowed_before);
    assert_nothing_left(TOKEN_REGISTRY, &[from_variable, from_payload, wrong]).await;
}

const TOKEN_HOST: &str = "glrt-t1_dkrhost01";

/// Keys of `[runners.docker]` and the job's `executor_opts` as seen from inside the build
/// container; a user outside `allowed_users` is refused as upstream refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_host_keys_and_the_jobs_user_reach_the_build_container() {
    let helper = HelperImage::build("dev");
    let gitlab = FakeGitlab::start(TOKEN_HOST).await;
    let job = |user: &str| {
        let mut payload = job_payload(
            "https://gitlab.example/group/project.git",
            "0123456789abcdef0123456789abcdef01234567",
            &[
                "echo \"host=$(hostname) user=$(id -un) groups=$(id -G)\"",
                "echo \"nofile=$(ulimit -Sn)/$(ulimit -Hn) init=$(cat /proc/1/comm)\"",
                "grep ' /scratch ' /proc/mounts",
                "grep '^search' /etc/resolv.conf",
            ],
            &[],
            json!([
                {"key": "GIT_STRATEGY", "value": "none", "public": true},
                {"key": "FF_USE_INIT_WITH_DOCKER_EXECUTOR", "value": "true", "public": true}
            ]),
            120,
        );
        payload["image"] =
            json!({"name": BUILD_IMAGE, "executor_opts": {"docker": {"user": user}}});
        declare_failure_reasons(&mut payload);
        payload
    };
    let allowed = gitlab.enqueue(job("nobody"));
    let refused = gitlab.enqueue(job("root"));
    let _runner = start_runner(
        &gitlab,
        TOKEN_HOST,
        &helper,
        "    hostname = \"ci-box\"\n    allowed_users = [\"nobody\"]\n    group_add = [\"4321\"]\n    dns_search = [\"ci.example\"]\n    ulimit = { nofile = \"1024:2048\" }\n    tmpfs = { \"/scratch\" = \"rw,size=1m\" }\n",
    );
    let log = gitlab.wait_success(allowed, WAIT).await;
    assert!(log.contains("host=ci-box user=nobody groups="), "{log}");
    assert!(log.contains(" 4321"), "{log}");
    assert!(log.contains("nofile=1024/2048 init=docker-init"), "{log}");
    assert!(log.contains("tmpfs /scratch tmpfs"), "{log}");
    assert!(log.contains("search ci.example"), "{log}");

    let log = gitlab
        .wait_failure(refused, "runner_system_failure", WAIT)
        .await;
    assert!(
        log.contains("user \"root\" is not an allowed user: [nobody]"),
        "{log}"
    );
    assert_nothing_left(TOKEN_HOST, &[allowed, refused]).await;
}

/// `exec docker`: a job of a local `.gitlab-ci.yml` in its `image:`, cloned from the project
/// directory (mounted into the helper container), with the pipeline's variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_docker_runs_a_local_pipeline_job_in_its_image() {
    let helper = HelperImage::build("dev");
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::write(dir.join("README.md"), "local readme\n").unwrap();
    std::fs::write(
        dir.join(".gitlab-ci.yml"),
        format!(
            "image: {BUILD_IMAGE}\nvariables:\n  GREETING: hello-local\nbuild-job:\n  artifacts:\n    paths: [out.txt]\n  script:\n    - cat README.md\n    - echo \"$GREETING from $(. /etc/os-release; echo $ID)\" | tee out.txt\nfailing-job:\n  script:\n    - exit 3\n"
        ),
    )
    .unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com"))
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "initial"]);
    let binary = runner_binary();
    let exec = |job: &str| {
        let output = Command::new(&binary)
            .current_dir(dir)
            .args(["exec", "docker", job, "--docker-helper-image", &helper.0])
            .args(["--docker-pull-policy", "if-not-present"])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    // Nothing of this test serves over the runtime, so the command may block it.
    let (code, out) = exec("build-job");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("local readme"), "{out}");
    assert!(out.contains("hello-local from debian"), "{out}");
    assert!(out.contains("Job succeeded"), "{out}");
    // The helper container uploaded the artifacts to exec's receiver on the bridge gateway.
    assert!(out.contains("201 Created"), "{out}");
    let archive = dir.join("exec-artifacts/build-job/artifacts.zip");
    let zip = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
    assert_eq!(zip.file_names().collect::<Vec<_>>(), ["out.txt"], "{out}");
    let (code, out) = exec("failing-job");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ERROR: Job failed: exit code 3"), "{out}");
    let left = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        "label=com.gitlab.gitlab-runner.runner.id=exec-loca",
    ]));
    assert!(left.trim().is_empty(), "{left}");
}

const TOKEN_TLS: &str = "glrt-t1_dkrtls001";

/// A Docker host over TCP with TLS and client certificates (`host`, `tls_verify`,
/// `tls_cert_path` with Docker's `ca.pem`, `cert.pem`, `key.pem`): here a TLS front for the
/// local engine that refuses connections without the client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_host_over_tls_is_reached_with_the_client_certificate() {
    let helper = HelperImage::build("dev");
    let certificates = runner_tests::TestCertificates::generate();
    let proxy = runner_tests::DockerTlsProxy::start(&certificates).await;
    let certs = tempfile::tempdir().unwrap();
    for (from, to) in [
        (&certificates.ca, "ca.pem"),
        (&certificates.client_cert, "cert.pem"),
        (&certificates.client_key, "key.pem"),
    ] {
        std::fs::copy(from, certs.path().join(to)).unwrap();
    }
    let gitlab = FakeGitlab::start(TOKEN_TLS).await;
    let mut payload = job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["echo ran-through-the-tls-engine"],
        &[],
        json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
        120,
    );
    declare_failure_reasons(&mut payload);
    let job = gitlab.enqueue(payload);
    let _runner = start_runner(
        &gitlab,
        TOKEN_TLS,
        &helper,
        &format!(
            "    host = \"{}\"\n    tls_verify = true\n    tls_cert_path = \"{}\"\n",
            proxy.host(),
            certs.path().display()
        ),
    );
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(log.contains("ran-through-the-tls-engine"), "{log}");
    assert!(proxy.accepted() > 0);
    assert_eq!(proxy.refused(), 0);
    assert_nothing_left(TOKEN_TLS, &[job]).await;
}

const TOKEN_UMASK: &str = "glrt-t1_dkrumask1";

/// Parity audit items 23 and 31: the helper container checks out with `umask 0000` (files
/// 666), unless `FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR` keeps the image's umask (644), which
/// the log says as upstream's does; a runner with `volume_keep` prints upstream's warning
/// after the executor line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_umask_flag_keeps_the_images_umask_and_volume_keep_is_announced() {
    let helper = HelperImage::build("dev");
    let git = GitServer::start(&[("README.md", "umask probe\n")], true).await;
    let gitlab = FakeGitlab::start(TOKEN_UMASK).await;
    let job = |flag: Option<&str>| {
        let mut variables = Vec::new();
        if let Some(value) = flag {
            variables.push(json!({"key": "FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR", "value": value, "public": true}));
        }
        gitlab.enqueue(job_payload(
            &git.url_with_token("JOB_TOKEN"),
            &git.head(),
            &["echo \"mode=$(stat -c %a README.md)\""],
            &[],
            serde_json::Value::Array(variables),
            120,
        ))
    };
    let with_flag = job(Some("true"));
    let without = job(None);
    let _runner = start_runner(
        &gitlab,
        TOKEN_UMASK,
        &helper,
        &format!("{HOST_NETWORK}    volume_keep = true\n"),
    );
    let log = gitlab.wait_success(with_flag, WAIT).await;
    assert!(
        log.contains("Not using umask - FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR is set!"),
        "{log}"
    );
    assert!(log.contains("mode=644"), "{log}");
    assert!(
        log.contains("volume_keep is enabled: Docker volumes will not be removed after job completion and may accumulate on disk"),
        "{log}"
    );
    let log = gitlab.wait_success(without, WAIT).await;
    assert!(!log.contains("Not using umask"), "{log}");
    assert!(log.contains("mode=666"), "{log}");
    // Only anonymous volumes of the images are kept, and this image declares none.
    assert_nothing_left(TOKEN_UMASK, &[with_flag, without]).await;
}
