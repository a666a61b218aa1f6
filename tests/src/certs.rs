//! Test certificates made with the `openssl` command: a CA and a server certificate for
//! 127.0.0.1 signed by it, and a client certificate signed by the same CA.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A freshly generated CA with a server and a client certificate, as PEM files in a temporary
/// directory that is deleted when the value is dropped.
pub struct TestCertificates {
    /// The temporary directory holding every file; it lives as long as the value.
    pub dir: tempfile::TempDir,
    /// The CA certificate (`ca.pem`) that signed both the server and the client certificate.
    pub ca: PathBuf,
    /// The server certificate (`server.pem`), valid for the IP address 127.0.0.1.
    pub server_cert: PathBuf,
    /// The unencrypted private key of the server certificate (`server.key`).
    pub server_key: PathBuf,
    /// The client certificate (`client.pem`), for TLS client authentication.
    pub client_cert: PathBuf,
    /// The unencrypted private key of the client certificate (`client.key`).
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command (scripts/setup.sh installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn signed(dir: &Path, name: &str, subject: &str, extensions: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions)
        .expect("write the certificate's openssl extensions file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl TestCertificates {
    /// Runs `openssl` to make a new CA, server and client certificate; panics if it fails.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory for the certificates");
        let path = dir.path();
        openssl(
            path,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=gitlab-runner-rs test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        signed(
            path,
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        signed(
            path,
            "client",
            "/CN=gitlab-runner-rs test client",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        Self {
            ca: path.join("ca.pem"),
            server_cert: path.join("server.pem"),
            server_key: path.join("server.key"),
            client_cert: path.join("client.pem"),
            client_key: path.join("client.key"),
            dir,
        }
    }
}
