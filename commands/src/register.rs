//! `register`, as upstream's: every `config.toml` key upstream takes as a flag (with its
//! environment variable: `--docker-image` / `DOCKER_IMAGE`, `--env` / `RUNNER_ENV`,
//! `--cache-s3-bucket-name`, …, generated from upstream's struct tags into
//! `register_flags_table.rs`), `--template-config` for the rest, the checks upstream makes
//! (an executor it knows, a Docker image, an SSH host and user, no server-side settings with a
//! runner authentication token), and the saved entry with the runner `id` and the token's dates.
//! Registration is always non-interactive here: a missing value is an error naming it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use network::{RegisterParameters, VerifyResult};
use runner_core::secret::Secret;

use crate::admin::{client_for, register_info, ConfigArg};
use crate::config::{Config, ExecutorKind, RawConfig, RawRunner};
use crate::system_id;

/// How a flag's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// A string.
    Text,
    /// `true` / `false` as Go's `strconv.ParseBool` reads them; a bare flag is `true`.
    Bool,
    /// A whole number.
    Integer,
    /// A number with a fraction.
    Float,
    /// One element per occurrence.
    TextList,
    /// `key:value` per occurrence, into a table of strings.
    Map,
    /// `key:value` per occurrence, into a table of booleans (`--feature-flags FF_X:true`).
    BoolMap,
    /// A Go duration (`30s`, `1h30m`), kept as the string.
    Duration,
}

/// One `config.toml` key as a `register` flag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConfigFlag {
    /// The long flag, without `--`.
    pub flag: &'static str,
    /// The environment variable that gives it, if any.
    pub env: Option<&'static str>,
    /// The TOML path under the `[[runners]]` entry.
    pub key: &'static [&'static str],
    /// How its text is read.
    pub kind: FlagKind,
    /// Upstream's description.
    pub help: &'static str,
}

include!("register_flags_table.rs");

/// Upstream flags whose Go types the generator leaves out, written by hand.
const EXTRA_FLAGS: &[ConfigFlag] = &[
    ConfigFlag { flag: "feature-flags", env: Some("FEATURE_FLAGS"), key: &["feature_flags"], kind: FlagKind::BoolMap, help: "Enable/Disable feature flags (FF_NAME:true, repeatable)" },
    ConfigFlag { flag: "prepare-timeout", env: Some("RUNNER_PREPARE_TIMEOUT"), key: &["prepare_timeout"], kind: FlagKind::Duration, help: "Timeout for the prepare stage of a job (30s, 1h30m)" },
    ConfigFlag { flag: "get-sources-timeout", env: Some("RUNNER_GET_SOURCES_TIMEOUT"), key: &["get_sources_timeout"], kind: FlagKind::Duration, help: "Timeout for the get_sources stage of a job (30s, 1h30m)" },
    ConfigFlag { flag: "unhealthy-interval", env: None, key: &["unhealthy_interval"], kind: FlagKind::Duration, help: "Duration that the runner worker is turned off after it exceeds the unhealthy requests limit" },
];

fn all_flags() -> impl Iterator<Item = &'static ConfigFlag> {
    CONFIG_FLAGS.iter().chain(EXTRA_FLAGS.iter())
}

/// The config-key flags given on the command line (or by their environment variables).
#[derive(Debug, Clone, Default)]
pub struct ConfigFlags {
    given: Vec<(&'static ConfigFlag, Vec<String>)>,
}

impl ConfigFlags {
    /// The `[[runners]]` keys the given flags set, as a TOML table.
    pub fn table(&self) -> anyhow::Result<toml::map::Map<String, toml::Value>> {
        let mut table = toml::map::Map::new();
        for (entry, values) in &self.given {
            set(&mut table, entry.key, value_of(entry, values)?);
        }
        Ok(table)
    }

    /// The value of a single-valued flag, when given.
    fn text(&self, flag: &str) -> Option<&str> {
        self.given
            .iter()
            .find(|(entry, _)| entry.flag == flag)
            .and_then(|(_, values)| values.last())
            .map(String::as_str)
    }
}

impl FromArgMatches for ConfigFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for entry in all_flags() {
            if let Ok(Some(values)) = matches.try_get_many::<String>(entry.flag) {
                self.given.push((entry, values.cloned().collect()));
            }
        }
        Ok(())
    }
}

impl Args for ConfigFlags {
    fn augment_args(command: Command) -> Command {
        let mut command = command;
        for entry in all_flags() {
            // The runner's own keys show in --help; the hundreds of executor and cache keys
            // are there but hidden, as the after-help says.
            let shown = entry.key.len() == 1 || entry.flag == "docker-image";
            let mut arg = Arg::new(entry.flag)
                .long(entry.flag)
                .help(entry.help)
                .hide(!shown)
                .value_name("VALUE");
            if let Some(env) = entry.env {
                arg = arg.env(env);
            }
            arg = match entry.kind {
                FlagKind::TextList | FlagKind::Map | FlagKind::BoolMap => {
                    arg.action(ArgAction::Append)
                }
                // Upstream's bool flags are switches that take `=false`, never a separate word.
                FlagKind::Bool => arg
                    .action(ArgAction::Set)
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true"),
                _ => arg.action(ArgAction::Set),
            };
            arg = match entry.flag {
                "description" => arg.alias("name"),
                "url" => arg.short('u'),
                "token" => arg.short('t'),
                _ => arg,
            };
            command = command.arg(arg);
        }
        command.after_help(
            "Every config.toml key is also a flag, as upstream's (--docker-image, --env, \
             --cache-s3-bucket-name, --custom-run-exec, ...); see upstream's register --help.",
        )
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

/// `register`'s own flags; every config key is a flag too ([`ConfigFlags`]).
#[derive(Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Accepted for compatibility; registration is always non-interactive.
    #[arg(short = 'n', long, env = "REGISTER_NON_INTERACTIVE")]
    non_interactive: bool,
    /// Don't remove the runner from GitLab when saving it fails.
    #[arg(long, env = "REGISTER_LEAVE_RUNNER")]
    leave_runner: bool,
    /// A legacy registration token (deprecated upstream; use --token).
    #[arg(short = 'r', long, env = "REGISTRATION_TOKEN")]
    registration_token: Option<String>,
    /// Tags (comma-separated; legacy registration only).
    #[arg(long, env = "RUNNER_TAG_LIST", default_value = "")]
    tag_list: String,
    /// Run untagged jobs; the default when --tag-list is empty (legacy registration only).
    #[arg(long, env = "REGISTER_RUN_UNTAGGED")]
    run_untagged: bool,
    /// Lock the runner to the project (legacy registration only).
    #[arg(long, env = "REGISTER_LOCKED", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", action = ArgAction::Set)]
    locked: String,
    /// not_protected or ref_protected (legacy registration only).
    #[arg(long, env = "REGISTER_ACCESS_LEVEL", default_value = "")]
    access_level: String,
    /// The longest job timeout, in seconds (legacy registration only).
    #[arg(long, env = "REGISTER_MAXIMUM_TIMEOUT", default_value_t = 0)]
    maximum_timeout: i64,
    /// Register the runner paused (legacy registration only).
    #[arg(long, env = "REGISTER_PAUSED")]
    paused: bool,
    /// A maintenance note (legacy registration only).
    #[arg(long, env = "REGISTER_MAINTENANCE_NOTE", default_value = "")]
    maintenance_note: String,
    /// A config.toml with one [[runners]] entry whose keys fill what the flags leave unset.
    #[arg(long = "template-config", env = "TEMPLATE_CONFIG_FILE")]
    template_config: Option<PathBuf>,
    #[command(flatten)]
    flags: ConfigFlags,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn value_of(entry: &ConfigFlag, values: &[String]) -> anyhow::Result<toml::Value> {
    let last = values.last().map(String::as_str).unwrap_or_default();
    let bad = |expected: &str| anyhow::anyhow!("--{} {last:?}: expected {expected}", entry.flag);
    Ok(match entry.kind {
        FlagKind::Text | FlagKind::Duration => toml::Value::String(last.to_string()),
        FlagKind::Bool => {
            toml::Value::Boolean(parse_bool(last).ok_or_else(|| bad("true or false"))?)
        }
        FlagKind::Integer => toml::Value::Integer(last.parse().map_err(|_| bad("a whole number"))?),
        FlagKind::Float => toml::Value::Float(last.parse().map_err(|_| bad("a number"))?),
        FlagKind::TextList => {
            toml::Value::Array(values.iter().cloned().map(toml::Value::String).collect())
        }
        FlagKind::Map | FlagKind::BoolMap => {
            let mut table = toml::map::Map::new();
            for value in values {
                let (key, item) = value.split_once(':').unwrap_or((value.as_str(), ""));
                let item = if entry.kind == FlagKind::BoolMap {
                    toml::Value::Boolean(parse_bool(item).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--{} {value:?}: expected NAME:true or NAME:false",
                            entry.flag
                        )
                    })?)
                } else {
                    toml::Value::String(item.to_string())
                };
                table.insert(key.to_string(), item);
            }
            toml::Value::Table(table)
        }
    })
}

fn set(table: &mut toml::map::Map<String, toml::Value>, key: &[&str], value: toml::Value) {
    match key {
        [] => {}
        [last] => {
            table.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = table
                .entry((*first).to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if !entry.is_table() {
                *entry = toml::Value::Table(Default::default());
            }
            if let toml::Value::Table(inner) = entry {
                set(inner, rest, value);
            }
        }
    }
}

/// Fills what `table` lacks from `template`, recursively (the flags win, as upstream's merge).
fn fill_from(
    table: &mut toml::map::Map<String, toml::Value>,
    template: &toml::map::Map<String, toml::Value>,
) {
    for (key, value) in template {
        match (table.get_mut(key), value) {
            (None, value) => {
                table.insert(key.clone(), value.clone());
            }
            (Some(toml::Value::Table(inner)), toml::Value::Table(template_inner)) => {
                fill_from(inner, template_inner);
            }
            (Some(_), _) => {}
        }
    }
}

/// The `[[runners]]` entry of `--template-config`, without its token.
fn template_runner(path: &std::path::Path) -> anyhow::Result<toml::map::Map<String, toml::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "couldn't load configuration template file: reading {}",
            path.display()
        )
    })?;
    let document: toml::Value = toml::from_str(&text).with_context(|| {
        format!(
            "couldn't load configuration template file {}",
            path.display()
        )
    })?;
    let runners = document
        .get("runners")
        .and_then(toml::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let [toml::Value::Table(runner)] = runners else {
        bail!("configuration template must contain exactly one [[runners]] entry");
    };
    let mut runner = runner.clone();
    runner.remove("token");
    Ok(runner)
}

/// The sections `executor` keeps, as upstream's `askExecutorOptions` (the others are dropped).
fn executor_sections(executor: &str) -> &'static [&'static str] {
    match executor {
        "docker" | "docker-autoscaler" | "docker-windows" => &["docker"],
        "docker+machine" => &["docker", "machine"],
        "ssh" => &["ssh"],
        "parallels" => &["ssh", "parallels"],
        "virtualbox" => &["ssh", "virtualbox"],
        "kubernetes" => &["kubernetes"],
        "custom" => &["custom"],
        _ => &[],
    }
}

fn required<'a>(
    table: &'a toml::map::Map<String, toml::Value>,
    section: &str,
    key: &str,
    flag: &str,
) -> anyhow::Result<&'a str> {
    table
        .get(section)
        .and_then(|value| value.get(key))
        .and_then(toml::Value::as_str)
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("The {flag} needs to be entered"))
}

/// The runner entry the flags, the template and upstream's executor rules describe (without
/// the token, the id and the dates, which GitLab gives).
fn runner_table(args: &RegisterArgs) -> anyhow::Result<toml::map::Map<String, toml::Value>> {
    let mut table = args.flags.table()?;
    if let Some(template) = &args.template_config {
        tracing::info!(
            "Merging configuration from template file {:?}",
            template.display().to_string()
        );
        fill_from(&mut table, &template_runner(template)?);
    }
    if !table.contains_key("name") {
        let host = runner_core::process::host_name();
        table.insert("name".into(), toml::Value::String(host));
    }
    let executor = table
        .get("executor")
        .and_then(toml::Value::as_str)
        .unwrap_or_default()
        .to_string();
    if ExecutorKind::parse(&executor).is_none() {
        if crate::config::UPSTREAM_ONLY_EXECUTORS.contains(&executor.as_str()) {
            tracing::warn!(
                "gitlab-runner-rs has no {executor} executor yet: the runner is registered, and \
                 `run` leaves it out of service until it has"
            );
        } else {
            bail!("Invalid executor specified");
        }
    }
    let keep = executor_sections(&executor);
    for section in [
        "docker",
        "ssh",
        "custom",
        "kubernetes",
        "machine",
        "parallels",
        "virtualbox",
    ] {
        if !keep.contains(&section) {
            table.remove(section);
        }
    }
    if keep.contains(&"docker") {
        required(&table, "docker", "image", "docker-image")?;
        // Upstream adds a `/cache` volume unless the cache is off or one is there.
        let docker = table
            .get_mut("docker")
            .and_then(toml::Value::as_table_mut)
            .context("the docker section")?;
        let disabled = docker.get("disable_cache").and_then(toml::Value::as_bool) == Some(true);
        let volumes = docker
            .entry("volumes")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(volumes) = volumes {
            let has_cache = volumes
                .iter()
                .filter_map(toml::Value::as_str)
                .any(|volume| volume.rsplit(':').next() == Some("/cache"));
            if !disabled && !has_cache {
                volumes.push(toml::Value::String("/cache".into()));
            }
        }
    }
    if executor == "ssh" || executor == "parallels" {
        required(&table, "ssh", "host", "ssh-host")?;
    }
    if executor == "ssh" || executor == "virtualbox" {
        required(&table, "ssh", "user", "ssh-user")?;
    }
    for base in ["parallels", "virtualbox"] {
        if executor == base {
            required(&table, base, "base_name", &format!("{base}-base-name"))?;
        }
    }
    // Upstream always writes the cache section, with its empty backends.
    let cache = table
        .entry("cache")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    if let toml::Value::Table(cache) = cache {
        cache
            .entry("MaxUploadedArchiveSize")
            .or_insert(toml::Value::Integer(0));
        for backend in ["s3", "gcs", "azure"] {
            cache
                .entry(backend)
                .or_insert_with(|| toml::Value::Table(Default::default()));
        }
    }
    Ok(table)
}

/// `register`: registers with GitLab (or verifies a runner authentication token) and adds the
/// runner to the config file.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    if !matches!(
        args.access_level.as_str(),
        "" | "not_protected" | "ref_protected"
    ) {
        bail!(
            "Given access-level is not valid. Refer to gitlab-runner register -h for the correct options."
        );
    }
    let locked = parse_bool(&args.locked)
        .with_context(|| format!("--locked {:?}: expected true or false", args.locked))?;
    let path = args.config.path();
    let config = Config::load(&path)?;
    let system_id = system_id::load_or_create(&path)?;
    let mut table = runner_table(&args)?;
    let url = args
        .flags
        .text("url")
        .filter(|url| !url.trim().is_empty())
        .context("The url needs to be entered")?
        .to_string();
    let executor = table
        .get("executor")
        .and_then(toml::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let shell = table
        .get("shell")
        .and_then(toml::Value::as_str)
        .unwrap_or("bash")
        .to_string();
    let name = table
        .get("name")
        .and_then(toml::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let labels: BTreeMap<String, String> = table
        .get("labels")
        .and_then(|value| value.clone().try_into().ok())
        .unwrap_or_default();
    let info = register_info(
        &executor,
        &shell,
        crate::config::labels::computed(&config.raw.labels, &labels),
    );
    let client = client_for(
        &url,
        table
            .get("tls-ca-file")
            .and_then(toml::Value::as_str)
            .map(PathBuf::from),
    )?;
    let token_flag = args.flags.text("token").map(str::to_string);
    let runner_token = token_flag
        .clone()
        .or_else(|| args.registration_token.clone())
        .filter(|token| token.starts_with("glrt-"));
    let (id, token, token_expires_at) = if let Some(token) = runner_token {
        // A runner created in GitLab: the server holds its settings.
        let reserved = !locked
            || !args.access_level.is_empty()
            || args.run_untagged
            || args.maximum_timeout != 0
            || args.paused
            || !args.tag_list.is_empty()
            || !args.maintenance_note.is_empty();
        if reserved {
            if args.registration_token.as_deref() == Some(token.as_str()) {
                tracing::warn!(
                    "You have specified an authentication token in the legacy parameter --registration-token. This has triggered the 'legacy-compatible registration process' which has resulted in the following command line parameters being ignored: --locked, --access-level, --run-untagged, --maximum-timeout, --paused, --tag-list, and --maintenance-note."
                );
            } else {
                bail!(
                    "Runner configuration other than name and executor configuration is reserved (specifically --locked, --access-level, --run-untagged, --maximum-timeout, --paused, --tag-list, and --maintenance-note) and cannot be specified when registering with a runner authentication token. This configuration is specified on the GitLab server. Please try again without specifying any of those arguments."
                );
            }
        }
        let token = Secret::new(token);
        match client.verify(&token, &system_id, &info).await {
            VerifyResult::Valid {
                id,
                token_expires_at,
            } if id != 0 => (id, token, token_expires_at),
            VerifyResult::Valid { .. } | VerifyResult::Invalid => {
                bail!("Failed to verify the runner.")
            }
            VerifyResult::Unknown(message) => {
                bail!("Failed to verify the runner. You may be having network problems: {message}")
            }
        }
    } else {
        let registration_token = args
            .registration_token
            .clone()
            .or(token_flag)
            .filter(|token| !token.trim().is_empty())
            .context("The registration-token needs to be entered")?;
        tracing::warn!(
            "Support for registration tokens and runner parameters in the 'register' command has been deprecated in GitLab Runner 15.6 and will be replaced with support for authentication tokens. For more information, see https://docs.gitlab.com/ci/runners/new_creation_workflow/"
        );
        let tags: Vec<String> = args
            .tag_list
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_string)
            .collect();
        let registered = client
            .register(
                &Secret::new(registration_token),
                &RegisterParameters {
                    description: name.clone(),
                    maintenance_note: args.maintenance_note.clone(),
                    run_untagged: args.run_untagged || tags.is_empty(),
                    tags,
                    locked,
                    access_level: args.access_level.clone(),
                    maximum_timeout: args.maximum_timeout,
                    paused: args.paused,
                },
                &info,
            )
            .await
            .context("Failed to register the runner.")?;
        (registered.id, registered.token, registered.token_expires_at)
    };
    table.insert("url".into(), toml::Value::String(url));
    table.insert("id".into(), toml::Value::Integer(id));
    table.insert("token".into(), toml::Value::String(token.expose().clone()));
    if let Some(obtained) = crate::token_rotation::toml_time(std::time::SystemTime::now()) {
        table.insert("token_obtained_at".into(), obtained);
    }
    if let Some(expires) = token_expires_at
        .as_deref()
        .and_then(crate::token_rotation::toml_time_from_text)
    {
        table.insert("token_expires_at".into(), expires);
    }
    let saved = save(&path, &config, table);
    if let Err(error) = saved {
        if !args.leave_runner {
            let _ = if token.expose().starts_with("glrt-") {
                client.unregister_manager(&token, &system_id).await
            } else {
                client.unregister(&token).await
            };
        }
        return Err(error);
    }
    let written = Config::load(&path)?;
    let limit = args
        .flags
        .text("limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if written.concurrent < limit {
        tracing::warn!(
            "The specified runner job concurrency limit ({limit}) is larger than current global concurrency limit ({}). The global concurrent limit will not be increased and takes precedence.",
            written.concurrent
        );
    }
    let requests = args
        .flags
        .text("request-concurrency")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if written.concurrent < requests {
        tracing::warn!(
            "The specified runner request concurrency ({requests}) is larger than the current global concurrent limit ({}). The global concurrent limit will not be increased and takes precedence.",
            written.concurrent
        );
    }
    tracing::info!(
        "Runner registered successfully. Feel free to start it, but if it's running already the config should be automatically reloaded!"
    );
    tracing::info!(
        "Configuration (with the authentication token) was saved in {:?}",
        path.display().to_string()
    );
    Ok(())
}

/// Appends the entry to the file, validated first so a bad value never lands in it.
fn save(
    path: &std::path::Path,
    config: &Config,
    table: toml::map::Map<String, toml::Value>,
) -> anyhow::Result<()> {
    let runner: RawRunner = toml::Value::Table(table)
        .try_into()
        .context("the registered runner's settings")?;
    let mut raw: RawConfig = config.raw.clone();
    if raw.concurrent.is_none() {
        raw.concurrent = Some(1);
    }
    if raw.check_interval.is_none() {
        raw.check_interval = Some(0);
    }
    raw.runners.push(runner);
    let text = toml::to_string_pretty(&raw)?;
    Config::parse(path, &text)?;
    Config::save_raw(path, &raw)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_flag_is_unique_and_has_a_key() {
        let mut seen = std::collections::HashSet::new();
        for entry in all_flags() {
            assert!(seen.insert(entry.flag), "--{} twice", entry.flag);
            assert!(!entry.key.is_empty(), "--{} has no key", entry.flag);
        }
        assert!(seen.contains("docker-image"));
        assert!(seen.contains("cache-s3-bucket-name"));
        assert!(seen.contains("env"));
    }

    #[test]
    fn flags_become_toml_values_of_their_kind() {
        let find = |name: &str| all_flags().find(|entry| entry.flag == name).unwrap();
        let value = value_of(find("docker-volumes"), &["/a:/b".into(), "/cache".into()]).unwrap();
        assert_eq!(
            value,
            toml::Value::Array(vec!["/a:/b".into(), "/cache".into()])
        );
        let value = value_of(find("feature-flags"), &["FF_TIMESTAMPS:false".into()]).unwrap();
        assert_eq!(
            value.get("FF_TIMESTAMPS"),
            Some(&toml::Value::Boolean(false))
        );
        assert!(value_of(find("limit"), &["many".into()]).is_err());
        let mut table = toml::map::Map::new();
        set(&mut table, &["cache", "s3", "BucketName"], "b".into());
        assert_eq!(table["cache"]["s3"]["BucketName"].as_str(), Some("b"));
    }
}
