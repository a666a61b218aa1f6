//! `cache-extractor` and `cache-archiver`: the job's cache archive on local disk, optionally
//! fetched from or sent to a shared cache through presigned URLs, with upstream's flow and
//! messages (`commands/helpers/cache_extractor.go`, `cache_archiver.go`).
//!
//! While caches move between the two key namings of `FF_HASH_CACHE_KEYS`, upstream's scripts
//! name a second archive and a second object: the archiver renames `--alternate-file` to
//! `--file` when only the former exists and, for an archive that is up to date, asks
//! `--check-url` (a presigned HEAD) whether the shared cache still has it, uploading it again
//! when not; the extractor downloads whichever of `--url` and `--alternate-url` is there and
//! newer. Both write upstream's `metadata.json` next to the archive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::archive::{self, ArchiveError};
use crate::files::FileSet;
use crate::log::{self, Level};

/// Upstream's default read size for streaming a cache archive (4 MiB).
pub const DEFAULT_TRANSFER_BUFFER_SIZE: i64 = 4 * 1024 * 1024;
/// Upstream's default part size for multipart uploads and ranged downloads (16 MiB).
pub const DEFAULT_CHUNK_SIZE: i64 = 16 * 1024 * 1024;
/// Upstream's default number of parts in flight.
pub const DEFAULT_CONCURRENCY: i64 = 16;

/// The name of the file next to a cache archive that holds its metadata.
pub const METADATA_FILE_NAME: &str = "metadata.json";

/// Why a transfer failed; `retryable` ones are tried again (by default 3 tries, 1 s apart, as
/// upstream).
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

impl std::error::Error for CacheError {}

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

/// `--transfer-buffer-size`, `--chunk-size` and `--concurrency` (`CACHE_TRANSFER_BUFFER_SIZE`,
/// `CACHE_CHUNK_SIZE`, `CACHE_CONCURRENCY`) once upstream's defaults stand in for 0.
///
/// Only the buffer size changes anything here: it is the read size of an upload's body, as
/// upstream's. The chunk size and the concurrency tune upstream's GoCloud multipart uploads and
/// its parallel ranged downloads (`FF_USE_PARALLEL_CACHE_TRANSFER`). This helper has no GoCloud
/// backend and fetches an archive with one GET, which yields the same file, so those two are
/// checked as upstream checks them and otherwise unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferTuning {
    /// Bytes read from the archive at a time while uploading it.
    pub buffer_size: usize,
    /// Upstream's part size; unused here.
    pub chunk_size: u64,
    /// Upstream's parts in flight; unused here.
    pub concurrency: u64,
}

/// A transfer setting upstream refuses; the text is upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTuning {
    /// A negative buffer size.
    #[error(
        "invalid cache transfer buffer size {0} (CACHE_TRANSFER_BUFFER_SIZE / --transfer-buffer-size): \
         must be positive; use 0 for default {DEFAULT_TRANSFER_BUFFER_SIZE} bytes"
    )]
    BufferSize(i64),
    /// A negative chunk size.
    #[error(
        "invalid cache chunk size {0} (CACHE_CHUNK_SIZE / --chunk-size): must be non-negative; \
         use 0 for default {DEFAULT_CHUNK_SIZE} bytes"
    )]
    ChunkSize(i64),
    /// A negative concurrency.
    #[error(
        "invalid cache concurrency {0} (CACHE_CONCURRENCY / --concurrency): must be non-negative"
    )]
    Concurrency(i64),
}

impl TransferTuning {
    /// The archiver's settings: 0 stands for the default of each.
    pub fn for_archiver(
        buffer_size: i64,
        chunk_size: i64,
        concurrency: i64,
    ) -> Result<Self, InvalidTuning> {
        let concurrency = if concurrency == 0 {
            DEFAULT_CONCURRENCY
        } else {
            concurrency
        };
        Self::validated(buffer_size, chunk_size, concurrency)
    }

    /// The extractor's settings: 0 stands for the default buffer and chunk size. A concurrency
    /// of 0 keeps its meaning (upstream downloads sequentially at 0 or 1).
    pub fn for_extractor(
        buffer_size: i64,
        chunk_size: i64,
        concurrency: i64,
    ) -> Result<Self, InvalidTuning> {
        Self::validated(buffer_size, chunk_size, concurrency)
    }

    fn validated(
        buffer_size: i64,
        chunk_size: i64,
        concurrency: i64,
    ) -> Result<Self, InvalidTuning> {
        let buffer_size = if buffer_size == 0 {
            DEFAULT_TRANSFER_BUFFER_SIZE
        } else {
            buffer_size
        };
        let chunk_size = if chunk_size == 0 {
            DEFAULT_CHUNK_SIZE
        } else {
            chunk_size
        };
        let buffer = usize::try_from(buffer_size)
            .ok()
            .filter(|size| *size > 0)
            .ok_or(InvalidTuning::BufferSize(buffer_size))?;
        let chunk = u64::try_from(chunk_size).map_err(|_| InvalidTuning::ChunkSize(chunk_size))?;
        let parts =
            u64::try_from(concurrency).map_err(|_| InvalidTuning::Concurrency(concurrency))?;
        Ok(Self {
            buffer_size: buffer,
            chunk_size: chunk,
            concurrency: parts,
        })
    }
}

impl Default for TransferTuning {
    fn default() -> Self {
        Self {
            buffer_size: DEFAULT_TRANSFER_BUFFER_SIZE as usize,
            chunk_size: DEFAULT_CHUNK_SIZE as u64,
            concurrency: DEFAULT_CONCURRENCY as u64,
        }
    }
}

/// `--retry` and `--retry-time`: how often a transfer that may pass is tried again, and the
/// pause before each new try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first; 0 or less: none.
    pub retries: i64,
    /// The pause before each new try.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    /// Upstream's: 2 more tries, 1 s apart.
    fn default() -> Self {
        Self {
            retries: 2,
            delay: Duration::from_secs(1),
        }
    }
}

/// Upstream's cache HTTP client: the overall timeout of each request is `--timeout` minutes
/// (10 when 0 or less).
pub fn client(timeout_minutes: i64) -> Result<reqwest::Client, CacheError> {
    let minutes = u64::try_from(timeout_minutes)
        .ok()
        .filter(|minutes| *minutes > 0)
        .unwrap_or(10);
    reqwest::Client::builder()
        .timeout(Duration::from_secs(minutes.saturating_mul(60)))
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

/// `received: <status>`, and the code and message of an S3-style `<Error>` document when the
/// body is one; 5xx may pass and is retried.
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
    if let Some(detail) = storage_error(&body) {
        message.push_str(&format!(". Request failed with {detail}"));
    }
    CacheError {
        message,
        retryable: status.is_server_error(),
    }
}

/// `code: <Code>, message: <Message>` of an `<Error>` document (S3, GCS and Azure answer
/// failures with one), or `None` when the body is no such document or both are empty.
fn storage_error(body: &str) -> Option<String> {
    let mut rest = body.trim_start();
    if rest.starts_with("<?") {
        rest = rest[rest.find("?>")? + 2..].trim_start();
    }
    let after = rest.strip_prefix("<Error")?;
    if !after.starts_with(['>', ' ', '\t', '\r', '\n']) {
        return None;
    }
    let code = xml_field(body, "Code").unwrap_or_default();
    let text = xml_field(body, "Message").unwrap_or_default();
    if code.is_empty() && text.is_empty() {
        return None;
    }
    let mut detail = String::new();
    if !code.is_empty() {
        detail = format!("code: {code}");
    }
    if !text.is_empty() {
        detail.push_str(&format!(", message: {text}"));
    }
    Some(detail)
}

fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(
        body[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Runs `attempt`, then tries again up to `policy.retries` times, `policy.delay` apart, while
/// it fails with a retryable error.
pub async fn with_retries<F, Fut, T>(policy: RetryPolicy, mut attempt: F) -> Result<T, CacheError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CacheError>>,
{
    let mut result = attempt().await;
    for _ in 0..policy.retries.max(0) {
        let message = match &result {
            Err(error) if error.retryable => error.message.clone(),
            _ => return result,
        };
        tokio::time::sleep(policy.delay).await;
        log::log(Level::Warning, "Retrying...", &[("error", message)]);
        result = attempt().await;
    }
    result
}

/// The metadata of a cache archive: `--metadata` / `CACHE_METADATA` for uploads, the
/// `X-Amz-Meta-*` (`X-Goog-Meta-*`, ...) headers of a download.
pub type Metadata = BTreeMap<String, String>;

/// Parses `--metadata`: a JSON object of strings (`null` and an empty text are no metadata).
pub fn parse_metadata(text: &str) -> Result<Metadata, serde_json::Error> {
    if text.trim().is_empty() {
        return Ok(Metadata::new());
    }
    Ok(serde_json::from_str::<Option<Metadata>>(text)?.unwrap_or_default())
}

/// Writes `metadata.json` next to `archive`: keys lowercased (empty ones dropped), as Go's
/// `json.Marshal` writes it (sorted keys, `<`, `>` and `&` escaped).
pub fn write_metadata_file(archive: &Path, metadata: &Metadata) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let normalized: Metadata = metadata
        .iter()
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_lowercase(), value.clone()))
        .collect();
    let json = serde_json::to_string(&normalized)
        .map_err(std::io::Error::other)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let path = archive
        .parent()
        .unwrap_or(Path::new("."))
        .join(METADATA_FILE_NAME);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&path)?;
    file.write_all(json.as_bytes())
}

/// The metadata a storage service sends with an object: each `X-<vendor>-Meta-<key>` header
/// gives `<key>`.
pub fn metadata_from_headers(headers: &reqwest::header::HeaderMap) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let parts: Vec<&str> = name.as_str().split('-').collect();
        if parts.len() < 4
            || !parts[0].eq_ignore_ascii_case("x")
            || !parts[2].eq_ignore_ascii_case("meta")
        {
            continue;
        }
        let key = parts[3..].join("-");
        if metadata.contains_key(&key) {
            continue;
        }
        metadata.insert(key, String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    metadata
}

/// Where `cache-extractor` may fetch the archive from: `--url`, and while caches move between
/// key namings `--alternate-url`, each with an optional presigned HEAD URL (`--head-url`,
/// `--alternate-head-url`) to read its date with.
#[derive(Debug, Clone, Default)]
pub struct DownloadUrls {
    /// The presigned GET of the archive under the current key naming.
    pub url: String,
    /// A presigned HEAD of the same object; empty: HEAD is sent to `url`.
    pub head_url: String,
    /// The presigned GET under the other key naming; empty: only `url` is used.
    pub alternate_url: String,
    /// A presigned HEAD of the alternate object; empty: HEAD is sent to `alternate_url`.
    pub alternate_head_url: String,
}

/// The `Last-Modified` date a HEAD of `url` answers, or `None` when the object is not there, the
/// request fails or the date is missing or malformed (all mean "not available").
async fn last_modified(client: &reqwest::Client, url: &str) -> Option<SystemTime> {
    let response = client.head(url).send().await.ok()?;
    if response.status() != reqwest::StatusCode::OK {
        return None;
    }
    let date = response.headers().get("Last-Modified")?.to_str().ok()?;
    httpdate::parse_http_date(date).ok()
}

/// A date as a log field in upstream's text (Go's `time.Time` printed with `%v`): dates read
/// from HTTP headers are in the `GMT` zone, a missing one is Go's zero time.
fn go_time(time: Option<SystemTime>) -> String {
    let Some(time) = time else {
        return "0001-01-01 00:00:00 +0000 UTC".to_string();
    };
    let (date_time, _) = runner_core::log::utc_date_time(time, ' ');
    format!("{date_time} +0000 GMT")
}

/// Upstream's choice between the two objects: the alternate one when the primary is not
/// available and the alternate is, or when both are and the alternate is newer; the primary
/// otherwise. Without an alternate URL nothing is asked.
pub async fn select_download_url(client: &reqwest::Client, urls: &DownloadUrls) -> String {
    if urls.alternate_url.is_empty() {
        return urls.url.clone();
    }
    let primary_head = if urls.head_url.is_empty() {
        &urls.url
    } else {
        &urls.head_url
    };
    let alternate_head = if urls.alternate_head_url.is_empty() {
        &urls.alternate_url
    } else {
        &urls.alternate_head_url
    };
    let primary = last_modified(client, primary_head).await;
    let alternate = last_modified(client, alternate_head).await;
    let fields = [
        ("primary_url", clean_url(&urls.url)),
        ("alternate_url", clean_url(&urls.alternate_url)),
        ("primary_modified", go_time(primary)),
        ("alternate_modified", go_time(alternate)),
    ];
    let (message, chosen) = match (primary, alternate) {
        (None, Some(_)) => (
            "Selecting alternate cache URL: primary not available",
            &urls.alternate_url,
        ),
        (Some(primary), Some(alternate)) if alternate > primary => (
            "Selecting alternate cache URL: newer timestamp",
            &urls.alternate_url,
        ),
        _ => ("Selecting primary cache URL", &urls.url),
    };
    log::log(Level::Info, message, &fields);
    chosen.clone()
}

/// One try of `cache-extractor`'s download: picks the object ([`select_download_url`]) and
/// fetches it into `file` ([`download`]).
pub async fn fetch(
    client: &reqwest::Client,
    urls: &DownloadUrls,
    file: &Path,
) -> Result<(), CacheError> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|error| fail(error.to_string()))?;
    }
    log::info("Using presigned URL for cache download");
    let url = select_download_url(client, urls).await;
    download(client, &url, file).await
}

/// Fetches the remote archive into `file`, unless the local copy is at least as new as the
/// remote one's `Last-Modified`, then writes the object's metadata next to it. A missing remote
/// object is "file does not exist".
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
        .map(|etag| vec![("etag", etag.to_string())])
        .unwrap_or_default();
    log::log(
        Level::Info,
        &format!("Downloading {name} from {}", clean_url(url)),
        &fields,
    );
    let metadata = metadata_from_headers(response.headers());
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
        .map_err(|error| fail(format!("renaming: {}", error.error)))?;
    write_metadata_file(file, &metadata)
        .map_err(|error| fail(format!("writing metadata file: {error}")))
}

/// Sends `file` with a PUT: `application/octet-stream` unless a header says otherwise, its
/// modification time as `Last-Modified`, and the `--header` values; the body is read
/// `buffer_size` bytes at a time.
pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    headers: &[String],
    file: &Path,
    buffer_size: usize,
) -> Result<(), CacheError> {
    let handle = tokio::fs::File::open(file)
        .await
        .map_err(|error| fail(error.to_string()))?;
    let metadata = handle
        .metadata()
        .await
        .map_err(|error| fail(error.to_string()))?;
    log::info("Using presigned URL for cache upload");
    let base = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    log::info(&format!("Uploading {base} to {}", clean_url(url)));
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
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        handle,
        buffer_size.max(1),
    ));
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

/// Whether the shared cache has the object `check_url` (a presigned HEAD) names: only a 200
/// says yes; a failed request is logged and taken as no.
pub async fn remote_exists(client: &reqwest::Client, check_url: &str) -> bool {
    match client.head(check_url).send().await {
        Ok(response) => response.status() == reqwest::StatusCode::OK,
        Err(error) => {
            log::log(
                Level::Warning,
                "Failed to check primary cache existence via HEAD request, assuming absent",
                &[("error", error.to_string())],
            );
            false
        }
    }
}

/// Renames `alternate` (the archive under the other key naming) to `file` when `file` does not
/// exist and `alternate` does, so that a cache kept before a key-naming change is not rebuilt.
/// Nothing here fails the archiver: problems are warnings.
pub fn rename_alternate_file(file: &Path, alternate: &Path) {
    if alternate == file {
        return;
    }
    match std::fs::metadata(file) {
        Ok(_) => return,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            log::log(
                Level::Warning,
                "Failed to stat primary cache file",
                &[("error", format!("stat {}: {error}", file.display()))],
            );
            return;
        }
    }
    if std::fs::metadata(alternate).is_err() {
        return;
    }
    if let Some(parent) = file.parent() {
        if let Err(error) = std::fs::create_dir_all(parent) {
            log::log(
                Level::Warning,
                "Failed to create directory for cache file rename",
                &[("error", format!("mkdir {}: {error}", parent.display()))],
            );
            return;
        }
    }
    if let Err(error) = std::fs::rename(alternate, file) {
        log::log(
            Level::Warning,
            "Failed to rename alternate cache file to primary",
            &[(
                "error",
                format!("rename {} {}: {error}", alternate.display(), file.display()),
            )],
        );
        return;
    }
    log::info("Renamed alternate cache file to primary");
}

/// What `cache-archiver` does, from its flags.
#[derive(Debug, Clone, Default)]
pub struct ArchiverOptions {
    /// `--file`: the local archive.
    pub file: PathBuf,
    /// `--alternate-file` when it names another file than `--file`: the archive under the other
    /// key naming.
    pub alternate_file: Option<PathBuf>,
    /// `--alternate-file` is `--file`: an archive that is up to date is left alone. Otherwise
    /// (upstream: also when the flag is absent) it is checked against the shared cache with
    /// `check_url` and uploaded again when it is missing there.
    pub up_to_date_is_final: bool,
    /// `--url`: the presigned PUT of the shared cache object; empty: local only.
    pub url: String,
    /// `--check-url`: a presigned HEAD of the same object.
    pub check_url: String,
    /// `--gocloud-url`: not supported here (see [`ArchiveCacheError::GoCloudUnsupported`]).
    pub gocloud_url: String,
    /// `--header` values for the PUT, `Name: value`.
    pub headers: Vec<String>,
    /// `--metadata` / `CACHE_METADATA`, written to `metadata.json` next to a new archive.
    pub metadata: Metadata,
    /// `--compression-level` / `CACHE_COMPRESSION_LEVEL`, as [`archive::compression_level`]
    /// reads it.
    pub compression_level: Option<i64>,
    /// `--compression-format` / `CACHE_COMPRESSION_FORMAT` as given.
    pub compression_format: String,
    /// `--max-uploaded-archive-size`: bigger archives stay local; 0 is no limit.
    pub max_uploaded_archive_size: i64,
    /// `--timeout`: minutes for each request ([`client`]).
    pub timeout_minutes: i64,
    /// `--retry`, `--retry-time`.
    pub retry: RetryPolicy,
    /// `--transfer-buffer-size`, `--chunk-size`, `--concurrency`.
    pub tuning: TransferTuning,
}

/// Why `cache-archiver` failed. The text is what it prints before exiting 1: as a warning for
/// [`ArchiveCacheError::is_warning`], as a fatal error otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveCacheError {
    /// `--compression-format` asks for zstd (`tarzstd`, `zipzstd`), which this helper does not
    /// write.
    #[error(
        "cache compression format {0:?} (CACHE_COMPRESSION_FORMAT / --compression-format) is not \
         supported by gitlab-runner-rs, which writes zip cache archives only"
    )]
    UnsupportedFormat(String),
    /// The archive could not be written; the text is the cause's own.
    #[error(transparent)]
    Create(#[from] CreateArchiveError),
    /// `metadata.json` could not be written.
    #[error("writing metadata file")]
    Metadata(#[source] std::io::Error),
    /// `--gocloud-url` needs cloud credentials and an SDK this helper does not have.
    #[error(
        "GoCloud cache URLs are not supported by gitlab-runner-rs; use a presigned-URL cache (Type = \"s3\")"
    )]
    GoCloudUnsupported,
    /// The upload (or creating its client) failed, after the retries.
    #[error(transparent)]
    Transfer(CacheError),
}

impl ArchiveCacheError {
    /// Printed as a `WARNING:` rather than a `FATAL:` line (both exit 1).
    pub fn is_warning(&self) -> bool {
        matches!(self, Self::GoCloudUnsupported)
    }

    /// The line the archiver prints: the text with its cause where the text does not already
    /// carry it (`writing metadata file: <cause>`).
    pub fn message(&self) -> String {
        match self {
            Self::Metadata(cause) => format!("{self}: {cause}"),
            other => other.to_string(),
        }
    }
}

/// The zip format, or the refusal of a format upstream would write instead: `tarzstd` and
/// `zipzstd` (in any case) pick those upstream, anything else is zip.
fn check_compression_format(format: &str) -> Result<(), ArchiveCacheError> {
    let format = format.to_lowercase();
    match format.as_str() {
        "tarzstd" | "zipzstd" => Err(ArchiveCacheError::UnsupportedFormat(format)),
        _ => Ok(()),
    }
}

/// `cache-archiver` after its files are enumerated: nothing to do without files; an archive
/// that is up to date is only checked against the shared cache (see
/// [`ArchiverOptions::up_to_date_is_final`]) and uploaded again when it is missing there; otherwise
/// the archive and its `metadata.json` are written and uploaded.
pub async fn archive_and_upload(
    options: &ArchiverOptions,
    wd: &Path,
    files: &FileSet,
) -> Result<(), ArchiveCacheError> {
    if files.is_empty() {
        log::warning("No files to cache.");
        return Ok(());
    }
    if !archive_is_stale(&options.file, files) {
        if options.up_to_date_is_final {
            log::info("Archive is up to date!");
            return Ok(());
        }
        return upload_existing_archive(options).await;
    }
    check_compression_format(&options.compression_format)?;
    let size = create_archive(&options.file, wd, files, options.compression_level)?;
    write_metadata_file(&options.file, &options.metadata).map_err(ArchiveCacheError::Metadata)?;
    upload_archive(options, size).await
}

/// Upstream's answer to an archive that may have come from the alternate object: the primary
/// object may never have been written, so it is uploaded unless HEAD finds it.
async fn upload_existing_archive(options: &ArchiverOptions) -> Result<(), ArchiveCacheError> {
    let Ok(metadata) = std::fs::metadata(&options.file) else {
        return Ok(());
    };
    if !options.gocloud_url.is_empty() {
        return Err(ArchiveCacheError::GoCloudUnsupported);
    }
    let exists = if options.check_url.is_empty() {
        false
    } else {
        let client = client(options.timeout_minutes).map_err(ArchiveCacheError::Transfer)?;
        remote_exists(&client, &options.check_url).await
    };
    if exists {
        log::info("Primary cache already exists remotely, skipping upload");
        return Ok(());
    }
    log::info("Primary cache does not exist remotely, uploading existing archive");
    upload_archive(options, metadata.len()).await
}

/// Uploads the archive of `size` bytes unless there is no URL or it is over the size limit.
async fn upload_archive(options: &ArchiverOptions, size: u64) -> Result<(), ArchiveCacheError> {
    if options.url.is_empty() && options.gocloud_url.is_empty() {
        log::info(
            "No URL provided, cache will not be uploaded to shared cache server. \
             Cache will be stored only locally.",
        );
        return Ok(());
    }
    let limit = options.max_uploaded_archive_size;
    if limit != 0 && i128::from(size) > i128::from(limit) {
        log::info(&format!(
            "Cache archive size ({size}) is too big (Limit is set to {limit}). Cache will be stored only locally."
        ));
        return Ok(());
    }
    if !options.gocloud_url.is_empty() {
        return Err(ArchiveCacheError::GoCloudUnsupported);
    }
    let client = client(options.timeout_minutes).map_err(ArchiveCacheError::Transfer)?;
    with_retries(options.retry, || {
        upload(
            &client,
            &options.url,
            &options.headers,
            &options.file,
            options.tuning.buffer_size,
        )
    })
    .await
    .map_err(ArchiveCacheError::Transfer)
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
    fn storage_error_documents_add_their_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The signature &amp; the key differ</Message></Error>";
        assert_eq!(
            storage_error(body).as_deref(),
            Some("code: SignatureDoesNotMatch, message: The signature & the key differ")
        );
        assert_eq!(
            storage_error("<Error><Code>NoSuchKey</Code></Error>").as_deref(),
            Some("code: NoSuchKey")
        );
        assert_eq!(storage_error("not xml"), None);
        assert_eq!(storage_error("<Other><Code>X</Code></Other>"), None);
        assert_eq!(storage_error("<Error></Error>"), None);
    }

    #[test]
    fn transfer_tuning_takes_upstreams_defaults_and_refuses_negatives() {
        let archiver = TransferTuning::for_archiver(0, 0, 0).unwrap();
        assert_eq!(archiver, TransferTuning::default());
        let extractor = TransferTuning::for_extractor(0, 0, 0).unwrap();
        assert_eq!(extractor.concurrency, 0);
        assert_eq!(extractor.buffer_size, 4 * 1024 * 1024);
        assert_eq!(
            TransferTuning::for_archiver(-1, 0, 0)
                .unwrap_err()
                .to_string(),
            "invalid cache transfer buffer size -1 (CACHE_TRANSFER_BUFFER_SIZE / \
             --transfer-buffer-size): must be positive; use 0 for default 4194304 bytes"
        );
        assert_eq!(
            TransferTuning::for_extractor(1, -2, 0)
                .unwrap_err()
                .to_string(),
            "invalid cache chunk size -2 (CACHE_CHUNK_SIZE / --chunk-size): must be \
             non-negative; use 0 for default 16777216 bytes"
        );
        assert_eq!(
            TransferTuning::for_extractor(1, 1, -3).unwrap_err().to_string(),
            "invalid cache concurrency -3 (CACHE_CONCURRENCY / --concurrency): must be non-negative"
        );
    }

    #[test]
    fn metadata_is_parsed_and_written_as_upstream() {
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(parse_metadata("null").unwrap().is_empty());
        assert!(parse_metadata("{\"a\":1}").is_err());
        let metadata = parse_metadata("{\"CacheKey\":\"a<b>&c\",\"\":\"dropped\"}").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("key/cache.zip");
        std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
        write_metadata_file(&archive, &metadata).unwrap();
        let path = dir.path().join("key/metadata.json");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"cachekey\":\"a\\u003cb\\u003e\\u0026c\"}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
    }

    #[test]
    fn metadata_comes_from_vendor_meta_headers() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-amz-meta-cachekey", "main".parse().unwrap());
        headers.insert("x-goog-meta-some-thing", "value".parse().unwrap());
        headers.insert("x-amz-request-id", "abc".parse().unwrap());
        headers.insert("content-type", "application/zip".parse().unwrap());
        let metadata = metadata_from_headers(&headers);
        assert_eq!(
            metadata.into_iter().collect::<Vec<_>>(),
            vec![
                ("cachekey".to_string(), "main".to_string()),
                ("some-thing".to_string(), "value".to_string())
            ]
        );
    }

    #[test]
    fn dates_are_logged_as_go_prints_them() {
        assert_eq!(go_time(None), "0001-01-01 00:00:00 +0000 UTC");
        let when = httpdate::parse_http_date("Wed, 01 May 2024 10:02:03 GMT").unwrap();
        assert_eq!(go_time(Some(when)), "2024-05-01 10:02:03 +0000 GMT");
    }

    #[test]
    fn zstd_formats_are_refused_by_name_and_others_are_zip() {
        for format in ["", "zip", "ZIP", "gzip", "anything"] {
            assert!(check_compression_format(format).is_ok(), "{format}");
        }
        let error = check_compression_format("TarZstd").unwrap_err();
        assert_eq!(
            error.to_string(),
            "cache compression format \"tarzstd\" (CACHE_COMPRESSION_FORMAT / \
             --compression-format) is not supported by gitlab-runner-rs, which writes zip cache \
             archives only"
        );
        assert!(check_compression_format("zipzstd").is_err());
    }

    #[test]
    fn an_alternate_archive_is_renamed_only_when_the_primary_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("hashed/cache.zip");
        let alternate = dir.path().join("plain/cache.zip");
        std::fs::create_dir_all(alternate.parent().unwrap()).unwrap();
        std::fs::write(&alternate, "old").unwrap();
        rename_alternate_file(&primary, &alternate);
        assert_eq!(std::fs::read_to_string(&primary).unwrap(), "old");
        assert!(!alternate.exists());
        std::fs::write(&alternate, "other").unwrap();
        rename_alternate_file(&primary, &alternate);
        assert_eq!(std::fs::read_to_string(&primary).unwrap(), "old");
        assert!(alternate.exists());
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
