//! Stage scripts: snapshots of what is generated, and the scripts executed under real shells.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test or benchmark fails"
)]

use std::path::Path;
use std::process::Command;

use runner_core::build::{BuildContext, BuildInput, RunnerSettings};
use runner_core::executor::{ExecutorDefaults, ShellType};
use runner_core::job::JobResponse;
use runner_core::script::ScriptGenerator;
use runner_core::stage::Stage;
use shells::{BashShell, ShellKind};

fn job_json(repo_url: &str, sha: &str, extra_variables: &str) -> String {
    format!(
        r#"{{
        "id": 42, "token": "job-token-secret", "allow_git_fetch": false,
        "job_info": {{"name": "test", "stage": "test", "project_id": 7, "project_name": "demo"}},
        "git_info": {{"repo_url": "{repo_url}", "ref": "main", "sha": "{sha}", "before_sha": "", "ref_type": "branch",
                      "refspecs": ["+refs/heads/*:refs/remotes/origin/*"], "depth": 0}},
        "runner_info": {{"timeout": 3600}},
        "variables": [
            {{"key": "CI_PROJECT_PATH", "value": "group/demo", "public": true}},
            {{"key": "GREETING", "value": "hello $NAME", "public": true}},
            {{"key": "NAME", "value": "world", "public": true}},
            {{"key": "RAW", "value": "$NAME", "public": true, "raw": true}},
            {{"key": "CONFIG_FILE", "value": "file contents\nline 2", "public": true, "file": true}},
            {{"key": "GITLAB_FEATURES", "value": "", "public": true}}
            {extra_variables}
        ],
        "steps": [
            {{"name": "script", "script": ["echo \"$GREETING\"", "echo \"raw=$RAW\"", "cat \"$CONFIG_FILE\"", "echo \"A=from-script\" >> \"$GITLAB_ENV\"", "for i in 1 2; do\n  echo loop $i\ndone"], "timeout": 3600, "when": "on_success"}},
            {{"name": "after_script", "script": ["echo \"after A=$A status=$CI_JOB_STATUS\""], "timeout": 3600, "when": "always"}}
        ],
        "features": {{"trace_sections": true}}
    }}"#
    )
}

fn context(builds_dir: &str, json: &str) -> BuildContext {
    let job = JobResponse::from_json(json.as_bytes()).expect("valid job json");
    let input = BuildInput {
        job,
        runner: RunnerSettings {
            name: "test-runner".into(),
            token: "glrt-abcdefghijklmnop".into(),
            system_id: "s_0123456789ab".into(),
            url: "http://gitlab.example".into(),
            ..RunnerSettings::default()
        },
        executor_name: "shell".into(),
        defaults: ExecutorDefaults {
            builds_dir: builds_dir.into(),
            cache_dir: format!("{builds_dir}/../cache"),
            shared_builds_dir: true,
            shell_type: ShellType::Login,
            runner_command: "gitlab-runner-rs".into(),
            private_temporary_dir: true,
            ..ExecutorDefaults::default()
        },
        shared_environment: true,
        shell: BashShell::new(ShellKind::Bash).command(ShellType::Normal, None),
        concurrent_id: 0,
        concurrent_project_id: 0,
        correlation_id: "0123456789abcdef0123456789abcdef".into(),
    };
    BuildContext::new(input).expect("context").0
}

fn script(kind: ShellKind, context: &BuildContext, stage: Stage) -> Option<String> {
    BashShell::new(kind)
        .generate(&stage, context)
        .expect("generate")
}

fn run(shell: &str, script: &str, cwd: &Path) -> (i32, String) {
    run_with_env(shell, script, cwd, &[])
}

/// Runs `script` with `env` added to the inherited environment.
fn run_with_env(shell: &str, script: &str, cwd: &Path, env: &[(&str, String)]) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new(shell)
        .current_dir(cwd)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn shell");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn stage_scripts_snapshot() {
    let context = context(
        "/builds",
        &job_json(
            "https://gitlab-ci-token:job-token-secret@gitlab.example/group/demo.git",
            "0123456789abcdef0123456789abcdef01234567",
            "",
        ),
    );
    for stage in [
        Stage::Prepare,
        Stage::GetSources,
        Stage::step("script"),
        Stage::AfterScript,
        Stage::Cleanup,
    ] {
        let script = script(ShellKind::Bash, &context, stage.clone()).expect("stage has a script");
        insta::assert_snapshot!(stage.name(), script);
    }
    assert!(script(ShellKind::Bash, &context, Stage::RestoreCache).is_none());
    assert!(script(ShellKind::Bash, &context, Stage::DownloadArtifacts).is_none());
    assert!(script(ShellKind::Bash, &context, Stage::UploadOnSuccessArtifacts).is_none());
    assert!(script(ShellKind::Bash, &context, Stage::step("release")).is_none());
}

/// Runs prepare, get_sources, the script and after_script against a real repository under bash
/// and sh, and checks what a job would see.
#[test]
fn stage_scripts_run_under_bash_and_sh() {
    for kind in [ShellKind::Bash, ShellKind::Sh] {
        let root = tempfile::tempdir().unwrap();
        let origin = root.path().join("origin");
        std::fs::create_dir(&origin).unwrap();
        git(&origin, &["init", "-q", "-b", "main"]);
        std::fs::write(origin.join("README"), "from the repository\n").unwrap();
        git(&origin, &["add", "README"]);
        git(&origin, &["commit", "-q", "-m", "first"]);
        let sha = git(&origin, &["rev-parse", "HEAD"]);
        let builds = root.path().join("builds");
        std::fs::create_dir(&builds).unwrap();
        let repo_url = format!("file://{}", origin.display());
        let context = context(builds.to_str().unwrap(), &job_json(&repo_url, &sha, ""));

        let mut output = String::new();
        for stage in [Stage::Prepare, Stage::GetSources, Stage::step("script")] {
            let script = script(kind, &context, stage.clone()).unwrap();
            let (code, text) = run(kind.name(), &script, root.path());
            assert_eq!(code, 0, "{kind:?} {stage} failed:\n{text}");
            output.push_str(&text);
        }
        let project_dir = Path::new(&context.dirs.project_dir);
        assert_eq!(
            std::fs::read_to_string(project_dir.join("README")).unwrap(),
            "from the repository\n"
        );
        assert!(output.contains("Created fresh repository."), "{output}");
        assert!(output.contains("hello world"), "{output}");
        assert!(output.contains("raw=$NAME"), "{output}");
        assert!(output.contains("file contents\nline 2"), "{output}");
        assert!(output.contains("loop 1\nloop 2"), "{output}");
        assert!(output.contains("$ echo \"$GREETING\""), "{output}");
        // The job token must not end up in the repository's configuration.
        let config = std::fs::read_to_string(project_dir.join(".git/config")).unwrap();
        assert!(!config.contains("job-token-secret"), "{config}");

        let mut after_context = context.clone();
        after_context.variables = runner_core::variables::Variables::new(
            after_context
                .variables
                .iter()
                .map(|variable| {
                    let mut variable = variable.clone();
                    if variable.key == "CI_JOB_STATUS" {
                        variable.value = "failed".into();
                    }
                    variable
                })
                .collect(),
        )
        .with_file_dir(context.dirs.tmp_dir());
        let after = script(kind, &after_context, Stage::AfterScript).unwrap();
        let (code, text) = run(kind.name(), &after, root.path());
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("after A=from-script status=failed"), "{text}");

        let cleanup = script(kind, &context, Stage::Cleanup).unwrap();
        let (code, text) = run(kind.name(), &cleanup, root.path());
        assert_eq!(code, 0, "{text}");
        assert!(!Path::new(&context.dirs.tmp_dir())
            .join("CONFIG_FILE")
            .exists());
    }
}

#[test]
fn a_failing_command_stops_the_script_with_its_exit_code() {
    let root = tempfile::tempdir().unwrap();
    let json = job_json(
        "https://gitlab.example/group/demo.git",
        "0123456789abcdef0123456789abcdef01234567",
        "",
    )
    .replace(
        "\"echo \\\"$GREETING\\\"\"",
        "\"echo before\", \"exit 42\", \"echo never\"",
    );
    let mut context = context(root.path().to_str().unwrap(), &json);
    std::fs::create_dir_all(&context.dirs.project_dir).unwrap();
    context.settings.git_strategy = runner_core::settings::GitStrategy::None;
    for kind in [ShellKind::Bash, ShellKind::Sh] {
        let script = script(kind, &context, Stage::step("script")).unwrap();
        let (code, text) = run(kind.name(), &script, root.path());
        assert_eq!(code, 42, "{text}");
        assert!(text.contains("before"));
        assert!(!text.contains("never"));
    }
}

/// A job variable entry for `job_json`'s `extra_variables`.
fn variable(key: &str, value: &str) -> String {
    format!(r#", {{"key": "{key}", "value": "{value}", "public": true}}"#)
}

/// A repository at `dir` on branch `main` with one commit of `file`.
fn new_repo(dir: &Path, file: &str) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(file), format!("{file} as committed\n")).unwrap();
    git(dir, &["add", file]);
    git(dir, &["commit", "-q", "-m", file]);
}

/// Adds the repository at `url` to `dir` as submodule `name` and commits it.
fn add_submodule(dir: &Path, url: &Path, name: &str) {
    let url = url.to_str().unwrap();
    git(
        dir,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            url,
            name,
        ],
    );
    git(dir, &["commit", "-q", "-m", name]);
}

/// An environment in which the scripts' git reads no user or system config, and may clone
/// submodules from local paths (git refuses the `file` transport for submodules by default).
fn hermetic_git_env(root: &Path) -> Vec<(&'static str, String)> {
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    vec![
        ("HOME", home.display().to_string()),
        ("XDG_CONFIG_HOME", home.display().to_string()),
        ("GIT_CONFIG_NOSYSTEM", "1".into()),
        ("GIT_CONFIG_COUNT", "1".into()),
        ("GIT_CONFIG_KEY_0", "protocol.file.allow".into()),
        ("GIT_CONFIG_VALUE_0", "always".into()),
    ]
}

/// What a stage script evaluates, with the outer quoting undone by bash itself.
fn body(script: &str) -> String {
    let start = script.find("; eval ").unwrap() + "; eval ".len();
    let end = script.rfind(") < /dev/null").unwrap();
    let (code, text) = run(
        "bash",
        &format!("printf '%s' {}", &script[start..end]),
        Path::new("/"),
    );
    assert_eq!(code, 0, "{text}");
    text
}

fn make_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn job_cleanup_snapshot_with_fetch_and_submodules() {
    let extra = variable("FF_ENABLE_JOB_CLEANUP", "true")
        + &variable("GIT_STRATEGY", "fetch")
        + &variable("GIT_SUBMODULE_STRATEGY", "recursive");
    let context = context(
        "/builds",
        &job_json(
            "https://gitlab.example/group/demo.git",
            "0123456789abcdef0123456789abcdef01234567",
            &extra,
        ),
    );
    let script = script(ShellKind::Bash, &context, Stage::Cleanup).unwrap();
    insta::assert_snapshot!("cleanup_job_cleanup_fetch_recursive_submodules", script);
}

/// `FF_ENABLE_JOB_CLEANUP` with `GIT_STRATEGY=fetch` leaves the project and its submodules (all
/// levels with `recursive`) as committed: changes reset, untracked files removed.
#[test]
fn job_cleanup_after_a_fetch_cleans_and_resets_the_submodules() {
    for kind in [ShellKind::Bash, ShellKind::Sh] {
        for recursive in [false, true] {
            let root = tempfile::tempdir().unwrap();
            let nested = root.path().join("nested");
            new_repo(&nested, "NESTED");
            let sub = root.path().join("sub");
            new_repo(&sub, "SUB");
            add_submodule(&sub, &nested, "nested");
            let origin = root.path().join("origin");
            new_repo(&origin, "README");
            add_submodule(&origin, &sub, "sub");
            let sha = git(&origin, &["rev-parse", "HEAD"]);
            let builds = root.path().join("builds");
            std::fs::create_dir(&builds).unwrap();
            let strategy = if recursive { "recursive" } else { "normal" };
            let extra = variable("FF_ENABLE_JOB_CLEANUP", "true")
                + &variable("GIT_STRATEGY", "fetch")
                + &variable("GIT_SUBMODULE_STRATEGY", strategy);
            let repo_url = format!("file://{}", origin.display());
            let context = context(builds.to_str().unwrap(), &job_json(&repo_url, &sha, &extra));
            let env = hermetic_git_env(root.path());

            let get_sources = script(kind, &context, Stage::GetSources).unwrap();
            let (code, text) = run_with_env(kind.name(), &get_sources, root.path(), &env);
            assert_eq!(code, 0, "{kind:?} {strategy} get_sources:\n{text}");

            let project = Path::new(&context.dirs.project_dir).to_path_buf();
            let mut checkouts = vec![(project.clone(), "README"), (project.join("sub"), "SUB")];
            if recursive {
                checkouts.push((project.join("sub/nested"), "NESTED"));
            }
            for (dir, file) in &checkouts {
                std::fs::write(dir.join(file), "changed by the job\n").unwrap();
                std::fs::write(dir.join("untracked"), "left by the job\n").unwrap();
            }

            let cleanup = script(kind, &context, Stage::Cleanup).unwrap();
            let (code, text) = run_with_env(kind.name(), &cleanup, root.path(), &env);
            assert_eq!(code, 0, "{kind:?} {strategy} cleanup:\n{text}");
            for (dir, file) in &checkouts {
                let context = format!("{kind:?} {strategy} {}", dir.display());
                assert_eq!(
                    std::fs::read_to_string(dir.join(file)).unwrap(),
                    format!("{file} as committed\n"),
                    "{context}"
                );
                assert!(!dir.join("untracked").exists(), "{context}");
                assert_eq!(git(dir, &["status", "--porcelain"]), "", "{context}");
            }
        }
    }
}

/// The job's cache: two paths, tried under its key and then a fallback key.
const CACHE_JSON: &str = r#""cache": [{"key": "deps", "paths": ["vendor", "build/out"],
    "fallback_keys": ["deps-fallback"], "policy": "pull-push", "when": "on_success"}],
    "features":"#;

#[test]
fn restore_cache_snapshot_with_clean_up_failed_extract() {
    let json = job_json(
        "https://gitlab.example/group/demo.git",
        "0123456789abcdef0123456789abcdef01234567",
        &variable("FF_CLEAN_UP_FAILED_CACHE_EXTRACT", "true"),
    )
    .replace("\"features\":", CACHE_JSON);
    let context = context("/builds", &json);
    let script = script(ShellKind::Bash, &context, Stage::RestoreCache).unwrap();
    insta::assert_snapshot!("restore_cache_clean_up_failed_extract", script);
}

/// An extraction that fails half-way leaves files behind; with
/// `FF_CLEAN_UP_FAILED_CACHE_EXTRACT` they are removed before the fallback key is tried and
/// after it fails too.
#[test]
fn a_failed_cache_extract_removes_the_cache_paths_with_the_flag() {
    for kind in [ShellKind::Bash, ShellKind::Sh] {
        for flag in [false, true] {
            let root = tempfile::tempdir().unwrap();
            let builds = root.path().join("builds");
            std::fs::create_dir(&builds).unwrap();
            let json = job_json(
                "https://gitlab.example/group/demo.git",
                "0123456789abcdef0123456789abcdef01234567",
                &variable("FF_CLEAN_UP_FAILED_CACHE_EXTRACT", &flag.to_string()),
            )
            .replace("\"features\":", CACHE_JSON);
            let mut context = context(builds.to_str().unwrap(), &json);
            // A helper that extracts part of the archive, then fails; it logs whether the
            // previous attempt's files were still there when it started.
            let log = root.path().join("extractor.log");
            let helper = root.path().join("fake-runner");
            make_executable(
                &helper,
                &format!(
                    r#"#!/bin/sh
case "$1" in
  --version) exit 0 ;;
  cache-extractor)
    if [ -e vendor ]; then left=leftovers; else left=clean; fi
    echo "$3 $left" >> '{log}'
    mkdir -p vendor build/out
    echo partial > vendor/partial
    echo partial > build/out/partial
    exit 1 ;;
esac
exit 2
"#,
                    log = log.display()
                ),
            );
            context.defaults.runner_command = helper.display().to_string();
            let project = Path::new(&context.dirs.project_dir).to_path_buf();
            std::fs::create_dir_all(&project).unwrap();

            let restore = script(kind, &context, Stage::RestoreCache).unwrap();
            let (code, text) = run(kind.name(), &restore, root.path());
            assert_eq!(code, 0, "{kind:?} flag={flag}:\n{text}");
            let attempts = std::fs::read_to_string(&log).unwrap();
            let attempts: Vec<&str> = attempts.lines().collect();
            assert_eq!(attempts.len(), 2, "{attempts:?}");
            assert!(
                attempts[0].ends_with("/deps/cache.zip clean"),
                "{attempts:?}"
            );
            let removals = text.matches("Removing vendor").count();
            if flag {
                assert!(
                    attempts[1].ends_with("/deps-fallback/cache.zip clean"),
                    "{attempts:?}"
                );
                assert_eq!(removals, 2, "{text}");
                assert_eq!(text.matches("Removing build/out").count(), 2, "{text}");
                assert!(!project.join("vendor").exists(), "{kind:?}");
                assert!(!project.join("build/out").exists(), "{kind:?}");
                assert!(project.join("build").is_dir(), "{kind:?}");
            } else {
                assert!(attempts[1].ends_with(" leftovers"), "{attempts:?}");
                assert_eq!(removals, 0, "{text}");
                assert!(project.join("vendor/partial").exists(), "{kind:?}");
            }
        }
    }
}

/// A `git` that answers `git version` with `version` and otherwise logs its arguments to
/// `<root>/git.log` and runs the real git. Returns the directory to put first in `PATH`.
fn fake_git(root: &Path, version: &str) -> std::path::PathBuf {
    let (code, real) = run("sh", "command -v git", root);
    assert_eq!(code, 0, "{real}");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    make_executable(
        &bin.join("git"),
        &format!(
            r#"#!/bin/sh
if [ "$1" = version ]; then echo 'git version {version}'; exit 0; fi
printf '%s\n' "$*" >> '{log}'
exec '{real}' "$@"
"#,
            log = root.join("git.log").display(),
            real = real.trim()
        ),
    );
    bin
}

fn native_clone_variables() -> String {
    variable("FF_USE_GIT_NATIVE_CLONE", "true")
        + &variable("GIT_STRATEGY", "clone")
        + &variable("GIT_CLONE_EXTRA_FLAGS", "--no-tags")
}

#[test]
fn get_sources_snapshot_with_native_clone() {
    let context = context(
        "/builds",
        &job_json(
            "https://gitlab.example/group/demo.git",
            "0123456789abcdef0123456789abcdef01234567",
            &native_clone_variables(),
        ),
    );
    let script = script(ShellKind::Bash, &context, Stage::GetSources).unwrap();
    insta::assert_snapshot!("get_sources_native_clone", script);
}

/// `--revision` for a full ref name, `--branch` for a short one, neither without a ref; the
/// notice names the ref and the depth.
#[test]
fn native_clone_names_the_ref_as_git_clone_expects() {
    for (git_ref, depth, notice, ref_args) in [
        (
            "refs/merge-requests/1/head",
            3,
            "Cloning repository for refs/merge-requests/1/head with git depth set to 3...",
            " --depth 3 --revision refs/merge-requests/1/head --no-tags",
        ),
        (
            "main",
            0,
            "Cloning repository for main...",
            " --branch main --no-tags",
        ),
        ("", 0, "Cloning repository...", "/git-template --no-tags"),
    ] {
        let json = job_json(
            "https://gitlab.example/group/demo.git",
            "0123456789abcdef0123456789abcdef01234567",
            &native_clone_variables(),
        )
        .replace("\"ref\": \"main\"", &format!("\"ref\": \"{git_ref}\""))
        .replace("\"depth\": 0", &format!("\"depth\": {depth}"));
        let context = context("/builds", &json);
        let body = body(&script(ShellKind::Bash, &context, Stage::GetSources).unwrap());
        let clone = body
            .lines()
            .find(|line| line.contains(" clone --no-checkout "))
            .unwrap_or_else(|| panic!("no clone in:\n{body}"));
        assert!(clone.ends_with(ref_args), "{clone}");
        assert!(
            body.contains(&format!("\\x1b[32;1m{notice}\\x1b[0;m")),
            "{body}"
        );
    }
}

/// With `FF_USE_GIT_NATIVE_CLONE` the script clones when the host's git is at least 2.49 and
/// falls back to init + fetch with an older git; the job gets the same checkout either way.
#[test]
fn native_clone_clones_with_a_recent_git_and_fetches_with_an_older_one() {
    for kind in [ShellKind::Bash, ShellKind::Sh] {
        for (version, clones) in [("2.49.0", true), ("2.48.1", false)] {
            let root = tempfile::tempdir().unwrap();
            let origin = root.path().join("origin");
            new_repo(&origin, "README");
            git(&origin, &["commit", "-q", "--allow-empty", "-m", "second"]);
            git(&origin, &["tag", "v1"]);
            let sha = git(&origin, &["rev-parse", "HEAD"]);
            let builds = root.path().join("builds");
            std::fs::create_dir(&builds).unwrap();
            let repo_url = format!("file://{}", origin.display());
            let json = job_json(&repo_url, &sha, &native_clone_variables())
                .replace("\"depth\": 0", "\"depth\": 1");
            let context = context(builds.to_str().unwrap(), &json);
            let bin = fake_git(root.path(), version);
            let mut env = hermetic_git_env(root.path());
            env.push((
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            ));

            let get_sources = script(kind, &context, Stage::GetSources).unwrap();
            let (code, text) = run_with_env(kind.name(), &get_sources, root.path(), &env);
            let what = format!("{kind:?} git {version}");
            assert_eq!(code, 0, "{what}:\n{text}");
            let project = Path::new(&context.dirs.project_dir);
            assert_eq!(git(project, &["rev-parse", "HEAD"]), sha, "{what}");
            assert_eq!(
                std::fs::read_to_string(project.join("README")).unwrap(),
                "README as committed\n",
                "{what}"
            );
            assert_eq!(
                git(project, &["rev-parse", "--is-shallow-repository"]),
                "true",
                "{what}"
            );
            let log = std::fs::read_to_string(root.path().join("git.log")).unwrap();
            let clone = log.lines().find(|line| line.contains(" clone "));
            if clones {
                assert!(text.contains("Git version at least \"2.49\""), "{text}");
                assert!(
                    text.contains("Cloning repository for main with git depth set to 1..."),
                    "{text}"
                );
                assert!(!text.contains("Fetching changes"), "{text}");
                let template = format!("{}/git-template", context.dirs.tmp_dir());
                let clone = clone.unwrap_or_else(|| panic!("{what}: no clone in {log}"));
                assert!(clone.starts_with("-c http.userAgent="), "{clone}");
                assert!(
                    clone.ends_with(&format!(
                        " clone --no-checkout {repo_url} {} --template {template} --depth 1 --branch main --no-tags",
                        context.dirs.project_dir
                    )),
                    "{clone}"
                );
                // GIT_CLONE_EXTRA_FLAGS reached git: the tag was not fetched.
                assert_eq!(git(project, &["tag"]), "", "{what}");
            } else {
                assert!(!text.contains("Git version at least"), "{text}");
                assert!(!text.contains("Cloning repository"), "{text}");
                assert!(
                    text.contains("Fetching changes with git depth set to 1..."),
                    "{text}"
                );
                assert!(text.contains("Created fresh repository."), "{text}");
                assert!(clone.is_none(), "{what}: {log}");
            }
        }
    }
}

/// Parity audit item 15: the uploader always gets upstream's `--timeout` and
/// `--response-header-timeout`, from `[runners.artifact]` or upstream's 1 h / 10 min.
#[test]
fn the_artifact_upload_carries_the_runners_artifact_timeouts() {
    let json = job_json(
        "https://gitlab-ci-token:job-token-secret@gitlab.example/group/demo.git",
        "0123456789abcdef0123456789abcdef01234567",
        "",
    )
    .replace(
        "\"features\":",
        r#""artifacts": [{"name": "out", "paths": ["out/"], "when": "on_success",
            "artifact_type": "archive", "artifact_format": "zip"}], "features":"#,
    );
    let mut context = context("/builds", &json);
    let defaults = script(ShellKind::Bash, &context, Stage::UploadOnSuccessArtifacts).unwrap();
    assert!(
        defaults.contains("--timeout 1h0m0s --response-header-timeout 10m0s"),
        "{defaults}"
    );
    context.runner.artifact_upload_timeout = Some(std::time::Duration::from_secs(2 * 3600));
    context.runner.artifact_response_header_timeout = Some(std::time::Duration::from_secs(90));
    let configured = script(ShellKind::Bash, &context, Stage::UploadOnSuccessArtifacts).unwrap();
    assert!(
        configured.contains("--timeout 2h0m0s --response-header-timeout 1m30s"),
        "{configured}"
    );
}
