//! Where the executor's API client points, in upstream's order (which is not kube-rs's
//! `Config::infer`): `host` from `[runners.kubernetes]` with its `bearer_token`, `ca_file` and
//! client certificate; else the in-cluster service account; else the kubeconfig
//! (`KUBECONFIG`, `~/.kube/config`) with `context` when set. A job's bearer token overwrite
//! replaces the token afterwards.

use std::path::PathBuf;

use kube::config::{AuthInfo, KubeConfigOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The `[runners.kubernetes]` keys of the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// `host`: the API server; empty: in-cluster, else kubeconfig.
    pub host: String,
    /// `context`: the kubeconfig context (only without `host`).
    pub context: String,
    /// `cert_file`: client certificate (with `key_file` and `ca_file`).
    pub cert_file: String,
    /// `key_file`.
    pub key_file: String,
    /// `ca_file`: the CA bundle the server's certificate is checked against.
    pub ca_file: String,
    /// `bearer_token`.
    pub bearer_token: String,
}

/// Why no client configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A client certificate without its key or CA (upstream's text).
    #[error("ca file, cert file and key file must be specified when using file based auth")]
    IncompleteFileAuth,
    /// `host` is not a URL.
    #[error("invalid host {host:?}: {reason}")]
    Host {
        /// The host as configured.
        host: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("reading ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Neither in-cluster nor kubeconfig configuration could be loaded.
    #[error("no Kubernetes configuration: not in a cluster ({in_cluster}), and the kubeconfig: {kubeconfig}")]
    Nothing {
        /// Why the in-cluster configuration did not load.
        in_cluster: String,
        /// Why the kubeconfig did not.
        kubeconfig: String,
    },
}

/// client-go's default scheme: `https` when TLS material is configured, else `http`.
fn host_url(settings: &ConnectionSettings) -> Result<http::Uri, ConnectError> {
    let host = settings.host.trim_end_matches('/');
    let url = if host.contains("://") {
        host.to_string()
    } else if !settings.ca_file.is_empty() || !settings.cert_file.is_empty() {
        format!("https://{host}")
    } else {
        format!("http://{host}")
    };
    url.parse()
        .map_err(|error: http::uri::InvalidUri| ConnectError::Host {
            host: settings.host.clone(),
            reason: error.to_string(),
        })
}

fn read_ca(path: &str) -> Result<Vec<Vec<u8>>, ConnectError> {
    let failed = |reason: String| ConnectError::CaFile {
        path: PathBuf::from(path),
        reason,
    };
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|error| failed(error.to_string()))?
        .map(|certificate| certificate.map(|der| der.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|error| failed(error.to_string()))?;
    if certificates.is_empty() {
        return Err(failed("no PEM certificate in it".into()));
    }
    Ok(certificates)
}

/// The configuration for `host` (upstream's `getOutClusterClientConfig`).
fn explicit(settings: &ConnectionSettings) -> Result<kube::Config, ConnectError> {
    if !settings.cert_file.is_empty()
        && (settings.key_file.is_empty() || settings.ca_file.is_empty())
    {
        return Err(ConnectError::IncompleteFileAuth);
    }
    let mut config = kube::Config::new(host_url(settings)?);
    if !settings.ca_file.is_empty() {
        config.root_cert = Some(read_ca(&settings.ca_file)?);
    }
    config.auth_info = AuthInfo {
        token: (!settings.bearer_token.is_empty()).then(|| settings.bearer_token.clone().into()),
        client_certificate: (!settings.cert_file.is_empty()).then(|| settings.cert_file.clone()),
        client_key: (!settings.cert_file.is_empty()).then(|| settings.key_file.clone()),
        ..AuthInfo::default()
    };
    Ok(config)
}

/// The client configuration for `settings`, with a job's `bearer_token` overwrite (empty:
/// none) applied.
pub async fn client_config(
    settings: &ConnectionSettings,
    bearer_token_overwrite: &str,
) -> Result<kube::Config, ConnectError> {
    let mut config = if !settings.host.is_empty() {
        explicit(settings)?
    } else {
        match kube::Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => {
                let options = KubeConfigOptions {
                    context: (!settings.context.is_empty()).then(|| settings.context.clone()),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|kubeconfig| ConnectError::Nothing {
                        in_cluster: in_cluster.to_string(),
                        kubeconfig: kubeconfig.to_string(),
                    })?
            }
        }
    };
    if !bearer_token_overwrite.is_empty() {
        config.auth_info.token = Some(bearer_token_overwrite.to_string().into());
        config.auth_info.token_file = None;
    }
    // kube-rs retries 429, 503 and 504 itself by default (up to 15 times, with backoff up to
    // 1000 s); the runner's own retries ([`crate::retry`], upstream's `retry_limit`) are the
    // only ones, so that what an operator configured is what happens.
    config.default_retry = false;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_follows_client_gos_default() {
        let plain = ConnectionSettings {
            host: "127.0.0.1:6443".into(),
            ..ConnectionSettings::default()
        };
        assert_eq!(
            host_url(&plain).unwrap().to_string(),
            "http://127.0.0.1:6443/"
        );
        let with_ca = ConnectionSettings {
            ca_file: "/ca.pem".into(),
            ..plain.clone()
        };
        assert_eq!(
            host_url(&with_ca).unwrap().to_string(),
            "https://127.0.0.1:6443/"
        );
        let explicit_scheme = ConnectionSettings {
            host: "https://k8s.example:443/".into(),
            ..ConnectionSettings::default()
        };
        assert_eq!(
            host_url(&explicit_scheme).unwrap().to_string(),
            "https://k8s.example:443/"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_ca_as_upstream_says() {
        let settings = ConnectionSettings {
            host: "https://k8s.example".into(),
            cert_file: "/cert.pem".into(),
            ..ConnectionSettings::default()
        };
        assert_eq!(
            explicit(&settings).unwrap_err().to_string(),
            "ca file, cert file and key file must be specified when using file based auth"
        );
        let unreadable = ConnectionSettings {
            ca_file: "/nonexistent/ca.pem".into(),
            key_file: "/key.pem".into(),
            ..settings
        };
        assert!(matches!(
            explicit(&unreadable).unwrap_err(),
            ConnectError::CaFile { .. }
        ));
    }
}
