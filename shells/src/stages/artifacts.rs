//! The download_artifacts and upload_artifacts stages.

use runner_core::job::Artifact;
use runner_core::script::ScriptError;

use super::{as_refs, guard_runner_command, write_change_ownership, write_exports, Info};
use crate::writer::BashWriter;

pub(super) fn write_download_artifacts(
    w: &mut BashWriter,
    info: &Info<'_>,
) -> Result<bool, ScriptError> {
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

pub(super) fn write_upload_artifacts(
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
                // Upstream always passes both, from `[runners.artifact]` or its defaults.
                "--timeout".into(),
                runner_core::settings::format_go_duration(
                    info.build
                        .runner
                        .artifact_upload_timeout
                        .unwrap_or(std::time::Duration::from_secs(60 * 60)),
                ),
                "--response-header-timeout".into(),
                runner_core::settings::format_go_duration(
                    info.build
                        .runner
                        .artifact_response_header_timeout
                        .unwrap_or(std::time::Duration::from_secs(10 * 60)),
                ),
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
