//! The helper side of gitlab-runner-rs: what the generated job scripts run inside the job
//! environment through the `gitlab-runner-rs` binary (`artifacts-uploader`,
//! `artifacts-downloader`, `cache-archiver`, `cache-extractor`, `read-logs`): choosing files,
//! zip archives, the HTTP transfers to GitLab and to the cache, and following a log file.
//!
//! May use `runner-core` for shared types; it must never depend on `network`, `shells`,
//! executors or `commands` (the binary wires it up).

pub mod archive;
pub mod artifacts;
pub mod cache;
pub mod extract;
pub mod files;
pub mod glob;
pub mod log;
pub mod read_logs;
