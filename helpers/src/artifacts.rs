//! `artifacts-uploader` and `artifacts-downloader`: the job's artifacts archive to
//! `POST /api/v4/jobs/:id/artifacts`, a dependency's archive from `GET .../artifacts`, with
//! upstream's retries, redirects and messages.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::log::{self, Level};

/// Why an artifacts upload or download failed; its message is what the helper command prints
/// before it exits.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// GitLab answered 403: the job token may not upload or fetch these artifacts. Not retried.
    #[error("permission denied")]
    Forbidden,
    /// GitLab answered 413 to an upload: the archive is over the instance's artifact size limit.
    /// Not retried.
    #[error("too large")]
    TooLarge,
    /// GitLab answered 401 to a download: the job token was refused. Not retried.
    #[error("unauthorized")]
    Unauthorized,
    /// GitLab answered 404 to a download: the archive is gone (expired or erased);
    /// `artifacts-downloader` then exits with `MISSING_DEPENDENCY_EXIT_CODE`.
    #[error("not found")]
    NotFound,
    /// Anything else (connection errors, other statuses, local I/O, retries used up), as text;
    /// downloads retry these.
    #[error("{0}")]
    Other(String),
}

/// Credentials of the job (or of the dependency, for downloads).
#[derive(Debug, Clone)]
pub struct JobCredentials {
    /// GitLab's URL (`CI_SERVER_URL`, `--url`); a trailing `/ci` is dropped before `/api/v4/`.
    pub url: String,
    /// The job token (`CI_JOB_TOKEN`): kept out of `Debug` and logs.
    pub token: runner_core::secret::Secret<String>,
    /// The job's id (`CI_JOB_ID`, `--id`): uploads go to it, downloads come from it.
    pub id: i64,
    /// PEM bundle of CA certificates trusted for GitLab on top of the built-in roots
    /// (`CI_SERVER_TLS_CA_FILE`).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for GitLab (`CI_SERVER_TLS_CERT_FILE`); used only together with
    /// `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert_file` (`CI_SERVER_TLS_KEY_FILE`).
    pub tls_key_file: Option<PathBuf>,
}

impl JobCredentials {
    fn api(&self, path: &str) -> String {
        let trimmed = self.url.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/ci").unwrap_or(trimmed);
        format!("{trimmed}/api/v4/{path}")
    }

    fn short_token(&self) -> String {
        runner_core::dirs::short_token(self.token.expose())
    }

    /// An HTTP client for GitLab with these TLS files, no automatic redirects, 30 seconds to
    /// connect and, when given, `timeout` for each request as a whole.
    pub fn client(&self, timeout: Option<Duration>) -> Result<reqwest::Client, TransferError> {
        let tls = runner_http::TlsOptions {
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        };
        let mut builder = runner_http::client_builder(&tls)
            .map_err(|error| TransferError::Other(runner_core::failure::error_chain(&error)))?
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30));
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        builder
            .build()
            .map_err(|error| TransferError::Other(error.to_string()))
    }
}

/// What to upload besides the archive.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// `--name`: the archive's base name.
    pub name: String,
    /// `--expire-in`: how long GitLab keeps the artifacts, such as `1 week`; empty: not sent, so
    /// the instance's default applies.
    pub expire_in: String,
    /// `--artifact-format` as given (sent only when set).
    pub format: String,
    /// `--artifact-type`: the report type, such as `junit`; empty: not sent (a plain archive).
    pub artifact_type: String,
    /// `--timeout`: the limit for each upload request as a whole; `None`: no limit.
    pub timeout: Option<Duration>,
}

/// The uploaded file name: the base name of `--name` (`default` when empty) plus the
/// extension of the format.
pub fn artifact_filename(name: &str, format: &str) -> String {
    let base = Path::new(name)
        .file_name()
        .map(|base| base.to_string_lossy().into_owned())
        .filter(|base| !base.is_empty() && base != ".")
        .unwrap_or_else(|| "default".into());
    match format {
        "" | "zip" | "zipzstd" => format!("{base}.zip"),
        "gzip" => format!("{base}.gz"),
        "tarzstd" => format!("{base}.tar.zst"),
        _ => base,
    }
}

fn status_text(status: reqwest::StatusCode, body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(message) = value["message"].as_str() {
            return message.to_string();
        }
    }
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string()
}

enum Attempt {
    Done,
    Retry { service_unavailable: bool },
    Redirect(String),
    Fail(TransferError),
}

/// Uploads `archive` (a finished file) under the job's credentials, retrying as upstream:
/// 3 tries, 6 for 503, 307 moves to the new host, 403 and 413 stop at once.
pub async fn upload(
    mut credentials: JobCredentials,
    options: &UploadOptions,
    archive: &Path,
) -> Result<(), TransferError> {
    let client = credentials.client(options.timeout)?;
    let filename = artifact_filename(&options.name, &options.format);
    let prefix = if options.artifact_type.is_empty() {
        "Uploading artifacts to coordinator...".to_string()
    } else {
        format!(
            "Uploading artifacts as {:?} to coordinator...",
            options.artifact_type
        )
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let attempt =
            upload_once(&client, &credentials, options, archive, &filename, &prefix).await;
        let (retry, limit) = match attempt {
            Attempt::Done => return Ok(()),
            Attempt::Fail(error) => return Err(error),
            Attempt::Redirect(location) => {
                let new_url = runner_core::url::origin(&location).ok_or_else(|| {
                    TransferError::Other(format!("parsing new location URL: {location}"))
                })?;
                log::log(
                    Level::Info,
                    "Upload request redirected",
                    &[("location", location.clone()), ("new-url", new_url.clone())],
                );
                credentials.url = new_url;
                ("request redirected".to_string(), 3)
            }
            Attempt::Retry {
                service_unavailable: true,
            } => ("service unavailable".to_string(), 6),
            Attempt::Retry { .. } => ("upload failed".to_string(), 3),
        };
        if tries >= limit {
            return Err(TransferError::Other(retry));
        }
        let backoff = Duration::from_secs(1 << (tries - 1).min(2));
        log::log(
            Level::Warning,
            "Retrying...",
            &[("context", "artifacts-uploader".into()), ("error", retry)],
        );
        tokio::time::sleep(backoff).await;
    }
}

async fn upload_once(
    client: &reqwest::Client,
    credentials: &JobCredentials,
    options: &UploadOptions,
    archive: &Path,
    filename: &str,
    prefix: &str,
) -> Attempt {
    let mut fields = vec![
        ("id", credentials.id.to_string()),
        ("token", credentials.short_token()),
    ];
    let file = match tokio::fs::File::open(archive).await {
        Ok(file) => file,
        Err(error) => {
            return Attempt::Fail(TransferError::Other(format!(
                "{}: {error}",
                archive.display()
            )))
        }
    };
    let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    let part =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), length)
            .file_name(filename.to_string());
    let form = reqwest::multipart::Form::new().part("file", part);
    let mut query = Vec::new();
    for (key, value) in [
        ("expire_in", &options.expire_in),
        ("artifact_format", &options.format),
        ("artifact_type", &options.artifact_type),
    ] {
        if !value.is_empty() {
            query.push((key, value.clone()));
        }
    }
    let request = client
        .post(credentials.api(&format!("jobs/{}/artifacts", credentials.id)))
        .query(&query)
        .header("JOB-TOKEN", credentials.token.expose())
        .multipart(form);
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            log::log(
                Level::Error,
                &format!("{prefix} error"),
                &[fields.as_slice(), &[("error", error.to_string())]].concat(),
            );
            return Attempt::Retry {
                service_unavailable: false,
            };
        }
    };
    let status = response.status();
    if let Some(id) = response
        .headers()
        .get("X-Request-Id")
        .and_then(|v| v.to_str().ok())
    {
        fields.push(("correlation_id", id.to_string()));
    }
    let location = response
        .headers()
        .get("Location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let body = response.text().await.unwrap_or_default();
    let text = status_text(status, &body);
    fields.push(("status", status.as_u16().to_string()));
    let message = format!("{prefix} {text}");
    match status.as_u16() {
        201 => {
            log::log(Level::Info, &message, &fields);
            Attempt::Done
        }
        307 => match location {
            Some(location) if !location.is_empty() => Attempt::Redirect(location),
            _ => {
                log::log(Level::Error, &format!("{message} empty location"), &fields);
                Attempt::Retry {
                    service_unavailable: false,
                }
            }
        },
        403 => {
            log::log(Level::Error, &message, &fields);
            Attempt::Fail(TransferError::Forbidden)
        }
        413 => {
            log::log(Level::Error, &message, &fields);
            Attempt::Fail(TransferError::TooLarge)
        }
        503 => {
            log::log(Level::Error, &message, &fields);
            Attempt::Retry {
                service_unavailable: true,
            }
        }
        _ => {
            log::log(Level::Warning, &message, &fields);
            Attempt::Retry {
                service_unavailable: false,
            }
        }
    }
}

/// Downloads the job's artifacts archive into `destination` (a file), following redirects to
/// object storage without the job token. 3 tries, 1 s apart, for errors that may pass.
pub async fn download(
    credentials: &JobCredentials,
    direct_download: bool,
    destination: &Path,
) -> Result<(), TransferError> {
    let client = credentials.client(None)?;
    let mut tries = 0;
    loop {
        tries += 1;
        match download_once(&client, credentials, direct_download, destination).await {
            Ok(()) => return Ok(()),
            Err(TransferError::Other(error)) if tries < 3 => {
                log::log(
                    Level::Warning,
                    "Retrying...",
                    &[("context", "artifacts-downloader".into()), ("error", error)],
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn download_once(
    client: &reqwest::Client,
    credentials: &JobCredentials,
    direct_download: bool,
    destination: &Path,
) -> Result<(), TransferError> {
    let fields = vec![
        ("id", credentials.id.to_string()),
        ("token", credentials.short_token()),
    ];
    let prefix = "Downloading artifacts from coordinator...";
    let mut request = client
        .get(credentials.api(&format!("jobs/{}/artifacts", credentials.id)))
        .header("JOB-TOKEN", credentials.token.expose());
    if direct_download {
        request = request.query(&[("direct_download", "true")]);
    }
    let mut response = request.send().await.map_err(|error| {
        log::log(
            Level::Error,
            &format!("{prefix} error"),
            &[fields.as_slice(), &[("error", error.to_string())]].concat(),
        );
        TransferError::Other(error.to_string())
    })?;
    let mut redirects = 0;
    while matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) && redirects < 10 {
        redirects += 1;
        let Some(location) = response
            .headers()
            .get("Location")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
        else {
            break;
        };
        if let Some(origin) = runner_core::url::origin(&location) {
            log::info(&format!("{prefix} redirected to {origin}"));
        }
        // Object storage gets a presigned URL, never the job token.
        response = client
            .get(&location)
            .send()
            .await
            .map_err(|error| TransferError::Other(error.to_string()))?;
    }
    let status = response.status();
    let mut fields = fields;
    fields.push(("status", status.as_u16().to_string()));
    match status.as_u16() {
        200 => {
            copy_body(response, destination)
                .await
                .map_err(|error| TransferError::Other(error.to_string()))?;
            log::log(Level::Info, &format!("{prefix} ok"), &fields);
            Ok(())
        }
        401 => {
            log::log(Level::Error, &format!("{prefix} unauthorized"), &fields);
            Err(TransferError::Unauthorized)
        }
        403 => {
            log::log(Level::Error, &format!("{prefix} forbidden"), &fields);
            Err(TransferError::Forbidden)
        }
        404 => {
            log::log(Level::Error, &format!("{prefix} not found"), &fields);
            Err(TransferError::NotFound)
        }
        code => {
            let body = response.text().await.unwrap_or_default();
            let text = status_text(status, &body);
            log::log(Level::Warning, &format!("{prefix} {text}"), &fields);
            Err(TransferError::Other(format!(
                "invalid argument (status {code})"
            )))
        }
    }
}

/// Streams a response body into the file at `destination` (created or truncated).
pub async fn copy_body(response: reqwest::Response, destination: &Path) -> std::io::Result<()> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(destination)
        .await
        .map_err(|error| {
            std::io::Error::new(error.kind(), format!("{}: {error}", destination.display()))
        })?;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(std::io::Error::other)?;
        file.write_all(&chunk).await?;
    }
    file.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_follow_the_format() {
        assert_eq!(artifact_filename("", ""), "default.zip");
        assert_eq!(artifact_filename("my/report", "gzip"), "report.gz");
        assert_eq!(artifact_filename(".", "raw"), "default");
        assert_eq!(artifact_filename("bundle", "tarzstd"), "bundle.tar.zst");
    }

    #[test]
    fn origins_drop_path_and_query() {
        assert_eq!(
            runner_core::url::origin("https://other.example:8443/api/v4/jobs/1/artifacts?x=1")
                .as_deref(),
            Some("https://other.example:8443")
        );
        assert_eq!(runner_core::url::origin("nonsense"), None);
    }
}
