//! What each stage's script does (upstream's `AbstractShell.writeScript` dispatch, 3.4–3.7).

use runner_core::build::BuildContext;
use runner_core::dirs::{clean_path, join_path, split_url};
use runner_core::job::{Artifact, Cache};
use runner_core::remote_cache::RemoteCache;
use runner_core::script::ScriptError;
use runner_core::settings::{GitStrategy, SubmoduleStrategy};
use runner_core::stage::Stage;
use runner_core::variables::Variables;
use std::time::{Duration, SystemTime};

use crate::writer::BashWriter;

const GITLAB_ENV_FILE: &str = "gitlab_runner_env";
const CACHE_ENV_FILE: &str = "gitlab_runner_cache_env";
const GIT_TEMPLATE_DIR: &str = "git-template";
const EXTERNAL_GIT_CONFIG: &str = ".gitlab-runner.ext.conf";
const GLOBAL_GIT_CONFIG_SEED: &str = ".glr.gconf";
const EXT_CONFIG_ENV: &str = "GLR_EXT_GIT_CONFIG_PATH";
const BUILD_UID_GID_FILE: &str = ".gitlab-build-uid-gid";

/// Everything a stage writer reads, resolved once per script.
pub(crate) struct Info<'a> {
    pub build: &'a BuildContext,
    /// The job's variables, expanded (`GetAllVariables`).
    pub variables: Variables,
    pub project_dir: String,
    pub runner_command: &'a str,
}

impl<'a> Info<'a> {
    pub fn new(build: &'a BuildContext) -> Self {
        Self {
            build,
            variables: build.variables.expanded(),
            project_dir: build.dirs.project_dir.clone(),
            runner_command: &build.defaults.runner_command,
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.build.flags.enabled(name)
    }

    fn lfs_smudge_disabled(&self) -> bool {
        self.build.settings.git_lfs_skip_smudge
    }

    /// The remote URL with credentials: `clone_url` + project path, or the payload's `repo_url`.
    fn remote_url_with_credentials(&self) -> String {
        let clone_url = self.build.runner.clone_url.trim_end_matches('/');
        if clone_url.is_empty() {
            return self.build.job.git_info.repo_url.expose().clone();
        }
        let project_path = self.variables.value("CI_PROJECT_PATH");
        let token = self.build.job.token.expose();
        match clone_url.split_once("://") {
            Some((scheme, rest)) => {
                format!("{scheme}://gitlab-ci-token:{token}@{rest}/{project_path}.git")
            }
            None => format!("{clone_url}/{project_path}.git"),
        }
    }

    fn remote_url_without_credentials(&self) -> String {
        strip_userinfo(&self.remote_url_with_credentials())
    }

    /// `scheme://host` of the remote, or `None` for remotes git cannot ask credentials for.
    fn remote_host(&self) -> Option<String> {
        let url = self.remote_url_with_credentials();
        let (scheme, host, _) = split_url(&url)?;
        if host.is_empty() {
            return None;
        }
        Some(format!("{scheme}://{host}"))
    }
}

fn strip_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}{}", &rest[authority_end..]);
        }
    }
    url.to_string()
}

/// `regexp.QuoteMeta`.
fn quote_meta(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Writes one stage; `Ok(false)` means "nothing to do, skip the stage".
pub(crate) fn write_stage(
    w: &mut BashWriter,
    stage: &Stage,
    info: &Info<'_>,
) -> Result<bool, ScriptError> {
    match stage {
        Stage::Prepare => {
            if info.build.hostname.is_empty() {
                w.line(&format!(
                    "echo {}",
                    crate::escape::go_quote("Running on $(hostname)...")
                ));
            } else {
                w.line(&format!(
                    "echo {}",
                    crate::escape::go_quote(&format!(
                        "Running on $(hostname) via {}...",
                        info.build.hostname
                    ))
                ));
            }
            let env_file = w.tmp_file(GITLAB_ENV_FILE);
            w.rm_file(&env_file);
            let masking = w.tmp_file("masking.db");
            w.rm_file(&masking);
            Ok(true)
        }
        Stage::GetSources => write_get_sources(w, info).map(|()| true),
        Stage::ClearWorktree => {
            w.notice("Deleting tracked and untracked files...");
            w.if_directory(&info.project_dir);
            w.cd(&info.project_dir);
            w.command("git", &["rm", "-rf", "--ignore-unmatch", "--quiet", "."]);
            w.command("git", &["clean", "-ffdx", "-q"]);
            w.end_if();
            Ok(true)
        }
        Stage::RestoreCache => write_restore_cache(w, info),
        Stage::DownloadArtifacts => write_download_artifacts(w, info),
        Stage::Step(_) => write_user_script(w, info, stage),
        Stage::AfterScript => {
            let Some(step) = info
                .build
                .job
                .steps
                .iter()
                .find(|step| step.name == "after_script")
            else {
                return Ok(false);
            };
            if step.script.is_empty() {
                return Ok(false);
            }
            write_exports(w, info, false);
            w.cd(&info.project_dir);
            w.notice("Running after script...");
            write_commands(w, info, "after_script_step", &step.script);
            Ok(true)
        }
        Stage::ArchiveOnSuccessCache => write_archive_cache(w, info, true),
        Stage::ArchiveOnFailureCache => write_archive_cache(w, info, false),
        Stage::UploadOnSuccessArtifacts => write_upload_artifacts(w, info, true),
        Stage::UploadOnFailureArtifacts => write_upload_artifacts(w, info, false),
        Stage::Cleanup => write_cleanup(w, info).map(|()| true),
        Stage::ResolveSecrets | Stage::PrepareExecutor => Ok(false),
    }
}

fn write_exports(w: &mut BashWriter, info: &Info<'_>, env_only: bool) {
    for variable in info.variables.iter() {
        if env_only && variable.file {
            let path = w.tmp_file(&variable.key);
            w.variable(&variable.key, &path, false);
        } else {
            w.variable(&variable.key, &variable.value, variable.file);
        }
    }
    let env_file = w.tmp_file(GITLAB_ENV_FILE);
    w.variable("GITLAB_ENV", &env_file, false);
    w.source_env(&env_file);
    if info.flag("FF_GIT_URLS_WITHOUT_TOKENS") {
        let seed = w.tmp_file(GLOBAL_GIT_CONFIG_SEED);
        w.export_raw("GIT_CONFIG_GLOBAL", &seed);
    }
}

/// Echoes and runs user commands (`writeCommands`).
fn write_commands(w: &mut BashWriter, info: &Info<'_>, prefix: &str, commands: &[String]) {
    for (index, command) in commands.iter().enumerate() {
        let command = command.trim();
        if command.is_empty() {
            w.empty_line();
        } else if let Some((first_line, _)) = command.split_once('\n') {
            if info.flag("FF_SCRIPT_SECTIONS") && info.build.job.features.trace_sections {
                let section = format!("{prefix}_{index}");
                w.section_start(
                    &section,
                    &format!("$ {command}"),
                    &["hide_duration=true", "collapsed=true"],
                );
                w.section_end(&section);
            } else {
                w.notice(&format!("$ {first_line} # collapsed multi-line command"));
            }
        } else {
            w.notice(&format!("$ {command}"));
        }
        w.line(command);
        w.check_for_errors();
    }
}

fn write_user_script(
    w: &mut BashWriter,
    info: &Info<'_>,
    stage: &Stage,
) -> Result<bool, ScriptError> {
    let Some(step) = info
        .build
        .job
        .steps
        .iter()
        .find(|step| step.name != "after_script" && Stage::step(&step.name) == *stage)
    else {
        return Ok(false);
    };
    write_exports(w, info, false);
    w.cd(&info.project_dir);
    let hooks = &info.build.runner.hooks;
    if !hooks.pre_build_script.is_empty() {
        write_commands(
            w,
            info,
            "pre_build_script",
            std::slice::from_ref(&hooks.pre_build_script),
        );
    }
    let script: Vec<String> = if step.name == "release" {
        step.script
            .iter()
            .map(|line| info.variables.expand(line))
            .collect()
    } else {
        step.script.clone()
    };
    write_commands(w, info, "script_step", &script);
    if !hooks.post_build_script.is_empty() {
        write_commands(
            w,
            info,
            "post_build_script",
            std::slice::from_ref(&hooks.post_build_script),
        );
    }
    Ok(true)
}

fn write_git_ssl_config(w: &mut BashWriter, info: &Info<'_>, location: &[&str]) {
    let tls_variables = [
        "CI_SERVER_TLS_CA_FILE",
        "CI_SERVER_TLS_CERT_FILE",
        "CI_SERVER_TLS_KEY_FILE",
    ];
    if tls_variables
        .iter()
        .all(|name| info.variables.get(name).is_empty())
    {
        return;
    }
    let Some(host) = info.remote_host() else {
        w.warning("git SSL config: Can't get repository host.");
        return;
    };
    for (variable, config) in [
        ("CI_SERVER_TLS_CA_FILE", "sslCAInfo"),
        ("CI_SERVER_TLS_CERT_FILE", "sslCert"),
        ("CI_SERVER_TLS_KEY_FILE", "sslKey"),
    ] {
        if info.variables.get(variable).is_empty() {
            continue;
        }
        let key = format!("http.{host}.{config}");
        let value = format!("${variable}");
        let mut args = vec!["config"];
        args.extend_from_slice(location);
        args.push(&key);
        args.push(&value);
        w.command_arg_expand("git", &args);
    }
}

fn write_hooks(w: &mut BashWriter, info: &Info<'_>, prefix: &str, script: Vec<String>) {
    let strategy = info.build.settings.git_strategy;
    if script.is_empty() || matches!(strategy, GitStrategy::None | GitStrategy::Empty) {
        return;
    }
    write_commands(w, info, prefix, &script);
}

fn write_get_sources(w: &mut BashWriter, info: &Info<'_>) -> Result<(), ScriptError> {
    write_exports(w, info, false);
    w.variable("GIT_TERMINAL_PROMPT", "0", false);
    w.variable("GCM_INTERACTIVE", "Never", false);

    if info.flag("FF_GIT_URLS_WITHOUT_TOKENS") {
        let ext = w.tmp_file(EXTERNAL_GIT_CONFIG);
        let seed = w.tmp_file(GLOBAL_GIT_CONFIG_SEED);
        w.rm_file(&seed);
        for user_config in ["$HOME/.gitconfig", "$HOME/.config/git/config"] {
            w.if_file_readable(user_config);
            w.command_arg_expand(
                "git",
                &[
                    "config",
                    "--file",
                    &seed,
                    "--add",
                    "include.path",
                    user_config,
                ],
            );
            w.end_if();
        }
        w.command_arg_expand(
            "git",
            &["config", "--file", &seed, "--add", "include.path", &ext],
        );
        if matches!(
            info.build.settings.git_strategy,
            GitStrategy::None | GitStrategy::Empty
        ) {
            w.rm_file(&ext);
            let host = info.remote_host().ok_or_else(|| {
                ScriptError("getting remote URL: the repository URL has no host".into())
            })?;
            w.setup_git_cred_helper(&ext, &format!("credential.{host}"), "gitlab-ci-token");
        }
    }

    if !info.build.shared_environment {
        write_git_ssl_config(w, info, &["--global"]);
    }

    let hooks = &info.build.runner.hooks;
    let mut pre = Vec::new();
    if !hooks.pre_get_sources_script.is_empty() {
        pre.push(hooks.pre_get_sources_script.clone());
    }
    if let Some(hook) = info.build.job.hook("pre_get_sources_script") {
        pre.extend(hook.script.iter().cloned());
    }
    write_hooks(w, info, "pre_clone_script", pre);

    write_clone_fetch(w, info)?;
    write_submodules(w, info)?;

    let mut post = Vec::new();
    if let Some(hook) = info.build.job.hook("post_get_sources_script") {
        post.extend(hook.script.iter().cloned());
    }
    if !hooks.post_get_sources_script.is_empty() {
        post.push(hooks.post_get_sources_script.clone());
    }
    write_hooks(w, info, "post_clone_script", post);

    write_change_ownership(w, info, &[&info.build.dirs.builds_dir]);
    write_clear_git_credentials(w, info);
    Ok(())
}

fn write_change_ownership(w: &mut BashWriter, info: &Info<'_>, dirs: &[&str]) {
    let uid_gid_file = format!("{}/{BUILD_UID_GID_FILE}", info.build.dirs.builds_dir);
    w.if_file(&uid_gid_file);
    for dir in dirs {
        if dir.trim().is_empty() {
            continue;
        }
        w.if_directory(dir);
        w.line(&format!(
            "chown -R \"$(stat -c '%u:%g' '{uid_gid_file}')\" '{dir}'"
        ));
        w.end_if();
    }
    w.end_if();
}

fn write_clear_git_credentials(w: &mut BashWriter, info: &Info<'_>) {
    let Some(host) = info.remote_host() else {
        return;
    };
    if !(host.starts_with("http://") || host.starts_with("https://") || host.starts_with("ssh://"))
    {
        return;
    }
    w.command_with_stdin(
        true,
        &format!("url={host}\nusername=gitlab-ci-token"),
        "git",
        &["credential", "reject"],
    );
}

fn write_clone_fetch(w: &mut BashWriter, info: &Info<'_>) -> Result<(), ScriptError> {
    if !info.lfs_smudge_disabled() {
        w.variable("GIT_LFS_SKIP_SMUDGE", "1", false);
    }
    let project_dir = info.project_dir.clone();
    match info.build.settings.git_strategy {
        GitStrategy::Fetch | GitStrategy::Clone => {
            write_git_cleanup(w, info);
            let (template_dir, remote_url) = setup_template_dir(w, info)?;
            if info.build.settings.git_strategy == GitStrategy::Clone {
                w.rm_dir(&project_dir);
            }
            write_refspec_fetch(w, info, &template_dir, &remote_url);
        }
        GitStrategy::None => {
            w.notice("Skipping Git repository setup");
            w.mkdir(&project_dir);
        }
        GitStrategy::Empty => {
            w.notice("Skipping Git repository setup and creating an empty build directory");
            w.rm_dir(&project_dir);
            w.mkdir(&project_dir);
        }
    }
    if info.build.settings.git_checkout {
        let git = &info.build.job.git_info;
        let short_sha: String = git.sha.chars().take(8).collect();
        w.notice(&format!(
            "Checking out {short_sha} as detached HEAD (ref is {})...",
            git.git_ref
        ));
        let mut args = vec!["-c".to_string(), "submodule.recurse=false".to_string()];
        args.extend(proactive_auth_args(w, info));
        args.extend(["checkout", "-f", "-q"].map(String::from));
        args.push(git.sha.clone());
        w.command("git", &as_refs(&args));
        let clean = &info.build.settings.git_clean_flags;
        if !clean.is_empty() {
            let mut args = vec!["clean".to_string()];
            args.extend(clean.iter().cloned());
            w.command("git", &as_refs(&args));
        }
        if !info.lfs_smudge_disabled() {
            w.if_cmd("git", &["lfs", "version"]);
            w.command("git", &["lfs", "pull"]);
            w.empty_line();
            w.end_if();
        }
    } else {
        w.notice("Skipping Git checkout");
    }
    Ok(())
}

fn as_refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn proactive_auth_args(w: &mut BashWriter, info: &Info<'_>) -> Vec<String> {
    if !info.flag("FF_USE_GIT_PROACTIVE_AUTH") {
        return Vec::new();
    }
    match info.remote_host() {
        Some(host) => vec!["-c".into(), format!("http.{host}.proactiveAuth=basic")],
        None => {
            w.warning("proactive auth: repository host is empty, using unscoped config");
            vec!["-c".into(), "http.proactiveAuth=basic".into()]
        }
    }
}

fn write_git_cleanup(w: &mut BashWriter, info: &Info<'_>) {
    let project_dir = &info.project_dir;
    let submodules = matches!(
        info.build.settings.git_submodule_strategy,
        SubmoduleStrategy::Normal | SubmoduleStrategy::Recursive
    );
    for file in [
        "index.lock",
        "shallow.lock",
        "HEAD.lock",
        "hooks/post-checkout",
        "config.lock",
    ] {
        w.rm_file(&join_path(&[project_dir, ".git", file]));
        if submodules {
            let base = file.rsplit('/').next().unwrap_or(file);
            w.rm_files_recursive(&join_path(&[project_dir, ".git", "modules"]), base);
        }
    }
    w.rm_files_recursive(&join_path(&[project_dir, ".git", "refs"]), "*.lock");

    let mut clean_configs = info.build.executor_name != "shell"
        && info.build.settings.git_strategy != GitStrategy::None;
    if let Some(configured) = info.build.runner.clean_git_config {
        clean_configs = configured;
    }
    if !clean_configs {
        return;
    }
    let template = w.tmp_file(GIT_TEMPLATE_DIR);
    for dir in [template, join_path(&[project_dir, ".git"])] {
        w.rm_file(&join_path(&[&dir, "config"]));
        w.rm_dir(&join_path(&[&dir, "hooks"]));
    }
    if submodules {
        let modules = join_path(&[project_dir, ".git", "modules"]);
        w.rm_files_recursive(&modules, "config");
        w.rm_dirs_recursive(&modules, "hooks");
    }
}

fn setup_template_dir(
    w: &mut BashWriter,
    info: &Info<'_>,
) -> Result<(String, String), ScriptError> {
    w.restrict_tmp_dir();
    let template_dir = w.mk_tmp_dir(GIT_TEMPLATE_DIR);
    let template_file = join_path(&[&template_dir, "config"]);
    let ext_config = w.tmp_file(EXTERNAL_GIT_CONFIG);
    if info.build.safe_directory_checkout {
        w.command(
            "git",
            &[
                "config",
                "--global",
                "--add",
                "safe.directory",
                &info.project_dir,
            ],
        );
    }
    for (key, value) in [
        ("init.defaultBranch", "none"),
        ("fetch.recurseSubmodules", "false"),
        ("credential.interactive", "never"),
        ("gc.autoDetach", "false"),
    ] {
        w.command("git", &["config", "-f", &template_file, key, value]);
    }

    w.rm_file(&ext_config);
    if info.flag("FF_USE_GITALY_CORRELATION_ID") {
        let correlation = &info.build.correlation_id;
        w.command_arg_expand(
            "git",
            &[
                "config",
                "-f",
                &ext_config,
                "http.extraHeader",
                &format!("X-Gitaly-Correlation-ID: {correlation}"),
            ],
        );
        w.notice(&format!("Gitaly correlation ID: {correlation}"));
    }
    if info.flag("FF_USE_GIT_BUNDLE_URIS") {
        w.command_arg_expand(
            "git",
            &["config", "-f", &ext_config, "transfer.bundleURI", "true"],
        );
    }
    if info.build.shared_environment {
        write_git_ssl_config(w, info, &["-f", &ext_config]);
    }
    let with_credentials = info.remote_url_with_credentials();
    let without_credentials = info.remote_url_without_credentials();
    if with_credentials != without_credentials {
        let stanza = format!("url.{with_credentials}.insteadOf");
        let pattern = format!("^{}$", quote_meta(&without_credentials));
        w.command_arg_expand(
            "git",
            &[
                "config",
                "--file",
                &ext_config,
                "--replace-all",
                &stanza,
                &without_credentials,
                &pattern,
            ],
        );
    }
    if info.flag("FF_GIT_URLS_WITHOUT_TOKENS") {
        let host = info.remote_host().ok_or_else(|| {
            ScriptError("setting up external git config: the repository URL has no host".into())
        })?;
        w.setup_git_cred_helper(
            &ext_config,
            &format!("credential.{host}"),
            "gitlab-ci-token",
        );
    }
    let base_name = EXTERNAL_GIT_CONFIG;
    let pattern = format!("{}$", quote_meta(base_name));
    w.command_arg_expand(
        "git",
        &[
            "config",
            "--file",
            &template_file,
            "--replace-all",
            "include.path",
            &ext_config,
            &pattern,
        ],
    );
    w.export_raw(EXT_CONFIG_ENV, &ext_config);
    Ok((template_dir, without_credentials))
}

fn write_refspec_fetch(w: &mut BashWriter, info: &Info<'_>, template_dir: &str, remote_url: &str) {
    let project_dir = &info.project_dir;
    let git = &info.build.job.git_info;
    let depth = git.depth;
    if depth > 0 {
        w.notice(&format!(
            "Fetching changes with git depth set to {depth}..."
        ));
    } else {
        w.notice("Fetching changes...");
    }
    let object_format = git.repo_object_format.as_str();
    if !object_format.is_empty() && object_format != "sha1" {
        w.command(
            "git",
            &[
                "init",
                project_dir,
                "--template",
                template_dir,
                "--object-format",
                object_format,
            ],
        );
    } else {
        w.command("git", &["init", project_dir, "--template", template_dir]);
    }
    w.cd(project_dir);
    w.if_cmd("git", &["remote", "add", "origin", remote_url]);
    w.notice("Created fresh repository.");
    w.else_();
    w.command("git", &["remote", "set-url", "origin", remote_url]);
    let pattern = format!("{}$", quote_meta(EXTERNAL_GIT_CONFIG));
    w.command_arg_expand(
        "git",
        &[
            "config",
            "--file",
            ".git/config",
            "--replace-all",
            "include.path",
            &format!("${EXT_CONFIG_ENV}"),
            &pattern,
        ],
    );
    w.end_if();

    let version = &info.build.runner.version;
    let mut args = vec![
        "-c".to_string(),
        format!(
            "http.userAgent={} {} {}",
            version.name, version.version, version.platform
        ),
    ];
    args.extend(proactive_auth_args(w, info));
    args.extend(["fetch", "origin", "--no-recurse-submodules"].map(String::from));
    args.extend(git.refspecs.iter().cloned());
    if depth > 0 {
        args.push("--depth".into());
        args.push(depth.to_string());
    }
    args.extend(info.build.settings.git_fetch_extra_flags.iter().cloned());
    if depth <= 0 {
        let mut unshallow = args.clone();
        unshallow.push("--unshallow".into());
        w.if_file(".git/shallow");
        w.command("git", &as_refs(&unshallow));
        w.else_();
        w.command("git", &as_refs(&args));
        w.end_if();
    } else {
        w.command("git", &as_refs(&args));
    }
}

fn write_submodules(w: &mut BashWriter, info: &Info<'_>) -> Result<(), ScriptError> {
    let recursive = match &info.build.settings.git_submodule_strategy {
        SubmoduleStrategy::None => {
            w.notice("Skipping Git submodules setup");
            return Ok(());
        }
        SubmoduleStrategy::Normal => false,
        SubmoduleStrategy::Recursive => true,
        SubmoduleStrategy::Invalid(_) => {
            return Err(ScriptError("unknown GIT_SUBMODULE_STRATEGY".into()));
        }
    };
    let settings = &info.build.settings;
    let depth = settings.git_submodule_depth;
    let notice = match (recursive, depth > 0) {
        (true, true) => {
            format!("Updating/initializing submodules recursively with git depth set to {depth}...")
        }
        (true, false) => "Updating/initializing submodules recursively...".to_string(),
        (false, true) => {
            format!("Updating/initializing submodules with git depth set to {depth}...")
        }
        (false, false) => "Updating/initializing submodules...".to_string(),
    };
    w.notice(&notice);
    if settings
        .git_submodule_paths
        .iter()
        .any(|path| path == ":(exclude)")
    {
        return Err(ScriptError(
            "GIT_SUBMODULE_PATHS: invalid submodule pathspec \":(exclude)\"".into(),
        ));
    }
    let mut path_args: Vec<String> = Vec::new();
    if !settings.git_submodule_paths.is_empty() {
        path_args.push("--".into());
        path_args.extend(settings.git_submodule_paths.iter().cloned());
    }
    w.command("git", &["submodule", "init"]);
    let mut sync: Vec<String> = vec!["submodule".into(), "sync".into()];
    let mut update: Vec<String> = vec!["submodule".into(), "update".into(), "--init".into()];
    let mut foreach: Vec<String> = vec!["submodule".into(), "foreach".into()];
    if recursive {
        sync.push("--recursive".into());
        update.push("--recursive".into());
        foreach.push("--recursive".into());
    }
    sync.extend(path_args.iter().cloned());
    w.command("git", &as_refs(&sync));
    if depth > 0 {
        update.push("--depth".into());
        update.push(depth.to_string());
    }
    update.extend(settings.git_submodule_update_flags.iter().cloned());
    update.extend(path_args.iter().cloned());
    let clean_flags = if settings.git_clean_flags.is_empty() {
        vec!["-ffdx".to_string()]
    } else {
        settings.git_clean_flags.clone()
    };
    let mut clean = foreach.clone();
    clean.push("git".into());
    clean.push("clean".into());
    clean.extend(clean_flags);
    let mut reset = foreach.clone();
    reset.extend(["git", "reset", "--hard"].map(String::from));
    w.command("git", &as_refs(&clean));
    w.command("git", &as_refs(&reset));
    let with_creds = |args: &[String]| -> Vec<String> {
        let mut out = vec!["-c".to_string(), format!("include.path=${EXT_CONFIG_ENV}")];
        out.extend(args.iter().cloned());
        out
    };
    w.if_cmd_with_output_arg_expand("git", &as_refs(&with_creds(&update)));
    w.notice("Updated submodules");
    w.command("git", &as_refs(&sync));
    w.else_();
    w.warning("Updating submodules failed. Retrying...");
    if settings
        .git_submodule_update_flags
        .iter()
        .any(|flag| flag.eq_ignore_ascii_case("--remote"))
    {
        let mut fetch = foreach.clone();
        fetch.extend(
            [
                "git",
                "fetch",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ]
            .map(String::from),
        );
        w.command_arg_expand("git", &as_refs(&with_creds(&fetch)));
    }
    w.command("git", &as_refs(&sync));
    w.command_arg_expand("git", &as_refs(&with_creds(&update)));
    w.command("git", &as_refs(&reset));
    w.end_if();
    w.command("git", &as_refs(&clean));
    w.notice("Configuring submodules to use parent git credentials...");
    let mut configure = foreach.clone();
    if !recursive {
        configure.push("--recursive".into());
    }
    configure.extend(["git", "config", "--replace-all", "include.path"].map(String::from));
    configure.push(format!("${EXT_CONFIG_ENV}"));
    w.command_arg_expand("git", &as_refs(&configure));
    if !info.lfs_smudge_disabled() {
        w.if_cmd("git", &["lfs", "version"]);
        w.notice("Pulling LFS files...");
        let mut lfs = foreach.clone();
        lfs.extend(["git", "lfs", "pull"].map(String::from));
        w.command_arg_expand("git", &as_refs(&with_creds(&lfs)));
        w.end_if();
    }
    Ok(())
}

fn guard_runner_command(
    w: &mut BashWriter,
    info: &Info<'_>,
    action: &str,
    body: impl FnOnce(&mut BashWriter),
) {
    let command = info.runner_command;
    if command.is_empty() {
        w.warning(&format!("{action} is not supported by this executor."));
        return;
    }
    w.if_cmd(command, &["--version"]);
    body(w);
    w.else_();
    w.warning(&format!("Missing {command}. {action} is disabled."));
    w.end_if();
}

fn write_download_artifacts(w: &mut BashWriter, info: &Info<'_>) -> Result<bool, ScriptError> {
    let dependencies: Vec<_> = info
        .build
        .job
        .dependencies
        .iter()
        .filter(|dependency| !dependency.artifacts_file.filename.is_empty())
        .collect();
    if dependencies.is_empty() {
        return Ok(false);
    }
    write_exports(w, info, false);
    w.cd(&info.project_dir);
    let url = info.build.runner.url.clone();
    guard_runner_command(w, info, "Artifacts downloading", |w| {
        for dependency in &dependencies {
            w.notice(&format!(
                "Downloading artifacts for {} ({})...",
                dependency.name, dependency.id
            ));
            let id = dependency.id.to_string();
            // The helper reads its token from CI_JOB_TOKEN (as upstream's does), so the token
            // stays out of the argument list `ps` shows.
            w.command_with_env(
                &[("CI_JOB_TOKEN", dependency.token.expose())],
                info.runner_command,
                &["artifacts-downloader", "--url", &url, "--id", &id],
            );
        }
    });
    write_change_ownership(
        w,
        info,
        &[&info.build.dirs.cache_dir, &info.build.dirs.builds_dir],
    );
    Ok(true)
}

/// Upstream's cache key sanitising: `%2F`→`/`, `%2E`→`.`, `\`→`/`, cleaned, segments trimmed.
pub fn sanitize_cache_key(raw: &str) -> Result<String, String> {
    let replaced = raw
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%2E", ".")
        .replace("%2e", ".")
        .replace('\\', "/");
    let cleaned = clean_path(&replaced);
    let segments: Vec<String> = cleaned
        .split('/')
        .map(|segment| segment.trim_end().to_string())
        .collect();
    let mut key = segments.join("/");
    while key.ends_with('/') {
        key.pop();
    }
    if key.is_empty() || key == "." || key == ".." || key.starts_with("../") || key.starts_with('/')
    {
        return Err(format!("cache key {raw:?} could not be sanitized"));
    }
    Ok(key)
}

fn cache_key(info: &Info<'_>, cache: &Cache) -> String {
    if cache.key.is_empty() {
        format!(
            "{}/{}",
            info.build.job.job_info.name, info.build.job.git_info.git_ref
        )
    } else {
        info.variables.expand(&cache.key)
    }
}

/// The local archive path, relative to the project dir as upstream passes it to the helper.
fn cache_archive(info: &Info<'_>, key: &str) -> String {
    let archive = join_path(&[&info.build.dirs.cache_dir, key, "cache.zip"]);
    relative_path(&info.project_dir, &archive)
}

fn relative_path(from_dir: &str, to: &str) -> String {
    let from: Vec<&str> = from_dir
        .split('/')
        .filter(|part| !part.is_empty())
        .collect();
    let target: Vec<&str> = to.split('/').filter(|part| !part.is_empty()).collect();
    let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&target[common..]);
    parts.join("/")
}

/// The shared cache and the object name of `key` in it, when `[runners.cache]` has one.
fn remote_object<'a>(info: &'a Info<'_>, key: &str) -> Option<(&'a RemoteCache, String)> {
    let remote = info.build.runner.remote_cache.as_ref()?;
    let object = remote.object_name(
        &info.build.runner.short_token(),
        info.build.job.job_info.project_id,
        key,
    );
    Some((remote, object))
}

/// `CACHE_METADATA` as upstream's `json.Marshal` writes it: the key as a JSON string with Go's
/// HTML-safe escapes (`<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX`).
fn cache_metadata(key: &str) -> String {
    let mut quoted = String::with_capacity(key.len() + 2);
    quoted.push('"');
    for c in key.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                quoted.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    format!("{{\"cachekey\":{quoted}}}")
}

/// Presigned URLs outlive the job: its timeout plus an hour.
fn url_lifetime(info: &Info<'_>) -> Duration {
    info.build
        .job_timeout()
        .saturating_add(Duration::from_secs(3600))
}

fn cache_paths(cache: &Cache) -> Vec<String> {
    let mut args = Vec::new();
    for path in &cache.paths {
        args.push("--path".to_string());
        args.push(path.clone());
    }
    if cache.untracked {
        args.push("--untracked".into());
    }
    args
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CacheDirection {
    Pull,
    Push,
}

/// The sanitized key of `cache`, or `None` (with upstream's notice) when the key is unusable or
/// the policy does not allow this direction.
fn usable_cache_key(
    w: &mut BashWriter,
    info: &Info<'_>,
    cache: &Cache,
    direction: CacheDirection,
) -> Result<Option<String>, ScriptError> {
    let (action, refusal, policy) = match direction {
        CacheDirection::Pull => ("extraction", "Not downloading", "pull"),
        CacheDirection::Push => ("archiving", "Not uploading", "push"),
    };
    let raw_key = cache_key(info, cache);
    let key = match sanitize_cache_key(&raw_key) {
        Ok(key) => key,
        Err(error) => {
            w.notice(&format!("Skipping cache {action} due to {error}"));
            return Ok(None);
        }
    };
    if key != raw_key {
        w.warning(&format!("cache key {raw_key:?} sanitized to {key:?}"));
    }
    if !policy_allows(info, cache, policy)? {
        w.notice(&format!("{refusal} cache {key} due to policy"));
        return Ok(None);
    }
    Ok(Some(key))
}

fn policy_allows(info: &Info<'_>, cache: &Cache, wanted: &str) -> Result<bool, ScriptError> {
    let policy = info.variables.expand(&cache.policy);
    match policy.as_str() {
        "" | "pull-push" => Ok(true),
        "pull" | "push" => Ok(policy == wanted),
        other => Err(ScriptError(format!("unknown cache policy {other:?}"))),
    }
}

fn write_restore_cache(w: &mut BashWriter, info: &Info<'_>) -> Result<bool, ScriptError> {
    let caches: Vec<&Cache> = info
        .build
        .job
        .cache
        .iter()
        .filter(|cache| !cache_paths(cache).is_empty())
        .collect();
    if caches.is_empty() {
        return Ok(false);
    }
    write_exports(w, info, false);
    w.cd(&info.project_dir);
    let timeout = info.build.settings.cache_request_timeout.to_string();
    for cache in caches {
        let Some(key) = usable_cache_key(w, info, cache, CacheDirection::Pull)? else {
            continue;
        };
        let mut keys = vec![key];
        for fallback in &cache.fallback_keys {
            if let Ok(fallback) = sanitize_cache_key(&info.variables.expand(fallback)) {
                keys.push(fallback);
            }
        }
        let fallback = info.variables.value("CACHE_FALLBACK_KEY");
        if !fallback.is_empty() {
            if fallback
                .trim_end_matches(['.', ' '])
                .ends_with("-protected")
            {
                w.warning(&format!(
                    "CACHE_FALLBACK_KEY {fallback:?} not allowed to end in \"-protected\""
                ));
            } else if let Ok(fallback) = sanitize_cache_key(&fallback) {
                keys.push(fallback);
            }
        }
        guard_runner_command(w, info, "Extracting cache", |w| {
            write_extract_chain(w, info, &keys, &timeout);
        });
    }
    write_change_ownership(
        w,
        info,
        &[&info.build.dirs.cache_dir, &info.build.dirs.builds_dir],
    );
    Ok(true)
}

fn write_extract_chain(w: &mut BashWriter, info: &Info<'_>, keys: &[String], timeout: &str) {
    let Some((key, rest)) = keys.split_first() else {
        return;
    };
    w.notice(&format!("Checking cache for {key}..."));
    let archive = cache_archive(info, key);
    let mut args: Vec<String> = vec![
        "cache-extractor".into(),
        "--file".into(),
        archive,
        "--timeout".into(),
        timeout.into(),
    ];
    if let Some((remote, object)) = remote_object(info, key) {
        args.push("--url".into());
        args.push(remote.download_url(&object, SystemTime::now(), url_lifetime(info)));
    }
    w.if_cmd_with_output(info.runner_command, &as_refs(&args));
    w.notice("Successfully extracted cache");
    w.else_();
    w.warning("Failed to extract cache");
    write_extract_chain(w, info, rest, timeout);
    w.end_if();
}

fn write_archive_cache(
    w: &mut BashWriter,
    info: &Info<'_>,
    on_success: bool,
) -> Result<bool, ScriptError> {
    let wanted = if on_success {
        "on_success"
    } else {
        "on_failure"
    };
    let caches: Vec<&Cache> = info
        .build
        .job
        .cache
        .iter()
        .filter(|cache| {
            let when = if cache.when.is_empty() {
                "on_success"
            } else {
                cache.when.as_str()
            };
            (when == "always" || when == wanted) && !cache_paths(cache).is_empty()
        })
        .collect();
    if caches.is_empty() {
        return Ok(false);
    }
    write_exports(w, info, false);
    w.cd(&info.project_dir);
    let timeout = info.build.settings.cache_request_timeout.to_string();
    for cache in caches {
        let Some(key) = usable_cache_key(w, info, cache, CacheDirection::Push)? else {
            continue;
        };
        let archive = cache_archive(info, &key);
        let paths = cache_paths(cache);
        guard_runner_command(w, info, "Creating cache", |w| {
            w.notice(&format!("Creating cache {key}..."));
            let env_file = w.dot_env_variables(
                CACHE_ENV_FILE,
                &[("CACHE_METADATA".into(), cache_metadata(&key))],
            );
            let mut args: Vec<String> = vec![
                "cache-archiver".into(),
                "--file".into(),
                archive.clone(),
                "--timeout".into(),
                timeout.clone(),
            ];
            let remote = remote_object(info, &key);
            if let Some((remote, _)) = &remote {
                if remote.max_uploaded_archive_size > 0 {
                    args.push("--max-uploaded-archive-size".into());
                    args.push(remote.max_uploaded_archive_size.to_string());
                }
            }
            args.extend(paths.iter().cloned());
            if let Some((remote, object)) = &remote {
                let upload = remote.upload(object, SystemTime::now(), url_lifetime(info));
                args.push("--url".into());
                args.push(upload.url);
                for (name, value) in upload.headers {
                    args.push("--header".into());
                    args.push(format!("{name}: {value}"));
                }
            }
            args.push("--env-file".into());
            args.push(env_file.clone());
            w.if_cmd_with_output(info.runner_command, &as_refs(&args));
            w.notice("Created cache");
            w.else_();
            w.warning("Failed to create cache");
            w.end_if();
            w.rm_file(&env_file);
        });
    }
    Ok(true)
}

fn artifact_matches(artifact: &Artifact, on_success: bool) -> bool {
    let when = if artifact.when.is_empty() {
        "on_success"
    } else {
        artifact.when.as_str()
    };
    when == "always"
        || (on_success && when == "on_success")
        || (!on_success && when == "on_failure")
}

fn write_upload_artifacts(
    w: &mut BashWriter,
    info: &Info<'_>,
    on_success: bool,
) -> Result<bool, ScriptError> {
    if info.build.runner.url.is_empty() {
        return Ok(false);
    }
    let artifacts: Vec<&Artifact> = info
        .build
        .job
        .artifacts
        .iter()
        .filter(|artifact| artifact_matches(artifact, on_success))
        .filter(|artifact| {
            !artifact.paths.is_empty() || !artifact.exclude.is_empty() || artifact.untracked
        })
        .collect();
    if artifacts.is_empty() {
        return Ok(false);
    }
    write_exports(w, info, false);
    w.cd(&info.project_dir);
    let url = info.build.runner.url.clone();
    let token = info.build.job.token.expose().clone();
    let id = info.build.job.id.to_string();
    guard_runner_command(w, info, "Uploading artifacts", |w| {
        for artifact in artifacts {
            let mut args: Vec<String> = vec![
                "artifacts-uploader".into(),
                "--url".into(),
                url.clone(),
                "--id".into(),
                id.clone(),
            ];
            for path in &artifact.paths {
                args.push("--path".into());
                args.push(path.clone());
            }
            for path in &artifact.exclude {
                args.push("--exclude".into());
                args.push(path.clone());
            }
            if artifact.untracked {
                args.push("--untracked".into());
            }
            for (flag, value) in [
                ("--name", &artifact.name),
                ("--expire-in", &artifact.expire_in),
                ("--artifact-format", &artifact.artifact_format),
                ("--artifact-type", &artifact.artifact_type),
            ] {
                if !value.is_empty() {
                    args.push(flag.into());
                    args.push(value.clone());
                }
            }
            w.notice("Uploading artifacts...");
            w.command_with_env(
                &[("CI_JOB_TOKEN", &token)],
                info.runner_command,
                &as_refs(&args),
            );
        }
    });
    Ok(true)
}

fn write_cleanup(w: &mut BashWriter, info: &Info<'_>) -> Result<(), ScriptError> {
    write_exports(w, info, true);
    write_clear_git_credentials(w, info);
    for name in [
        GITLAB_ENV_FILE,
        "masking.db",
        EXTERNAL_GIT_CONFIG,
        GLOBAL_GIT_CONFIG_SEED,
    ] {
        let path = w.tmp_file(name);
        w.rm_file(&path);
    }
    for variable in info.variables.iter().filter(|variable| variable.file) {
        let path = w.tmp_file(&variable.key);
        w.rm_file(&path);
    }
    if info.flag("FF_ENABLE_JOB_CLEANUP") {
        match info.build.settings.git_strategy {
            GitStrategy::Clone | GitStrategy::Empty => w.rm_dir(&info.project_dir),
            GitStrategy::Fetch => {
                w.cd(&info.project_dir);
                let clean = &info.build.settings.git_clean_flags;
                if !clean.is_empty() {
                    let mut args = vec!["clean".to_string()];
                    args.extend(clean.iter().cloned());
                    w.command("git", &as_refs(&args));
                }
                w.command("git", &["reset", "--hard"]);
            }
            GitStrategy::None => w.notice("Skipping build directory cleanup step"),
        }
    }
    write_git_cleanup(w, info);
    w.rm_file(&join_path(&[
        &info.build.dirs.builds_dir,
        BUILD_UID_GID_FILE,
    ]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_sanitized_like_upstream() {
        assert_eq!(sanitize_cache_key("a%2Fb").unwrap(), "a/b");
        assert_eq!(sanitize_cache_key("a\\b ").unwrap(), "a/b");
        assert_eq!(sanitize_cache_key("job/main").unwrap(), "job/main");
        assert!(sanitize_cache_key("..").is_err());
        assert!(sanitize_cache_key("").is_err());
    }

    #[test]
    fn relative_archive_paths() {
        assert_eq!(
            relative_path(
                "/builds/group/project",
                "/cache/group/project/key/cache.zip"
            ),
            "../../../cache/group/project/key/cache.zip"
        );
    }

    #[test]
    fn userinfo_is_stripped() {
        assert_eq!(
            strip_userinfo("https://gitlab-ci-token:abc@host:8080/g/p.git"),
            "https://host:8080/g/p.git"
        );
    }
}
