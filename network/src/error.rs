//! Errors of the GitLab client.

use std::path::PathBuf;

/// Why a call to GitLab, or setting up the client, failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The runner's `url` is not an http or https URL.
    #[error("invalid GitLab URL {0:?}: only http and https are supported")]
    InvalidUrl(String),
    /// A `tls-ca-file`, `tls-cert-file` or `tls-key-file` could not be read.
    #[error("reading TLS file {}", path.display())]
    TlsFile {
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built, typically from TLS file contents that do not parse.
    #[error("configuring TLS")]
    Tls(#[source] reqwest::Error),
    /// The request got no HTTP answer (connection, TLS or timeout error); holds the error chain.
    #[error("request failed: {0}")]
    Transport(String),
    /// GitLab's answer could not be read or decoded as expected; holds the error chain.
    #[error("decoding the response: {0}")]
    Decode(String),
    /// GitLab answered with an unexpected HTTP status: the status code and GitLab's message.
    #[error("GitLab answered {0}: {1}")]
    Status(u16, String),
}
