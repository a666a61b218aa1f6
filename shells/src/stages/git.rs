//! The get_sources stage: git credentials and SSL config, clone or fetch, checkout, submodules,
//! and the git cleanup the cleanup stage reuses.

use runner_core::dirs::join_path;
use runner_core::feature_flags::FeatureFlag;
use runner_core::script::ScriptError;
use runner_core::settings::{GitStrategy, SubmoduleStrategy};

use super::steps::write_commands;
use super::{
    as_refs, write_change_ownership, write_exports, Info, EXTERNAL_GIT_CONFIG,
    GLOBAL_GIT_CONFIG_SEED,
};
use crate::writer::BashWriter;

const GIT_TEMPLATE_DIR: &str = "git-template";
const EXT_CONFIG_ENV: &str = "GLR_EXT_GIT_CONFIG_PATH";

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

pub(super) fn write_get_sources(w: &mut BashWriter, info: &Info<'_>) -> Result<(), ScriptError> {
    write_exports(w, info, false);
    w.variable("GIT_TERMINAL_PROMPT", "0", false);
    w.variable("GCM_INTERACTIVE", "Never", false);

    if info.flag(FeatureFlag::GitUrlsWithoutTokens) {
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

pub(super) fn write_clear_git_credentials(w: &mut BashWriter, info: &Info<'_>) {
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
                write_clone_if_possible(w, info, &template_dir, &remote_url);
            } else {
                write_refspec_fetch(w, info, &template_dir, &remote_url);
            }
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

fn proactive_auth_args(w: &mut BashWriter, info: &Info<'_>) -> Vec<String> {
    if !info.flag(FeatureFlag::UseGitProactiveAuth) {
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

pub(super) fn write_git_cleanup(w: &mut BashWriter, info: &Info<'_>) {
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
    if info.flag(FeatureFlag::UseGitalyCorrelationId) {
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
    if info.flag(FeatureFlag::UseGitBundleUris) {
        w.command_arg_expand(
            "git",
            &["config", "-f", &ext_config, "transfer.bundleURI", "true"],
        );
    }
    if info.build.shared_environment {
        write_git_ssl_config(w, info, &["-f", &ext_config]);
    }
    let without_credentials = info.remote_url_without_credentials();
    for (with, without) in info.git_auth().instead_ofs() {
        let stanza = format!("url.{with}.insteadOf");
        let pattern = format!("^{}$", quote_meta(&without));
        w.command_arg_expand(
            "git",
            &[
                "config",
                "--file",
                &ext_config,
                "--replace-all",
                &stanza,
                &without,
                &pattern,
            ],
        );
    }
    if info.flag(FeatureFlag::GitUrlsWithoutTokens) {
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

    let mut args = vec!["-c".to_string(), user_agent_config(info)];
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

/// `http.userAgent=<name> <version> <os>/<arch>`, which git sends with every request.
fn user_agent_config(info: &Info<'_>) -> String {
    let version = &info.build.runner.version;
    format!(
        "http.userAgent={} {} {}",
        version.name, version.version, version.platform
    )
}

/// The git release whose `git clone --revision` can clone a ref that is not a branch or tag.
const GIT_NATIVE_CLONE_MIN_VERSION: &str = "2.49";

/// `GIT_STRATEGY=clone`: removes the old clone, then fetches into a fresh repository; with
/// `FF_USE_GIT_NATIVE_CLONE` the script uses `git clone` instead when the host's git is recent
/// enough, and falls back to the fetch otherwise.
fn write_clone_if_possible(
    w: &mut BashWriter,
    info: &Info<'_>,
    template_dir: &str,
    remote_url: &str,
) {
    w.rm_dir(&info.project_dir);
    if !info.flag(FeatureFlag::UseGitNativeClone) {
        write_refspec_fetch(w, info, template_dir, remote_url);
        return;
    }
    w.if_git_version_is_at_least(GIT_NATIVE_CLONE_MIN_VERSION);
    write_native_clone(w, info, template_dir, remote_url);
    w.else_();
    write_refspec_fetch(w, info, template_dir, remote_url);
    w.end_if();
}

/// `git clone --no-checkout` of the job's ref (`--revision` for a full `refs/...` name,
/// `--branch` otherwise) with `GIT_CLONE_EXTRA_FLAGS`; the checkout follows as for a fetch.
fn write_native_clone(w: &mut BashWriter, info: &Info<'_>, template_dir: &str, remote_url: &str) {
    let project_dir = &info.project_dir;
    let git = &info.build.job.git_info;
    let depth = git.depth;
    let git_ref = git.git_ref.as_str();
    if depth > 0 {
        w.notice(&format!(
            "Cloning repository for {git_ref} with git depth set to {depth}..."
        ));
    } else if !git_ref.is_empty() {
        w.notice(&format!("Cloning repository for {git_ref}..."));
    } else {
        w.notice("Cloning repository...");
    }
    let mut args = vec!["-c".to_string(), user_agent_config(info)];
    args.extend(proactive_auth_args(w, info));
    args.extend(
        [
            "clone",
            "--no-checkout",
            remote_url,
            project_dir,
            "--template",
            template_dir,
        ]
        .map(String::from),
    );
    if depth > 0 {
        args.push("--depth".into());
        args.push(depth.to_string());
    }
    if git_ref.starts_with("refs/") {
        args.push("--revision".into());
        args.push(git_ref.into());
    } else if !git_ref.is_empty() {
        args.push("--branch".into());
        args.push(git_ref.into());
    }
    args.extend(info.build.settings.git_clone_extra_flags.iter().cloned());
    w.command("git", &as_refs(&args));
    w.cd(project_dir);
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
