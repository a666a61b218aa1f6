//! The helper subcommands generated job scripts call (`artifacts-uploader`,
//! `artifacts-downloader`, `cache-extractor`, `cache-archiver`), with upstream's flag names and
//! environment variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args};
use runner_helpers::archive;
use runner_helpers::artifacts::{self, JobCredentials, UploadOptions};
use runner_helpers::cache;
use runner_helpers::files::{clean, FileSelection};
use runner_helpers::log;

/// The job's GitLab URL, job token, job ID and TLS files, from flags or the `CI_SERVER_*` and
/// `CI_JOB_*` variables job scripts provide.
#[derive(Args, Debug, Clone)]
pub struct CredentialArgs {
    #[arg(long, env = "CI_SERVER_URL", default_value = "")]
    url: String,
    #[arg(long, env = "CI_JOB_TOKEN", default_value = "", hide_env_values = true)]
    token: String,
    #[arg(long, env = "CI_JOB_ID", default_value_t = 0)]
    id: i64,
    #[arg(long = "tls-ca-file", env = "CI_SERVER_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    #[arg(long = "tls-cert-file", env = "CI_SERVER_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long = "tls-key-file", env = "CI_SERVER_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
}

impl CredentialArgs {
    fn credentials(&self) -> JobCredentials {
        JobCredentials {
            url: self.url.clone(),
            token: runner_core::secret::Secret::new(self.token.clone()),
            id: self.id,
            tls_ca_file: self
                .tls_ca_file
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            tls_cert_file: self
                .tls_cert_file
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            tls_key_file: self
                .tls_key_file
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
        }
    }
}

/// Which files go into an artifacts or cache archive.
#[derive(Args, Debug, Clone)]
pub struct FileArgs {
    /// Add paths to archive (repeatable).
    #[arg(long = "path")]
    paths: Vec<String>,
    /// Exclude paths from the archive (repeatable).
    #[arg(long = "exclude")]
    exclude: Vec<String>,
    /// Add git untracked files.
    #[arg(long, action = ArgAction::SetTrue)]
    untracked: bool,
    #[arg(long, action = ArgAction::SetTrue)]
    verbose: bool,
}

impl FileArgs {
    fn selection(&self) -> FileSelection {
        FileSelection {
            paths: self.paths.iter().map(|p| expand_env(p)).collect(),
            exclude: self.exclude.iter().map(|p| expand_env(p)).collect(),
            untracked: self.untracked,
        }
    }
}

/// Flags of `artifacts-uploader`.
#[derive(Args, Debug, Clone)]
pub struct UploaderArgs {
    #[command(flatten)]
    credentials: CredentialArgs,
    #[command(flatten)]
    files: FileArgs,
    /// The name of the archive.
    #[arg(long, default_value = "artifacts")]
    name: String,
    #[arg(long = "expire-in", default_value = "")]
    expire_in: String,
    #[arg(long = "artifact-format", default_value = "")]
    artifact_format: String,
    #[arg(long = "artifact-type", default_value = "")]
    artifact_type: String,
    #[arg(
        long = "compression-level",
        env = "ARTIFACT_COMPRESSION_LEVEL",
        default_value = ""
    )]
    compression_level: String,
    /// Limit of each upload request as a whole (Go duration; 0 or negative: none).
    /// `[runners.artifact] upload_timeout`, upstream's `DefaultArtifactUploadTimeout`.
    #[arg(long, default_value = "1h", value_parser = http_limit, allow_hyphen_values = true)]
    timeout: HttpLimit,
    /// How long GitLab may take to answer once the archive is sent (Go duration; 0 or negative:
    /// none). `[runners.artifact] response_header_timeout`, upstream's
    /// `DefaultArtifactResponseHeaderTimeout`.
    #[arg(
        long = "response-header-timeout",
        default_value = "10m",
        value_parser = http_limit,
        allow_hyphen_values = true
    )]
    response_header_timeout: HttpLimit,
    #[arg(long = "ci-debug-trace", env = "CI_DEBUG_TRACE", action = ArgAction::SetTrue)]
    ci_debug_trace: bool,
}

/// Flags of `artifacts-downloader`.
#[derive(Args, Debug, Clone)]
pub struct DownloaderArgs {
    #[command(flatten)]
    credentials: CredentialArgs,
    #[arg(long = "direct-download", env = "FF_USE_DIRECT_DOWNLOAD", action = ArgAction::SetTrue)]
    direct_download: bool,
    #[arg(long = "archiver-staging-dir", env = "ARCHIVER_STAGING_DIR")]
    archiver_staging_dir: Option<PathBuf>,
}

/// A limit of Go's HTTP client given as a Go duration: zero and negative values mean no limit,
/// as they do there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimit(Option<Duration>);

fn http_limit(text: &str) -> Result<HttpLimit, String> {
    match runner_core::settings::parse_signed_go_duration(text) {
        Some((false, limit)) if !limit.is_zero() => Ok(HttpLimit(Some(limit))),
        Some(_) => Ok(HttpLimit(None)),
        None => Err(format!("time: invalid duration {text:?}")),
    }
}

/// A pause given as a Go duration; a negative one is no pause, as Go's `time.Sleep` takes it.
fn go_pause(text: &str) -> Result<Duration, String> {
    match runner_core::settings::parse_signed_go_duration(text) {
        Some((false, pause)) => Ok(pause),
        Some((true, _)) => Ok(Duration::ZERO),
        None => Err(format!("time: invalid duration {text:?}")),
    }
}

fn metadata_flag(text: &str) -> Result<cache::Metadata, String> {
    cache::parse_metadata(text).map_err(|error| error.to_string())
}

/// `$VAR` / `${VAR}` against the helper's environment, as upstream expands names and paths.
fn expand_env(text: &str) -> String {
    runner_core::variables::expand_with(text, |name| std::env::var(name).ok())
}

/// Where archives are staged: the temporary directory, or the working directory in a minimal
/// container that has no `/tmp` (an image holding only the static helper).
fn staging_dir(wd: &Path) -> PathBuf {
    let temp = std::env::temp_dir();
    if temp.is_dir() {
        temp
    } else {
        wd.to_path_buf()
    }
}

fn working_directory() -> PathBuf {
    match std::env::current_dir() {
        Ok(dir) => clean(&dir),
        Err(_) => log::fatal("Unable to get working directory"),
    }
}

/// Why the artifacts uploader could not build the archive it sends; printed with
/// [`runner_core::failure::error_chain`] before the uploader exits.
#[derive(Debug, thiserror::Error)]
enum BuildArchiveError {
    /// The staging file could not be created or reopened.
    #[error(transparent)]
    StagingFile(std::io::Error),
    /// The zip archive could not be written. [`archive::ArchiveError`]'s message already names
    /// its cause, so it is shown as it is rather than as a source, which the chain would repeat.
    #[error("{0}")]
    Zip(archive::ArchiveError),
    /// A file could not be read into its gzip member.
    #[error("{name}")]
    ReadFile {
        /// The file, relative to the working directory.
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A gzip member could not be finished or flushed.
    #[error(transparent)]
    WriteGzip(std::io::Error),
    /// The `raw` format sends exactly one regular file.
    #[error("only one file can be sent as raw, got {count}")]
    RawNeedsOneFile {
        /// How many regular files were selected.
        count: usize,
    },
    /// The single file could not be copied into the staging file.
    #[error(transparent)]
    CopyRaw(std::io::Error),
    /// `--artifact-format` names a format the uploader does not know.
    #[error("unsupported archive type: {0}")]
    UnsupportedFormat(String),
}

/// Builds the archive file to upload in the requested format.
fn build_archive(
    args: &UploaderArgs,
    wd: &Path,
    files: &runner_helpers::files::FileSet,
) -> Result<tempfile::NamedTempFile, BuildArchiveError> {
    let mut temp = tempfile::Builder::new()
        .prefix("artifacts")
        .tempfile_in(staging_dir(wd))
        .map_err(BuildArchiveError::StagingFile)?;
    match args.artifact_format.as_str() {
        "" | "zip" => {
            let level = archive::compression_level(&args.compression_level);
            let out = temp.reopen().map_err(BuildArchiveError::StagingFile)?;
            archive::write_zip(out, wd, files, level).map_err(BuildArchiveError::Zip)?;
        }
        "gzip" => {
            use std::io::Write;
            for (name, metadata) in files {
                if !metadata.is_file() {
                    continue;
                }
                let read_error = |source| BuildArchiveError::ReadFile {
                    name: name.clone(),
                    source,
                };
                let mut encoder = archive::gzip_member(temp.as_file_mut(), name);
                let mut input = std::fs::File::open(wd.join(name)).map_err(read_error)?;
                std::io::copy(&mut input, &mut encoder).map_err(read_error)?;
                encoder
                    .finish()
                    .map_err(BuildArchiveError::WriteGzip)?
                    .flush()
                    .map_err(BuildArchiveError::WriteGzip)?;
            }
        }
        "raw" => {
            let regular: Vec<&String> = files
                .iter()
                .filter(|(_, metadata)| metadata.is_file())
                .map(|(name, _)| name)
                .collect();
            if regular.len() != 1 {
                return Err(BuildArchiveError::RawNeedsOneFile {
                    count: regular.len(),
                });
            }
            std::fs::copy(wd.join(regular[0]), temp.path()).map_err(BuildArchiveError::CopyRaw)?;
        }
        other => return Err(BuildArchiveError::UnsupportedFormat(other.to_string())),
    }
    Ok(temp)
}

/// `artifacts-uploader`: archives the selected files of the working directory and uploads them
/// for the job. Returns the exit code: 0 also when no file matched (logged as an error); failures
/// log and exit 1.
pub async fn artifacts_uploader(args: UploaderArgs) -> i32 {
    let credentials = args.credentials.credentials();
    if credentials.url.is_empty() || credentials.token.expose().is_empty() {
        log::fatal("Missing runner credentials");
    }
    if credentials.id <= 0 {
        log::fatal("Missing build ID");
    }
    let wd = working_directory();
    let files = args.files.selection().enumerate(&wd);
    if files.is_empty() {
        log::error("No files to upload");
        return 0;
    }
    let archive = match build_archive(&args, &wd, &files) {
        Ok(archive) => archive,
        Err(error) => log::fatal(&runner_core::failure::error_chain(&error)),
    };
    let options = UploadOptions {
        name: expand_env(&args.name),
        expire_in: args.expire_in.clone(),
        format: args.artifact_format.clone(),
        artifact_type: args.artifact_type.clone(),
        timeout: args.timeout.0,
        response_header_timeout: args.response_header_timeout.0,
    };
    let result = artifacts::upload(credentials, &options, archive.path()).await;
    // Removed before a fatal exit, which skips destructors.
    drop(archive);
    match result {
        Ok(()) => 0,
        Err(error) => log::fatal(&error.to_string()),
    }
}

/// `artifacts-downloader`: downloads the job's artifacts archive and extracts it into the working
/// directory. Returns the exit code: 0, 1 on failure, or `MISSING_DEPENDENCY_EXIT_CODE` (3) when
/// GitLab no longer has the archive.
pub async fn artifacts_downloader(args: DownloaderArgs) -> i32 {
    let credentials = args.credentials.credentials();
    let wd = working_directory();
    let mut incomplete = false;
    if credentials.url.is_empty() {
        log::warning("Missing URL (--url)");
        incomplete = true;
    }
    if credentials.token.expose().is_empty() {
        log::warning("Missing runner credentials (--token)");
        incomplete = true;
    }
    if credentials.id <= 0 {
        log::warning("Missing build ID (--id)");
        incomplete = true;
    }
    if incomplete {
        log::fatal("Incomplete arguments");
    }
    let staging = args
        .archiver_staging_dir
        .clone()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| staging_dir(&wd));
    let temp = match tempfile::Builder::new()
        .prefix("artifacts")
        .tempfile_in(&staging)
    {
        Ok(temp) => temp,
        Err(error) => log::fatal(&format!("{}: {error}", staging.display())),
    };
    let downloaded = artifacts::download(&credentials, args.direct_download, temp.path()).await;
    if downloaded.is_err() {
        // Removed before a fatal exit, which skips destructors.
        let _ = std::fs::remove_file(temp.path());
    }
    match downloaded {
        Ok(()) => {}
        // The dependency's archive is gone: a distinct exit, so the job can say so.
        Err(artifacts::TransferError::NotFound) => {
            log::log(log::Level::Fatal, "file does not exist", &[]);
            return runner_core::failure::MISSING_DEPENDENCY_EXIT_CODE;
        }
        Err(error) => log::fatal(&error.to_string()),
    }
    let result = archive::extract(temp.path(), &wd);
    // Removed before a fatal exit, which skips destructors.
    drop(temp);
    match result {
        Ok(_) => 0,
        Err(error) => log::fatal(&error.to_string()),
    }
}

/// `--retry` and `--retry-time` of both cache commands (upstream's `retryHelper`).
#[derive(Args, Debug, Clone)]
pub struct RetryArgs {
    /// How many times to retry a transfer that may pass (a network error, a 5xx answer).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    retry: i64,
    /// How long to wait between retries (Go duration).
    #[arg(long = "retry-time", default_value = "1s", value_parser = go_pause, allow_hyphen_values = true)]
    retry_time: Duration,
}

impl RetryArgs {
    fn policy(&self) -> cache::RetryPolicy {
        cache::RetryPolicy {
            retries: self.retry,
            delay: self.retry_time,
        }
    }
}

/// Upstream's transfer tuning flags of both cache commands. Only the buffer size is used here
/// (see [`cache::TransferTuning`]); the others are checked as upstream checks them.
#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    /// Read size in bytes for streaming a cache archive (0: 4 MiB).
    #[arg(
        long = "transfer-buffer-size",
        env = "CACHE_TRANSFER_BUFFER_SIZE",
        default_value_t = cache::DEFAULT_TRANSFER_BUFFER_SIZE,
        allow_negative_numbers = true
    )]
    transfer_buffer_size: i64,
    /// Part size of upstream's GoCloud multipart uploads and parallel downloads
    /// (`FF_USE_PARALLEL_CACHE_TRANSFER`); accepted and checked, neither exists here.
    #[arg(
        long = "chunk-size",
        env = "CACHE_CHUNK_SIZE",
        default_value_t = cache::DEFAULT_CHUNK_SIZE,
        allow_negative_numbers = true
    )]
    chunk_size: i64,
    /// Parts in flight of those transfers; accepted and checked, unused here.
    #[arg(
        long,
        env = "CACHE_CONCURRENCY",
        default_value_t = cache::DEFAULT_CONCURRENCY,
        allow_negative_numbers = true
    )]
    concurrency: i64,
    /// Upstream's interactive transfer meter (Go duration; more than 0s enables it). Accepted so
    /// that the variable does not break the command; this helper prints no meter.
    #[arg(
        long = "transfer-meter-frequency",
        env = "TRANSFER_METER_FREQUENCY",
        default_value = "0s",
        value_parser = go_pause,
        allow_hyphen_values = true
    )]
    transfer_meter_frequency: Duration,
}

/// Flags of `cache-extractor`.
#[derive(Args, Debug, Clone)]
pub struct CacheExtractorArgs {
    /// The file containing the cache archive.
    #[arg(long, default_value = "")]
    file: String,
    /// A presigned URL of the remote cache archive.
    #[arg(long, default_value = "")]
    url: String,
    /// A presigned HEAD URL of the same object, to read its date when `--alternate-url` is
    /// given.
    #[arg(long = "head-url", default_value = "")]
    head_url: String,
    /// A presigned URL of the archive under the other key naming (`FF_HASH_CACHE_KEYS`); the
    /// newer of the two, or the one that exists, is downloaded.
    #[arg(long = "alternate-url", default_value = "")]
    alternate_url: String,
    /// A presigned HEAD URL of the alternate object.
    #[arg(long = "alternate-head-url", default_value = "")]
    alternate_head_url: String,
    #[arg(long = "gocloud-url", default_value = "")]
    gocloud_url: String,
    /// The alternate object as a GoCloud URL: used upstream only with `--gocloud-url`, which
    /// this helper does not support, so accepted and unused.
    #[arg(long = "alternate-gocloud-url", default_value = "")]
    alternate_gocloud_url: String,
    /// Overall timeout of each download request, in minutes (0 or less: 10).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    timeout: i64,
    /// Variables for GoCloud URLs (upstream reads them only for those).
    #[arg(long = "env-file")]
    env_file: Option<PathBuf>,
    #[command(flatten)]
    retry: RetryArgs,
    #[command(flatten)]
    transfer: TransferArgs,
}

/// Flags of `cache-archiver`.
#[derive(Args, Debug, Clone)]
pub struct CacheArchiverArgs {
    #[command(flatten)]
    files: FileArgs,
    #[arg(long, default_value = "")]
    file: String,
    /// The archive under the other key naming (`FF_HASH_CACHE_KEYS`): renamed to `--file` when
    /// only it exists; when it differs from `--file`, an archive that is up to date is checked
    /// against the shared cache (`--check-url`) and uploaded again when missing there.
    #[arg(long = "alternate-file", default_value = "")]
    alternate_file: String,
    /// A presigned PUT URL of the remote cache archive.
    #[arg(long, default_value = "")]
    url: String,
    /// A presigned HEAD URL of the same object: whether the shared cache still has it.
    #[arg(long = "check-url", default_value = "")]
    check_url: String,
    #[arg(long = "gocloud-url", default_value = "")]
    gocloud_url: String,
    /// Overall timeout of each upload request, in minutes (0 or less: 10).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    timeout: i64,
    /// HTTP headers for the PUT request, `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Metadata of the archive, a JSON object of strings, written to `metadata.json` next to
    /// it (upstream also sends it with GoCloud uploads, which do not exist here).
    #[arg(long, env = "CACHE_METADATA", value_parser = metadata_flag)]
    metadata: Option<cache::Metadata>,
    #[arg(
        long = "compression-level",
        env = "CACHE_COMPRESSION_LEVEL",
        default_value = ""
    )]
    compression_level: String,
    /// `zip`; upstream's `tarzstd` and `zipzstd` are refused by name, anything else is zip.
    #[arg(
        long = "compression-format",
        env = "CACHE_COMPRESSION_FORMAT",
        default_value = ""
    )]
    compression_format: String,
    #[arg(
        long = "max-uploaded-archive-size",
        env = "CACHE_MAX_UPLOADED_ARCHIVE_SIZE",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    max_uploaded_archive_size: i64,
    /// Variables for GoCloud URLs (upstream reads them only for those).
    #[arg(long = "env-file")]
    env_file: Option<PathBuf>,
    #[command(flatten)]
    retry: RetryArgs,
    #[command(flatten)]
    transfer: TransferArgs,
}

/// Upstream's `warningln`: a warning, then exit 1.
fn warn_and_fail(message: &str) -> i32 {
    log::warning(message);
    1
}

/// `cache-extractor`: downloads the cache archive from `--url` (or `--alternate-url`) when
/// given, then extracts the local `--file` into the working directory. Returns the exit code;
/// no cache is a warning and 1.
pub async fn cache_extractor(args: CacheExtractorArgs) -> i32 {
    let transfer = &args.transfer;
    if let Err(error) = cache::TransferTuning::for_extractor(
        transfer.transfer_buffer_size,
        transfer.chunk_size,
        transfer.concurrency,
    ) {
        log::fatal(&error.to_string());
    }
    let wd = working_directory();
    if args.file.is_empty() {
        return warn_and_fail("Missing cache file");
    }
    let file = wd.join(&args.file);
    if !args.gocloud_url.is_empty() {
        return warn_and_fail(&cache::ArchiveCacheError::GoCloudUnsupported.to_string());
    }
    if !args.url.is_empty() {
        let client = match cache::client(args.timeout) {
            Ok(client) => client,
            Err(error) => return warn_and_fail(&error.message),
        };
        let urls = cache::DownloadUrls {
            url: args.url.clone(),
            head_url: args.head_url.clone(),
            alternate_url: args.alternate_url.clone(),
            alternate_head_url: args.alternate_head_url.clone(),
        };
        let result =
            cache::with_retries(args.retry.policy(), || cache::fetch(&client, &urls, &file)).await;
        if let Err(error) = result {
            return warn_and_fail(&error.message);
        }
    } else {
        log::info(
            "No URL provided, cache will not be downloaded from shared cache server. \
             Instead a local version of cache will be extracted.",
        );
    }
    if !file.exists() {
        return warn_and_fail("Cache file does not exist");
    }
    match archive::extract(&file, &wd) {
        Ok(_) => 0,
        Err(error) => log::fatal(&error.to_string()),
    }
}

/// `cache-archiver`: archives the selected files into `--file` unless it is up to date, then
/// uploads it to `--url` when given; an up-to-date archive is uploaded again when the shared
/// cache no longer has it (see [`cache::archive_and_upload`]). Returns the exit code; an archive
/// over the size limit is kept local only and still exits 0.
pub async fn cache_archiver(args: CacheArchiverArgs) -> i32 {
    if args.file.is_empty() {
        log::fatal("Missing --file");
    }
    let wd = working_directory();
    let file = wd.join(&args.file);
    // Upstream compares the flags as given; an absent `--alternate-file` is no alternate.
    let alternate_file = (!args.alternate_file.is_empty() && args.alternate_file != args.file)
        .then(|| wd.join(&args.alternate_file));
    if let Some(alternate) = &alternate_file {
        cache::rename_alternate_file(&file, alternate);
    }
    let transfer = &args.transfer;
    let tuning = match cache::TransferTuning::for_archiver(
        transfer.transfer_buffer_size,
        transfer.chunk_size,
        transfer.concurrency,
    ) {
        Ok(tuning) => tuning,
        Err(error) => log::fatal(&error.to_string()),
    };
    let files = args.files.selection().enumerate(&wd);
    let options = cache::ArchiverOptions {
        file,
        alternate_file,
        // Upstream's `AlternateFile != File`: also true when no `--alternate-file` was given.
        up_to_date_is_final: args.alternate_file == args.file,
        url: args.url.clone(),
        check_url: args.check_url.clone(),
        gocloud_url: args.gocloud_url.clone(),
        headers: args.headers.clone(),
        metadata: args.metadata.clone().unwrap_or_default(),
        compression_level: archive::compression_level(&args.compression_level),
        compression_format: args.compression_format.clone(),
        max_uploaded_archive_size: args.max_uploaded_archive_size,
        timeout_minutes: args.timeout,
        retry: args.retry.policy(),
        tuning,
    };
    match cache::archive_and_upload(&options, &wd, &files).await {
        Ok(()) => 0,
        Err(error) if error.is_warning() => warn_and_fail(&error.message()),
        Err(error) => log::fatal(&error.message()),
    }
}

/// Arguments of `cache-init`.
#[derive(Args, Debug, Clone)]
pub struct CacheInitArgs {
    /// The paths to make world-writable.
    pub paths: Vec<PathBuf>,
}

/// `cache-init`: what upstream's helper does for the Docker executor's new volumes, so a build
/// container running as a user other than root can write them. A path that cannot be changed
/// is an error line; the command still exits 0, as upstream's.
pub fn cache_init(args: CacheInitArgs) -> i32 {
    use std::os::unix::fs::PermissionsExt;
    if args.paths.is_empty() {
        log::fatal("No arguments passed, at least 1 path is required.");
    }
    for path in &args.paths {
        if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)) {
            log::error(&format!("failed to chmod path {}: {error}", path.display()));
        }
    }
    0
}

/// Flags of `read-logs`.
#[derive(Args, Debug, Clone)]
pub struct ReadLogsArgs {
    /// The log file to follow.
    #[arg(long, default_value = "")]
    pub path: PathBuf,
    /// Where to start, in bytes.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// How long to wait for the file to appear (a Go duration: 1m0s).
    #[arg(long = "wait-file-timeout", default_value = "1s")]
    pub wait_file_timeout: String,
}

/// `read-logs`: what the Kubernetes executor's log streamer runs in the helper container
/// (see [`runner_helpers::read_logs`]). It follows the file until it is deleted (exit 100);
/// any other error is printed on standard output, where the client reads it, with exit 1.
pub fn read_logs(args: ReadLogsArgs) -> i32 {
    let fail = |message: &str| {
        println!("error reading logs from {}: {message}", args.path.display());
        1
    };
    let Some(wait_file_timeout) = runner_core::settings::parse_go_duration(&args.wait_file_timeout)
    else {
        return fail(&format!(
            "invalid --wait-file-timeout {:?}",
            args.wait_file_timeout
        ));
    };
    let options = runner_helpers::read_logs::ReadLogsOptions {
        path: args.path.clone(),
        offset: args.offset,
        wait_file_timeout,
    };
    let stdout = std::io::stdout();
    match runner_helpers::read_logs::follow(&options, &mut stdout.lock(), || false) {
        Ok(()) => 0,
        Err(runner_helpers::read_logs::ReadLogsError::Deleted) => {
            runner_helpers::read_logs::FILE_DELETED_EXIT_CODE
        }
        Err(error) => fail(&error.to_string()),
    }
}

/// Flags of `health-check`.
#[derive(Args, Debug, Clone)]
pub struct HealthCheckArgs {
    /// A port on localhost to wait for (repeatable; all must answer). Without it, the address
    /// and ports come from `*_TCP_ADDR` and `*_TCP_PORT` variables, and one answer is enough.
    #[arg(short = 'p', long = "port")]
    pub ports: Vec<String>,
}

/// `health-check`: what the Docker executor runs in a helper container next to a service,
/// as upstream's helper: dial the service's TCP ports once a second until one answers (or,
/// with `--port`, all of them), then exit 0. The runner bounds how long it waits.
pub async fn health_check(args: HealthCheckArgs) -> i32 {
    let (address, ports, wait_all) = if args.ports.is_empty() {
        let mut address = String::new();
        let mut ports = Vec::new();
        for (name, value) in std::env::vars() {
            if name.ends_with("_TCP_ADDR") {
                address = value;
            } else if name.ends_with("_TCP_PORT") {
                ports.push(value);
            }
        }
        (address, ports, false)
    } else {
        ("localhost".to_string(), args.ports, true)
    };
    if address.is_empty() || ports.is_empty() {
        log::fatal("No HOST or PORT found");
    }
    println!(
        "waiting for TCP connection to {address} on [{}]...",
        ports.join(" ")
    );
    let mut dials = tokio::task::JoinSet::new();
    for port in ports {
        let address = address.clone();
        dials.spawn(async move {
            loop {
                println!("dialing {address}:{port}...");
                if tokio::net::TcpStream::connect(format!("{address}:{port}"))
                    .await
                    .is_ok()
                {
                    println!("dial succeeded on {address}:{port}. Exiting...");
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
    if wait_all {
        while dials.join_next().await.is_some() {}
    } else {
        let _ = dials.join_next().await;
        dials.abort_all();
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        CacheExtractor(CacheExtractorArgs),
        CacheArchiver(CacheArchiverArgs),
        ArtifactsUploader(UploaderArgs),
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("gitlab-runner-rs").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn the_extractor_takes_every_flag_upstreams_scripts_and_variables_set() {
        let Command::CacheExtractor(args) = parse(&[
            "cache-extractor",
            "--file",
            "../../cache/key/cache.zip",
            "--timeout",
            "10",
            "--url",
            "https://s3/get",
            "--head-url",
            "https://s3/head",
            "--alternate-url",
            "https://s3/alt-get",
            "--alternate-head-url",
            "https://s3/alt-head",
            "--alternate-gocloud-url",
            "gs://bucket/alt",
            "--transfer-buffer-size",
            "1048576",
            "--chunk-size",
            "0",
            "--concurrency",
            "1",
            "--retry",
            "4",
            "--retry-time",
            "500ms",
            "--transfer-meter-frequency",
            "5s",
            "--env-file",
            "/tmp/gitlab_runner_cache_env",
        ])
        .unwrap() else {
            panic!("not the extractor");
        };
        assert_eq!(args.alternate_url, "https://s3/alt-get");
        assert_eq!(args.alternate_head_url, "https://s3/alt-head");
        assert_eq!(args.head_url, "https://s3/head");
        assert_eq!(args.transfer.transfer_buffer_size, 1_048_576);
        assert_eq!(
            args.retry.policy(),
            cache::RetryPolicy {
                retries: 4,
                delay: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn the_archiver_takes_every_flag_upstreams_scripts_and_variables_set() {
        let Command::CacheArchiver(args) = parse(&[
            "cache-archiver",
            "--file",
            "../../cache/3f2a/cache.zip",
            "--alternate-file",
            "../../cache/key/cache.zip",
            "--timeout",
            "10",
            "--max-uploaded-archive-size",
            "1000",
            "--path",
            "vendor/",
            "--untracked",
            "--url",
            "https://s3/put",
            "--header",
            "Content-Type: application/zip",
            "--check-url",
            "https://s3/head",
            "--metadata",
            r#"{"cachekey":"key"}"#,
            "--compression-format",
            "zip",
            "--compression-level",
            "fastest",
            "--transfer-buffer-size",
            "0",
            "--chunk-size",
            "8388608",
            "--concurrency",
            "4",
            "--env-file",
            "/tmp/gitlab_runner_cache_env",
        ])
        .unwrap() else {
            panic!("not the archiver");
        };
        assert_eq!(args.check_url, "https://s3/head");
        assert_eq!(args.alternate_file, "../../cache/key/cache.zip");
        assert_eq!(
            args.metadata.unwrap().get("cachekey").map(String::as_str),
            Some("key")
        );
        assert_eq!(args.retry.policy(), cache::RetryPolicy::default());
        let error = parse(&["cache-archiver", "--file", "f", "--metadata", "{\"a\":1}"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("--metadata"), "{error}");
        // Negative values reach upstream's own checks instead of being taken for flags.
        let Command::CacheArchiver(args) = parse(&[
            "cache-archiver",
            "--file",
            "f",
            "--transfer-buffer-size",
            "-1",
        ])
        .unwrap() else {
            panic!("not the archiver");
        };
        assert_eq!(args.transfer.transfer_buffer_size, -1);
    }

    #[test]
    fn the_uploader_reads_both_artifact_limits_as_go_durations() {
        let limits = |args: &[&str]| match parse(args) {
            Ok(Command::ArtifactsUploader(args)) => {
                Ok((args.timeout.0, args.response_header_timeout.0))
            }
            Ok(_) => panic!("not the uploader"),
            Err(error) => Err(error.to_string()),
        };
        assert_eq!(
            limits(&["artifacts-uploader"]),
            Ok((
                Some(Duration::from_secs(3600)),
                Some(Duration::from_secs(600))
            ))
        );
        // What upstream's scripts pass: `time.Duration.String()` of the settings.
        assert_eq!(
            limits(&[
                "artifacts-uploader",
                "--timeout",
                "2h30m0s",
                "--response-header-timeout",
                "1m30s"
            ]),
            Ok((
                Some(Duration::from_secs(9000)),
                Some(Duration::from_secs(90))
            ))
        );
        assert_eq!(
            limits(&[
                "artifacts-uploader",
                "--timeout",
                "0s",
                "--response-header-timeout",
                "-1s"
            ]),
            Ok((None, None))
        );
        let error = limits(&["artifacts-uploader", "--timeout", "soon"]).unwrap_err();
        assert!(error.contains("time: invalid duration \"soon\""), "{error}");
    }
}
