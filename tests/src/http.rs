//! A minimal hyper server loop shared by the fakes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::rustls;

pub type Reply = Response<Full<Bytes>>;

/// A request with its body read.
pub struct Received {
    pub method: hyper::Method,
    pub path: String,
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The connection after a `101 Switching Protocols` reply (WebSocket exec and attach).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Serves `handler` on a fresh loopback port until the returned task is aborted.
pub async fn serve<H, F>(handler: H) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    H: Fn(Received) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    serve_with_tls(handler, None).await
}

/// A TLS server configuration from PEM files: the certificate chain and its private key, and
/// when `client_ca` is given, client certificates signed by that CA are required.
pub fn tls_config(
    cert_pem: &Path,
    key_pem: &Path,
    client_ca: Option<&Path>,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem)
        .expect("read certificate PEM")
        .collect::<Result<_, _>>()
        .expect("parse certificate PEM");
    let key = PrivateKeyDer::from_pem_file(key_pem).expect("read private key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).expect("read client CA PEM") {
                roots
                    .add(cert.expect("parse client CA PEM"))
                    .expect("add client CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client certificate verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .expect("TLS server configuration");
    Arc::new(config)
}

/// A reply whose body may be streamed (a watch).
pub type StreamReply = Response<BoxBody<Bytes, Infallible>>;

/// Serves `handler` on a fresh loopback port, over TLS when a configuration is given.
pub async fn serve_with_tls<H, F>(
    handler: H,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    H: Fn(Received) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let handler = Arc::new(handler);
    serve_streaming(
        move |received| {
            let reply = handler(received);
            async move { reply.await.map(|body| body.boxed()) }
        },
        tls,
    )
    .await
}

/// [`serve_with_tls`] for handlers whose replies may stream.
pub async fn serve_streaming<H, F>(
    handler: H,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    H: Fn(Received) -> F + Send + Sync + 'static,
    F: Future<Output = StreamReply> + Send + 'static,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener
        .local_addr()
        .expect("read the fake server's bound address");
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let mut request = request;
                        let upgrade = hyper::upgrade::on(&mut request);
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let received = Received {
                            method: parts.method,
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().unwrap_or("").to_string(),
                            headers: parts.headers,
                            body,
                            upgrade: Some(upgrade),
                        };
                        Ok::<_, Infallible>(handler(received).await)
                    }
                });
                match acceptor {
                    Some(acceptor) => {
                        // A handshake the client refuses (unknown CA) just ends the connection.
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        }
                    }
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    (address, task)
}

pub fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .body(Full::new(body.into()))
        .expect("the fake's reply has a valid HTTP status code")
}
