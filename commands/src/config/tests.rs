//! Unit tests of loading and validating `config.toml`.

use super::*;
use executor_docker::PullPolicy;

const REAL: &str = r#"
concurrent = 4
check_interval = 0
shutdown_timeout = 0

[session_server]
  session_timeout = 1800

[[runners]]
  name = "my-runner"
  url = "https://gitlab.example.com/"
  id = 12
  token = "glrt-t1_abcdefghijklmnopq"
  token_obtained_at = 2024-01-01T00:00:00Z
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "shell"
  limit = 2
  builds_dir = "/srv/builds"
  environment = ["A=1", "B=two"]
  prepare_timeout = "5m"
  frobnicate = true
  [runners.custom_build_dir]
    enabled = true
  [runners.cache]
    MaxUploadedArchiveSize = 0
    [runners.cache.s3]
    [runners.cache.gcs]
    [runners.cache.azure]
  [runners.feature_flags]
    FF_TIMESTAMPS = false
    FF_TIMESTAMP = true
"#;

#[test]
fn loads_a_real_gitlab_config_and_warns_on_unknown_keys() {
    let config = Config::parse(Path::new("/etc/gitlab-runner/config.toml"), REAL).unwrap();
    assert_eq!(config.concurrent, 4);
    assert_eq!(config.check_interval, Duration::from_secs(3));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    // `lint` names the keys nothing reads as upstream's does; a kept upstream key is not one.
    assert_eq!(
        config.unknown_keys,
        ["runners.frobnicate", "runners.feature_flags.FF_TIMESTAMP"]
    );
    let runner = &config.runners[0];
    assert_eq!(runner.limit, 2);
    assert_eq!(runner.short_token(), "abcdefghi");
    assert_eq!(runner.prepare_timeout, Some(Duration::from_secs(300)));
    assert_eq!(runner.custom_build_dir_enabled, Some(true));
    assert_eq!(
        runner
            .feature_flags
            .get(&runner_core::feature_flags::FeatureFlag::Timestamps),
        Some(&false)
    );
    assert_eq!(runner.output_limit, 4096 * 1024);
    assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
    assert_eq!(
        config.warnings[0],
        "runners[0].frobnicate in /etc/gitlab-runner/config.toml: gitlab-runner-rs does not read this key; ignored"
    );
    // An upstream section this runner keeps but does not act on is said, not silently kept.
    assert_eq!(
        config.warnings[1],
        "session_server in /etc/gitlab-runner/config.toml: gitlab-runner-rs keeps this key but does not act on it yet"
    );
    // The empty `[runners.cache.gcs]` and `[runners.cache.azure]` that `register` writes are
    // not warned about; a misspelled flag is named, not silently dropped (upstream drops it).
    assert_eq!(
        config.warnings[2],
        "runners[0].feature_flags.FF_TIMESTAMP in /etc/gitlab-runner/config.toml: gitlab-runner-rs does not read this key; ignored"
    );
}

#[test]
fn bad_values_name_the_key_and_the_value() {
    let error = Config::parse(Path::new("c.toml"), "concurrent = 0").unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid value for concurrent: \"0\" (must be at least 1)"
    );
    let text = REAL.replace("prepare_timeout = \"5m\"", "prepare_timeout = \"soon\"");
    let error = Config::parse(Path::new("c.toml"), &text).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("runners[0].prepare_timeout: \"soon\""),
        "{error}"
    );
    let error = Config::parse(Path::new("c.toml"), "concurrent = \"x\"").unwrap_err();
    assert!(error.to_string().starts_with("parsing c.toml"), "{error}");
}

#[test]
fn out_of_range_values_are_refused_naming_the_key_not_a_panic() {
    // Security probe finding 5: each of these panicked at start (exit 101 with a backtrace)
    // or, for output_limit, wrapped to a 0-byte log.
    let cases = [
        ("concurrent = 4", "concurrent = 9223372036854775807", "invalid value for concurrent: \"9223372036854775807\" (must be at most 1000000)"),
        ("limit = 2", "limit = 9223372036854775807", "invalid value for runners[0].limit: \"9223372036854775807\" (must be at most 1000000)"),
        ("limit = 2", "limit = 2\n  request_concurrency = 3000000000000000000", "invalid value for runners[0].request_concurrency: \"3000000000000000000\" (must be at most 1000000)"),
        ("limit = 2", "limit = 2\n  unhealthy_interval = \"99999999999999999999999h\"", "invalid value for runners[0].unhealthy_interval: \"99999999999999999999999h\" (expected a duration such as 30s, 10m or 1h)"),
        ("limit = 2", "limit = 2\n  output_limit = 18014398509481984", "invalid value for runners[0].output_limit: \"18014398509481984\" (is too large)"),
        ("limit = 2", "limit = 2\n  unhealthy_requests_limit = 4294967296", "invalid value for runners[0].unhealthy_requests_limit: \"4294967296\" (must be at most 4294967295)"),
    ];
    for (from, to, expected) in cases {
        let text = REAL.replace(from, to);
        assert_ne!(text, REAL);
        let error = Config::parse(Path::new("c.toml"), &text).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
    let text = REAL.replace("limit = 2", "limit = 2\n  output_limit = 9007199254740991");
    let config = Config::parse(Path::new("c.toml"), &text).unwrap();
    assert_eq!(config.runners[0].output_limit, 9_007_199_254_740_991 * 1024);
}

#[test]
fn the_ssh_section_takes_upstreams_keys_and_defaults() {
    let ssh_runner = REAL.replace("executor = \"shell\"", "executor = \"ssh\"");
    let with = |section: &str| format!("{ssh_runner}  [runners.ssh]\n{section}");
    let config = Config::parse(
        Path::new("c.toml"),
        &with("    host = \"build-host\"\n    port = \"2222\"\n    user = \"ci\"\n    password = \"pw\"\n    identity_file = \"/k\"\n    disable_strict_host_key_checking = true\n    known_hosts_file = \"/kh\"\n"),
    )
    .unwrap();
    let runner = &config.runners[0];
    assert_eq!(runner.executor, ExecutorKind::Ssh);
    let ssh = runner.ssh.as_ref().unwrap();
    assert_eq!(
        (ssh.host.as_str(), ssh.port, ssh.user.as_str()),
        ("build-host", 2222, "ci")
    );
    assert_eq!(ssh.password.expose(), "pw");
    assert_eq!(ssh.identity_file.as_deref(), Some(Path::new("/k")));
    assert!(ssh.disable_strict_host_key_checking);
    assert_eq!(ssh.known_hosts_file.as_deref(), Some(Path::new("/kh")));
    // Empty values fall back to upstream's defaults; a number is taken for the port.
    let config = Config::parse(
        Path::new("c.toml"),
        &with("    host = \"\"\n    port = 22\n"),
    )
    .unwrap();
    let ssh = config.runners[0].ssh.as_ref().unwrap();
    assert_eq!(
        (ssh.host.as_str(), ssh.port, ssh.user.as_str()),
        ("localhost", 22, "root")
    );
    assert!(!ssh.disable_strict_host_key_checking);
    // No section: jobs fail in prepare, as upstream's "missing SSH configuration".
    let config = Config::parse(Path::new("c.toml"), &ssh_runner).unwrap();
    assert!(config.runners[0].ssh.is_none());

    let error = Config::parse(Path::new("c.toml"), &with("    port = \"ssh\"\n")).unwrap_err();
    assert!(
        error.to_string().contains("runners[0].ssh.port: \"ssh\""),
        "{error}"
    );
    // A misspelled key is the same warning as anywhere in the file, not a refused file.
    let config = Config::parse(Path::new("c.toml"), &with("    hots = \"x\"\n")).unwrap();
    assert!(
        config.warnings.iter().any(|warning| warning
            == "runners[0].ssh.hots in c.toml: gitlab-runner-rs does not read this key; ignored"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_kubernetes_section_with_every_kind_of_key_loads_without_a_warning() {
    let kubernetes = REAL.replace("executor = \"shell\"", "executor = \"kubernetes\"")
        + "  [runners.kubernetes]\n    namespace = \"ci\"\n    pod_disruption_budget = true\n    resource_availability_check_max_attempts = 3\n    [[runners.kubernetes.volumes.host_path]]\n      name = \"d\"\n      mount_path = \"/d\"\n";
    let config = Config::parse(Path::new("c.toml"), &kubernetes).unwrap();
    let warnings = config.warnings.join("\n");
    assert!(!warnings.contains("kubernetes"), "{warnings}");
    let kubernetes = &config.runners[0].kubernetes;
    assert!(kubernetes.pod_disruption_budget);
    assert_eq!(kubernetes.resource_availability_check_max_attempts, 3);
    assert_eq!(kubernetes.volumes.host_path.len(), 1);
}

#[test]
fn a_registered_docker_section_loads_with_warnings_for_what_is_not_used() {
    let docker = REAL.replace("executor = \"shell\"", "executor = \"docker\"")
        + "  [runners.docker]\n    image = \"debian:bookworm\"\n    tls_verify = false\n    gpus = \"all\"\n    disable_cache = false\n    volumes = [\"/cache\", \"/srv/data:/data:ro\"]\n    pull_policy = \"if-not-present\"\n    memory = \"512m\"\n    wait_for_services_timeout = 5\n    services_limit = 2\n    service_memory = \"128m\"\n    oom_kill_disable = false\n    network_mtu = 0\n    ulimit = { nofile = \"1024:2048\", core = \"0\" }\n    container_labels = { team = \"ci\" }\n    [[runners.docker.services]]\n      name = \"postgres:16\"\n      alias = \"db\"\n      environment = [\"POSTGRES_PASSWORD=pw\"]\n";
    let config = Config::parse(Path::new("c.toml"), &docker).unwrap();
    let runner = &config.runners[0];
    let settings = runner.docker.as_ref().unwrap();
    assert_eq!(settings.image, "debian:bookworm");
    assert_eq!(settings.pull_policy, vec![PullPolicy::IfNotPresent]);
    assert_eq!(settings.resources.memory, Some(512 * 1024 * 1024));
    let warnings = config.warnings.join("\n");
    assert!(!warnings.contains("tls_verify"), "{warnings}");
    assert!(warnings.contains("docker.gpus"), "{warnings}");
    for used in ["disable_cache", "/cache", "services"] {
        assert!(!warnings.contains(used), "{warnings}");
    }
    assert_eq!(settings.volumes, vec!["/cache", "/srv/data:/data:ro"]);
    assert_eq!(settings.services_limit, Some(2));
    assert_eq!(settings.service_resources.memory, Some(128 * 1024 * 1024));
    assert_eq!(
        settings.ulimits,
        vec![("core".into(), 0, 0), ("nofile".into(), 1024, 2048)]
    );
    assert_eq!(settings.network_mtu, None);
    assert_eq!(settings.container_labels["team"], "ci");
    for key in [
        "ulimit",
        "container_labels",
        "service_memory",
        "network_mtu",
    ] {
        assert!(!warnings.contains(key), "{warnings}");
    }
    assert_eq!(settings.services[0].name, "postgres:16");
    assert_eq!(settings.services[0].aliases(), vec!["db"]);
    assert_eq!(settings.services[0].variables[0].key, "POSTGRES_PASSWORD");
    assert_eq!(settings.services[0].variables[0].value, "pw");
    assert!(
        !warnings.contains("wait_for_services_timeout"),
        "{warnings}"
    );
    assert_eq!(settings.wait_for_services_timeout, 5);
    let bad_limit = docker.replace("\"1024:2048\"", "\"lots\"");
    let error = Config::parse(Path::new("c.toml"), &bad_limit).unwrap_err();
    assert!(
        error.to_string().contains("docker.ulimit.nofile: \"lots\""),
        "{error}"
    );
    let bad = docker.replace("\"if-not-present\"", "\"sometimes\"");
    let error = Config::parse(Path::new("c.toml"), &bad).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("docker.pull_policy: \"sometimes\""),
        "{error}"
    );
}

/// Parity audit item 5: upstream marks only the runner with an executor it cannot run as
/// unhealthy, and skips an `environment` entry without `=`; the other runners keep working.
#[test]
fn one_runner_this_binary_cannot_run_leaves_the_others_working() {
    let text = r#"
concurrent = 2

[[runners]]
  name = "autoscaler"
  url = "https://gitlab.example.com"
  token = "glrt-autoscaler-token"
  executor = "docker-autoscaler"

[[runners]]
  name = "shell"
  url = "https://gitlab.example.com"
  token = "glrt-shell-token"
  executor = "shell"
  environment = ["A=1", "B"]

[[runners]]
  name = "pwsh"
  url = "https://gitlab.example.com"
  token = "glrt-pwsh-token"
  executor = "shell"
  shell = "pwsh"

[[runners]]
  name = "typo"
  url = "https://gitlab.example.com"
  token = "glrt-typo-token"
  executor = "shel"
"#;
    let config = Config::parse(Path::new("c.toml"), text).unwrap();
    let ready: Vec<_> = config
        .runners
        .iter()
        .map(|r| (r.index, r.name.as_str()))
        .collect();
    assert_eq!(ready, [(1, "shell")]);
    assert_eq!(config.runners[0].environment, ["A=1"]);
    let out: Vec<_> = config
        .unavailable
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect();
    assert_eq!(
        out,
        [
            (
                0,
                "Executor \"docker-autoscaler\" is not known; marking Runner as unhealthy"
            ),
            (
                2,
                "Shell \"pwsh\" is not supported by gitlab-runner-rs (it has: bash, sh); \
                 marking Runner as unhealthy"
            ),
            (
                3,
                "Executor \"shel\" is not known; marking Runner as unhealthy"
            ),
        ]
    );
    assert!(
        config.warnings.iter().any(|w| w
            == "runners[0].executor = \"docker-autoscaler\" in c.toml: gitlab-runner-rs has no \
                docker-autoscaler executor yet (it has: shell, ssh, custom, docker, kubernetes); \
                runner \"autoscaler\" gets no jobs"),
        "{:?}",
        config.warnings
    );
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w == "runners[1].environment entry \"B\" in c.toml: not KEY=VALUE; ignored"),
        "{:?}",
        config.warnings
    );
    // verify, unregister and list still see every entry, in file order.
    let names: Vec<_> = config.credentials().iter().map(|c| c.name).collect();
    assert_eq!(names, ["autoscaler", "shell", "pwsh", "typo"]);
}

/// Parity audit item 15: `[runners.artifact]` is read, not kept silently.
#[test]
fn the_artifact_section_sets_the_uploaders_timeouts() {
    let text = format!(
        "{REAL}\n  [runners.artifact]\n    upload_timeout = \"2h\"\n    response_header_timeout = \"90s\"\n"
    );
    let config = Config::parse(Path::new("c.toml"), &text).unwrap();
    let runner = &config.runners[0];
    assert_eq!(
        runner.artifact_upload_timeout,
        Some(Duration::from_secs(7200))
    );
    assert_eq!(
        runner.artifact_response_header_timeout,
        Some(Duration::from_secs(90))
    );
    assert!(
        !config.warnings.iter().any(|w| w.contains("artifact")),
        "{:?}",
        config.warnings
    );
    let bad = text.replace("\"2h\"", "\"soon\"");
    let error = Config::parse(Path::new("c.toml"), &bad).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("runners[0].artifact.upload_timeout: \"soon\""),
        "{error}"
    );
}
