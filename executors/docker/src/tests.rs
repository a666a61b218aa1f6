//! Unit tests of the Docker executor's pure parts: host configs, labels, users, patterns,
//! pull policies.

use super::*;
use runner_core::executor::ExecutorErrorKind;

#[test]
fn allowed_images_are_doublestar_patterns() {
    let matches = |pattern: &str, image: &str| runner_core::glob::matches(pattern, image);
    assert!(matches("debian:*", "debian:bookworm"));
    assert!(matches("registry.local/**", "registry.local/group/app:1"));
    assert!(!matches("registry.local/*", "registry.local/group/app:1"));
    assert!(matches(
        "registry.local/*/app:?",
        "registry.local/group/app:1"
    ));
    assert!(!matches("debian:*", "alpine:3"));
}

fn job() -> Job {
    Job {
        image: "debian:12".into(),
        image_id: "sha256:0123".into(),
        image_user: String::new(),
        helper_image: DockerConfig::default().helper_image,
        project_dir: "/builds/group/project".into(),
        umask_disabled: false,
        section_attempts: 1,
        entrypoint: None,
        env: Vec::new(),
        prefix: "runner-x-project-1-concurrent-0-00".into(),
        labels: HashMap::new(),
        temporary_volumes: Vec::new(),
        binds: vec!["v:/builds".into()],
        user: String::new(),
        platform: String::new(),
        privileged_image: false,
        init: true,
        containers: HashMap::new(),
        hostname: "h".into(),
        network: Some("net".into()),
        links: Vec::new(),
        services: Vec::new(),
        log_followers: Vec::new(),
        steps: false,
    }
}

fn executor(config: DockerConfig) -> DockerExecutor {
    DockerProvider::new(Some(config)).create(())
}

#[test]
fn build_helper_and_service_containers_get_upstreams_host_config() {
    let config = DockerConfig {
        privileged: true,
        allowed_privileged_services: vec!["postgres:*".into()],
        pid_mode: "host".into(),
        resources: Resources {
            memory: Some(1 << 30),
            ..Resources::default()
        },
        service_resources: Resources {
            memory: Some(1 << 20),
            ..Resources::default()
        },
        ulimits: vec![("nofile".into(), 10, 20)],
        network_mode: String::new(),
        ..DockerConfig::default()
    };
    let executor = executor(config);
    let job = job();
    let build = executor.host_config(&job, true);
    // The build image is not among allowed_privileged_images here.
    assert_eq!(build.privileged, Some(false));
    assert_eq!(build.pid_mode.as_deref(), Some("host"));
    assert_eq!(build.init, Some(true));
    assert_eq!(build.memory, Some(1 << 30));
    assert_eq!(build.network_mode.as_deref(), Some("net"));
    assert_eq!(build.ulimits.as_ref().unwrap()[0].hard, Some(20));
    let helper = executor.host_config(&job, false);
    assert_eq!(helper.privileged, Some(true));
    assert_eq!(helper.pid_mode, None);
    assert_eq!(helper.init, None);
    let service = executor.service_host_config(&job, "postgres:16");
    assert_eq!(service.privileged, Some(true));
    assert_eq!(service.memory, Some(1 << 20));
    assert_eq!(service.binds, Some(vec!["v:/builds".to_string()]));
    let other = executor.service_host_config(&job, "redis:7");
    assert_eq!(other.privileged, Some(false));
}

#[test]
fn labels_are_upstreams() {
    let json = r#"{"id": 42, "token": "job-token",
            "job_info": {"project_id": 7, "pipeline_id": 99, "name": "j", "stage": "s"},
            "git_info": {"repo_url": "https://gitlab-ci-token:secret@gitlab.example/group/app.git",
                "sha": "abc", "before_sha": "000", "ref": "main"},
            "runner_info": {"timeout": 3600},
            "steps": [{"name": "script", "script": ["true"], "timeout": 3600, "when": "on_success"}]}"#;
    let input = runner_core::build::BuildInput {
        job: runner_core::job::JobResponse::from_json(json.as_bytes()).unwrap(),
        runner: runner_core::build::RunnerSettings {
            token: "glrt-abcdefghijklmnop".to_string().into(),
            system_id: "s_0123456789ab".into(),
            ..Default::default()
        },
        executor_name: "docker".into(),
        defaults: DockerProvider::new(None).defaults(),
        shared_environment: false,
        shell: runner_core::script::ShellCommand {
            name: "bash".into(),
            program: "bash".into(),
            args: Vec::new(),
        },
        concurrent_id: 3,
        concurrent_project_id: 1,
        correlation_id: String::new(),
    };
    let build = BuildContext::new(input).unwrap().0;
    let labels = job_labels(&build);
    let label = |key: &str| labels[&format!("{LABEL_PREFIX}.{key}")].as_str();
    assert_eq!(
        label("job.url"),
        "https://gitlab.example/group/app/-/jobs/42"
    );
    assert_eq!(label("job.timeout"), "1h0m0s");
    assert_eq!(label("pipeline.id"), "99");
    assert_eq!(label("project.runner_id"), "1");
    assert_eq!(label("runner.local_id"), "3");
    assert_eq!(label("runner.id"), "abcdefghi");
    assert_eq!(label("runner.system_id"), "s_0123456789ab");
    assert_eq!(labels.len(), 13);
}

#[test]
fn log_options_and_service_devices_follow_upstream() {
    let allowed = HashMap::from([("env".to_string(), "A".to_string())]);
    assert!(check_log_options(&allowed).is_ok());
    let refused = HashMap::from([
        ("max-size".to_string(), "1m".to_string()),
        ("env".to_string(), "A".to_string()),
        ("labels".to_string(), "x".to_string()),
        ("mode".to_string(), "x".to_string()),
    ]);
    let error = check_log_options(&refused).unwrap_err();
    assert_eq!(
        error.kind(),
        ExecutorErrorKind::Job(FailureReason::RunnerConfigurationError)
    );
    assert!(
        error
            .message()
            .ends_with("only [\"env\" \"labels\"] are allowed, but found: [\"max-size\" \"mode\"]"),
        "{}",
        error.message()
    );
    let executor = executor(DockerConfig {
        services_devices: vec![("postgres:*".into(), vec!["/dev/fuse".into()])],
        log_options: allowed,
        ..DockerConfig::default()
    });
    let job = job();
    let service = executor.service_host_config(&job, "postgres:16");
    let device = &service.devices.as_ref().unwrap()[0];
    assert_eq!(device.path_in_container.as_deref(), Some("/dev/fuse"));
    assert_eq!(device.cgroup_permissions.as_deref(), Some("rwm"));
    assert_eq!(executor.service_host_config(&job, "redis:7").devices, None);
    let log = executor.host_config(&job, true).log_config.unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    assert_eq!(log.config.unwrap()["env"], "A");
}

#[test]
fn users_are_allowed_as_upstream_allows_them() {
    let open = DockerConfig::default();
    assert!(user_allowed(&open, "anyone"));
    let fixed = DockerConfig {
        user: "ci".into(),
        ..DockerConfig::default()
    };
    assert!(user_allowed(&fixed, "ci"));
    assert!(user_allowed(&fixed, ""));
    assert!(!user_allowed(&fixed, "root"));
    let listed = DockerConfig {
        allowed_users: vec!["a".into(), "b".into()],
        ..DockerConfig::default()
    };
    assert!(user_allowed(&listed, "b"));
    assert!(!user_allowed(&listed, "c"));
}

#[test]
fn effective_pull_policies_are_upstreams() {
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let default = executor(DockerConfig::default());
    assert_eq!(
        default.effective_policies("a", &[]).unwrap(),
        vec![PullPolicy::Always]
    );
    // Without allowed_pull_policies, the configured policies are the allowed ones.
    let error = default
        .effective_policies("a", &names(&["never"]))
        .unwrap_err();
    assert_eq!(
        error.kind(),
        ExecutorErrorKind::Job(FailureReason::RunnerConfigurationError)
    );
    assert_eq!(
            error.message(),
            "invalid pull policy for image \"a\": pull_policy ([never]) defined in GitLab pipeline config is not one of the allowed_pull_policies ([always])"
        );
    let allowing = executor(DockerConfig {
        pull_policy: vec![PullPolicy::IfNotPresent],
        allowed_pull_policies: vec![PullPolicy::IfNotPresent, PullPolicy::Never],
        ..DockerConfig::default()
    });
    // The job's list is filtered, not refused, when some of it is allowed.
    assert_eq!(
        allowing
            .effective_policies("a", &names(&["always", "never"]))
            .unwrap(),
        vec![PullPolicy::Never]
    );
    let strict = executor(DockerConfig {
        allowed_pull_policies: vec![PullPolicy::Never],
        ..DockerConfig::default()
    });
    let error = strict.effective_policies("a", &[]).unwrap_err();
    assert!(
        error
            .message()
            .contains("defined in Runner config (default)"),
        "{}",
        error.message()
    );
}

#[test]
fn pull_policies_parse_upstreams_names() {
    for name in ["always", "if-not-present", "never"] {
        assert_eq!(PullPolicy::parse(name).unwrap().as_str(), name);
    }
    assert_eq!(PullPolicy::parse("sometimes"), None);
}

#[test]
fn image_pull_failures_are_classified_by_their_words() {
    let reason = pull::classify_image_pull_failure(
            "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host",
        );
    assert_eq!(reason, FailureReason::RunnerExternalDependencyFailure);
    assert_eq!(
        pull::classify_image_pull_failure("unauthorized: authentication required"),
        FailureReason::RunnerConfigurationError
    );
    assert_eq!(
        pull::classify_image_pull_failure("manifest for app:2 not found: manifest unknown"),
        FailureReason::RunnerConfigurationError
    );
    assert_eq!(
        pull::classify_image_pull_failure("failed to register layer: no space left on device"),
        FailureReason::ImagePullFailure
    );
}

#[test]
fn the_helper_drops_umask_0000_only_when_the_flag_says_so() {
    let detect = detect_shell_script(false);
    assert_eq!(
        container_shell("predefined", false),
        format!("umask 0000\n{detect}")
    );
    assert_eq!(container_shell("predefined", true), detect);
    // The build container never had the umask.
    assert_eq!(container_shell("build", false), detect);
    assert_eq!(container_shell("build", true), detect);
    assert!(detect.starts_with("if [ -x /usr/local/bin/bash ]; then\n"));
}

#[test]
fn helper_image_and_volume_keep_lines_are_upstreams() {
    assert_eq!(
        helper_image_overridden_notice(
            "registry.local/helper:1",
            "gitlab-runner-rs/helper:0.1.0"
        ),
        "Using helper image:  registry.local/helper:1  (overridden, default would be  gitlab-runner-rs/helper:0.1.0 )"
    );
    assert_eq!(
        helper_image_notice("gitlab-runner-rs/helper:0.1.0"),
        "Using helper image:  gitlab-runner-rs/helper:0.1.0"
    );
    assert_eq!(
        VOLUME_KEEP_WARNING,
        "volume_keep is enabled: Docker volumes will not be removed after job completion and may accumulate on disk"
    );
}

#[test]
fn a_subnet_without_a_gateway_uses_its_first_address() {
    assert_eq!(
        super::first_address("172.17.0.0/16"),
        Some(std::net::Ipv4Addr::new(172, 17, 0, 1))
    );
    assert_eq!(
        super::first_address("10.8.4.128/25"),
        Some(std::net::Ipv4Addr::new(10, 8, 4, 129))
    );
    assert_eq!(super::first_address("fd00::/64"), None);
    assert_eq!(super::first_address("10.0.0.0/32"), None);
}
