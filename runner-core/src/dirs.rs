//! Build directories and the names derived from the runner token and project (2.7).

use sha2::{Digest, Sha256};

use crate::failure::{BuildError, FailureReason};

/// The runner's short token: known prefixes stripped, then the first 9 characters.
pub fn short_token(token: &str) -> String {
    let mut rest = token;
    if let Some(stripped) = rest.strip_prefix("glrt-") {
        rest = strip_partition(stripped);
    } else if let Some(stripped) = rest.strip_prefix("glrtr-") {
        rest = stripped;
    } else {
        rest = strip_partition(rest);
    }
    if let Some(stripped) = rest.strip_prefix("glcbt-") {
        rest = stripped;
    }
    let bytes = rest.as_bytes();
    if bytes.len() >= 9 && rest.starts_with("GR") && bytes[2..9].iter().all(u8::is_ascii_hexdigit) {
        rest = &rest[9..];
    }
    rest.chars().take(9).collect()
}

fn strip_partition(token: &str) -> &str {
    for prefix in ["t1_", "t2_", "t3_"] {
        if let Some(stripped) = token.strip_prefix(prefix) {
            return stripped;
        }
    }
    token
}

/// Lowercase, only `[-a-z0-9]`, no leading non-alphanumeric, at most 63 characters.
pub fn rfc1123(name: &str) -> String {
    let lowered: String = name
        .to_lowercase()
        .chars()
        .filter(|c| *c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect();
    let trimmed = lowered.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    trimmed.chars().take(63).collect()
}

/// Cleans a slash-separated path like Go's `path.Clean`.
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Joins paths and cleans the result like Go's `path.Join`.
pub fn join_path(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    if joined.is_empty() {
        return String::new();
    }
    clean_path(&joined)
}

/// Splits `scheme://[user@]host[:port]/path...` into (scheme, host with port, path).
pub fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let parts = crate::url::parse(url)?;
    let path = parts.rest.split(['?', '#']).next().unwrap_or("");
    Some((parts.scheme, parts.host, path))
}

/// The project slug: the repository URL's path without `.git`, cleaned.
pub fn project_slug(repo_url: &str) -> Option<String> {
    let (_, host, path) = split_url(repo_url)?;
    if host.is_empty() {
        return None;
    }
    let slug = clean_path(path.strip_suffix(".git").unwrap_or(path));
    if slug == "." || slug == "/" || slug.contains("..") {
        return None;
    }
    Some(slug)
}

/// What an executor says about where builds live (the per-executor defaults of 4.1).
#[derive(Debug, Clone, Default)]
pub struct DirOptions {
    /// The builds root: `builds_dir` of config.toml, else the executor's default; empty fails
    /// the build as a configuration error.
    pub builds_dir: String,
    /// The local cache root, from the same places; empty fails the build too.
    pub cache_dir: String,
    /// Concurrent jobs share the builds root: project directories get a
    /// `<short token>/<concurrent project id>/` prefix.
    pub shared_builds_dir: bool,
    /// Jobs may choose their project directory with `GIT_CLONE_PATH` (inside the
    /// builds root).
    pub custom_build_dir_enabled: bool,
}

/// The directories of one build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildDirs {
    /// `CI_BUILDS_DIR`.
    pub builds_dir: String,
    /// `CI_PROJECT_DIR`.
    pub project_dir: String,
    /// `<cache_dir>/<slug>`, where local cache archives live.
    pub cache_dir: String,
}

impl BuildDirs {
    /// `<project dir>.tmp`: file variables, git template and env files.
    pub fn tmp_dir(&self) -> String {
        format!("{}.tmp", self.project_dir)
    }
}

/// What identifies the project dir of a build.
pub struct ProjectIdentity<'a> {
    /// The payload's `git_info.repo_url`, whose path gives the project slug.
    pub repo_url: &'a str,
    /// The project's numeric id: `project-<id>` stands in for a URL without a usable path.
    pub project_id: i64,
    /// The runner's short token, the first part of a shared project directory.
    pub short_token: &'a str,
    /// `CI_CONCURRENT_PROJECT_ID`, the second part of a shared project directory.
    pub concurrent_project_id: usize,
    /// `GIT_STRATEGY: empty`: the project and cache directories get an `-empty` suffix.
    pub git_strategy_empty: bool,
    /// `GIT_CLONE_PATH`; empty for the computed project directory.
    pub git_clone_path: &'a str,
}

/// `StartBuild`: computes the directories or fails with a configuration error.
pub fn compute_dirs(
    options: &DirOptions,
    project: &ProjectIdentity<'_>,
) -> Result<BuildDirs, BuildError> {
    if options.builds_dir.is_empty() {
        return Err(BuildError::new(
            FailureReason::RunnerConfigurationError,
            "the builds_dir is not configured",
        ));
    }
    if options.cache_dir.is_empty() {
        return Err(BuildError::new(
            FailureReason::RunnerConfigurationError,
            "the cache_dir is not configured",
        ));
    }
    let slug =
        project_slug(project.repo_url).unwrap_or_else(|| format!("project-{}", project.project_id));
    let unique_dir = |shared: bool| {
        let mut dir = if shared {
            join_path(&[
                project.short_token,
                &project.concurrent_project_id.to_string(),
                &slug,
            ])
        } else {
            slug.clone()
        };
        if project.git_strategy_empty {
            dir.push_str("-empty");
        }
        dir
    };
    let cache_dir = join_path(&[&options.cache_dir, &unique_dir(false)]);
    let project_dir = if project.git_clone_path.is_empty() {
        join_path(&[&options.builds_dir, &unique_dir(options.shared_builds_dir)])
    } else {
        if !options.custom_build_dir_enabled {
            return Err(BuildError::new(
                FailureReason::RunnerConfigurationError,
                "setting GIT_CLONE_PATH is not allowed, enable `custom_build_dir` feature",
            ));
        }
        let root = clean_path(&options.builds_dir);
        let dir = clean_path(project.git_clone_path);
        let inside = dir == root || dir.starts_with(&format!("{}/", root.trim_end_matches('/')));
        if !inside {
            return Err(BuildError::new(
                FailureReason::RunnerConfigurationError,
                format!(
                    "the GIT_CLONE_PATH={:?} has to be within {:?}",
                    project.git_clone_path, options.builds_dir
                ),
            ));
        }
        dir
    };
    Ok(BuildDirs {
        builds_dir: options.builds_dir.clone(),
        project_dir,
        cache_dir,
    })
}

/// `runner-<short>-project-<id>-concurrent-<n>`, RFC 1123 sanitized.
pub fn project_unique_name(
    short_token: &str,
    project_id: i64,
    concurrent_project_id: usize,
) -> String {
    rfc1123(&format!(
        "runner-{short_token}-project-{project_id}-concurrent-{concurrent_project_id}"
    ))
}

/// `runner-<short>-<project id>-<concurrent project id>-<job id>`, RFC 1123 sanitized.
pub fn project_unique_short_name(
    short_token: &str,
    project_id: i64,
    concurrent_project_id: usize,
    job_id: i64,
) -> String {
    rfc1123(&format!(
        "runner-{short_token}-{project_id}-{concurrent_project_id}-{job_id}"
    ))
}

/// `runner-` + hex of the first 16 bytes of SHA-256(`<token>-<system id>-<project>-<concurrent>`).
pub fn project_real_unique_name(
    token: &str,
    system_id: &str,
    project_id: i64,
    concurrent_project_id: usize,
) -> String {
    let digest = Sha256::digest(format!(
        "{token}-{system_id}-{project_id}-{concurrent_project_id}"
    ));
    let hex: String = digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("runner-{hex}")
}

/// Writes `data` to `path` as a file only its owner may read or write (mode 0600 when it is
/// created), replacing what was there: job payloads, file variables.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tokens_strip_known_prefixes() {
        assert_eq!(short_token("glrt-t1_abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("glrt-abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("t2_abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("glrtr-abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("glcbt-abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("GR1348941abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("short"), "short");
    }

    #[test]
    fn names_are_rfc1123_sanitized() {
        assert_eq!(
            project_unique_name("AbC_d", 7, 0),
            "runner-abcd-project-7-concurrent-0"
        );
        assert_eq!(rfc1123("--X.y"), "xy");
        assert_eq!(
            project_real_unique_name("token", "s_0123456789ab", 1, 0).len(),
            "runner-".len() + 32
        );
    }

    fn identity<'a>(repo_url: &'a str, clone_path: &'a str) -> ProjectIdentity<'a> {
        ProjectIdentity {
            repo_url,
            project_id: 42,
            short_token: "abcdefghi",
            concurrent_project_id: 1,
            git_strategy_empty: false,
            git_clone_path: clone_path,
        }
    }

    #[test]
    fn project_dir_layouts() {
        let mut options = DirOptions {
            builds_dir: "/builds".into(),
            cache_dir: "/cache".into(),
            ..DirOptions::default()
        };
        let repo = "https://gitlab-ci-token:secret@example.com/group/project.git";
        let dirs = compute_dirs(&options, &identity(repo, "")).unwrap();
        assert_eq!(dirs.project_dir, "/builds/group/project");
        assert_eq!(dirs.cache_dir, "/cache/group/project");
        assert_eq!(dirs.tmp_dir(), "/builds/group/project.tmp");

        options.shared_builds_dir = true;
        let dirs = compute_dirs(&options, &identity(repo, "")).unwrap();
        assert_eq!(dirs.project_dir, "/builds/abcdefghi/1/group/project");
        assert_eq!(dirs.cache_dir, "/cache/group/project");

        let dirs = compute_dirs(&options, &identity("not a url", "")).unwrap();
        assert_eq!(dirs.project_dir, "/builds/abcdefghi/1/project-42");

        let error = compute_dirs(&options, &identity(repo, "/builds/x")).unwrap_err();
        assert_eq!(error.reason, FailureReason::RunnerConfigurationError);
        options.custom_build_dir_enabled = true;
        assert_eq!(
            compute_dirs(&options, &identity(repo, "/builds/x/../y"))
                .unwrap()
                .project_dir,
            "/builds/y"
        );
        assert!(compute_dirs(&options, &identity(repo, "/elsewhere")).is_err());
    }
}
