//! Containing a panic inside one job: a bug reached by one job's input must end that job as a
//! system failure, with its cleanup run and its final state sent, and leave the runner and the
//! other jobs alone.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future that turns a panic of the future it wraps into `Err` with the panic's payload.
///
/// The wrapped future is boxed, so this needs no pinning of its own. It asserts unwind safety:
/// the callers throw the panicked future away and only run cleanup afterwards, never reuse it.
pub struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    /// Wraps `future`, so that a panic while polling it becomes `Err`.
    pub fn new(future: F) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The text a panic was raised with (`panic!("…")`, `expect("…")`, an overflow message).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_across_an_await_becomes_an_error() {
        let outcome = CatchUnwind::new(async {
            tokio::task::yield_now().await;
            let values: Vec<u64> = Vec::new();
            values[3]
        })
        .await;
        let payload = outcome.unwrap_err();
        assert!(
            panic_message(payload.as_ref()).contains("index out of bounds"),
            "{}",
            panic_message(payload.as_ref())
        );
        assert_eq!(CatchUnwind::new(async { 7 }).await.ok(), Some(7));
    }
}
