//! The `gitlab-runner-rs` binary: the runner (`run`, `run-single`), runner administration
//! (`register`, `verify`, `unregister`, `list`) and local mode (`exec`).

use gitlab_runner_rs::{config, driver_check, exec, helper_commands, run, system_id};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use network::{GitlabClient, RegisterParameters, TlsOptions, VerifyResult};
use runner_core::secret::Secret;

use gitlab_runner_rs::config::{Config, RawConfig, RawRunner};

#[derive(Parser)]
#[command(
    name = "gitlab-runner-rs",
    version,
    about = "GitLab Runner's executor core, in Rust"
)]
struct Cli {
    /// Log level of the runner's own log (trace, debug, info, warn, error).
    #[arg(long, global = true, env = "LOG_LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// The config file (default: /etc/gitlab-runner/config.toml as root, else
    /// ~/.gitlab-runner/config.toml).
    #[arg(short = 'c', long = "config", env = "CONFIG_FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        if let Some(path) = &self.config {
            return path.clone();
        }
        if runner_core::process::running_as_root() {
            return PathBuf::from("/etc/gitlab-runner/config.toml");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".gitlab-runner").join("config.toml")
    }
}

#[derive(Subcommand)]
enum Commands {
    /// Tools for custom executor driver authors.
    #[command(subcommand)]
    CustomDriver(CustomDriverCommand),
    /// Run the multi-runner service: poll GitLab for jobs of every configured runner.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Change to this directory before starting.
        #[arg(short = 'd', long)]
        working_directory: Option<PathBuf>,
    },
    /// Run jobs of a single runner, given on the command line or picked from the config.
    RunSingle(RunSingleArgs),
    /// Register a runner and add it to the config file.
    Register(RegisterArgs),
    /// Check the runners' tokens with GitLab.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
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
}

#[derive(Subcommand)]
enum ExecExecutor {
    /// With the shell executor.
    Shell(ExecArgs),
    /// With the Docker executor: the job's `image:` and `services:`.
    Docker(ExecDockerArgs),
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
    /// Pick this runner (by name) from the config file.
    #[arg(long)]
    runner: Option<String>,
    #[arg(short = 'u', long, env = "CI_SERVER_URL")]
    url: Option<String>,
    #[arg(short = 't', long, env = "CI_SERVER_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value = "shell")]
    executor: String,
    #[arg(long)]
    builds_dir: Option<String>,
    #[arg(long)]
    shell: Option<String>,
    /// Stop after this many jobs.
    #[arg(long)]
    max_builds: Option<usize>,
}

#[derive(Args)]
struct RegisterArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Accepted for compatibility; registration is always non-interactive.
    #[arg(short = 'n', long)]
    non_interactive: bool,
    #[arg(short = 'u', long, env = "CI_SERVER_URL")]
    url: String,
    /// A legacy registration token.
    #[arg(short = 'r', long, env = "REGISTRATION_TOKEN")]
    registration_token: Option<String>,
    /// A runner authentication token (glrt-) created in GitLab.
    #[arg(short = 't', long, env = "CI_SERVER_TOKEN")]
    token: Option<String>,
    #[arg(long, env = "RUNNER_NAME", alias = "description")]
    name: Option<String>,
    #[arg(long, default_value = "shell", env = "RUNNER_EXECUTOR")]
    executor: String,
    #[arg(long, env = "RUNNER_SHELL")]
    shell: Option<String>,
    #[arg(long, env = "RUNNER_BUILDS_DIR")]
    builds_dir: Option<String>,
    #[arg(long, env = "RUNNER_CACHE_DIR")]
    cache_dir: Option<String>,
    #[arg(long, env = "RUNNER_TAG_LIST", default_value = "")]
    tag_list: String,
    #[arg(long, env = "REGISTER_RUN_UNTAGGED")]
    run_untagged: bool,
    #[arg(long, env = "REGISTER_LOCKED", default_value_t = true, action = clap::ArgAction::Set)]
    locked: bool,
    #[arg(long, env = "REGISTER_ACCESS_LEVEL", default_value = "")]
    access_level: String,
    #[arg(long, env = "REGISTER_MAXIMUM_TIMEOUT", default_value_t = 0)]
    maximum_timeout: i64,
    #[arg(long, env = "REGISTER_PAUSED")]
    paused: bool,
    #[arg(long, env = "REGISTER_MAINTENANCE_NOTE", default_value = "")]
    maintenance_note: String,
    #[arg(long)]
    limit: Option<i64>,
    #[arg(long)]
    tls_ca_file: Option<String>,
    #[command(flatten)]
    ssh: SshRegisterArgs,
}

/// Upstream's `--ssh-*` registration flags; they fill `[runners.ssh]`.
#[derive(Args)]
struct SshRegisterArgs {
    #[arg(long = "ssh-user", env = "SSH_USER")]
    user: Option<String>,
    #[arg(long = "ssh-password", env = "SSH_PASSWORD")]
    password: Option<String>,
    #[arg(long = "ssh-host", env = "SSH_HOST")]
    host: Option<String>,
    #[arg(long = "ssh-port", env = "SSH_PORT")]
    port: Option<String>,
    #[arg(long = "ssh-identity-file", env = "SSH_IDENTITY_FILE")]
    identity_file: Option<String>,
    #[arg(
        long = "ssh-disable-strict-host-key-checking",
        env = "DISABLE_STRICT_HOST_KEY_CHECKING"
    )]
    disable_strict_host_key_checking: Option<bool>,
    #[arg(long = "ssh-known-hosts-file", env = "KNOWN_HOSTS_FILE")]
    known_hosts_file: Option<String>,
}

impl SshRegisterArgs {
    /// The `[runners.ssh]` table, when the executor is `ssh`.
    fn section(&self, executor: &str) -> Option<toml::Value> {
        if executor != "ssh" {
            return None;
        }
        let mut table = toml::map::Map::new();
        let mut put = |key: &str, value: &Option<String>| {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                table.insert(key.into(), toml::Value::String(value.clone()));
            }
        };
        put("user", &self.user);
        put("password", &self.password);
        put("host", &self.host);
        put("port", &self.port);
        put("identity_file", &self.identity_file);
        put("known_hosts_file", &self.known_hosts_file);
        if let Some(disable) = self.disable_strict_host_key_checking {
            table.insert(
                "disable_strict_host_key_checking".into(),
                toml::Value::Boolean(disable),
            );
        }
        Some(toml::Value::Table(table))
    }
}

fn init_logging(level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.unwrap_or("info")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn client_for(url: &str, tls_ca_file: Option<PathBuf>) -> anyhow::Result<GitlabClient> {
    let tls = network::tls::with_certificate_directory(
        url,
        TlsOptions {
            ca_file: tls_ca_file,
            ..TlsOptions::default()
        },
        network::tls::default_certificate_directory().as_deref(),
    );
    Ok(GitlabClient::new(url, &tls, &run::user_agent())?)
}

fn register_info(executor: &str, shell: &str) -> network::VersionInfo {
    let version = runner_core::build::RunnerVersion::default();
    let (platform, architecture) = version
        .platform
        .split_once('/')
        .unwrap_or(("linux", "amd64"));
    network::VersionInfo {
        name: version.name.clone(),
        version: version.version.clone(),
        revision: version.revision.clone(),
        platform: platform.into(),
        architecture: architecture.into(),
        executor: executor.into(),
        shell: shell.into(),
        features: Default::default(),
    }
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let path = args.config.path();
    let config = Config::load(&path)?;
    let system_id = system_id::load_or_create(&path)?;
    let client = client_for(&args.url, args.tls_ca_file.clone().map(PathBuf::from))?;
    let shell = args.shell.clone().unwrap_or_else(|| "bash".into());
    let info = register_info(&args.executor, &shell);
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "gitlab-runner-rs".into())
    });
    let (id, token) = match (&args.token, &args.registration_token) {
        (Some(token), _) => {
            let token = Secret::new(token.clone());
            match client.verify(&token, &system_id, &info).await {
                VerifyResult::Valid => {}
                VerifyResult::Invalid => {
                    bail!("verifying runner... is removed: GitLab does not accept the token")
                }
                VerifyResult::Unknown(message) => bail!("verifying runner failed: {message}"),
            }
            (0, token)
        }
        (None, Some(registration_token)) => {
            let registered = client
                .register(
                    &Secret::new(registration_token.clone()),
                    &RegisterParameters {
                        description: name.clone(),
                        maintenance_note: args.maintenance_note.clone(),
                        tags: args
                            .tag_list
                            .split(',')
                            .map(str::trim)
                            .filter(|tag| !tag.is_empty())
                            .map(str::to_string)
                            .collect(),
                        run_untagged: args.run_untagged,
                        locked: args.locked,
                        access_level: args.access_level.clone(),
                        maximum_timeout: args.maximum_timeout,
                        paused: args.paused,
                    },
                    &info,
                )
                .await
                .context("registering the runner")?;
            (registered.id, registered.token)
        }
        (None, None) => bail!(
            "either --token (a runner authentication token) or --registration-token is required"
        ),
    };
    let mut raw: RawConfig = config.raw.clone();
    if raw.concurrent.is_none() {
        raw.concurrent = Some(1);
    }
    if raw.check_interval.is_none() {
        raw.check_interval = Some(0);
    }
    raw.runners.push(RawRunner {
        name: name.clone(),
        url: args.url.clone(),
        id,
        token: token.expose().clone(),
        executor: args.executor.clone(),
        shell: args.shell.clone(),
        builds_dir: args.builds_dir.clone(),
        cache_dir: args.cache_dir.clone(),
        limit: args.limit,
        tls_ca_file: args.tls_ca_file.clone(),
        ssh: args.ssh.section(&args.executor),
        ..RawRunner::default()
    });
    // Validate before writing, so a bad value never lands in the file.
    let text = toml::to_string_pretty(&raw)?;
    Config::parse(&path, &text)?;
    Config::save_raw(&path, &raw)?;
    println!(
        "Runner registered successfully. Runner {name:?} ({}) was added to {}",
        runner_core::dirs::short_token(token.expose()),
        path.display()
    );
    Ok(())
}

async fn verify(config: ConfigArg, delete: bool) -> anyhow::Result<i32> {
    let path = config.path();
    let config = Config::load(&path)?;
    let system_id = system_id::load_or_create(&path)?;
    let mut keep = Vec::new();
    let mut failures = 0;
    for (runner, raw) in config.runners.iter().zip(config.raw.runners.iter()) {
        let client = client_for(&runner.url, runner.tls_ca_file.clone())?;
        let info = register_info(&raw.executor, raw.shell.as_deref().unwrap_or("bash"));
        let short = runner.short_token();
        match client.verify(&runner.token, &system_id, &info).await {
            VerifyResult::Valid => {
                let word = if runner.token.expose().starts_with("glrt-") {
                    "is valid"
                } else {
                    "is alive"
                };
                println!("Verifying runner... {word}  runner={short}");
                keep.push(raw.clone());
            }
            VerifyResult::Invalid => {
                println!("Verifying runner... is removed  runner={short}");
                failures += 1;
                if !delete {
                    keep.push(raw.clone());
                }
            }
            VerifyResult::Unknown(message) => {
                println!("Verifying runner... failed: {message}  runner={short}");
                failures += 1;
                keep.push(raw.clone());
            }
        }
    }
    if delete && keep.len() != config.raw.runners.len() {
        let mut raw = config.raw.clone();
        raw.runners = keep;
        Config::save_raw(&path, &raw)?;
        println!("Updated {}", path.display());
    }
    Ok(if failures > 0 { 1 } else { 0 })
}

async fn unregister(
    config: ConfigArg,
    name: Option<String>,
    url: Option<String>,
    token: Option<String>,
    all: bool,
) -> anyhow::Result<()> {
    let path = config.path();
    let config = Config::load(&path)?;
    let system_id = system_id::load_or_create(&path)?;
    if !all && name.is_none() && token.is_none() {
        bail!("say which runner: --name, --url with --token, or --all-runners");
    }
    let mut keep = Vec::new();
    let mut removed = 0;
    for (runner, raw) in config.runners.iter().zip(config.raw.runners.iter()) {
        let selected = all
            || name.as_deref() == Some(runner.name.as_str())
            || (token.as_deref() == Some(runner.token.expose().as_str())
                && url.as_deref().is_none_or(|u| u == runner.url));
        if !selected {
            keep.push(raw.clone());
            continue;
        }
        let client = client_for(&runner.url, runner.tls_ca_file.clone())?;
        let ok = if runner.token.expose().starts_with("glrt-") {
            client.unregister_manager(&runner.token, &system_id).await?
        } else {
            client.unregister(&runner.token).await?
        };
        if ok {
            println!(
                "Unregistering runner from GitLab succeeded  runner={}",
                runner.short_token()
            );
            removed += 1;
        } else {
            println!(
                "Unregistering runner from GitLab failed  runner={}",
                runner.short_token()
            );
            keep.push(raw.clone());
        }
    }
    if removed == 0 && keep.len() == config.raw.runners.len() && !all {
        bail!("no runner matches");
    }
    let mut raw = config.raw.clone();
    raw.runners = keep;
    Config::save_raw(&path, &raw)?;
    Ok(())
}

fn list(config: ConfigArg) -> anyhow::Result<()> {
    let path = config.path();
    let config = Config::load(&path)?;
    eprintln!("Listing configured runners  ConfigFile={}", path.display());
    for runner in &config.runners {
        println!(
            "{:<20} Executor={} Token={} URL={}",
            runner.name,
            runner.executor.as_str(),
            runner.short_token(),
            runner.url
        );
    }
    Ok(())
}

fn run_single_config(args: &RunSingleArgs) -> anyhow::Result<Config> {
    if let (Some(url), Some(token)) = (&args.url, &args.token) {
        let mut raw = RawRunner {
            name: args.runner.clone().unwrap_or_else(|| "single".into()),
            url: url.clone(),
            token: token.clone(),
            executor: args.executor.clone(),
            builds_dir: args.builds_dir.clone(),
            shell: args.shell.clone(),
            ..RawRunner::default()
        };
        raw.limit = Some(1);
        let file = RawConfig {
            concurrent: Some(1),
            runners: vec![raw],
            ..RawConfig::default()
        };
        let text = toml::to_string_pretty(&file)?;
        return Ok(Config::parse(&args.config.path(), &text)?);
    }
    let mut config = Config::load(&args.config.path())?;
    let runner = match &args.runner {
        Some(name) => config
            .runners
            .iter()
            .find(|runner| &runner.name == name)
            .cloned()
            .with_context(|| format!("no runner named {name:?} in {}", config.path.display()))?,
        None => config.runners.first().cloned().with_context(|| {
            format!(
                "no runners in {}; pass --url and --token",
                config.path.display()
            )
        })?,
    };
    config.runners = vec![runner];
    config.concurrent = 1;
    Ok(config)
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
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
            Commands::HealthCheck(args) => Ok(helper_commands::health_check(args).await),
            Commands::ArtifactsDownloader(args) => {
                Ok(helper_commands::artifacts_downloader(args).await)
            }
            Commands::Run {
                config,
                working_directory,
            } => {
                if let Some(dir) = working_directory {
                    std::env::set_current_dir(&dir)
                        .with_context(|| format!("changing to {}", dir.display()))?;
                }
                let config = Config::load(&config.path())?;
                run::run_loop(run::LoopOptions {
                    config,
                    max_builds: None,
                    reload: true,
                })
                .await?;
                Ok(0)
            }
            Commands::RunSingle(args) => {
                let config = run_single_config(&args)?;
                run::run_loop(run::LoopOptions {
                    config,
                    max_builds: args.max_builds,
                    reload: false,
                })
                .await?;
                Ok(0)
            }
            Commands::Register(args) => register(args).await.map(|()| 0),
            Commands::Verify { config, delete } => verify(config, delete).await,
            Commands::Unregister {
                config,
                name,
                url,
                token,
                all_runners,
            } => unregister(config, name, url, token, all_runners)
                .await
                .map(|()| 0),
            Commands::List { config } => list(config).map(|()| 0),
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
                let common = args.common;
                exec::exec_docker(
                    exec::ExecOptions {
                        job: common.job,
                        file: common.file,
                        builds_dir: common.builds_dir,
                        cache_dir: common.cache_dir,
                        env: common.env,
                        timeout: common.timeout,
                        shell: common.shell,
                    },
                    config,
                )
                .await
            }
            Commands::Exec {
                executor: ExecExecutor::Shell(args),
            } => {
                exec::exec_shell(exec::ExecOptions {
                    job: args.job,
                    file: args.file,
                    builds_dir: args.builds_dir,
                    cache_dir: args.cache_dir,
                    env: args.env,
                    timeout: args.timeout,
                    shell: args.shell,
                })
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
