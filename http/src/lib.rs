//! The one HTTPS client setup of gitlab-runner-rs, shared by the runner's GitLab client
//! (`network`) and the helpers that talk to GitLab from the job (`runner-helpers`): TLS 1.2 at
//! least (upstream's minimum), the configured CA bundle added to the system roots, and the
//! client certificate and key when both are set.
//!
//! Depends only on reqwest; it must not depend on any other crate of the workspace.

use std::path::PathBuf;

/// TLS material for talking to GitLab (`tls-ca-file`, `tls-cert-file`, `tls-key-file`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM bundle of CAs trusted on top of the system roots; `None` trusts the system roots only.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate; used only together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`; used only together with it.
    pub key_file: Option<PathBuf>,
}

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A TLS file could not be read.
    #[error("reading TLS file {}", path.display())]
    File {
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file's contents were refused: not valid PEM certificates, or not a usable key pair.
    #[error("configuring TLS")]
    Tls(#[source] reqwest::Error),
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File {
        path: path.clone(),
        source,
    })
}

/// A client builder with the TLS setup of `tls`; the caller adds its timeouts and policies.
pub fn client_builder(tls: &TlsOptions) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut builder = reqwest::Client::builder().min_tls_version(reqwest::tls::Version::TLS_1_2);
    if let Some(ca_file) = &tls.ca_file {
        for certificate in
            reqwest::Certificate::from_pem_bundle(&read(ca_file)?).map_err(TlsError::Tls)?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = read(cert_file)?;
        pem.push(b'\n');
        pem.extend(read(key_file)?);
        builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(TlsError::Tls)?);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_named() {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let error = client_builder(&TlsOptions {
            ca_file: Some(missing.clone()),
            ..TlsOptions::default()
        })
        .err()
        .map(|error| error.to_string());
        assert_eq!(
            error.as_deref(),
            Some("reading TLS file /nonexistent/ca.pem")
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("ca.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let result = client_builder(&TlsOptions {
            ca_file: Some(garbage),
            ..TlsOptions::default()
        });
        assert!(matches!(result, Err(TlsError::Tls(_))), "{result:?}");
    }
}
