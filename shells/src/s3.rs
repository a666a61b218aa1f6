//! AWS Signature Version 4 (query-string authentication) for the S3 distributed cache: the
//! presigned `GET` and `PUT` URLs the generated scripts hand to the cache helpers, so the
//! job never sees the credentials.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use runner_core::log::civil_from_days;
use runner_core::remote_cache::RemoteCache;
use sha2::{Digest, Sha256};

/// A presigned request: the URL, and the headers that must be sent with it as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    /// The presigned URL, with the signature and credential scope in its query string.
    pub url: String,
    /// Headers the request must carry as given, since they are signed: an upload's server-side
    /// encryption headers, if the cache sets any; always empty for a `GET`.
    pub headers: Vec<(String, String)>,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3986 encoding as SigV4 wants it: everything but `A-Za-z0-9-_.~` (and `/` in paths).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `(yyyymmdd, yyyymmddThhmmssZ)` in UTC.
fn amz_dates(now: SystemTime) -> (String, String) {
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let date = format!("{year:04}{month:02}{day:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    );
    (date, stamp)
}

/// Presigned requests for a [`RemoteCache`]'s objects.
pub trait Presign {
    /// A presigned `GET` of `object`.
    fn download_url(&self, object: &str, now: SystemTime, expires: Duration) -> String;
    /// A presigned `PUT` of `object` and the headers to send with it.
    fn upload(&self, object: &str, now: SystemTime, expires: Duration) -> Presigned;
    /// A presigned `HEAD` of `object`: whether it exists and its `Last-Modified`.
    fn head_url(&self, object: &str, now: SystemTime, expires: Duration) -> String;
    /// SigV4 query-string authentication of `method` on `object`.
    fn presign(
        &self,
        method: &str,
        object: &str,
        extra_headers: &[(String, String)],
        now: SystemTime,
        expires: Duration,
    ) -> Presigned;
}

fn path_style(cache: &RemoteCache) -> bool {
    cache.s3.path_style.unwrap_or_else(|| {
        let host = cache.s3.server_address.as_str();
        !(host.is_empty() || host.ends_with("amazonaws.com"))
    })
}

fn region(cache: &RemoteCache) -> &str {
    if cache.s3.bucket_location.is_empty() {
        "us-east-1"
    } else {
        &cache.s3.bucket_location
    }
}

/// The signed headers an upload carries for server-side encryption.
fn upload_headers(cache: &RemoteCache) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    match cache
        .s3
        .server_side_encryption
        .to_ascii_uppercase()
        .as_str()
    {
        "S3" | "AES256" => {
            headers.push(("x-amz-server-side-encryption".into(), "AES256".into()));
        }
        "KMS" | "AWS:KMS" => {
            headers.push(("x-amz-server-side-encryption".into(), "aws:kms".into()));
            if !cache.s3.server_side_encryption_key_id.is_empty() {
                headers.push((
                    "x-amz-server-side-encryption-aws-kms-key-id".into(),
                    cache.s3.server_side_encryption_key_id.clone(),
                ));
            }
        }
        "DSSE-KMS" | "AWS:KMS:DSSE" => {
            headers.push(("x-amz-server-side-encryption".into(), "aws:kms:dsse".into()));
            if !cache.s3.server_side_encryption_key_id.is_empty() {
                headers.push((
                    "x-amz-server-side-encryption-aws-kms-key-id".into(),
                    cache.s3.server_side_encryption_key_id.clone(),
                ));
            }
        }
        _ => {}
    }
    headers
}

impl Presign for RemoteCache {
    /// A presigned `GET` of `object`.
    fn download_url(&self, object: &str, now: SystemTime, expires: Duration) -> String {
        self.presign("GET", object, &[], now, expires).url
    }

    /// A presigned `PUT` of `object` and the headers to send with it.
    fn upload(&self, object: &str, now: SystemTime, expires: Duration) -> Presigned {
        self.presign("PUT", object, &upload_headers(self), now, expires)
    }

    /// A presigned `HEAD` of `object`.
    fn head_url(&self, object: &str, now: SystemTime, expires: Duration) -> String {
        self.presign("HEAD", object, &[], now, expires).url
    }

    /// SigV4 query-string authentication of `method` on `object`.
    fn presign(
        &self,
        method: &str,
        object: &str,
        extra_headers: &[(String, String)],
        now: SystemTime,
        expires: Duration,
    ) -> Presigned {
        let s3 = &self.s3;
        let server = if s3.server_address.is_empty() {
            "s3.amazonaws.com"
        } else {
            s3.server_address.as_str()
        };
        let scheme = if s3.insecure { "http" } else { "https" };
        let key_path = uri_encode(object, true);
        let (host, path) = if path_style(self) {
            (
                server.to_string(),
                format!("/{}/{key_path}", uri_encode(&s3.bucket_name, false)),
            )
        } else {
            (
                format!("{}.{server}", s3.bucket_name),
                format!("/{key_path}"),
            )
        };
        let (date, stamp) = amz_dates(now);
        let region = region(self);
        let scope = format!("{date}/{region}/s3/aws4_request");
        // Signed headers: host plus the extra ones, lowercase and sorted.
        let mut headers: Vec<(String, String)> = extra_headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        headers.push(("host".into(), host.clone()));
        headers.sort();
        let signed_headers = headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let expires = expires.as_secs().clamp(1, 604_800);
        let mut query: Vec<(String, String)> = vec![
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            (
                "X-Amz-Credential".into(),
                format!("{}/{scope}", s3.access_key),
            ),
            ("X-Amz-Date".into(), stamp.clone()),
            ("X-Amz-Expires".into(), expires.to_string()),
            ("X-Amz-SignedHeaders".into(), signed_headers.clone()),
        ];
        if !s3.session_token.expose().is_empty() {
            query.push((
                "X-Amz-Security-Token".into(),
                s3.session_token.expose().clone(),
            ));
        }
        let mut encoded: Vec<(String, String)> = query
            .iter()
            .map(|(name, value)| (uri_encode(name, false), uri_encode(value, false)))
            .collect();
        encoded.sort();
        let canonical_query = encoded
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical_headers: String = headers
            .iter()
            .map(|(name, value)| format!("{name}:{value}\n"))
            .collect();
        let canonical_request = format!(
            "{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD"
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{}", s3.secret_key.expose()).as_bytes(), &date);
        for part in [region, "s3", "aws4_request"] {
            key = hmac(&key, part);
        }
        let signature = hex(&hmac(&key, &string_to_sign));
        Presigned {
            url: format!("{scheme}://{host}{path}?{canonical_query}&X-Amz-Signature={signature}"),
            headers: extra_headers.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::remote_cache::S3Settings;
    use runner_core::secret::Secret;

    fn aws_example() -> RemoteCache {
        RemoteCache {
            s3: S3Settings {
                access_key: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
                bucket_name: "examplebucket".into(),
                ..S3Settings::default()
            },
            ..RemoteCache::default()
        }
    }

    #[test]
    fn matches_the_presigned_url_example_of_the_aws_documentation() {
        // "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)".
        let now = UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24T00:00:00Z
        let url = aws_example().download_url("test.txt", now, Duration::from_secs(86_400));
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn object_names_and_path_style_for_other_servers() {
        let mut cache = aws_example();
        cache.path = "/prefix/".into();
        assert_eq!(
            cache.object_name("abc123", 7, "deps/main"),
            "prefix/runner/abc123/project/7/deps/main"
        );
        cache.shared = true;
        cache.path.clear();
        assert_eq!(cache.object_name("abc123", 7, "k"), "project/7/k");
        cache.s3.server_address = "127.0.0.1:9000".into();
        cache.s3.insecure = true;
        let url = cache.download_url("project/7/a key", UNIX_EPOCH, Duration::from_secs(60));
        assert!(
            url.starts_with("http://127.0.0.1:9000/examplebucket/project/7/a%20key?"),
            "{url}"
        );
    }

    #[test]
    fn uploads_sign_the_encryption_headers() {
        let mut cache = aws_example();
        cache.s3.server_side_encryption = "KMS".into();
        cache.s3.server_side_encryption_key_id = "alias/cache".into();
        let upload = cache.upload("k", UNIX_EPOCH, Duration::from_secs(60));
        assert!(
            upload.url.contains(
                "X-Amz-SignedHeaders=host%3Bx-amz-server-side-encryption%3Bx-amz-server-side-encryption-aws-kms-key-id"
            ),
            "{}",
            upload.url
        );
        assert_eq!(upload.headers.len(), 2);
    }
}
