//! [`Idempotency`]: the service, and the flow of one request through it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tower_service::Service;

use crate::IdempotencyOutcome;
use crate::guard::ClaimGuard;
use crate::key::{self, ScopedKey};
use crate::layer::Config;
use crate::rejection::{IdempotencyRejection, respond};
use crate::replay::{keep_headers, replay};
use crate::scope::{fingerprint, store_key};
use crate::store::{Claim, IdempotencyStore, Outcome, StoredResponse};

/// What a client should wait before retrying a request whose original is in flight: the
/// original usually finishes within a second, and its lease is the worst case, not the norm.
const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// What a client should wait when the store is unavailable.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service made by [`IdempotencyLayer`](crate::IdempotencyLayer).
#[derive(Clone)]
pub struct Idempotency<S, St> {
    inner: S,
    config: Arc<Config<St>>,
}

impl<S, St> Idempotency<S, St> {
    pub(crate) fn new(inner: S, config: Arc<Config<St>>) -> Self {
        Idempotency { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug, St> fmt::Debug for Idempotency<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The response future of [`Idempotency`].
pub struct ResponseFuture<B, E>(Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>);

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for Idempotency<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: IdempotencyStore,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + From<Bytes> + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready handles this request; the clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture(Box::pin(run(Arc::clone(&self.config), inner, request)))
    }
}

async fn run<S, St, ReqBody, ResBody>(
    config: Arc<Config<St>>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: IdempotencyStore,
    ReqBody: Body + From<Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + From<Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let reject = |rejection, retry_after| Ok(respond(&config.catalog, rejection, retry_after));
    if !config.methods.contains(request.method()) {
        return bypass(inner.call(request).await);
    }
    let key = match key::parse_idempotency_key(request.headers(), config.max_key_len) {
        Ok(Some(key)) => key,
        Ok(None) if config.required => return reject(IdempotencyRejection::KeyMissing, None),
        Ok(None) => return bypass(inner.call(request).await),
        Err(error) => return reject(IdempotencyRejection::KeyInvalid(error), None),
    };
    let (mut parts, body) = request.into_parts();
    let Some(scope) = config.scope.extract(&parts) else {
        return reject(IdempotencyRejection::ScopeMissing, None);
    };

    // The body is part of the fingerprint, so it is read before anything is claimed.
    let limit = config.max_request_body;
    if declared_length(&parts.headers).is_some_and(|length| length > limit) {
        return reject(IdempotencyRejection::PayloadTooLarge { limit }, None);
    }
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return reject(IdempotencyRejection::PayloadTooLarge { limit }, None);
        }
        Err(_) => return reject(IdempotencyRejection::BodyUnreadable, None),
    };
    let fingerprint = fingerprint(&parts, &body);
    let scoped = store_key(&scope, &key);

    let deadline = config.wait_in_flight.map(|wait| Instant::now() + wait);
    let mut pause = Duration::from_millis(10);
    let token = loop {
        match config.store.claim(scoped, fingerprint, config.lease).await {
            Ok(Claim::Claimed(token)) => break token,
            Ok(Claim::Completed {
                fingerprint: original,
                outcome,
            }) => {
                if original != fingerprint {
                    return reject(IdempotencyRejection::Reused, None);
                }
                return match outcome {
                    Outcome::Response(stored) => {
                        let mut response = replay(stored);
                        response
                            .extensions_mut()
                            .insert(IdempotencyOutcome::Replayed);
                        Ok(response)
                    }
                    Outcome::NotReplayable => reject(IdempotencyRejection::ResultUnavailable, None),
                };
            }
            Ok(Claim::InFlight {
                fingerprint: original,
                ..
            }) => {
                if original != fingerprint {
                    return reject(IdempotencyRejection::Reused, None);
                }
                match deadline {
                    Some(deadline) if Instant::now() < deadline => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        tokio::time::sleep(pause.min(left)).await;
                        pause = (pause * 2).min(Duration::from_millis(250));
                    }
                    _ => {
                        return reject(IdempotencyRejection::InFlight, Some(IN_FLIGHT_RETRY_AFTER));
                    }
                }
            }
            Err(error) => {
                crate::log::store_error("claim", &error);
                // An open breaker knows when it next tries the store.
                let wait = error.retry_after().unwrap_or(STORE_RETRY_AFTER);
                return reject(IdempotencyRejection::StoreUnavailable, Some(wait));
            }
        }
    };

    // From here on, the claim is released if this future is dropped or panics, and its lease
    // is renewed while the handler runs.
    let mut guard = ClaimGuard::new(config.store.clone(), scoped, token);
    parts.extensions.insert(ScopedKey::new(key, scoped));
    let call = inner.call(Request::from_parts(parts, ReqBody::from(body)));
    let response = match guard.hold_while(call, config.lease).await {
        Ok(response) => response,
        Err(error) => {
            guard.release().await;
            return Err(error);
        }
    };
    if !config.policy.keeps(response.status()) {
        guard.release().await;
        return Ok(executed(response));
    }
    guard.handler_finished(fingerprint, config.ttl);

    let (parts, body) = response.into_parts();
    let fits = body
        .size_hint()
        .upper()
        .is_some_and(|upper| upper <= config.max_response_body as u64);
    if !fits || is_event_stream(&parts.headers) {
        // Keeping it would mean buffering a stream: complete without a replayable result, so
        // the handler never runs twice, and pass the stream on untouched.
        guard
            .complete(fingerprint, Outcome::NotReplayable, config.ttl)
            .await;
        return Ok(executed(Response::from_parts(parts, body)));
    }
    // Only whether it failed matters; the error itself may not be `Send`.
    match body.collect().await.map_err(drop) {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let stored = StoredResponse {
                status: parts.status,
                headers: keep_headers(&parts.headers, &config.replayed_headers),
                body: bytes.clone(),
            };
            guard
                .complete(fingerprint, Outcome::Response(stored), config.ttl)
                .await;
            Ok(executed(Response::from_parts(parts, ResBody::from(bytes))))
        }
        Err(()) => {
            // The handler ran, but its body broke on the way: never run it again.
            guard
                .complete(fingerprint, Outcome::NotReplayable, config.ttl)
                .await;
            reject(IdempotencyRejection::ResponseBodyFailed, None)
        }
    }
}

fn executed<B>(mut response: Response<B>) -> Response<B> {
    response
        .extensions_mut()
        .insert(IdempotencyOutcome::Executed);
    response
}

fn bypass<B, E>(result: Result<Response<B>, E>) -> Result<Response<B>, E> {
    result.map(|mut response| {
        response
            .extensions_mut()
            .insert(IdempotencyOutcome::NotApplicable);
        response
    })
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("text/event-stream"))
}
