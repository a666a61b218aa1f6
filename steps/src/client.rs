//! The client side: a gRPC channel to the service over any byte stream the caller can open
//! (a Unix socket, or the stdin/stdout of `steps proxy` through `docker exec`, SSH or a pod
//! exec). Each connection the channel makes opens a new stream through the dialer, so a
//! dropped transport is redialled on the next call.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::step_runner_client::StepRunnerClient;

/// A byte stream to the service.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// Opens a new byte stream to the service.
pub type Dialer = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Transport>>> + Send>>
        + Send
        + Sync,
>;

/// A client whose connections come from `dialer`; nothing is dialled until the first call.
pub fn connect_lazy(dialer: Dialer) -> StepRunnerClient<Channel> {
    let channel = Endpoint::from_static("http://step-runner").connect_with_connector_lazy(
        tower::service_fn(move |_: Uri| {
            let dial = dialer();
            async move { dial.await.map(TokioIo::new) }
        }),
    );
    StepRunnerClient::new(channel)
}

/// A dialer of the Unix socket at `path`.
pub fn unix(path: impl Into<PathBuf>) -> Dialer {
    let path = path.into();
    Arc::new(move || {
        let path = path.clone();
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&path).await?;
            Ok(Box::new(stream) as Box<dyn Transport>)
        })
    })
}
