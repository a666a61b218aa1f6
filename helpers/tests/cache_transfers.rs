//! `cache-archiver` and `cache-extractor` against a storage service on loopback: the
//! up-to-date archive that the shared cache lost is uploaded again, the alternate object is
//! downloaded when the primary is missing or older, and metadata lands next to the archive.

#![expect(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions: a panic is how a test fails"
)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use runner_helpers::cache::{self, ArchiveCacheError, ArchiverOptions, DownloadUrls, RetryPolicy};
use runner_helpers::files::{clean, FileSelection, FileSet};
use support::{Reply, Server};

/// A project with one file to cache, and where its archive goes.
struct Project {
    _dir: tempfile::TempDir,
    wd: PathBuf,
    archive: PathBuf,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = clean(dir.path());
        let wd = root.join("project");
        std::fs::create_dir_all(wd.join("vendor")).unwrap();
        std::fs::write(wd.join("vendor/dep.txt"), "cached-bytes").unwrap();
        let archive = root.join("cache/key/cache.zip");
        Project {
            _dir: dir,
            wd,
            archive,
        }
    }

    fn files(&self) -> FileSet {
        FileSelection {
            paths: vec!["vendor".into()],
            ..FileSelection::default()
        }
        .enumerate(&self.wd)
    }

    fn options(&self) -> ArchiverOptions {
        ArchiverOptions {
            file: self.archive.clone(),
            retry: RetryPolicy {
                retries: 2,
                delay: Duration::ZERO,
            },
            ..ArchiverOptions::default()
        }
    }

    /// Writes the local archive as a first job would, with no shared cache, and returns its
    /// bytes.
    async fn archive_locally(&self) -> Vec<u8> {
        cache::archive_and_upload(&self.options(), &self.wd, &self.files())
            .await
            .unwrap();
        std::fs::read(&self.archive).unwrap()
    }
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Storage that has no object (HEAD and GET say 404) and accepts PUTs.
async fn storage_without_the_object() -> Server {
    Server::start(|request| match request.method.as_str() {
        "PUT" => Reply::status(200),
        _ => Reply::status(404),
    })
    .await
}

#[tokio::test]
async fn an_up_to_date_archive_the_shared_cache_lost_is_uploaded_again() {
    let project = Project::new();
    let local = project.archive_locally().await;
    let built = modified(&project.archive);
    let storage = storage_without_the_object().await;
    let options = ArchiverOptions {
        url: format!("{}/bucket/project/1/key?X-Amz-Signature=put", storage.url),
        check_url: format!("{}/bucket/project/1/key?X-Amz-Signature=head", storage.url),
        alternate_file: Some(project.archive.with_file_name("other.zip")),
        ..project.options()
    };
    cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap();
    assert_eq!(
        storage.lines(),
        ["HEAD /bucket/project/1/key", "PUT /bucket/project/1/key"]
    );
    let put = &storage.requests()[1];
    assert_eq!(put.body, local, "the existing archive is sent as it is");
    assert_eq!(put.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        modified(&project.archive),
        built,
        "the archive is not rebuilt"
    );
}

#[tokio::test]
async fn a_check_url_alone_also_checks_an_up_to_date_archive() {
    let project = Project::new();
    project.archive_locally().await;
    let storage = storage_without_the_object().await;
    let options = ArchiverOptions {
        url: format!("{}/bucket/key", storage.url),
        check_url: format!("{}/bucket/key", storage.url),
        ..project.options()
    };
    cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap();
    assert_eq!(storage.lines(), ["HEAD /bucket/key", "PUT /bucket/key"]);
}

#[tokio::test]
async fn an_up_to_date_archive_the_shared_cache_still_has_is_not_uploaded() {
    let project = Project::new();
    project.archive_locally().await;
    let storage = Server::start(|_| Reply::status(200)).await;
    let options = ArchiverOptions {
        url: format!("{}/bucket/key", storage.url),
        check_url: format!("{}/bucket/key", storage.url),
        alternate_file: Some(project.archive.with_file_name("other.zip")),
        ..project.options()
    };
    cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap();
    assert_eq!(storage.lines(), ["HEAD /bucket/key"]);
}

#[tokio::test]
async fn an_alternate_file_that_is_the_file_leaves_an_up_to_date_archive_alone() {
    let project = Project::new();
    project.archive_locally().await;
    let storage = storage_without_the_object().await;
    let options = ArchiverOptions {
        url: format!("{}/bucket/key", storage.url),
        up_to_date_is_final: true,
        ..project.options()
    };
    cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap();
    assert!(storage.lines().is_empty(), "{:?}", storage.lines());
}

/// Upstream's `AlternateFile != File` also holds with no `--alternate-file` at all; with no
/// `--check-url` to ask, the object is taken for missing and sent.
#[tokio::test]
async fn without_an_alternate_or_check_url_an_up_to_date_archive_is_sent_again() {
    let project = Project::new();
    project.archive_locally().await;
    let storage = storage_without_the_object().await;
    let options = ArchiverOptions {
        url: format!("{}/bucket/key", storage.url),
        ..project.options()
    };
    cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap();
    assert_eq!(storage.lines(), ["PUT /bucket/key"]);
}

#[tokio::test]
async fn a_lost_archive_over_the_size_limit_stays_local() {
    let project = Project::new();
    project.archive_locally().await;
    let storage = storage_without_the_object().await;
    let options = ArchiverOptions {
        url: format!("{}/bucket/key", storage.url),
        check_url: format!("{}/bucket/key", storage.url),
        max_uploaded_archive_size: 1,
        ..project.options()
    };
    cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap();
    assert_eq!(storage.lines(), ["HEAD /bucket/key"]);
}

#[tokio::test]
async fn a_new_archive_is_uploaded_once_with_its_metadata_file_beside_it() {
    let project = Project::new();
    let storage = storage_without_the_object().await;
    let options = ArchiverOptions {
        url: format!("{}/bucket/key", storage.url),
        check_url: format!("{}/bucket/key", storage.url),
        headers: vec!["x-amz-meta-cachekey: key".into()],
        metadata: cache::parse_metadata(r#"{"CacheKey":"key"}"#).unwrap(),
        ..project.options()
    };
    cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap();
    assert_eq!(storage.lines(), ["PUT /bucket/key"]);
    let put = &storage.requests()[0];
    assert_eq!(put.body, std::fs::read(&project.archive).unwrap());
    assert_eq!(put.header("x-amz-meta-cachekey"), Some("key"));
    assert!(put.header("last-modified").is_some());
    assert_eq!(
        std::fs::read_to_string(project.archive.with_file_name("metadata.json")).unwrap(),
        r#"{"cachekey":"key"}"#
    );
}

#[tokio::test]
async fn server_errors_are_retried_as_often_as_retry_says_and_name_the_storage_error() {
    let project = Project::new();
    let storage = Server::start(|_| {
        Reply::status(500).body(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
             <Message>We encountered an internal error.</Message></Error>",
        )
    })
    .await;
    let options = ArchiverOptions {
        url: format!("{}/bucket/key", storage.url),
        retry: RetryPolicy {
            retries: 1,
            delay: Duration::ZERO,
        },
        ..project.options()
    };
    let error = cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "received: 500 Internal Server Error. Request failed with code: InternalError, \
         message: We encountered an internal error."
    );
    assert!(!error.is_warning());
    assert_eq!(storage.lines(), ["PUT /bucket/key", "PUT /bucket/key"]);
}

#[tokio::test]
async fn a_zstd_compression_format_is_refused_before_anything_is_written() {
    let project = Project::new();
    let options = ArchiverOptions {
        compression_format: "tarzstd".into(),
        ..project.options()
    };
    let error = cache::archive_and_upload(&options, &project.wd, &project.files())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ArchiveCacheError::UnsupportedFormat(ref format) if format == "tarzstd")
    );
    assert!(!project.archive.exists());
}

#[tokio::test]
async fn no_files_leave_no_archive() {
    let project = Project::new();
    cache::archive_and_upload(&project.options(), &project.wd, &FileSet::new())
        .await
        .unwrap();
    assert!(!project.archive.exists());
}

/// Storage holding `objects`: (path, Last-Modified, body). HEAD and GET of anything else are 404.
async fn storage_with(objects: Vec<(&'static str, &'static str, &'static str)>) -> Server {
    Server::start(move |request| {
        let Some((_, date, body)) = objects.iter().find(|(path, _, _)| *path == request.path())
        else {
            return Reply::status(404);
        };
        Reply::status(200)
            .header("Last-Modified", date)
            .header("ETag", "\"abc\"")
            .header(
                "x-amz-meta-cachekey",
                request.path().trim_start_matches('/'),
            )
            .body(*body)
    })
    .await
}

fn urls(storage: &Server, heads: bool) -> DownloadUrls {
    let head = |path: &str| {
        if heads {
            format!("{}{path}?X-Amz-Signature=head", storage.url)
        } else {
            String::new()
        }
    };
    DownloadUrls {
        url: format!("{}/hashed?X-Amz-Signature=get", storage.url),
        head_url: head("/hashed"),
        alternate_url: format!("{}/plain?X-Amz-Signature=get", storage.url),
        alternate_head_url: head("/plain"),
    }
}

const OLDER: &str = "Wed, 01 May 2024 10:00:00 GMT";
const NEWER: &str = "Thu, 02 May 2024 10:00:00 GMT";

async fn fetch(urls: &DownloadUrls) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache/key/cache.zip");
    let client = cache::client(0).unwrap();
    cache::with_retries(RetryPolicy::default(), || {
        cache::fetch(&client, urls, &file)
    })
    .await
    .unwrap();
    (dir, file)
}

#[tokio::test]
async fn the_extractor_falls_back_to_the_alternate_url_when_the_primary_is_missing() {
    let storage = storage_with(vec![("/plain", OLDER, "plain-archive")]).await;
    let (_dir, file) = fetch(&urls(&storage, true)).await;
    assert_eq!(
        storage.lines(),
        ["HEAD /hashed", "HEAD /plain", "GET /plain"]
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "plain-archive");
    assert_eq!(
        modified(&file),
        httpdate::parse_http_date(OLDER).unwrap(),
        "the archive takes the object's date"
    );
    assert_eq!(
        std::fs::read_to_string(file.with_file_name("metadata.json")).unwrap(),
        r#"{"cachekey":"plain"}"#
    );
}

#[tokio::test]
async fn without_head_urls_the_get_urls_are_asked() {
    let storage = storage_with(vec![("/plain", OLDER, "plain-archive")]).await;
    let (_dir, file) = fetch(&urls(&storage, false)).await;
    assert_eq!(
        storage.lines(),
        ["HEAD /hashed", "HEAD /plain", "GET /plain"]
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "plain-archive");
}

#[tokio::test]
async fn the_newer_alternate_wins_and_the_primary_wins_a_tie() {
    let storage = storage_with(vec![
        ("/hashed", OLDER, "hashed-archive"),
        ("/plain", NEWER, "plain-archive"),
    ])
    .await;
    let (_dir, file) = fetch(&urls(&storage, true)).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "plain-archive");

    let storage = storage_with(vec![
        ("/hashed", OLDER, "hashed-archive"),
        ("/plain", OLDER, "plain-archive"),
    ])
    .await;
    let (_dir, file) = fetch(&urls(&storage, true)).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hashed-archive");
}

#[tokio::test]
async fn without_an_alternate_url_only_the_primary_is_fetched() {
    let storage = storage_with(vec![("/hashed", OLDER, "hashed-archive")]).await;
    let urls = DownloadUrls {
        url: format!("{}/hashed", storage.url),
        ..DownloadUrls::default()
    };
    let (_dir, file) = fetch(&urls).await;
    assert_eq!(storage.lines(), ["GET /hashed"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hashed-archive");
}
