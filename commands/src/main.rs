//! The `gitlab-runner-rs` binary: the runner (`run`, `run-single`), runner administration
//! (`register`, `verify`, `unregister`, `list`), the systemd service (`install`, `start`, ...)
//! and local mode (`exec`).

use gitlab_runner_rs::admin::{self, ConfigArg};
use gitlab_runner_rs::register::{self, RegisterArgs};
use gitlab_runner_rs::{
    config, driver_check, exec, helper_commands, logging, run, service, steps_command,
};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use gitlab_runner_rs::config::Config;

#[derive(Parser)]
#[command(
    name = "gitlab-runner-rs",
    version,
    about = "GitLab Runner's executor core, in Rust"
)]
struct Cli {
    /// Debug mode: the runner's own log at debug level.
    #[arg(long, global = true, env = "RUNNER_DEBUG")]
    debug: bool,
    /// Log level of the runner's own log (debug, info, warn, error, fatal, panic); default:
    /// config.toml's log_level, else info.
    #[arg(short = 'l', long, global = true, env = "LOG_LEVEL")]
    log_level: Option<String>,
    /// Log format (runner, text, json); default: config.toml's log_format, else runner.
    #[arg(long, global = true, env = "LOG_FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

/// `run`'s flags: upstream's, so a systemd unit written for `gitlab-runner` starts this binary.
#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Change to this directory before starting.
    #[arg(short = 'd', long)]
    working_directory: Option<PathBuf>,
    /// The service name (names the syslog tag).
    #[arg(short = 'n', long = "service", default_value = service::DEFAULT_SERVICE_NAME)]
    service: String,
    /// The user shell-executor jobs run as; replaces config.toml's `user` on every load, as
    /// upstream.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Also log to the system logger (/dev/log).
    #[arg(long, env = "LOG_SYSLOG")]
    syslog: bool,
    /// The metrics server's address (not built yet: warned about and ignored).
    #[arg(long, env = "LISTEN_ADDRESS")]
    listen_address: Option<String>,
}

/// `--service` / `-n`, shared by the service commands.
#[derive(Args)]
struct ServiceArg {
    /// The service name: the unit is `<name>.service`.
    #[arg(short = 'n', long = "service", default_value = service::DEFAULT_SERVICE_NAME)]
    service: String,
    /// Where systemd units are written (a gitlab-runner-rs addition, for image builds).
    #[arg(long, default_value = "/etc/systemd/system")]
    systemd_unit_dir: PathBuf,
}

/// `install`'s flags, upstream's plus `--graceful-stop`.
#[derive(Args)]
struct InstallArgs {
    #[command(flatten)]
    service: ServiceArg,
    /// The directory `run` changes to.
    #[arg(short = 'd', long)]
    working_directory: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
    /// Pass `--syslog` to `run`.
    #[arg(long)]
    syslog: bool,
    /// The user jobs run as (`run --user`); required as root unless --init-user is given.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// The user the whole service runs as (the unit's `User=`).
    #[arg(short = 'i', long)]
    init_user: Option<String>,
    /// Also write a drop-in with `KillSignal=SIGQUIT` and this `TimeoutStopSec`, so stopping
    /// the service lets running jobs finish (a gitlab-runner-rs addition).
    #[arg(long, value_name = "SECONDS")]
    graceful_stop: Option<u64>,
}

#[derive(Subcommand)]
enum Commands {
    /// Tools for custom executor driver authors.
    #[command(subcommand)]
    CustomDriver(CustomDriverCommand),
    /// Run the multi-runner service: poll GitLab for jobs of every configured runner.
    Run(RunArgs),
    /// Install the runner as a systemd service.
    Install(InstallArgs),
    /// Remove the systemd service.
    Uninstall(ServiceArg),
    /// Start the systemd service.
    Start(ServiceArg),
    /// Stop the systemd service.
    Stop(ServiceArg),
    /// Restart the systemd service.
    Restart(ServiceArg),
    /// Get the status of the systemd service.
    Status(ServiceArg),
    /// Run jobs of a single runner, given on the command line or picked from the config.
    RunSingle(RunSingleArgs),
    /// Register a runner and add it to the config file.
    Register(RegisterArgs),
    /// Check the runners' tokens with GitLab.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Only the runner of this name.
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Only the runner with this URL (and --token).
        #[arg(short = 'u', long)]
        url: Option<String>,
        /// Only the runner with this token (and --url).
        #[arg(short = 't', long)]
        token: Option<String>,
        /// Remove runners whose token GitLab no longer accepts.
        #[arg(long)]
        delete: bool,
    },
    /// Unregister runners from GitLab and remove them from the config file.
    Unregister {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'u', long)]
        url: Option<String>,
        #[arg(short = 't', long)]
        token: Option<String>,
        #[arg(long)]
        all_runners: bool,
    },
    /// Reset a runner's authentication token with GitLab and save the new one.
    ResetToken {
        #[command(flatten)]
        config: ConfigArg,
        /// The runner, by name.
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// The runner, by URL (with --id).
        #[arg(short = 'u', long)]
        url: Option<String>,
        /// The runner, by ID (with --url).
        #[arg(short = 'i', long)]
        id: Option<i64>,
        /// Reset every runner's token.
        #[arg(long)]
        all_runners: bool,
        /// A personal access token to use instead of the runner's current token.
        #[arg(long)]
        pat: Option<String>,
    },
    /// Validate a config file: syntax, values and unknown keys.
    Lint {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the configured runners.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run a job of the local .gitlab-ci.yml without GitLab.
    Exec {
        #[command(subcommand)]
        executor: ExecExecutor,
    },
    /// Create and upload build artifacts (internal; called by job scripts).
    ArtifactsUploader(helper_commands::UploaderArgs),
    /// Download and extract build artifacts (internal; called by job scripts).
    ArtifactsDownloader(helper_commands::DownloaderArgs),
    /// Download and extract cache artifacts (internal).
    CacheExtractor(helper_commands::CacheExtractorArgs),
    /// Create and upload cache artifacts (internal).
    CacheArchiver(helper_commands::CacheArchiverArgs),
    /// Make the Docker executor's new volumes writable for any user (internal).
    CacheInit(helper_commands::CacheInitArgs),
    /// Wait until a service answers on its TCP ports (internal; Docker executor services).
    HealthCheck(helper_commands::HealthCheckArgs),
    /// Follow a job's log file by offset (internal; the Kubernetes attach strategy).
    ReadLogs(helper_commands::ReadLogsArgs),
    /// The Step Runner: serve, proxy, bootstrap (internal; runs in the job's environment).
    #[command(subcommand)]
    Steps(steps_command::StepsCommand),
}

#[derive(Subcommand)]
enum ExecExecutor {
    /// With the shell executor.
    Shell(ExecArgs),
    /// With the Docker executor: the job's `image:` and `services:`.
    Docker(ExecDockerArgs),
    /// With the Kubernetes executor: the job in a pod, with its `image:` and `services:`.
    /// The project directory is mounted into the pod as a read-only host path, so the pod
    /// must run on this machine (a single-node cluster, the tests' API double).
    Kubernetes(ExecKubernetesArgs),
}

#[derive(Args)]
struct ExecKubernetesArgs {
    #[command(flatten)]
    common: ExecArgs,
    /// The API server (`[runners.kubernetes] host`); without it, in-cluster, then the
    /// kubeconfig.
    #[arg(long, env = "KUBERNETES_HOST")]
    kubernetes_host: Option<String>,
    /// The API server's CA certificate file.
    #[arg(long, env = "KUBERNETES_CA_FILE")]
    kubernetes_ca_file: Option<String>,
    /// A client certificate file (with --kubernetes-key-file).
    #[arg(long, env = "KUBERNETES_CERT_FILE")]
    kubernetes_cert_file: Option<String>,
    /// The client certificate's key file.
    #[arg(long, env = "KUBERNETES_KEY_FILE")]
    kubernetes_key_file: Option<String>,
    /// A bearer token for the API (better through the environment than the command line).
    #[arg(long, env = "KUBERNETES_BEARER_TOKEN", hide_env_values = true)]
    kubernetes_bearer_token: Option<String>,
    /// The kubeconfig context when no host is given.
    #[arg(long, env = "KUBECTL_CONTEXT")]
    kubernetes_context: Option<String>,
    /// The namespace of the job's pod.
    #[arg(long, env = "KUBERNETES_NAMESPACE")]
    kubernetes_namespace: Option<String>,
    /// The image when the job names none.
    #[arg(long)]
    kubernetes_image: Option<String>,
    /// The helper image (git and the helper); default: gitlab-runner-rs/helper:<version>.
    #[arg(long)]
    kubernetes_helper_image: Option<String>,
    /// Pull policies, tried in order (repeatable): always, if-not-present, never.
    #[arg(long = "kubernetes-pull-policy")]
    kubernetes_pull_policy: Vec<String>,
    /// Seconds to wait for the pod to run (`poll_timeout`, 180).
    #[arg(long)]
    kubernetes_poll_timeout: Option<i64>,
    /// The address of this machine that the pod reaches it by, where the job's artifacts
    /// are received.
    #[arg(long, default_value = "127.0.0.1")]
    receiver_address: std::net::IpAddr,
}

#[derive(Args)]
struct ExecDockerArgs {
    #[command(flatten)]
    common: ExecArgs,
    /// The image when the job names none.
    #[arg(long)]
    docker_image: Option<String>,
    /// The helper image (git and the helper); default: gitlab-runner-rs/helper:<version>.
    #[arg(long)]
    docker_helper_image: Option<String>,
    /// Pull policies, tried in order (repeatable): always, if-not-present, never.
    #[arg(long = "docker-pull-policy")]
    docker_pull_policy: Vec<String>,
    /// Extra volumes, `host:container[:mode]` or a cache path (repeatable).
    #[arg(long = "docker-volumes")]
    docker_volumes: Vec<String>,
    #[arg(long)]
    docker_network_mode: Option<String>,
    #[arg(long)]
    docker_privileged: bool,
}

impl From<ExecArgs> for exec::ExecOptions {
    fn from(args: ExecArgs) -> Self {
        Self {
            job: args.job,
            file: args.file,
            builds_dir: args.builds_dir,
            cache_dir: args.cache_dir,
            env: args.env,
            timeout: args.timeout,
            shell: args.shell,
            artifacts_dir: args.artifacts_dir,
        }
    }
}

#[derive(Args)]
struct ExecArgs {
    /// The job to run.
    job: String,
    /// The pipeline file.
    #[arg(long, default_value = ".gitlab-ci.yml")]
    file: PathBuf,
    #[arg(long)]
    builds_dir: Option<String>,
    #[arg(long)]
    cache_dir: Option<String>,
    /// Extra variables, KEY=VALUE (repeatable).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Job timeout in seconds (default: the job's, else 3600).
    #[arg(long)]
    timeout: Option<i64>,
    #[arg(long, default_value = "bash")]
    shell: String,
    /// Where the job's `artifacts:` archives are kept (default: exec-artifacts/<job>).
    #[arg(long)]
    artifacts_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CustomDriverCommand {
    /// Run the driver of a `[runners.custom]` section through the whole job lifecycle with
    /// synthetic jobs (no GitLab needed); report each call and diagnose contract breaks.
    /// Exits 1 when the driver breaks the contract.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// The runner (by name) whose driver to check; default: the first custom runner.
        #[arg(long)]
        runner: Option<String>,
        /// The job timeout of the synthetic jobs, in seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        /// Print every scenario's job log, not only the failing ones'.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Args)]
struct RunSingleArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Take this runner (by name) from the config file instead of the command-line flags.
    #[arg(short = 'r', long)]
    runner: Option<String>,
    /// How many builds to process before exiting (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_builds: usize,
    /// How long to wait in seconds before receiving the first job (0: forever); counted
    /// again from the end of each job.
    #[arg(long, default_value_t = 0)]
    wait_timeout: u64,
    /// Seconds after which the forceful shutdown gives up waiting for the aborted job.
    #[arg(long, default_value_t = 0)]
    shutdown_timeout: i64,
    /// Every `[[runners]]` key is a flag, as for `register` (--url, --token, --executor,
    /// --builds-dir, --docker-image, ...).
    #[command(flatten)]
    flags: register::ConfigFlags,
}

/// The one runner `run-single` works for: the config file's `--runner`, else the runner the
/// flags describe (upstream's `Missing URL` / `Missing Token` / `Missing Executor` when they
/// do not, `Unknown executor:` for one this binary lacks).
fn run_single_config(args: &RunSingleArgs) -> anyhow::Result<Config> {
    let mut config = match &args.runner {
        Some(name) => {
            let mut config = Config::load(&args.config.path())
                .map_err(|error| anyhow::anyhow!("Error loading config: {error}"))?;
            let runner = match config.runners.iter().find(|runner| &runner.name == name) {
                Some(runner) => runner.clone(),
                None => match config
                    .unavailable
                    .iter()
                    .find(|runner| &runner.name == name)
                {
                    Some(runner) => bail!("runner {name:?}: {}", runner.reason),
                    None => bail!(
                        "Error loading runner by name: could not find a runner with the name '{name}'"
                    ),
                },
            };
            config.runners = vec![runner];
            config.unavailable.clear();
            config
        }
        None => {
            let mut runner = args.flags.table()?;
            for (key, missing) in [
                ("url", "Missing URL"),
                ("token", "Missing Token"),
                ("executor", "Missing Executor"),
            ] {
                let given = runner
                    .get(key)
                    .and_then(toml::Value::as_str)
                    .is_some_and(|value| !value.is_empty());
                if !given {
                    bail!("{missing}");
                }
            }
            runner
                .entry("name")
                .or_insert_with(|| toml::Value::String("single".into()));
            runner.entry("limit").or_insert(toml::Value::Integer(1));
            let mut document = toml::map::Map::new();
            document.insert("concurrent".into(), toml::Value::Integer(1));
            document.insert(
                "runners".into(),
                toml::Value::Array(vec![toml::Value::Table(runner)]),
            );
            let text = toml::to_string(&toml::Value::Table(document))?;
            let config = Config::parse(&args.config.path(), &text)?;
            if let Some(unavailable) = config.unavailable.first() {
                if config::ExecutorKind::parse(&unavailable.executor).is_none() {
                    bail!("Unknown executor: {}", unavailable.executor);
                }
                bail!("runner {:?}: {}", unavailable.name, unavailable.reason);
            }
            config
        }
    };
    config.concurrent = 1;
    if args.shutdown_timeout > 0 {
        config.shutdown_timeout = std::time::Duration::from_secs(args.shutdown_timeout as u64);
    }
    Ok(config)
}

fn main() {
    if let Some(revision) = option_env!("GITLAB_RUNNER_RS_REVISION") {
        runner_core::build::RunnerVersion::set_revision(revision);
    }
    let cli = Cli::parse();
    let logging_flags = logging::CliLogging {
        level: cli.log_level.clone(),
        debug: cli.debug,
        format: cli.log_format.clone(),
    };
    if let Err(error) = logging::init(&logging_flags) {
        eprintln!("FATAL: Error while setting up logging configuration  error={error}");
        std::process::exit(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ERROR: starting the async runtime: {error}");
            std::process::exit(1);
        }
    };
    let result: anyhow::Result<i32> = runtime.block_on(async move {
        match cli.command {
            Commands::ArtifactsUploader(args) => {
                Ok(helper_commands::artifacts_uploader(args).await)
            }
            Commands::CustomDriver(CustomDriverCommand::Check {
                config,
                runner,
                timeout,
                verbose,
            }) => {
                let path = config.path();
                let config = Config::load(&path)?;
                let chosen = config.runners.iter().find(|candidate| match &runner {
                    Some(name) => &candidate.name == name,
                    None => candidate.executor == config::ExecutorKind::Custom,
                });
                match chosen {
                    Some(chosen) => Ok(driver_check::check(
                        chosen,
                        std::time::Duration::from_secs(timeout.max(1)),
                        verbose,
                    )
                    .await),
                    None => {
                        eprintln!(
                            "no custom executor runner{} in {}",
                            runner
                                .map(|name| format!(" named {name:?}"))
                                .unwrap_or_default(),
                            path.display()
                        );
                        Ok(2)
                    }
                }
            }
            Commands::CacheExtractor(args) => Ok(helper_commands::cache_extractor(args).await),
            Commands::CacheArchiver(args) => Ok(helper_commands::cache_archiver(args).await),
            Commands::CacheInit(args) => Ok(helper_commands::cache_init(args)),
            Commands::Steps(command) => Ok(steps_command::run(command).await),
            Commands::HealthCheck(args) => Ok(helper_commands::health_check(args).await),
            Commands::ReadLogs(args) => {
                Ok(tokio::task::spawn_blocking(move || helper_commands::read_logs(args)).await?)
            }
            Commands::ArtifactsDownloader(args) => {
                Ok(helper_commands::artifacts_downloader(args).await)
            }
            Commands::Run(args) => {
                if let Some(dir) = &args.working_directory {
                    std::env::set_current_dir(dir)
                        .with_context(|| format!("changing to {}", dir.display()))?;
                }
                if args.syslog {
                    logging::enable_syslog(&args.service);
                }
                if let Some(address) = &args.listen_address {
                    tracing::warn!(
                        "--listen-address {address}: gitlab-runner-rs has no metrics server yet; ignored"
                    );
                }
                let config = Config::load(&args.config.path())?;
                run::run_loop(run::LoopOptions {
                    config,
                    max_builds: None,
                    wait_timeout: None,
                    reload: true,
                    user: run::UserSource::Flag(args.user),
                })
                .await?;
                Ok(0)
            }
            Commands::Install(args) => {
                let executable = std::env::current_exe()
                    .context("finding this binary's path for the unit's ExecStart")?;
                service::install(
                    &service::InstallOptions {
                        service: args.service.service,
                        config: args.config.path(),
                        working_directory: args.working_directory,
                        user: args.user,
                        init_user: args.init_user,
                        syslog: args.syslog,
                        executable,
                        unit_dir: args.service.systemd_unit_dir,
                        graceful_stop: args.graceful_stop,
                    },
                    runner_core::process::running_as_root(),
                )
                .map(|()| 0)
            }
            Commands::Uninstall(args) => {
                service::uninstall(&args.service, &args.systemd_unit_dir).map(|()| 0)
            }
            Commands::Start(args) => service::control("start", &args.service).map(|()| 0),
            Commands::Stop(args) => service::control("stop", &args.service).map(|()| 0),
            Commands::Restart(args) => service::control("restart", &args.service).map(|()| 0),
            Commands::Status(args) => Ok(service::status(&args.service)),
            Commands::RunSingle(args) => {
                let config = run_single_config(&args)?;
                run::run_loop(run::LoopOptions {
                    config,
                    max_builds: (args.max_builds > 0).then_some(args.max_builds),
                    wait_timeout: (args.wait_timeout > 0)
                        .then(|| std::time::Duration::from_secs(args.wait_timeout)),
                    reload: false,
                    user: run::UserSource::Config,
                })
                .await?;
                Ok(0)
            }
            Commands::Register(args) => register::register(args).await.map(|()| 0),
            Commands::Verify {
                config,
                name,
                url,
                token,
                delete,
            } => admin::verify(config, admin::VerifySelector { name, url, token }, delete).await,
            Commands::Lint { config } => admin::lint(config),
            Commands::Unregister {
                config,
                name,
                url,
                token,
                all_runners,
            } => admin::unregister(config, name, url, token, all_runners)
                .await
                .map(|()| 0),
            Commands::List { config } => admin::list(config).map(|()| 0),
            Commands::ResetToken {
                config,
                name,
                url,
                id,
                all_runners,
                pat,
            } => admin::reset_token(config, name, url, id, all_runners, pat)
                .await
                .map(|()| 0),
            Commands::Exec {
                executor: ExecExecutor::Docker(args),
            } => {
                let mut config = executor_docker::DockerConfig::default();
                if let Some(image) = args.docker_image {
                    config.image = image;
                }
                if let Some(helper) = args.docker_helper_image {
                    config.helper_image = helper;
                }
                for name in &args.docker_pull_policy {
                    config.pull_policy.push(
                        executor_docker::PullPolicy::parse(name).with_context(|| {
                            format!("--docker-pull-policy {name:?}: expected always, if-not-present or never")
                        })?,
                    );
                }
                config.volumes = args.docker_volumes;
                config.network_mode = args.docker_network_mode.unwrap_or_default();
                config.privileged = args.docker_privileged;
                exec::exec_docker(
                    args.common.into(),
                    config,
                )
                .await
            }
            Commands::Exec {
                executor: ExecExecutor::Kubernetes(args),
            } => {
                let text = |value: Option<String>| value.map(toml::Value::String);
                let keys = [
                    ("host", text(args.kubernetes_host)),
                    ("ca_file", text(args.kubernetes_ca_file)),
                    ("cert_file", text(args.kubernetes_cert_file)),
                    ("key_file", text(args.kubernetes_key_file)),
                    ("bearer_token", text(args.kubernetes_bearer_token)),
                    ("context", text(args.kubernetes_context)),
                    ("namespace", text(args.kubernetes_namespace)),
                    ("image", text(args.kubernetes_image)),
                    ("helper_image", text(args.kubernetes_helper_image)),
                    (
                        "poll_timeout",
                        args.kubernetes_poll_timeout.map(toml::Value::Integer),
                    ),
                    (
                        "pull_policy",
                        (!args.kubernetes_pull_policy.is_empty()).then(|| {
                            toml::Value::Array(
                                args.kubernetes_pull_policy
                                    .into_iter()
                                    .map(toml::Value::String)
                                    .collect(),
                            )
                        }),
                    ),
                ];
                let section: toml::Table = keys
                    .into_iter()
                    .filter_map(|(key, value)| Some((key.to_string(), value?)))
                    .collect();
                let config = exec::kubernetes_config(section)?;
                exec::exec_kubernetes(
                    args.common.into(),
                    config,
                    args.receiver_address,
                )
                .await
            }
            Commands::Exec {
                executor: ExecExecutor::Shell(args),
            } => {
                exec::exec_shell(args.into())
                .await
            }
        }
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("ERROR: {error:#}");
            std::process::exit(1);
        }
    }
}
