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
    use std::io::Write;
    let mut child = Command::new(shell)
        .current_dir(cwd)
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
