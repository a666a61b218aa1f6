//! Runner administration: `verify`, `unregister`, `list` and `reset-token`, and the `--config`
//! argument every command that reads `config.toml` shares (`register` is in `register`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use network::{GitlabClient, TlsOptions, VerifyResult};
use runner_core::secret::Secret;

use crate::config::Config;
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

pub(crate) fn register_info(
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

/// `verify --name / --url --token`: which runners to verify (all when none is given).
#[derive(Debug, Clone, Default)]
pub struct VerifySelector {
    /// `-n` / `--name`.
    pub name: Option<String>,
    /// `-u` / `--url` (with `--token`).
    pub url: Option<String>,
    /// `-t` / `--token` (with `--url`).
    pub token: Option<String>,
}

impl VerifySelector {
    fn any(&self) -> bool {
        self.name.is_some() || self.url.is_some() || self.token.is_some()
    }

    /// Upstream's rule: every runner without a selector, else the runner of that name or the
    /// one with that URL and token.
    fn selects(&self, name: &str, url: &str, token: &str) -> bool {
        !self.any()
            || self.name.as_deref() == Some(name)
            || (self.url.as_deref().unwrap_or_default() == url
                && self.token.as_deref().unwrap_or_default() == token)
    }
}

/// `verify`: checks each runner's token with GitLab; `--delete` removes the refused ones.
pub async fn verify(
    config: ConfigArg,
    selector: VerifySelector,
    delete: bool,
) -> anyhow::Result<i32> {
    let path = config.path();
    let config = Config::load(&path)?;
    let system_id = system_id::load_or_create(&path)?;
    let mut keep = Vec::new();
    let mut failures = 0;
    let mut selected = 0;
    for runner in config.credentials() {
        let raw = &config.raw.runners[runner.index];
        if !selector.selects(runner.name, runner.url, runner.token.expose()) {
            keep.push(raw.clone());
            continue;
        }
        selected += 1;
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
                tracing::info!(runner = %short, "Verifying runner... {word}");
                keep.push(raw.clone());
            }
            VerifyResult::Invalid => {
                tracing::error!(runner = %short, "Verifying runner... is removed");
                failures += 1;
                if !delete {
                    keep.push(raw.clone());
                }
            }
            // Not GitLab's refusal (no answer, a 5xx): the runner is kept even with --delete.
            VerifyResult::Unknown(message) => {
                tracing::error!(runner = %short, status = %message, "Verifying runner... failed");
                failures += 1;
                keep.push(raw.clone());
            }
        }
    }
    if selector.any() && selected == 0 {
        bail!("no runner matches the filtering parameters");
    }
    if failures == 0 {
        return Ok(0);
    }
    if !delete {
        tracing::error!("Failed to verify runners");
        return Ok(1);
    }
    if keep.len() != config.raw.runners.len() {
        let mut raw = config.raw.clone();
        raw.runners = keep;
        Config::save_raw(&path, &raw)
            .with_context(|| format!("Failed to update {}", path.display()))?;
        tracing::info!("Updated {}", path.display());
    }
    Ok(0)
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
    // Through the log, as upstream's: the header and the runners in one stream, in order. The
    // token is the short one (upstream prints it whole).
    tracing::info!(ConfigFile = %path.display(), "Listing configured runners");
    for runner in config.credentials() {
        tracing::info!(
            Executor = %runner.executor,
            Token = %runner.short_token(),
            URL = %runner.url,
            "{}",
            runner.name
        );
    }
    Ok(())
}

/// `lint`: checks a config file as `run` would load it, and names every unknown key; exits 1
/// when the file does not load or has one.
pub fn lint(config: ConfigArg) -> anyhow::Result<i32> {
    let path = config.path();
    if !path.exists() {
        bail!("config file not found: {}", path.display());
    }
    let loaded =
        Config::load(&path).map_err(|error| anyhow::anyhow!("decoding config: {error}"))?;
    if !loaded.unknown_keys.is_empty() {
        let lines: Vec<String> = loaded
            .unknown_keys
            .iter()
            .map(|key| format!("  unknown key: {key}"))
            .collect();
        tracing::error!(
            "{} unknown key(s) found in {}:\n{}",
            loaded.unknown_keys.len(),
            path.display(),
            lines.join("\n")
        );
        return Ok(1);
    }
    tracing::info!("Configuration file is valid.");
    Ok(0)
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
