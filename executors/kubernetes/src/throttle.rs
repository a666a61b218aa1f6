//! The API server's request to come back later, kept for the retries. When the API server
//! throttles (max-in-flight or priority and fairness), it answers 429 with a plain-text body
//! and a `Retry-After` header; kube-rs turns a body that is not a JSON Status into an error
//! without the headers. client-go waits for `Retry-After`; so does this runner: a layer under
//! the client rewrites such an answer (429 or 5xx with `Retry-After` in seconds) into the
//! Status the API server would send, with `details.retryAfterSeconds`, which
//! [`crate::retry::retry_after`] reads. A JSON Status without the field gets it from the header.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client of `config` whose throttled answers keep their `Retry-After`.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&RetryAfterLayer)
        .build())
}

/// The layer of [`client`].
#[derive(Debug, Clone, Copy)]
pub struct RetryAfterLayer;

impl<S> tower::Layer<S> for RetryAfterLayer {
    type Service = RetryAfter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryAfter(inner)
    }
}

/// The service of [`RetryAfterLayer`].
#[derive(Debug, Clone)]
pub struct RetryAfter<S>(S);

impl<S, Request, B> tower::Service<Request> for RetryAfter<S>
where
    S: tower::Service<Request, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Either<B, Full<Bytes>>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let response = answer.await.map_err(Into::into)?;
            let Some(seconds) = asked_wait(&response) else {
                return Ok(response.map(Either::Left));
            };
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
            let status = with_retry_after(parts.status.as_u16(), &bytes, seconds);
            let mut parts = parts;
            parts.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            parts.headers.remove(http::header::CONTENT_LENGTH);
            Ok(http::Response::from_parts(
                parts,
                Either::Right(Full::new(Bytes::from(status))),
            ))
        })
    }
}

/// The seconds a 429 or 5xx answer's `Retry-After` asks for (an HTTP date is not read).
fn asked_wait<B>(response: &http::Response<B>) -> Option<u64> {
    let code = response.status().as_u16();
    if code != 429 && code < 500 {
        return None;
    }
    response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|seconds| *seconds > 0)
}

/// The Status for an answer `code` with `body` that asked for a wait of `seconds`.
fn with_retry_after(code: u16, body: &[u8], seconds: u64) -> Vec<u8> {
    let mut status = match serde_json::from_slice::<Value>(body) {
        Ok(status) if status["kind"] == "Status" => status,
        _ => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            let reason = match code {
                429 => "TooManyRequests",
                503 => "ServiceUnavailable",
                _ => "InternalError",
            };
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": text,
                "reason": reason,
                "code": code,
            })
        }
    };
    if !status["details"].is_object() {
        status["details"] = json!({});
    }
    if status["details"]["retryAfterSeconds"].as_u64().unwrap_or(0) == 0 {
        status["details"]["retryAfterSeconds"] = json!(seconds);
    }
    status.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_text_throttle_becomes_a_status_with_its_wait() {
        let status: Value = serde_json::from_slice(&with_retry_after(
            429,
            b"Too many requests, please try again later.\n",
            3,
        ))
        .expect("json");
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["code"], 429);
        assert_eq!(
            status["message"],
            "Too many requests, please try again later."
        );
        assert_eq!(status["details"]["retryAfterSeconds"], 3);
        let parsed: k8s_openapi::apimachinery::pkg::apis::meta::v1::Status =
            serde_json::from_value(status).expect("a Status");
        assert_eq!(
            parsed
                .details
                .and_then(|details| details.retry_after_seconds),
            Some(3)
        );
    }

    #[test]
    fn a_status_keeps_its_own_wait_and_gets_the_headers_when_it_has_none() {
        let own = br#"{"kind":"Status","code":429,"reason":"TooManyRequests","details":{"retryAfterSeconds":7}}"#;
        let status: Value = serde_json::from_slice(&with_retry_after(429, own, 2)).expect("json");
        assert_eq!(status["details"]["retryAfterSeconds"], 7);
        let bare = br#"{"kind":"Status","code":503,"reason":"ServiceUnavailable"}"#;
        let status: Value = serde_json::from_slice(&with_retry_after(503, bare, 2)).expect("json");
        assert_eq!(status["details"]["retryAfterSeconds"], 2);
    }

    #[test]
    fn only_a_429_or_5xx_with_seconds_asks_for_a_wait() {
        let answer = |code: u16, header: &str| {
            http::Response::builder()
                .status(code)
                .header("retry-after", header)
                .body(())
                .expect("a response")
        };
        assert_eq!(asked_wait(&answer(429, "2")), Some(2));
        assert_eq!(asked_wait(&answer(503, " 5 ")), Some(5));
        assert_eq!(asked_wait(&answer(409, "2")), None);
        assert_eq!(
            asked_wait(&answer(429, "Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(asked_wait(&answer(429, "0")), None);
    }
}
