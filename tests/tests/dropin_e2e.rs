//! Swapping this binary into an existing GitLab Runner install (parity audit items 2, 3, 5): the
//! unit `install` writes is upstream's (checked with `systemd-analyze verify`), its exact
//! `ExecStart` line starts the runner, and an upstream `config.toml` with several runners, one
//! of an executor this binary does not have, runs jobs on the others. The runner's own log
//! follows `log_format` and carries no colour into a file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use runner_tests::{job_payload, runner_binary, FakeGitlab, RunnerProcess, SHELL_RUNNER_TOKEN};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// The words of a unit's `ExecStart=` line: the executable, then each double-quoted argument.
fn exec_start_words(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart line");
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => word.extend(chars.next()),
                    '"' => break,
                    c => word.push(c),
                }
            }
            words.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word.replace("\\x20", " "));
        }
    }
    words
}

async fn wait_for_log(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the runner log never said {needle:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_unit_and_config_start_this_binary_and_jobs_run_on_the_runners_it_has() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    // Jobs run as `nobody` (through su): it must be able to create the builds directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"concurrent = 4
check_interval = 1
log_format = "json"
user = "root"

[session_server]
  session_timeout = 1800

[labels]
  env = "prod"
  team = "ci"

[[runners]]
  name = "autoscaler"
  url = "{url}"
  token = "glrt-autoscaler-runner-token"
  executor = "docker-autoscaler"

[[runners]]
  name = "shell"
  url = "{url}"
  token = "{SHELL_RUNNER_TOKEN}"
  executor = "shell"
  builds_dir = "{builds}"
  environment = ["FROM_CONFIG=yes", "BROKEN_ENTRY"]
  [runners.labels]
    env = "staging"

[[runners]]
  name = "machines"
  url = "{url}"
  token = "glrt-docker-machine-token"
  executor = "docker+machine"
  [runners.docker]
    image = "alpine"
  [runners.machine]
    IdleCount = 0
"#,
            url = gitlab.url(),
            builds = dir.path().join("builds").display(),
        ),
    )
    .unwrap();

    // `install` writes the unit (as root, --user is required: upstream's rule).
    let units = dir.path().join("units");
    let refused = Command::new(runner_binary())
        .args(["install", "--systemd-unit-dir"])
        .arg(&units)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("Please specify user that will run gitlab-runner service"),
        "{refused:?}"
    );
    let installed = Command::new(runner_binary())
        .args(["install", "--systemd-unit-dir"])
        .arg(&units)
        .arg("--config")
        .arg(&config)
        .arg("--working-directory")
        .arg(dir.path())
        .args(["--user", "nobody"])
        .output()
        .unwrap();
    assert!(installed.status.success(), "{installed:?}");
    let unit_path = units.join("gitlab-runner.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let words = exec_start_words(&unit);
    assert_eq!(
        words[1..],
        [
            "run".to_string(),
            "--config".into(),
            config.display().to_string(),
            "--working-directory".into(),
            dir.path().display().to_string(),
            "--service".into(),
            "gitlab-runner".into(),
            "--user".into(),
            "nobody".into(),
        ],
        "{unit}"
    );
    // The unit names this binary (by its resolved path, as `install` finds it).
    assert_eq!(
        std::fs::canonicalize(&words[0]).unwrap(),
        std::fs::canonicalize(runner_binary()).unwrap()
    );
    // systemd's own checker accepts the unit.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze is installed (scripts/setup.sh installs systemd)");
    let verify_text = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success(), "{verify_text}\n{unit}");
    assert!(
        !verify_text.contains("gitlab-runner.service:"),
        "{verify_text}"
    );

    // The unit's exact command line runs the runner.
    let log = dir.path().join("runner.log");
    let _runner =
        RunnerProcess::spawn_args_logged(Path::new(&words[0]), &words[1..], Path::new("/"), &log);
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["echo \"whoami=$(id -un) from-config=$FROM_CONFIG\""],
        &[],
        json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
        60,
    ));
    let job_log = gitlab.wait_success(job, WAIT).await;
    // The header names the revision the binary was built from (upstream: 8 hex digits).
    let revision = job_log
        .split("Running with gitlab-runner-rs ")
        .nth(1)
        .and_then(|rest| rest.split_once('(')?.1.split_once(')'))
        .map(|(revision, _)| revision.to_string())
        .unwrap_or_default();
    assert!(
        revision.len() == 8 && revision.chars().all(|c| c.is_ascii_hexdigit()),
        "revision {revision:?} in:\n{job_log}"
    );
    // `--user` replaced the file's `user = "root"`.
    assert!(
        job_log.contains("whoami=nobody from-config=yes"),
        "{job_log}"
    );

    let runner_log = wait_for_log(&log, "is not known; marking Runner as unhealthy").await;
    assert!(
        !runner_log.contains('\x1b'),
        "colour in a file:\n{runner_log}"
    );
    let lines: Vec<serde_json::Value> = runner_log
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"))
        })
        .collect();
    let unhealthy: Vec<_> = lines
        .iter()
        .filter(|line| {
            line["msg"]
                .as_str()
                .is_some_and(|msg| msg.ends_with("is not known; marking Runner as unhealthy"))
        })
        .collect();
    assert_eq!(unhealthy.len(), 2, "{runner_log}");
    assert_eq!(
        unhealthy[0]["msg"],
        "Executor \"docker-autoscaler\" is not known; marking Runner as unhealthy"
    );
    assert_eq!(unhealthy[0]["level"], "error");
    assert_eq!(unhealthy[0]["runner_name"], "autoscaler");
    assert_eq!(
        unhealthy[1]["msg"],
        "Executor \"docker+machine\" is not known; marking Runner as unhealthy"
    );
    for needle in [
        "runners[0].executor = \"docker-autoscaler\"",
        "runners[1].environment entry \"BROKEN_ENTRY\"",
        "session_server in ",
    ] {
        assert!(
            lines.iter().any(|line| line["level"] == "warning"
                && line["msg"].as_str().is_some_and(|msg| msg.contains(needle))),
            "no warning about {needle}:\n{runner_log}"
        );
    }
    // Nobody asked GitLab for jobs with the tokens of the runners that cannot run them.
    let requests = gitlab.request_bodies();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|body| body["token"] == SHELL_RUNNER_TOKEN),
        "{requests:?}"
    );
    // Parity audit item 16: the computed labels (the runner's over the global ones) go out.
    assert!(
        requests
            .iter()
            .all(|body| body["info"]["labels"] == json!({"env": "staging", "team": "ci"})),
        "{requests:?}"
    );

    // `uninstall` removes the unit again (systemd is not running here: nothing to disable).
    let uninstalled = Command::new(runner_binary())
        .args(["uninstall", "--systemd-unit-dir"])
        .arg(&units)
        .output()
        .unwrap();
    assert!(uninstalled.status.success(), "{uninstalled:?}");
    assert!(!unit_path.exists());
}

#[test]
fn upstreams_logging_flags_are_accepted_and_a_bad_level_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "concurrent = 1\n").unwrap();
    for flags in [
        &["--debug"][..],
        &["-l", "warn"],
        &["--log-level", "error", "--log-format", "text"],
    ] {
        let output = Command::new(runner_binary())
            .args(flags)
            .arg("list")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(output.status.success(), "{flags:?}: {output:?}");
    }
    let output = Command::new(runner_binary())
        .args(["--log-level", "loud", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "FATAL: Error while setting up logging configuration  error=failed to parse log level: \
         not a valid logrus Level: \"loud\"\n"
    );
    // The service commands answer as upstream's where systemd does not run.
    let status = Command::new(runner_binary())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&status.stderr),
        "gitlab-runner: Service status unknown\n"
    );
}

/// A TOML date-time `offset_seconds` from now (negative: in the past).
fn toml_time_from_now(offset_seconds: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs() as i64;
    let output = Command::new("date")
        .args(["-u", "-d"])
        .arg(format!("@{}", now + offset_seconds))
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .expect("run date(1)");
    String::from_utf8(output.stdout)
        .expect("date(1) prints ASCII")
        .trim()
        .to_string()
}

/// Parity audit item 7: a token that expires is reset before it does, through
/// `runners/reset_authentication_token`, saved into config.toml, and used from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_runner_token_is_rotated_saved_and_used() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // Three quarters of the token's life (70 min) were over 7.5 min ago: the reset is due.
    let dates = format!(
        "token_obtained_at = {}\n  token_expires_at = {}",
        toml_time_from_now(-3600),
        toml_time_from_now(600)
    );
    std::fs::write(
        &config,
        runner_tests::ShellRunner::config(&gitlab, dir.path(), 1, &dates),
    )
    .unwrap();
    let log = dir.path().join("runner.log");
    let _runner = RunnerProcess::spawn_logged(&runner_binary(), &config, dir.path(), &log);
    wait_for_log(&log, "Resetting runner authentication token... succeeded").await;
    assert_eq!(gitlab.token_resets(), ["glrt-rotated1"]);
    // The file holds the new token and its dates; the fake refuses the old token now, so a job
    // that runs proves the loop took the new one.
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&config).unwrap();
        if text.contains("token = \"glrt-rotated1\"") {
            assert!(
                text.contains("token_expires_at = 2099-01-01T00:00:00"),
                "{text}"
            );
            assert!(!text.contains(SHELL_RUNNER_TOKEN), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "config.toml never got the new token:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["echo \"rotated-$((40+2))\""],
        &[],
        json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
        60,
    ));
    assert!(gitlab.wait_success(job, WAIT).await.contains("rotated-42"));
    // One reset: the new token expires in 2099.
    assert_eq!(gitlab.token_resets().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rotation_disabled_the_runner_only_warns() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let extra = format!(
        "token_obtained_at = {}\n  token_expires_at = {}\n  [runners.feature_flags]\n    FF_DISABLE_AUTOMATIC_TOKEN_ROTATION = true",
        toml_time_from_now(-3600),
        toml_time_from_now(600)
    );
    std::fs::write(
        &config,
        runner_tests::ShellRunner::config(&gitlab, dir.path(), 1, &extra),
    )
    .unwrap();
    let log = dir.path().join("runner.log");
    let _runner = RunnerProcess::spawn_logged(&runner_binary(), &config, dir.path(), &log);
    wait_for_log(
        &log,
        "Automatic token rotation is disabled for runner: e2erunner-",
    )
    .await;
    assert!(gitlab.token_resets().is_empty());
}

/// `reset-token --name` resets one runner's token on demand and saves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_token_resets_the_named_runner_and_saves_it() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        runner_tests::ShellRunner::config(&gitlab, dir.path(), 1, ""),
    )
    .unwrap();
    let binary = runner_binary();
    let config_arg = config.clone();
    let missing = tokio::task::spawn_blocking({
        let binary = binary.clone();
        let config = config_arg.clone();
        move || {
            Command::new(binary)
                .args(["reset-token", "--name", "nobody-has-this-name", "--config"])
                .arg(config)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("could not find a runner with the name 'nobody-has-this-name'"),
        "{missing:?}"
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["reset-token", "--name", "e2e", "--config"])
            .arg(config_arg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Updated\n");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("token = \"glrt-rotated1\""), "{text}");
}

/// Parity audit item 4: upstream's register flags (every config key, with its environment
/// variable), `--template-config`, upstream's Docker rules, and the saved id and token dates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_takes_upstreams_config_flags_a_template_and_keeps_the_runner_id() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let register = |extra: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(runner_binary());
        command
            .args(["register", "--non-interactive", "--config"])
            .arg(&config)
            .args(["--url", &gitlab.url(), "--token", SHELL_RUNNER_TOKEN])
            .args(["--executor", "docker", "--name", "docker-runner"])
            .args(extra)
            .env_remove("DOCKER_IMAGE");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    };
    // A docker registration needs an image, as upstream's.
    let refused = register(&[], &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("The docker-image needs to be entered"),
        "{refused:?}"
    );
    // Server-side settings cannot come with a runner authentication token.
    let reserved = register(&["--tag-list", "a,b"], &[("DOCKER_IMAGE", "alpine:3")]);
    assert!(!reserved.status.success());
    assert!(
        String::from_utf8_lossy(&reserved.stderr).contains("is reserved"),
        "{reserved:?}"
    );
    let template = dir.path().join("template.toml");
    std::fs::write(
        &template,
        "[[runners]]\n  output_limit = 8192\n  token = \"must-not-be-used\"\n  [runners.docker]\n    privileged = true\n    image = \"from-template\"\n",
    )
    .unwrap();
    let output = register(
        &[
            "--env",
            "A=1",
            "--env",
            "B=two words",
            "--docker-volumes",
            "/data:/data",
            "--cache-type",
            "s3",
            "--cache-s3-bucket-name",
            "runner-cache",
            "--request-concurrency",
            "2",
            "--docker-disable-entrypoint-overwrite",
            "--template-config",
            template.to_str().unwrap(),
        ],
        &[("DOCKER_IMAGE", "alpine:3")],
    );
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&config).unwrap();
    let document: toml::Value = toml::from_str(&text).unwrap();
    let runner = &document["runners"][0];
    assert_eq!(runner["id"].as_integer(), Some(4242), "{text}");
    assert_eq!(runner["token"].as_str(), Some(SHELL_RUNNER_TOKEN), "{text}");
    assert!(runner.get("token_obtained_at").is_some(), "{text}");
    assert_eq!(runner["name"].as_str(), Some("docker-runner"));
    assert_eq!(runner["request_concurrency"].as_integer(), Some(2));
    assert_eq!(runner["output_limit"].as_integer(), Some(8192), "{text}");
    assert_eq!(
        runner["environment"],
        toml::Value::Array(vec!["A=1".into(), "B=two words".into()])
    );
    // The flag's image wins over the template's; the template fills what the flags left.
    assert_eq!(
        runner["docker"]["image"].as_str(),
        Some("alpine:3"),
        "{text}"
    );
    assert_eq!(
        runner["docker"]["privileged"].as_bool(),
        Some(true),
        "{text}"
    );
    assert_eq!(
        runner["docker"]["disable_entrypoint_overwrite"].as_bool(),
        Some(true)
    );
    assert_eq!(
        runner["docker"]["volumes"],
        toml::Value::Array(vec!["/data:/data".into(), "/cache".into()]),
        "{text}"
    );
    assert_eq!(runner["cache"]["Type"].as_str(), Some("s3"));
    assert_eq!(
        runner["cache"]["s3"]["BucketName"].as_str(),
        Some("runner-cache")
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("Runner registered successfully."));
}

/// Parity audit items 19 and 20: `lint`, and `verify` with upstream's selectors and outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_names_unknown_keys_and_verify_selects_and_deletes_as_upstream() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let run = |args: &[&str]| {
        let output = Command::new(runner_binary())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, stderr) = run(&["lint"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("config file not found: {}", config.display())),
        "{stderr}"
    );
    let good = format!(
        "{}\n[[runners]]\n  name = \"stale\"\n  url = \"{}\"\n  token = \"glrt-not-known-to-gitlab\"\n  executor = \"shell\"\n",
        runner_tests::ShellRunner::config(&gitlab, dir.path(), 1, ""),
        gitlab.url()
    );
    std::fs::write(
        &config,
        format!("[session_server]\n  session_timeout = 1800\n{good}"),
    )
    .unwrap();
    let (code, stderr) = run(&["lint"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Configuration file is valid."), "{stderr}");
    std::fs::write(
        &config,
        good.replacen(
            "executor = \"shell\"\n",
            "executor = \"shell\"\n  frobnicate = 1\n",
            1,
        ),
    )
    .unwrap();
    let (code, stderr) = run(&["lint"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "1 unknown key(s) found in {}:\n  unknown key: runners.frobnicate",
            config.display()
        )),
        "{stderr}"
    );

    std::fs::write(&config, &good).unwrap();
    // A selector verifies only its runner.
    let (code, stderr) = run(&["verify", "--name", "e2e"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Verifying runner... is valid"), "{stderr}");
    assert!(!stderr.contains("is removed"), "{stderr}");
    let (code, stderr) = run(&["verify", "--name", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no runner matches the filtering parameters"),
        "{stderr}"
    );
    // All of them: the stale one is refused, at ERROR level, and the command fails.
    let (code, stderr) = run(&["verify"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ERROR: Verifying runner... is removed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ERROR: Failed to verify runners"),
        "{stderr}"
    );
    // --delete removes it and saves the file.
    let (code, stderr) = run(&["verify", "--delete"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("Updated {}", config.display())),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("stale"), "{text}");
    assert!(text.contains(SHELL_RUNNER_TOKEN), "{text}");
    // list: the header and the runners on one stream, in order.
    let (code, stderr) = run(&["list"]);
    assert_eq!(code, Some(0));
    let header = stderr.find("Listing configured runners").unwrap();
    let runner = stderr.find("Executor=shell").unwrap();
    assert!(header < runner, "{stderr}");
}

/// Parity audit item 20: `run-single` takes every `[[runners]]` key as a flag (here `--env`
/// and `--builds-dir`), stops after `--max-builds` or when `--wait-timeout` passes without a
/// job, and refuses, as upstream, a command line without an executor or with one it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_single_takes_the_runner_flags_and_upstreams_limits() {
    let gitlab = FakeGitlab::start(SHELL_RUNNER_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let binary = runner_binary();
    let run_single = |extra: &[&str]| {
        let mut command = Command::new(&binary);
        command
            .arg("run-single")
            .arg("-c")
            .arg(&config)
            .args(["--url", &gitlab.url(), "--token", SHELL_RUNNER_TOKEN])
            .arg("--builds-dir")
            .arg(dir.path().join("builds"))
            .args(extra);
        command
    };
    let job = gitlab.enqueue(job_payload(
        "https://gitlab.example/group/project.git",
        "0123456789abcdef0123456789abcdef01234567",
        &["echo \"from-flag=$RUN_SINGLE_VAR\""],
        &[],
        json!([{"key": "GIT_STRATEGY", "value": "none", "public": true}]),
        60,
    ));
    let mut once = run_single(&[
        "--executor",
        "shell",
        "--env",
        "RUN_SINGLE_VAR=set-by-env-flag",
        "--max-builds",
        "1",
    ]);
    let output = tokio::task::spawn_blocking(move || once.output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("This runner has processed its build limit, so now exiting"),
        "{stderr}"
    );
    let log = gitlab.wait_success(job, WAIT).await;
    assert!(log.contains("from-flag=set-by-env-flag"), "{log}");

    // No job comes: it gives up after --wait-timeout seconds.
    let mut idle = run_single(&["--executor", "shell", "--wait-timeout", "1"]);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || idle.output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("This runner has not received a job in 1 seconds, so now exiting"),
        "{stderr}"
    );
    assert!(started.elapsed() < WAIT, "{stderr}");

    for (extra, expected) in [
        (&[][..], "Missing Executor"),
        (
            &["--executor", "virtualbox"][..],
            "Unknown executor: virtualbox",
        ),
    ] {
        let output = run_single(extra).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
    }
}
