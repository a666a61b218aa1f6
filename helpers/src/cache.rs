//! `cache-extractor` and `cache-archiver`: the job's cache archive on local disk, optionally
//! fetched from or sent to a shared cache through presigned URLs, with upstream's flow and
//! messages (`commands/helpers/cache_extractor.go`, `cache_archiver.go`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::archive::{self, ArchiveError};
use crate::files::FileSet;
use crate::log::{self, Level};

/// Why a transfer failed; `retryable` ones are tried again (3 tries, 1 s apart, as upstream).
#[derive(Debug)]
pub struct CacheError {
    /// What went wrong, as printed in the job log (`received: 404 Not Found`, an I/O error, ...).
    pub message: String,
    /// The failure may pass (a network error or a 5xx answer), so the transfer is tried again.
    pub retryable: bool,
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail(message: impl Into<String>) -> CacheError {
    CacheError {
        message: message.into(),
        retryable: false,
    }
}

fn retryable(message: impl Into<String>) -> CacheError {
    CacheError {
        message: message.into(),
        retryable: true,
    }
}

/// Upstream's cache HTTP client: the overall timeout is `--timeout` minutes (10 by default).
pub fn client(timeout_minutes: u64) -> Result<reqwest::Client, CacheError> {
    let minutes = if timeout_minutes == 0 {
        10
    } else {
        timeout_minutes
    };
    reqwest::Client::builder()
        .timeout(Duration::from_secs(minutes * 60))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| fail(error.to_string()))
}

/// A URL without its query (where presigned credentials live), for the log.
pub fn clean_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => base.to_string(),
        None => url.to_string(),
    }
}

/// `received: <status>`; 5xx may pass and is retried. An S3 error document adds its code.
async fn status_error(response: reqwest::Response) -> CacheError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let mut message = format!(
        "received: {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string();
    if let Some(code) = xml_field(&body, "Code") {
        message.push_str(&format!(" ({code})"));
    }
    CacheError {
        message,
        retryable: status.is_server_error(),
    }
}

fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].to_string())
}

/// Runs `attempt` up to 3 times, 1 s apart, while it fails with a retryable error.
pub async fn with_retries<F, Fut, T>(mut attempt: F) -> Result<T, CacheError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CacheError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(error) if error.retryable && tries < 3 => {
                log::log(Level::Warning, "Retrying...", &[("error", error.message)]);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Fetches the remote archive into `file`, unless the local copy is at least as new as the
/// remote one's `Last-Modified`. A missing remote object is "file does not exist".
pub async fn download(client: &reqwest::Client, url: &str, file: &Path) -> Result<(), CacheError> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|error| fail(error.to_string()))?;
    }
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| retryable(error.to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(fail("file does not exist"));
    }
    if !response.status().is_success() {
        return Err(status_error(response).await);
    }
    let remote_date = response
        .headers()
        .get("Last-Modified")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| httpdate::parse_http_date(value).ok());
    let local_date = std::fs::symlink_metadata(file)
        .and_then(|metadata| metadata.modified())
        .ok();
    let base = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(local) = local_date {
        if remote_date.is_none_or(|remote| remote <= local) {
            log::info(&format!("{base} is up to date"));
            return Ok(());
        }
    }
    // Caches are stored as `.zip` whatever their format; the log leaves the extension out.
    let name = Path::new(&base)
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or(base.clone());
    let fields: Vec<(&str, String)> = response
        .headers()
        .get("ETag")
        .and_then(|value| value.to_str().ok())
        .map(|etag| vec![("ETag", etag.to_string())])
        .unwrap_or_default();
    log::log(
        Level::Info,
        &format!("Downloading {name} from {}", clean_url(url)),
        &fields,
    );
    let directory = file.parent().unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix("cache")
        .tempfile_in(directory)
        .map_err(|error| fail(error.to_string()))?;
    crate::artifacts::copy_body(response, temp.path())
        .await
        .map_err(|error| retryable(error.to_string()))?;
    let when = remote_date.unwrap_or_else(SystemTime::now);
    temp.as_file()
        .set_modified(when)
        .map_err(|error| fail(error.to_string()))?;
    temp.persist(file)
        .map_err(|error| fail(error.error.to_string()))?;
    Ok(())
}

/// Sends `file` with a PUT: `application/octet-stream` unless a header says otherwise, its
/// modification time as `Last-Modified`, and the `--header` values.
pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    headers: &[String],
    file: &Path,
) -> Result<(), CacheError> {
    let base = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    log::info(&format!("Uploading {base} to {}", clean_url(url)));
    let handle = tokio::fs::File::open(file)
        .await
        .map_err(|error| fail(error.to_string()))?;
    let metadata = handle
        .metadata()
        .await
        .map_err(|error| fail(error.to_string()))?;
    let mut request = client.put(url);
    let mut content_type = false;
    for header in headers {
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let name = name.trim();
        content_type |= name.eq_ignore_ascii_case("content-type");
        request = request.header(name, value.trim());
    }
    if !content_type {
        request = request.header("Content-Type", "application/octet-stream");
    }
    if let Ok(modified) = metadata.modified() {
        request = request.header("Last-Modified", httpdate::fmt_http_date(modified));
    }
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(handle));
    let response = request
        .header("Content-Length", metadata.len())
        .body(body)
        .send()
        .await
        .map_err(|error| retryable(error.to_string()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(status_error(response).await)
    }
}

/// Upstream's `isFileChanged`: the archive must be rebuilt when it is missing or any selected
/// file is newer than it.
pub fn archive_is_stale(archive: &Path, files: &FileSet) -> bool {
    let Ok(archive_time) = std::fs::metadata(archive).and_then(|m| m.modified()) else {
        return true;
    };
    files.values().any(|metadata| {
        metadata
            .modified()
            .is_ok_and(|modified| modified > archive_time)
    })
}

/// Why [`create_archive`] could not write the cache archive. Each variant shows only its
/// cause's own text, which is what the archiver logs before it exits.
#[derive(Debug, thiserror::Error)]
pub enum CreateArchiveError {
    /// The directory that holds the archive could not be created.
    #[error(transparent)]
    CreateDirectory(std::io::Error),
    /// The temporary file next to the archive could not be created or reopened.
    #[error(transparent)]
    TempFile(std::io::Error),
    /// The zip archive could not be written.
    #[error(transparent)]
    Write(#[from] ArchiveError),
    /// The written archive's size could not be read.
    #[error(transparent)]
    Size(std::io::Error),
    /// The temporary file could not be moved to the archive's path.
    #[error(transparent)]
    Persist(std::io::Error),
}

/// Writes the zip archive of `files` next to `archive`, then moves it into place. Returns its
/// size.
pub fn create_archive(
    archive: &Path,
    wd: &Path,
    files: &FileSet,
    level: Option<i64>,
) -> Result<u64, CreateArchiveError> {
    let directory = archive.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory).map_err(CreateArchiveError::CreateDirectory)?;
    let temp = tempfile::Builder::new()
        .prefix("archive_")
        .tempfile_in(directory)
        .map_err(CreateArchiveError::TempFile)?;
    archive::write_zip(
        temp.reopen().map_err(CreateArchiveError::TempFile)?,
        wd,
        files,
        level,
    )?;
    let size = temp
        .as_file()
        .metadata()
        .map_err(CreateArchiveError::Size)?
        .len();
    temp.persist(archive)
        .map_err(|error| CreateArchiveError::Persist(error.error))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_the_log() {
        assert_eq!(
            clean_url("http://s3.local/bucket/key?X-Amz-Signature=abc"),
            "http://s3.local/bucket/key"
        );
    }

    #[test]
    fn s3_error_codes_are_read_from_the_document() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code></Error>";
        assert_eq!(
            xml_field(body, "Code").as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert_eq!(xml_field("not xml", "Code"), None);
    }

    #[test]
    fn an_archive_is_stale_when_missing_or_older_than_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "x").unwrap();
        let mut files = FileSet::new();
        files.insert("a.txt".into(), std::fs::metadata(&file).unwrap());
        let archive = dir.path().join("cache.zip");
        assert!(archive_is_stale(&archive, &files));
        std::fs::write(&archive, "zip").unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&archive)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(!archive_is_stale(&archive, &files));
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later + Duration::from_secs(60))
            .unwrap();
        files.insert("a.txt".into(), std::fs::metadata(&file).unwrap());
        assert!(archive_is_stale(&archive, &files));
    }
}
