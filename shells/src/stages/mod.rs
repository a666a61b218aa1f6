//! What each stage's script does (upstream's `AbstractShell.writeScript` dispatch, 3.4–3.7).
//!
//! Layout: this file dispatches each stage ([`write_stage`]), holds what every stage shares
//! ([`Info`], the exports, ownership and helper-command guards) and writes the small stages
//! (prepare, clear worktree, after_script, cleanup); `git` writes get_sources, `cache` the
//! restore and archive stages, `artifacts` the download and upload stages, and `steps` the user
//! script steps.

mod artifacts;
mod cache;
mod git;
mod git_auth;
mod steps;

pub use cache::sanitize_cache_key;

use runner_core::build::BuildContext;
use runner_core::dirs::{join_path, split_url};
use runner_core::feature_flags::FeatureFlag;
use runner_core::script::ScriptError;
use runner_core::settings::{GitStrategy, SubmoduleStrategy};
use runner_core::stage::Stage;
use runner_core::url::strip_userinfo;
use runner_core::variables::Variables;

use crate::writer::BashWriter;
use artifacts::{write_download_artifacts, write_upload_artifacts};
use cache::{write_archive_cache, write_restore_cache};
use git::{write_clear_git_credentials, write_get_sources, write_git_cleanup};
use steps::{write_commands, write_user_script};

const GITLAB_ENV_FILE: &str = "gitlab_runner_env";
const EXTERNAL_GIT_CONFIG: &str = ".gitlab-runner.ext.conf";
const GLOBAL_GIT_CONFIG_SEED: &str = ".glr.gconf";
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

    fn flag(&self, flag: FeatureFlag) -> bool {
        self.build.flags.enabled(flag)
    }

    fn lfs_smudge_disabled(&self) -> bool {
        self.build.settings.git_lfs_skip_smudge
    }

    /// What git's URLs and `insteadOf` rules are built from.
    fn git_auth(&self) -> git_auth::GitAuth<'_> {
        git_auth::GitAuth {
            clone_url: &self.build.runner.clone_url,
            credentials_url: &self.build.runner.url,
            repo_url: self.build.job.git_info.repo_url.expose(),
            force_https: self.build.settings.git_submodule_force_https,
            token: self.build.job.token.expose(),
            project_path: self.variables.value("CI_PROJECT_PATH"),
            server_host: self.variables.value("CI_SERVER_HOST"),
            ssh_host: self.variables.value("CI_SERVER_SHELL_SSH_HOST"),
            ssh_port: self.variables.value("CI_SERVER_SHELL_SSH_PORT"),
            authenticated: !self.flag(FeatureFlag::GitUrlsWithoutTokens),
        }
    }

    /// The remote URL, with the job token unless `FF_GIT_URLS_WITHOUT_TOKENS`: `clone_url` +
    /// project path, or the payload's `repo_url`.
    fn remote_url_with_credentials(&self) -> String {
        self.git_auth().remote_url()
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
    if info.flag(FeatureFlag::GitUrlsWithoutTokens) {
        let seed = w.tmp_file(GLOBAL_GIT_CONFIG_SEED);
        w.export_raw("GIT_CONFIG_GLOBAL", &seed);
    }
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

fn as_refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
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
    if info.flag(FeatureFlag::EnableJobCleanup) {
        write_cleanup_build_directory(w, info);
    }
    write_git_cleanup(w, info);
    w.rm_file(&join_path(&[
        &info.build.dirs.builds_dir,
        BUILD_UID_GID_FILE,
    ]));
    Ok(())
}

/// `FF_ENABLE_JOB_CLEANUP`: leaves the project directory as the next job of this runner should
/// find it. A clone (or empty directory) is removed; a fetched repository is kept, cleaned and
/// reset, and so are its submodules when `GIT_SUBMODULE_STRATEGY` checked them out.
fn write_cleanup_build_directory(w: &mut BashWriter, info: &Info<'_>) {
    let settings = &info.build.settings;
    match settings.git_strategy {
        GitStrategy::Clone | GitStrategy::Empty => w.rm_dir(&info.project_dir),
        GitStrategy::Fetch => {
            w.cd(&info.project_dir);
            let mut clean = Vec::new();
            if !settings.git_clean_flags.is_empty() {
                clean.push("clean".to_string());
                clean.extend(settings.git_clean_flags.iter().cloned());
                w.command("git", &as_refs(&clean));
            }
            let reset = ["reset".to_string(), "--hard".to_string()];
            w.command("git", &as_refs(&reset));

            let mut foreach = vec!["submodule".to_string(), "foreach".to_string()];
            match settings.git_submodule_strategy {
                SubmoduleStrategy::Normal => {}
                SubmoduleStrategy::Recursive => foreach.push("--recursive".into()),
                SubmoduleStrategy::None | SubmoduleStrategy::Invalid(_) => return,
            }
            foreach.push("git".into());
            if !clean.is_empty() {
                let mut args = foreach.clone();
                args.extend(clean);
                w.command("git", &as_refs(&args));
            }
            foreach.extend(reset);
            w.command("git", &as_refs(&foreach));
        }
        GitStrategy::None => w.notice("Skipping build directory cleanup step"),
    }
}

#[cfg(test)]
mod tests;
