//! The distributed cache of `[runners.cache]` (Type = "s3"): its settings and where a cache
//! key's object lives. The presigned URLs the helper fetches and stores it with are signed by
//! the script generator (`shells::s3`), so the job never sees the credentials.

use crate::secret::Secret;

/// `[runners.cache.s3]`.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `host[:port]`; empty means AWS (`s3.amazonaws.com`).
    pub server_address: String,
    /// `AccessKey`: the access key id the URLs are signed with.
    pub access_key: String,
    /// `SecretKey`: the secret the URLs are signed with.
    pub secret_key: Secret<String>,
    /// `SessionToken` of temporary credentials; empty for none.
    pub session_token: Secret<String>,
    /// `BucketName`: the bucket cache archives are stored in (required).
    pub bucket_name: String,
    /// The signing region; `us-east-1` when empty.
    pub bucket_location: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// `None`: path style for any server but AWS, as upstream's client picks.
    pub path_style: Option<bool>,
    /// ``, `S3`, `KMS` or `DSSE-KMS`.
    pub server_side_encryption: String,
    /// `ServerSideEncryptionKeyID`: the KMS key for `KMS` and `DSSE-KMS`; empty uses
    /// the bucket's default key.
    pub server_side_encryption_key_id: String,
}

/// `[runners.cache]` with a presigned-URL adapter.
#[derive(Debug, Clone, Default)]
pub struct RemoteCache {
    /// `Path`: a prefix for every object.
    pub path: String,
    /// `Shared`: leave the `runner/<short token>/` namespace out.
    pub shared: bool,
    /// `MaxUploadedArchiveSize` in bytes; 0 is no limit.
    pub max_uploaded_archive_size: u64,
    /// `[runners.cache.s3]`: the server, bucket and credentials.
    pub s3: S3Settings,
}

impl RemoteCache {
    /// `[<Path>/][runner/<short token>/]project/<id>/<key>`.
    pub fn object_name(&self, short_token: &str, project_id: i64, key: &str) -> String {
        self.object_path(short_token, project_id, &[key])
    }

    /// The name under the other key scheme of upstream's `FF_HASH_CACHE_KEYS` transition:
    /// `<base>/<first two characters of key>/<key>` (upstream's "sharded" layout, used for
    /// SHA-256 keys). `None` for a key shorter than two characters, where upstream has no
    /// adapter.
    pub fn sharded_object_name(
        &self,
        short_token: &str,
        project_id: i64,
        key: &str,
    ) -> Option<String> {
        let shard = key.get(..2)?;
        Some(self.object_path(short_token, project_id, &[shard, key]))
    }

    fn object_path(&self, short_token: &str, project_id: i64, key: &[&str]) -> String {
        let mut parts: Vec<String> = Vec::new();
        let prefix = self.path.trim_matches('/');
        if !prefix.is_empty() {
            parts.push(prefix.to_string());
        }
        if !self.shared {
            parts.push(format!("runner/{short_token}"));
        }
        parts.push(format!("project/{project_id}"));
        parts.extend(key.iter().map(|part| part.to_string()));
        parts.join("/")
    }
}
