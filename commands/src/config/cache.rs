//! `[runners.cache]`: the shared (S3) cache, or a warning and a local cache.

use runner_core::remote_cache::{RemoteCache, S3Settings};
use runner_core::secret::Secret;
use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[runners.cache]` as written (CamelCase keys, as upstream's file has them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawCache {
    #[serde(default, rename = "Type")]
    kind: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    max_uploaded_archive_size: Option<i64>,
    #[serde(default, rename = "s3")]
    s3: Option<RawS3>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawS3 {
    #[serde(default)]
    server_address: Option<String>,
    #[serde(default)]
    access_key: Option<String>,
    #[serde(default)]
    secret_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
    #[serde(default)]
    bucket_name: Option<String>,
    #[serde(default)]
    bucket_location: Option<String>,
    #[serde(default)]
    insecure: Option<bool>,
    #[serde(default)]
    path_style: Option<bool>,
    #[serde(default)]
    authentication_type: Option<String>,
    #[serde(default)]
    server_side_encryption: Option<String>,
    #[serde(default, rename = "ServerSideEncryptionKeyID")]
    server_side_encryption_key_id: Option<String>,
    #[serde(default, rename = "RoleARN")]
    role_arn: Option<String>,
    #[serde(default, rename = "UploadRoleARN")]
    upload_role_arn: Option<String>,
}

/// The shared cache of `[runners.cache]`, or `None` (local cache only). Adapters this runner
/// does not have keep the cache local with a warning, as upstream does for a broken adapter.
pub(super) fn remote_cache(
    key: &dyn Fn(&str) -> String,
    raw: &toml::Value,
    file: &std::path::Path,
    warnings: &mut Vec<String>,
) -> Result<Option<RemoteCache>, ConfigError> {
    let raw: RawCache = super::section::section(&key("cache"), raw, file, warnings)?;
    let kind = raw.kind.clone().unwrap_or_default();
    match kind.as_str() {
        "" => return Ok(None),
        "s3" => {}
        other => {
            warnings.push(format!(
                "{}: cache type {other:?} is not supported by gitlab-runner-rs (supported: s3); the cache stays local",
                key("cache.Type")
            ));
            return Ok(None);
        }
    }
    let Some(s3) = raw.s3 else {
        warnings.push(format!(
            "{}: missing [runners.cache.s3]; the cache stays local",
            key("cache")
        ));
        return Ok(None);
    };
    let text = |value: Option<String>| value.unwrap_or_default();
    let authentication = s3.authentication_type.clone().unwrap_or_default();
    if authentication.eq_ignore_ascii_case("iam")
        || s3.role_arn.as_deref().is_some_and(|v| !v.is_empty())
        || s3.upload_role_arn.as_deref().is_some_and(|v| !v.is_empty())
    {
        warnings.push(format!(
            "{}: IAM credentials and RoleARN are not supported by gitlab-runner-rs; the cache stays local",
            key("cache.s3")
        ));
        return Ok(None);
    }
    let bucket_name = text(s3.bucket_name);
    if bucket_name.is_empty() {
        return Err(invalid(
            key("cache.s3.BucketName"),
            "",
            "a bucket name is required",
        ));
    }
    let max = raw.max_uploaded_archive_size.unwrap_or(0);
    if max < 0 {
        return Err(invalid(
            key("cache.MaxUploadedArchiveSize"),
            max,
            "must not be negative",
        ));
    }
    Ok(Some(RemoteCache {
        path: text(raw.path),
        shared: raw.shared.unwrap_or(false),
        max_uploaded_archive_size: max as u64,
        s3: S3Settings {
            server_address: text(s3.server_address),
            access_key: text(s3.access_key),
            secret_key: Secret::new(text(s3.secret_key)),
            session_token: Secret::new(text(s3.session_token)),
            bucket_name,
            bucket_location: text(s3.bucket_location),
            insecure: s3.insecure.unwrap_or(false),
            path_style: s3.path_style,
            server_side_encryption: text(s3.server_side_encryption),
            server_side_encryption_key_id: text(s3.server_side_encryption_key_id),
        },
    }))
}
