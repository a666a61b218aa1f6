//! The restore_cache and archive_cache stages: cache keys, policies, local archives and the
//! shared cache's presigned URLs.

use runner_core::dirs::{clean_path, join_path};
use runner_core::feature_flags::FeatureFlag;
use runner_core::job::Cache;
use runner_core::remote_cache::RemoteCache;

use crate::s3::Presign;
use runner_core::script::ScriptError;
use std::time::{Duration, SystemTime};

use super::{as_refs, guard_runner_command, write_change_ownership, write_exports, Info};
use crate::writer::BashWriter;

const CACHE_ENV_FILE: &str = "gitlab_runner_cache_env";

/// A cache key that is empty, or still leaves the cache directory, once sanitised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cache key {raw:?} could not be sanitized")]
pub struct UnsanitizableCacheKey {
    /// The key as the job gave it, after variable expansion.
    pub raw: String,
}

/// Upstream's cache key sanitising: `%2F`→`/`, `%2E`→`.`, `\`→`/`, cleaned, segments trimmed.
pub fn sanitize_cache_key(raw: &str) -> Result<String, UnsanitizableCacheKey> {
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
        return Err(UnsanitizableCacheKey {
            raw: raw.to_string(),
        });
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

/// The key under the other naming of upstream's `FF_HASH_CACHE_KEYS` transition. This runner
/// names caches by the sanitised key (the flag off), so the other naming is the key's SHA-256
/// in hex: an archive or object a runner with the flag on left is found and renamed or
/// fetched, as upstream does in both directions.
fn alternate_key(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub(super) fn relative_path(from_dir: &str, to: &str) -> String {
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

pub(super) fn write_restore_cache(
    w: &mut BashWriter,
    info: &Info<'_>,
) -> Result<bool, ScriptError> {
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
            write_extract_chain(w, info, &keys, &cache.paths, &timeout);
        });
    }
    write_change_ownership(
        w,
        info,
        &[&info.build.dirs.cache_dir, &info.build.dirs.builds_dir],
    );
    Ok(true)
}

/// Tries each key in turn until one extracts. With `FF_CLEAN_UP_FAILED_CACHE_EXTRACT` a failed
/// extraction removes the cache's `paths`, so that a half-extracted archive leaves nothing
/// behind for the next key or the job.
fn write_extract_chain(
    w: &mut BashWriter,
    info: &Info<'_>,
    keys: &[String],
    paths: &[String],
    timeout: &str,
) {
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
        let now = SystemTime::now();
        let lifetime = url_lifetime(info);
        args.push("--url".into());
        args.push(remote.download_url(&object, now, lifetime));
        args.push("--head-url".into());
        args.push(remote.head_url(&object, now, lifetime));
        // The object a runner with FF_HASH_CACHE_KEYS on uploaded: hashed key, sharded path.
        let alternate = remote.sharded_object_name(
            &info.build.runner.short_token(),
            info.build.job.job_info.project_id,
            &alternate_key(key),
        );
        if let Some(alternate) = alternate {
            args.push("--alternate-url".into());
            args.push(remote.download_url(&alternate, now, lifetime));
            args.push("--alternate-head-url".into());
            args.push(remote.head_url(&alternate, now, lifetime));
        }
    }
    w.if_cmd_with_output(info.runner_command, &as_refs(&args));
    w.notice("Successfully extracted cache");
    w.else_();
    w.warning("Failed to extract cache");
    if info.flag(FeatureFlag::CleanUpFailedCacheExtract) {
        for path in paths {
            w.print(&format!("Removing {path}"));
            w.rm_dir(path);
        }
    }
    write_extract_chain(w, info, rest, paths, timeout);
    w.end_if();
}

pub(super) fn write_archive_cache(
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
                "--alternate-file".into(),
                cache_archive(info, &alternate_key(&key)),
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
                args.push("--check-url".into());
                args.push(remote.head_url(object, SystemTime::now(), url_lifetime(info)));
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
