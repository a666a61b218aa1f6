//! Runner administration: `register`, `verify`, `unregister` and `list`, and the `--config`
//! argument every command that reads `config.toml` shares.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use network::{GitlabClient, RegisterParameters, TlsOptions, VerifyResult};
use runner_core::secret::Secret;

use crate::config::{Config, RawConfig, RawRunner};
use crate::{run, system_id};

/// `--config` / `-c` (`CONFIG_FILE`).
#[derive(Args, Clone)]
pub struct ConfigArg {
    /// The config file (default: /etc/gitlab-runner/config.toml as root, else
    /// ~/.gitlab-runner/config.toml).
    #[arg(short = 'c', long = "config", env = "CONFIG_FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file named by `--config`, else upstream's default for this user.
    pub fn path(&self) -> PathBuf {
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

/// `register`'s flags.
#[derive(Args)]
pub struct RegisterArgs {
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

pub(crate) fn client_for(url: &str, tls_ca_file: Option<PathBuf>) -> anyhow::Result<GitlabClient> {
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

fn register_info(
    executor: &str,
    shell: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> network::VersionInfo {
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
        labels,
    }
}

/// `register`: registers with GitLab and adds the runner to the config file.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let path = args.config.path();
    let config = Config::load(&path)?;
    let system_id = system_id::load_or_create(&path)?;
    let client = client_for(&args.url, args.tls_ca_file.clone().map(PathBuf::from))?;
    let shell = args.shell.clone().unwrap_or_else(|| "bash".into());
    let info = register_info(&args.executor, &shell, config.raw.labels.clone());
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "gitlab-runner-rs".into())
    });
    let (id, token, token_expires_at) = match (&args.token, &args.registration_token) {
        (Some(token), _) => {
            let token = Secret::new(token.clone());
            match client.verify(&token, &system_id, &info).await {
                VerifyResult::Valid {
                    id,
                    token_expires_at,
                } => (id, token, token_expires_at),
                VerifyResult::Invalid => {
                    bail!("verifying runner... is removed: GitLab does not accept the token")
                }
                VerifyResult::Unknown(message) => bail!("verifying runner failed: {message}"),
            }
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
            (registered.id, registered.token, registered.token_expires_at)
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
        // As upstream, the entry records when the token was obtained and when it expires, so
        // `run` can rotate it before it does.
        token_obtained_at: crate::token_rotation::toml_time(std::time::SystemTime::now()),
        token_expires_at: token_expires_at
            .as_deref()
            .and_then(crate::token_rotation::toml_time_from_text),
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

/// `verify`: checks each runner's token with GitLab; `--delete` removes the refused ones.
pub async fn verify(config: ConfigArg, delete: bool) -> anyhow::Result<i32> {
    let path = config.path();
    let config = Config::load(&path)?;
    let system_id = system_id::load_or_create(&path)?;
    let mut keep = Vec::new();
    let mut failures = 0;
    for runner in config.credentials() {
        let raw = &config.raw.runners[runner.index];
        let client = client_for(runner.url, runner.tls_ca_file.map(Path::to_path_buf))?;
        let info = register_info(
            &raw.executor,
            raw.shell.as_deref().unwrap_or("bash"),
            crate::config::labels::computed(&config.raw.labels, &raw.labels),
        );
        let short = runner.short_token();
        match client.verify(runner.token, &system_id, &info).await {
            VerifyResult::Valid { .. } => {
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

/// `unregister`: unregisters the selected runners and removes them from the config file.
pub async fn unregister(
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
    for runner in config.credentials() {
        let raw = &config.raw.runners[runner.index];
        let selected = all
            || name.as_deref() == Some(runner.name)
            || (token.as_deref() == Some(runner.token.expose().as_str())
                && url.as_deref().is_none_or(|u| u == runner.url));
        if !selected {
            keep.push(raw.clone());
            continue;
        }
        let client = client_for(runner.url, runner.tls_ca_file.map(Path::to_path_buf))?;
        let ok = if runner.token.expose().starts_with("glrt-") {
            client.unregister_manager(runner.token, &system_id).await?
        } else {
            client.unregister(runner.token).await?
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

/// `list`: the configured runners, one per line.
pub fn list(config: ConfigArg) -> anyhow::Result<()> {
    let path = config.path();
    let config = Config::load(&path)?;
    eprintln!("Listing configured runners  ConfigFile={}", path.display());
    for runner in config.credentials() {
        println!(
            "{:<20} Executor={} Token={} URL={}",
            runner.name,
            runner.executor,
            runner.short_token(),
            runner.url
        );
    }
    Ok(())
}

/// `reset-token`: resets the selected runners' tokens with GitLab and saves them.
pub async fn reset_token(
    config: ConfigArg,
    name: Option<String>,
    url: Option<String>,
    id: Option<i64>,
    all_runners: bool,
    personal_access_token: Option<String>,
) -> anyhow::Result<()> {
    let path = config.path();
    let loaded = Config::load(&path)?;
    let mut raw = loaded.raw.clone();
    let pat = personal_access_token.map(Secret::new);
    if all_runners {
        tracing::warn!("Resetting all runner authentication tokens");
        for index in 0..raw.runners.len() {
            if !crate::token_rotation::reset_one(&mut raw, index, pat.as_ref()).await {
                tracing::error!(
                    name = %raw.runners[index].name,
                    "Failed to reset runner authentication token"
                );
            }
        }
    } else {
        let index = match (&name, &url, id) {
            (Some(name), _, _) => raw
                .runners
                .iter()
                .position(|runner| &runner.name == name)
                .with_context(|| format!("could not find a runner with the name '{name}'"))?,
            (None, Some(url), Some(id)) => raw
                .runners
                .iter()
                .position(|runner| &runner.url == url && runner.id == id)
                .with_context(|| {
                    format!("could not find a runner with the URL {url:?} and ID {id}")
                })?,
            _ => bail!("No runner provided"),
        };
        if !crate::token_rotation::reset_one(&mut raw, index, pat.as_ref()).await {
            bail!(
                "Failed to reset runner authentication token  name={} id={}",
                raw.runners[index].name,
                raw.runners[index].id
            );
        }
    }
    Config::save_raw(&path, &raw).context("Failed to update configuration")?;
    println!("Updated");
    Ok(())
}
