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
    /// `--timeout`: the limit for each upload request as a whole, from connecting to reading
    /// the answer (Go's `http.Client.Timeout`); `None`: no limit.
    pub timeout: Option<Duration>,
    /// `--response-header-timeout`: how long GitLab may take to answer once the whole archive
    /// is sent (Go's `http.Transport.ResponseHeaderTimeout`); `None`: no limit.
    pub response_header_timeout: Option<Duration>,
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
    /// A try that may pass next time; `error` is what is logged and, after the last try, the
    /// final error.
    Retry {
        error: String,
        service_unavailable: bool,
    },
    Redirect(String),
    Fail(TransferError),
}

/// Why no answer came to a request, in the words of upstream's Go HTTP client (which the job
/// log shows), each after `<Method> "<url>": `.
#[derive(Debug)]
enum NoAnswer {
    /// The request's overall limit (`--timeout`) passed before the answer's headers came.
    Timeout,
    /// The archive was sent, and the answer's headers did not come within
    /// `--response-header-timeout`.
    HeaderTimeout,
    /// Connecting, TLS or the connection itself failed.
    Request(reqwest::Error),
}

impl NoAnswer {
    fn describe(&self, method: &str, url: &str) -> String {
        let cause = match self {
            Self::Timeout => {
                "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                    .to_string()
            }
            Self::HeaderTimeout => "net/http: timeout awaiting response headers".to_string(),
            // reqwest's own text repeats the URL; its causes say what happened.
            Self::Request(error) => match std::error::Error::source(error) {
                Some(cause) => runner_core::failure::error_chain(cause),
                None => error.to_string(),
            },
        };
        format!("{method} {url:?}: {cause}")
    }
}

/// A request body that reports when all of it has been handed to the connection: that is
/// when Go's response-header timeout starts.
fn body_reporting_its_end<S>(
    mut stream: S,
) -> (
    impl futures_util::Stream<Item = S::Item> + Send + Sync + 'static,
    tokio::sync::oneshot::Receiver<()>,
)
where
    S: futures_util::Stream + Unpin + Send + Sync + 'static,
{
    use futures_util::StreamExt;
    let (sent, sent_signal) = tokio::sync::oneshot::channel();
    let mut sent = Some(sent);
    let stream = futures_util::stream::poll_fn(move |context| {
        let next = stream.poll_next_unpin(context);
        if let std::task::Poll::Ready(None) = next {
            if let Some(sent) = sent.take() {
                let _ = sent.send(());
            }
        }
        next
    });
    (stream, sent_signal)
}

/// Waits for the answer's headers to `send` within upstream's two limits: `deadline` for the
/// request as a whole and `header_timeout` from the moment `body_sent` fires.
async fn await_answer<F>(
    send: F,
    body_sent: tokio::sync::oneshot::Receiver<()>,
    header_timeout: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
) -> Result<reqwest::Response, NoAnswer>
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let headers = async {
        tokio::pin!(send);
        tokio::select! {
            // An answer before the whole body went out (GitLab refusing early, say).
            answer = &mut send => return answer.map_err(NoAnswer::Request),
            // The body is out (or was dropped, when the request failed): the header limit
            // starts now.
            _ = body_sent => {}
        }
        match header_timeout {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| NoAnswer::HeaderTimeout)?
                .map_err(NoAnswer::Request),
            None => send.await.map_err(NoAnswer::Request),
        }
    };
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, headers)
            .await
            .unwrap_or(Err(NoAnswer::Timeout)),
        None => headers.await,
    }
}

/// The upload URL as Go prints it in errors: the query encoded with sorted keys, and a `?` even
/// when it is empty (upstream always appends one).
fn upload_url(credentials: &JobCredentials, query: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = query.iter().collect();
    sorted.sort_by_key(|(key, _)| *key);
    let mut url = credentials.api(&format!("jobs/{}/artifacts", credentials.id));
    url.push('?');
    let encoded: Vec<String> = sorted
        .iter()
        .map(|(key, value)| format!("{}={}", query_escape(key), query_escape(value)))
        .collect();
    url.push_str(&encoded.join("&"));
    url
}

/// Go's `url.QueryEscape`: letters, digits and `-_.~` stay, a space is `+`, the rest `%XX`.
fn query_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                escaped.push(byte as char)
            }
            b' ' => escaped.push('+'),
            other => escaped.push_str(&format!("%{other:02X}")),
        }
    }
    escaped
}

/// Uploads `archive` (a finished file) under the job's credentials, retrying as upstream:
/// 3 tries, 6 for 503, 307 moves to the new host, 403 and 413 stop at once. Each try is bound by
/// `options.timeout` and `options.response_header_timeout`; one that runs out is retried, and
/// after the last the error names the limit as upstream's does.
pub async fn upload(
    mut credentials: JobCredentials,
    options: &UploadOptions,
    archive: &Path,
) -> Result<(), TransferError> {
    // Both limits are applied per try in `upload_once`, where the header limit can start once
    // the body is out; a client-wide timeout would also cut the answer's body short.
    let client = credentials.client(None)?;
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
                error,
                service_unavailable,
            } => (error, if service_unavailable { 6 } else { 3 }),
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
    let deadline = options
        .timeout
        .map(|limit| tokio::time::Instant::now() + limit);
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
    let (stream, body_sent) =
        body_reporting_its_end(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
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
    let url = upload_url(credentials, &query);
    let request = client
        .post(credentials.api(&format!("jobs/{}/artifacts", credentials.id)))
        .query(&query)
        .header("JOB-TOKEN", credentials.token.expose())
        .multipart(form);
    let answer = await_answer(
        request.send(),
        body_sent,
        options.response_header_timeout,
        deadline,
    )
    .await;
    let response = match answer {
        Ok(response) => response,
        Err(no_answer) => {
            let error = no_answer.describe("Post", &url);
            log::log(
                Level::Error,
                &format!("{prefix} error"),
                &[fields.as_slice(), &[("error", error.clone())]].concat(),
            );
            return Attempt::Retry {
                error,
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
    // The overall limit covers reading the answer too; a body cut short only loses its message.
    let body = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => response.text().await.unwrap_or_default(),
    };
    let text = status_text(status, &body);
    fields.push(("status", status.as_u16().to_string()));
    let message = format!("{prefix} {text}");
    // Upstream's error for a try that got an answer GitLab did not accept.
    let failed = || Attempt::Retry {
        error: "upload failed with no response from coordinator".to_string(),
        service_unavailable: false,
    };
    match status.as_u16() {
        201 => {
            log::log(Level::Info, &message, &fields);
            Attempt::Done
        }
        307 => match location {
            Some(location) if !location.is_empty() => Attempt::Redirect(location),
            _ => {
                log::log(Level::Error, &format!("{message} empty location"), &fields);
                failed()
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
                error: "service unavailable".to_string(),
                service_unavailable: true,
            }
        }
        _ => {
            log::log(Level::Warning, &message, &fields);
            failed()
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
