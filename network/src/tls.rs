//! TLS files for the GitLab connection: upstream's defaults from the certificate directory
//! (`<host>.crt`, `<host>.auth.crt`, `<host>.auth.key`), the change stamps that make the client
//! rebuild its transport when a file changes, and the contents a job receives as
//! `CI_SERVER_TLS_CA_FILE` / `CI_SERVER_TLS_CERT_FILE` / `CI_SERVER_TLS_KEY_FILE`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use runner_core::build::ServerTls;

use crate::client::TlsOptions;

/// The certificate directory upstream uses: `/etc/gitlab-runner/certs` for root, else
/// `~/.gitlab-runner/certs`.
pub fn default_certificate_directory() -> Option<PathBuf> {
    if runner_core::process::running_as_root() {
        return Some(PathBuf::from("/etc/gitlab-runner/certs"));
    }
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| Path::new(&home).join(".gitlab-runner").join("certs"))
}

/// Fills each unset file from `<directory>/<host>.crt` (CA), `<host>.auth.crt` and
/// `<host>.auth.key` (client certificate) when that file exists; `host` is the URL's host
/// without its port.
pub fn with_certificate_directory(
    url: &str,
    mut options: TlsOptions,
    directory: Option<&Path>,
) -> TlsOptions {
    let Some(directory) = directory else {
        return options;
    };
    let Some(host) = host_of(url) else {
        return options;
    };
    let find = |slot: &mut Option<PathBuf>, name: String| {
        if slot.is_none() {
            let path = directory.join(name);
            if path.is_file() {
                *slot = Some(path);
            }
        }
    };
    find(&mut options.ca_file, format!("{host}.crt"));
    find(&mut options.cert_file, format!("{host}.auth.crt"));
    find(&mut options.key_file, format!("{host}.auth.key"));
    options
}

fn host_of(url: &str) -> Option<String> {
    runner_core::url::host_name(url).map(str::to_string)
}

/// The modification times of the TLS files; a different value means the transport must be
/// rebuilt.
pub fn stamps(options: &TlsOptions) -> [Option<SystemTime>; 3] {
    let stamp = |path: &Option<PathBuf>| {
        path.as_ref()
            .and_then(|path| std::fs::metadata(path).ok())
            .and_then(|metadata| metadata.modified().ok())
    };
    [
        stamp(&options.ca_file),
        stamp(&options.cert_file),
        stamp(&options.key_file),
    ]
}

/// Reads the files now, so a job sees their current contents, as upstream's `TLSData`: the CA
/// file's contents, and the client certificate and key only when both are set and readable.
///
/// Upstream falls back to the chain the server presented when no CA file is configured; rustls
/// does not expose that chain here, so such a job gets no `CI_SERVER_TLS_CA_FILE`.
pub fn job_tls_data(options: &TlsOptions) -> ServerTls {
    let read = |path: &Option<PathBuf>| {
        path.as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .filter(|text| !text.is_empty())
    };
    let mut data = ServerTls {
        ca_chain: read(&options.ca_file),
        ..ServerTls::default()
    };
    if let (Some(cert), Some(key)) = (read(&options.cert_file), read(&options.key_file)) {
        data.auth_cert = Some(cert);
        data.auth_key = Some(key);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_directory_fills_only_unset_files_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gitlab.example.com.crt"), "CA").unwrap();
        std::fs::write(dir.path().join("gitlab.example.com.auth.crt"), "CERT").unwrap();
        let options = with_certificate_directory(
            "https://gitlab.example.com:8443/prefix",
            TlsOptions::default(),
            Some(dir.path()),
        );
        assert_eq!(
            options.ca_file,
            Some(dir.path().join("gitlab.example.com.crt"))
        );
        assert_eq!(
            options.cert_file,
            Some(dir.path().join("gitlab.example.com.auth.crt"))
        );
        assert_eq!(options.key_file, None);
        let configured = TlsOptions {
            ca_file: Some(PathBuf::from("/configured.pem")),
            ..TlsOptions::default()
        };
        let options =
            with_certificate_directory("https://gitlab.example.com", configured, Some(dir.path()));
        assert_eq!(options.ca_file, Some(PathBuf::from("/configured.pem")));
    }

    #[test]
    fn job_data_needs_both_halves_of_the_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&ca, "CA CHAIN").unwrap();
        std::fs::write(&cert, "CERT").unwrap();
        let options = TlsOptions {
            ca_file: Some(ca),
            cert_file: Some(cert),
            key_file: Some(dir.path().join("missing.key")),
        };
        let data = job_tls_data(&options);
        assert_eq!(data.ca_chain.as_deref(), Some("CA CHAIN"));
        assert_eq!(data.auth_cert, None);
        assert_eq!(data.auth_key, None);
    }

    #[test]
    fn hosts_drop_ports_and_userinfo() {
        assert_eq!(
            host_of("https://user@host.example:444/x").as_deref(),
            Some("host.example")
        );
        assert_eq!(host_of("http://10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(host_of("not a url"), None);
    }
}
