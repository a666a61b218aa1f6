//! A TLS front for the local Docker engine, as a remote engine with `--tlsverify` would be: it
//! listens on 127.0.0.1, requires a client certificate signed by the test CA, and forwards
//! each connection to `/var/run/docker.sock`. It counts the connections it let through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixStream};

use crate::certs::TestCertificates;
use crate::http::tls_config;

/// A running TLS proxy in front of the local Docker engine; the listener stops when dropped.
pub struct DockerTlsProxy {
    address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    accepted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl DockerTlsProxy {
    /// Starts listening on a free 127.0.0.1 port, serving `certificates`' server certificate and
    /// requiring a client certificate signed by their CA.
    pub async fn start(certificates: &TestCertificates) -> Self {
        let config = tls_config(
            &certificates.server_cert,
            &certificates.server_key,
            Some(&certificates.ca),
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener
            .local_addr()
            .expect("read the TLS proxy's bound address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (counted, denied) = (accepted.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (counted, denied) = (counted.clone(), denied.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        denied.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
                    }
                });
            }
        });
        Self {
            address,
            task,
            accepted,
            refused,
        }
    }

    /// `tcp://127.0.0.1:<port>`, a `host` for `[runners.docker]`.
    pub fn host(&self) -> String {
        format!("tcp://{}", self.address)
    }

    /// Connections that presented a good client certificate.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Handshakes that failed (no or a wrong client certificate, an unknown CA).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for DockerTlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
