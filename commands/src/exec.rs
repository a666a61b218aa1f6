//! `exec shell|docker|kubernetes <job>`: runs one job of the local `.gitlab-ci.yml` through the same build
//! driver and executors as `run`, without a GitLab server. The log goes to standard output.
//! With docker the job's `image:` and `services:` are used, and the project directory is
//! mounted read-only at its own path so the helper container can clone it. The job's
//! With kubernetes the same in a pod, the project directory mounted as a read-only host
//! path. The job's `cache:` is kept under the cache directory, its `artifacts:` in a local directory (see
//! [`crate::exec_artifacts`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use runner_core::build::{BuildDriver, BuildInput, RunnerSettings, RunnerVersion};
use runner_core::cancel::{CancelReason, JobCancel};
use runner_core::executor::Capacity;
use runner_core::executor::ExecutorProvider;
use runner_core::job::{GitInfo, Image, JobInfo, JobResponse, RunnerInfo, Step};
use runner_core::log::{token_prefixes, JobLog, LogOptions, MaskRules};
use runner_core::process::KillTimeouts;
use runner_core::secret::Secret;
use runner_core::variables::{JobVariable, Variables};
use serde_norway::Value;
use shells::{BashShell, ShellKind};

use crate::exec_artifacts;

/// Keys of `.gitlab-ci.yml` that are not jobs.
const RESERVED: &[&str] = &[
    "image",
    "services",
    "stages",
    "types",
    "before_script",
    "after_script",
    "variables",
    "cache",
    "default",
    "include",
    "workflow",
    "pages:deploy",
];

/// What `exec shell` and `exec docker` were asked to run, from their command-line arguments.
pub struct ExecOptions {
    /// Name of the job in the pipeline file to run.
    pub job: String,
    /// The pipeline file, `.gitlab-ci.yml` by default (`--file`).
    pub file: PathBuf,
    /// `--builds-dir`; `None` means the executor's default.
    pub builds_dir: Option<String>,
    /// `--cache-dir`; `None` means the executor's default.
    pub cache_dir: Option<String>,
    /// `--env` entries, `KEY=VALUE`, added after the file's variables.
    pub env: Vec<String>,
    /// `--timeout`: job timeout in seconds; `None` means 3600.
    pub timeout: Option<i64>,
    /// `--shell`: `bash` (the default) or `sh`.
    pub shell: String,
    /// `--artifacts-dir`: where the job's `artifacts:` archives are kept; `None` means
    /// `exec-artifacts/<job>` in the project directory.
    pub artifacts_dir: Option<PathBuf>,
}

fn lines(value: Option<&Value>) -> anyhow::Result<Vec<String>> {
    fn flatten(value: &Value, out: &mut Vec<String>) -> anyhow::Result<()> {
        match value {
            Value::String(text) => out.push(text.clone()),
            Value::Number(number) => out.push(number.to_string()),
            Value::Bool(flag) => out.push(flag.to_string()),
            Value::Sequence(items) => {
                for item in items {
                    flatten(item, out)?;
                }
            }
            Value::Null => {}
            other => bail!("a script line must be a string, not {other:?}"),
        }
        Ok(())
    }
    let mut out = Vec::new();
    if let Some(value) = value {
        flatten(value, &mut out)?;
    }
    Ok(out)
}

fn variables(value: Option<&Value>) -> anyhow::Result<Vec<JobVariable>> {
    let mut out = Vec::new();
    let Some(Value::Mapping(map)) = value else {
        return Ok(out);
    };
    for (key, value) in map {
        let key = key
            .as_str()
            .context("variable names must be strings")?
            .to_string();
        let (value, expand) = match value {
            Value::String(text) => (text.clone(), true),
            Value::Number(number) => (number.to_string(), true),
            Value::Bool(flag) => (flag.to_string(), true),
            Value::Mapping(fields) => {
                let text = match fields.get("value") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Number(number)) => number.to_string(),
                    Some(Value::Bool(flag)) => flag.to_string(),
                    _ => String::new(),
                };
                let expand = !matches!(fields.get("expand"), Some(Value::Bool(false)));
                (text, expand)
            }
            Value::Null => (String::new(), true),
            other => bail!("variable {key} has an unsupported value {other:?}"),
        };
        let mut variable = JobVariable::new(key, value);
        variable.raw = !expand;
        out.push(variable);
    }
    Ok(out)
}

/// `image:` / a `services:` entry: a name, or a mapping with `name`, `entrypoint`, `command`,
/// `alias` and `variables`.
fn image(value: &Value) -> anyhow::Result<Image> {
    match value {
        Value::String(name) => Ok(Image {
            name: name.clone(),
            ..Image::default()
        }),
        Value::Mapping(map) => {
            let text = |key: &str| {
                map.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let name = text("name");
            if name.is_empty() {
                bail!("an image needs a name");
            }
            let pull_policy = match map.get("pull_policy") {
                Some(Value::String(one)) => vec![one.clone()],
                Some(other) => lines(Some(other))?,
                None => Vec::new(),
            };
            Ok(Image {
                name,
                alias: text("alias"),
                entrypoint: lines(map.get("entrypoint"))?,
                command: lines(map.get("command"))?,
                variables: variables(map.get("variables"))?,
                pull_policy,
                ..Image::default()
            })
        }
        _ => bail!("an image is a name or a mapping with a name"),
    }
}

/// `artifacts:` as the payload's artifact entries: `paths`, `exclude`, `untracked`, `name`,
/// `when`, `expire_in`, as a zip `archive` (what GitLab sends for them). `reports:` are
/// GitLab's to parse and are left out, with a note on standard error.
fn artifacts(value: Option<&Value>) -> anyhow::Result<Vec<runner_core::job::Artifact>> {
    let entry = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(entry @ Value::Mapping(_)) => entry,
        Some(_) => bail!("artifacts must be a mapping"),
    };
    if entry.get("reports").is_some() {
        eprintln!("artifacts:reports are GitLab's to parse; a local run does not keep them");
    }
    let text = |key: &str| -> String {
        match entry.get(key) {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Number(number)) => number.to_string(),
            _ => String::new(),
        }
    };
    let artifact = runner_core::job::Artifact {
        name: text("name"),
        untracked: entry
            .get("untracked")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        paths: lines(entry.get("paths")).context("artifacts:paths")?,
        exclude: lines(entry.get("exclude")).context("artifacts:exclude")?,
        when: match text("when") {
            when if when.is_empty() => "on_success".into(),
            when => when,
        },
        artifact_type: "archive".into(),
        artifact_format: "zip".into(),
        expire_in: text("expire_in"),
    };
    if artifact.paths.is_empty() && !artifact.untracked {
        return Ok(Vec::new());
    }
    Ok(vec![artifact])
}

/// The job's mapping with `extends` resolved (the job's own keys win).
/// `cache:` (a mapping or a list of them) as the payload's cache entries: `key` (a string;
/// `key: {files: ...}` hashes files GitLab reads, which a local run cannot, so it is
/// `default`), `paths`, `policy`, `when`, `untracked`, `fallback_keys`. With no GitLab the
/// helper keeps each archive under the cache directory, so the next local run restores it.
fn caches(value: Option<&Value>) -> anyhow::Result<Vec<runner_core::job::Cache>> {
    let entries: Vec<&Value> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(list)) => list.iter().collect(),
        Some(other) => vec![other],
    };
    let text = |entry: &Value, key: &str, default: &str| -> String {
        entry
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    entries
        .into_iter()
        .map(|entry| {
            if !entry.is_mapping() {
                bail!("cache entries must be mappings");
            }
            let key = match entry.get("key") {
                Some(Value::String(key)) => key.clone(),
                Some(Value::Number(number)) => number.to_string(),
                _ => "default".to_string(),
            };
            Ok(runner_core::job::Cache {
                key,
                untracked: entry
                    .get("untracked")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                policy: text(entry, "policy", "pull-push"),
                paths: lines(entry.get("paths")).context("cache:paths")?,
                when: text(entry, "when", "on_success"),
                fallback_keys: lines(entry.get("fallback_keys")).context("cache:fallback_keys")?,
            })
        })
        .collect()
}

fn resolve_job(
    document: &serde_norway::Mapping,
    name: &str,
    depth: usize,
) -> anyhow::Result<serde_norway::Mapping> {
    if depth > 10 {
        bail!("`extends` nests deeper than 10 levels at {name:?}");
    }
    let Some(Value::Mapping(job)) = document.get(name) else {
        bail!("no job named {name:?} in the pipeline file");
    };
    let parents = match job.get("extends") {
        Some(Value::String(parent)) => vec![parent.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let mut merged = serde_norway::Mapping::new();
    for parent in parents {
        for (key, value) in resolve_job(document, &parent, depth + 1)? {
            merged.insert(key, value);
        }
    }
    for (key, value) in job {
        merged.insert(key.clone(), value.clone());
    }
    Ok(merged)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Builds the payload GitLab would have sent for `options.job`.
pub fn job_from_file(options: &ExecOptions, project_dir: &Path) -> anyhow::Result<JobResponse> {
    let text = std::fs::read_to_string(&options.file)
        .with_context(|| format!("reading {}", options.file.display()))?;
    let document: Value = serde_norway::from_str(&text)
        .with_context(|| format!("parsing {}", options.file.display()))?;
    let Value::Mapping(document) = document else {
        bail!("{} must be a mapping of jobs", options.file.display());
    };
    if RESERVED.contains(&options.job.as_str()) || options.job.starts_with('.') {
        bail!("{:?} is not a job that can be run", options.job);
    }
    let job = resolve_job(&document, &options.job, 0)?;
    let default = match document.get("default") {
        Some(Value::Mapping(default)) => default.clone(),
        _ => serde_norway::Mapping::new(),
    };
    let inherited = |key: &str| {
        job.get(key)
            .or_else(|| default.get(key))
            .or_else(|| document.get(key))
    };
    let before = lines(inherited("before_script"))?;
    let script = lines(job.get("script"))?;
    if script.is_empty() {
        bail!("job {:?} has no script", options.job);
    }
    let after = lines(inherited("after_script"))?;
    let cache = caches(inherited("cache")).context("cache")?;
    let job_artifacts = artifacts(inherited("artifacts")).context("artifacts")?;
    let job_image = match inherited("image") {
        Some(value) => image(value).context("image")?,
        None => Image::default(),
    };
    let services = match inherited("services") {
        Some(Value::Sequence(list)) => list
            .iter()
            .map(image)
            .collect::<anyhow::Result<Vec<_>>>()
            .context("services")?,
        Some(_) => bail!("services must be a list"),
        None => Vec::new(),
    };
    let stage = job
        .get("stage")
        .and_then(Value::as_str)
        .unwrap_or("test")
        .to_string();
    let timeout = options.timeout.unwrap_or(3600);

    let sha = git(project_dir, &["rev-parse", "HEAD"]);
    let git_ref =
        git(project_dir, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_else(|| "HEAD".into());
    let project_name = project_dir
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_else(|| "project".into());

    let mut all = vec![
        JobVariable::new("CI", "true"),
        JobVariable::new("GITLAB_CI", "true"),
        JobVariable::new("CI_JOB_ID", "1"),
        JobVariable::new("CI_JOB_NAME", options.job.clone()),
        JobVariable::new("CI_JOB_STAGE", stage.clone()),
        JobVariable::new("CI_PROJECT_NAME", project_name.clone()),
        JobVariable::new("CI_PROJECT_PATH", format!("local/{project_name}")),
        JobVariable::new("CI_COMMIT_REF_NAME", git_ref.clone()),
        JobVariable::new("CI_COMMIT_SHA", sha.clone().unwrap_or_default()),
        JobVariable::new("CI_JOB_TOKEN", "exec-local-job-token").masked(),
    ];
    all.extend(variables(document.get("variables"))?);
    all.extend(variables(default.get("variables"))?);
    all.extend(variables(job.get("variables"))?);
    for entry in &options.env {
        let (key, value) = entry
            .split_once('=')
            .with_context(|| format!("--env {entry:?} must be KEY=VALUE"))?;
        all.push(JobVariable::new(key, value));
    }
    let strategy_none = Variables::new(all.clone()).value("GIT_STRATEGY") == "none";
    let git_info = match (&sha, strategy_none) {
        (Some(sha), false) => GitInfo {
            repo_url: Secret::new(format!("file://{}", project_dir.display())),
            git_ref: git_ref.clone(),
            sha: sha.clone(),
            ref_type: "branch".into(),
            refspecs: vec![
                "+refs/heads/*:refs/remotes/origin/*".into(),
                "+refs/tags/*:refs/tags/*".into(),
                "+HEAD:refs/exec/head".into(),
            ],
            ..GitInfo::default()
        },
        (None, false) => bail!(
            "{} is not a git repository: commit the project, or set GIT_STRATEGY=none with --env",
            project_dir.display()
        ),
        (_, true) => GitInfo {
            repo_url: Secret::new(format!("file://{}", project_dir.display())),
            git_ref,
            sha: sha.clone().unwrap_or_default(),
            ..GitInfo::default()
        },
    };
    let mut steps = vec![Step {
        name: "script".into(),
        script: before.into_iter().chain(script).collect(),
        timeout,
        when: "on_success".into(),
        allow_failure: false,
    }];
    if !after.is_empty() {
        steps.push(Step {
            name: "after_script".into(),
            script: after,
            timeout,
            when: "always".into(),
            allow_failure: false,
        });
    }
    Ok(JobResponse {
        id: 1,
        token: Secret::new("exec-local-job-token".into()),
        job_info: JobInfo {
            name: options.job.clone(),
            stage,
            project_name,
            ..JobInfo::default()
        },
        git_info,
        runner_info: RunnerInfo {
            timeout,
            ..RunnerInfo::default()
        },
        variables: all,
        steps,
        image: job_image,
        services,
        cache,
        artifacts: job_artifacts,
        ..JobResponse::default()
    })
}

/// Runs the job with the shell executor; returns the process exit code (0 on success).
pub async fn exec_shell(options: ExecOptions) -> anyhow::Result<i32> {
    let project_dir = std::env::current_dir()?;
    let provider = executor_shell::ShellProvider::new(executor_shell::ShellConfig {
        working_dir: project_dir.clone(),
        kill_timeouts: KillTimeouts::default(),
    });
    let builds_dir = options
        .builds_dir
        .clone()
        .unwrap_or_else(|| project_dir.join("builds").to_string_lossy().to_string());
    let receiver = exec_artifacts::ArtifactsReceiver::start(
        IpAddr::from([127, 0, 0, 1]),
        artifacts_dir(&options, &project_dir),
    )
    .await?;
    run_local(
        &provider,
        &options,
        &project_dir,
        Some(builds_dir),
        &receiver,
    )
    .await
}

fn artifacts_dir(options: &ExecOptions, project_dir: &Path) -> PathBuf {
    match &options.artifacts_dir {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => project_dir.join(dir),
        None => project_dir.join("exec-artifacts").join(&options.job),
    }
}

/// Runs the job with the Docker executor: `config` from the command line, the project
/// directory mounted read-only at its own path for the clone.
pub async fn exec_docker(
    options: ExecOptions,
    mut config: executor_docker::DockerConfig,
) -> anyhow::Result<i32> {
    let project_dir = std::env::current_dir()?;
    let path = project_dir.to_string_lossy();
    config.volumes.push(format!("{path}:{path}:ro"));
    // The helper container uploads the job's artifacts to this machine's address on its
    // network.
    let address = executor_docker::host_address_for_containers(&config)
        .await
        .context("finding the address the job's containers reach this machine by")?;
    let receiver =
        exec_artifacts::ArtifactsReceiver::start(address, artifacts_dir(&options, &project_dir))
            .await?;
    let provider = executor_docker::DockerProvider::new(Some(config));
    let builds_dir = options.builds_dir.clone();
    run_local(&provider, &options, &project_dir, builds_dir, &receiver).await
}

/// `[runners.kubernetes]` from the `exec kubernetes` flags, validated as config.toml's is.
pub fn kubernetes_config(
    section: toml::Table,
) -> anyhow::Result<executor_kubernetes::config::KubernetesConfig> {
    let raw: executor_kubernetes::config::RawKubernetesConfig = toml::Value::Table(section)
        .try_into()
        .context("the --kubernetes-* flags")?;
    raw.validate("kubernetes")
        .map_err(|error| anyhow::anyhow!("the --kubernetes-* flags: {error}"))
}

/// Runs the job with the Kubernetes executor: `config` from the command line, the project
/// directory mounted read-only at its own path as a host path (so the pod must run on this
/// machine), the artifacts received at `receiver_address`.
pub async fn exec_kubernetes(
    options: ExecOptions,
    mut config: executor_kubernetes::config::KubernetesConfig,
    receiver_address: IpAddr,
) -> anyhow::Result<i32> {
    let project_dir = std::env::current_dir()?;
    let path = project_dir.to_string_lossy().to_string();
    config
        .volumes
        .host_path
        .push(executor_kubernetes::volumes::RawHostPath {
            mount: executor_kubernetes::volumes::RawMount {
                name: "exec-project".into(),
                mount_path: path.clone(),
                read_only: true,
                ..Default::default()
            },
            host_path: path,
            ..Default::default()
        });
    let receiver = exec_artifacts::ArtifactsReceiver::start(
        receiver_address,
        artifacts_dir(&options, &project_dir),
    )
    .await?;
    let provider = executor_kubernetes::KubernetesProvider::new(config);
    let builds_dir = options.builds_dir.clone();
    run_local(&provider, &options, &project_dir, builds_dir, &receiver).await
}

/// The job of `.gitlab-ci.yml` through `provider`'s executor and the build driver; the log
/// is printed as it grows; Ctrl-C aborts the job (with cleanup).
async fn run_local<P: ExecutorProvider>(
    provider: &P,
    options: &ExecOptions,
    project_dir: &Path,
    builds_dir: Option<String>,
    receiver: &exec_artifacts::ArtifactsReceiver,
) -> anyhow::Result<i32> {
    let job = job_from_file(options, project_dir)?;
    let kind = ShellKind::from_name(&options.shell)
        .with_context(|| format!("unsupported shell {:?} (bash or sh)", options.shell))?;
    let variables = Variables::new(job.variables.clone());
    let log = JobLog::new(LogOptions {
        timestamps: false,
        trace_sections: false,
        output_limit: u64::MAX / 2,
        mask: MaskRules::new(variables.masked_values(), token_prefixes(&[], true)),
    })?;
    let generator = BashShell::new(kind);
    let mut defaults = provider.defaults();
    if let Some(builds_dir) = builds_dir {
        defaults.builds_dir = builds_dir;
    }
    if let Some(cache_dir) = &options.cache_dir {
        defaults.cache_dir = cache_dir.clone();
    }
    let shell = generator.command(defaults.shell_type, None);
    let runner = RunnerSettings {
        name: "local".into(),
        token: Secret::new("exec-local-runner".into()),
        system_id: crate::system_id::generate(),
        feature_flags: BTreeMap::new(),
        version: RunnerVersion::default(),
        // The artifacts uploader's "GitLab": the local receiver.
        url: receiver.url().to_string(),
        ..RunnerSettings::default()
    };
    let input = BuildInput {
        correlation_id: network::client::correlation_id(),
        ..BuildInput::for_provider(provider, job, runner, defaults, shell)
    };
    let cancel = JobCancel::new();
    let stop_printing = tokio_util::sync::CancellationToken::new();
    let printer = tokio::spawn(print_log(log.clone(), stop_printing.clone()));
    let ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.abort(CancelReason::RunnerShutdown);
            }
        })
    };
    let Some(reservation) = provider.capacity().acquire().await else {
        anyhow::bail!(
            "the {} executor has no capacity for a job now",
            provider.name()
        );
    };
    let mut executor = provider.create(reservation);
    let outcome = BuildDriver::new(&mut executor, &generator, &log, &cancel)
        .run(input)
        .await;
    log.finish();
    ctrl_c.abort();
    stop_printing.cancel();
    let _ = printer.await;
    for kept in receiver.kept() {
        eprintln!("Artifacts kept in {}", kept.display());
    }
    Ok(if outcome.error.is_none() { 0 } else { 1 })
}

fn flush_log(log: &JobLog, printed: &mut u64) {
    use std::io::Write;
    let data = log.read_at(*printed, usize::MAX / 2).unwrap_or_default();
    *printed += data.len() as u64;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&data);
    let _ = stdout.flush();
}

/// Copies the job log to standard output as it grows.
async fn print_log(log: JobLog, stop: tokio_util::sync::CancellationToken) {
    let mut printed = 0u64;
    loop {
        tokio::select! {
            // The job is over: print what is left and end.
            _ = stop.cancelled() => {
                flush_log(&log, &mut printed);
                return;
            }
            _ = log.written() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        flush_log(&log, &mut printed);
    }
}
