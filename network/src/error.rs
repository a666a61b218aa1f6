//! Errors of the GitLab client.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid GitLab URL {0:?}: only http and https are supported")]
    InvalidUrl(String),
    #[error("reading TLS file {}", path.display())]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuring TLS")]
    Tls(#[source] reqwest::Error),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("decoding the response: {0}")]
    Decode(String),
    #[error("GitLab answered {0}: {1}")]
    Status(u16, String),
}
