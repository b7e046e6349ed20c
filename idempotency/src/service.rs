//! [`Idempotency`]: the service, and the flow of one request through it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{LengthLimitError, Limited};
use tokio::time::Instant;
use tower_problem_details::{GRPC_STATUS, GrpcCode, Protocol};
use tower_service::Service;

use crate::IdempotencyOutcome;
use crate::body::{Renewal, RequestBody, ResponseBody, Settlement, Tee, lines, read_whole};
use crate::guard::ClaimGuard;
use crate::key::{self, ScopedKey};
use crate::layer::Config;
use crate::rejection::{IdempotencyRejection, rejection};
use crate::replay::{keep_headers, replay};
use crate::scope::{fingerprint, same_request, store_key};
use crate::store::{
    Claim, Completion, FencingToken, Fingerprint, IdempotencyStore, StoreKey, StoredResponse,
};

/// What a client should wait before retrying a request whose original is in flight: the
/// original usually finishes within a second, and its lease is the worst case, not the norm.
const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// What a client should wait when the store is unavailable.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service made by [`IdempotencyLayer`](crate::IdempotencyLayer).
///
/// The handler gets the request with a [`RequestBody`]: the original body, or the bytes the
/// layer read to fingerprint it.
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

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
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
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: IdempotencyStore,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResponseBody<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready handles this request; the clone waits for the next.
        // See "Be careful when cloning inner services" in tower's `Service` docs.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture(Box::pin(run(Arc::clone(&self.config), inner, request)))
    }
}

type Answer<B, E> = Result<Response<ResponseBody<B>>, E>;

/// A request the layer covers, read and fingerprinted.
struct Admitted {
    parts: Parts,
    body: Bytes,
    key: String,
    scoped: StoreKey,
    fingerprint: Fingerprint,
}

/// What the claim phase decided.
enum Claimed {
    /// The key is ours: run the handler.
    Run(FencingToken),
    /// The original completed: replay it.
    Replay(StoredResponse),
    /// Refused, with a retry delay when the client may come back.
    Refuse(IdempotencyRejection, Option<Duration>),
}

async fn run<S, St, ReqBody, ResBody>(
    config: Arc<Config<St>>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Answer<ResBody, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    St: IdempotencyStore,
    ReqBody: Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    if !config.methods.contains(request.method()) {
        return bypass(inner.call(request.map(RequestBody::new)).await);
    }
    let protocol = Protocol::detect(request.extensions(), request.headers());
    let admitted = match admit(&config, request).await {
        Ok(Ok(admitted)) => admitted,
        Ok(Err(request)) => return bypass(inner.call(request).await),
        Err(reason) => return Ok(respond(&config, reason, None, protocol)),
    };
    let token = match claim(&config, &admitted).await {
        Claimed::Run(token) => token,
        Claimed::Replay(stored) => {
            let mut response = replay(stored);
            response
                .extensions_mut()
                .insert(IdempotencyOutcome::Replayed);
            return Ok(response);
        }
        Claimed::Refuse(reason, wait) => return Ok(respond(&config, reason, wait, protocol)),
    };
    execute(&config, inner, admitted, token, protocol).await
}

/// Reads the key, the scope and the body: the admitted request, the request itself when the
/// layer does not cover it (no key, not required), or why it is refused.
async fn admit<St, ReqBody>(
    config: &Config<St>,
    request: Request<ReqBody>,
) -> Result<Result<Admitted, Request<RequestBody<ReqBody>>>, IdempotencyRejection>
where
    ReqBody: Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
{
    let refuse = Err;
    let key = match key::parse_idempotency_key(request.headers(), config.max_key_len) {
        Ok(Some(key)) => key,
        Ok(None) if config.required => return refuse(IdempotencyRejection::KeyMissing),
        Ok(None) => return Ok(Err(request.map(RequestBody::new))),
        Err(error) => return refuse(IdempotencyRejection::KeyInvalid(error)),
    };
    let (parts, body) = request.into_parts();
    let Some(scope) = config.scope.extract(&parts) else {
        return refuse(IdempotencyRejection::ScopeMissing);
    };
    // The body is part of the fingerprint, so it is read before anything is claimed.
    let limit = config.max_request_body;
    if declared_length(&parts.headers).is_some_and(|length| length > limit) {
        return refuse(IdempotencyRejection::PayloadTooLarge { limit });
    }
    let body = match read_whole(Limited::new(body, limit)).await {
        Ok((data, _trailers)) => data,
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return refuse(IdempotencyRejection::PayloadTooLarge { limit });
        }
        Err(_) => return refuse(IdempotencyRejection::BodyUnreadable),
    };
    let fingerprint = fingerprint(&parts, &body);
    let scoped = store_key(&scope, &key);
    Ok(Ok(Admitted {
        parts,
        body,
        key,
        scoped,
        fingerprint,
    }))
}

/// Claims the key, waiting for an original in flight if the layer is told to: the token to
/// run the handler with, the original's response to replay, or why the request is refused.
async fn claim<St: IdempotencyStore>(config: &Config<St>, admitted: &Admitted) -> Claimed {
    let refuse = Claimed::Refuse;
    let deadline = config.wait_in_flight.map(|wait| Instant::now() + wait);
    let mut pause = Duration::from_millis(10);
    loop {
        let claimed = config
            .store
            .claim(admitted.scoped, admitted.fingerprint, config.lease)
            .await;
        match claimed {
            Ok(Claim::Claimed(token)) => return Claimed::Run(token),
            Ok(Claim::Completed { fingerprint, .. } | Claim::InFlight { fingerprint, .. })
                if !same_request(
                    fingerprint,
                    admitted.fingerprint,
                    &admitted.parts,
                    &admitted.body,
                ) =>
            {
                return refuse(IdempotencyRejection::Reused, None);
            }
            Ok(Claim::Completed { outcome, .. }) => {
                return match outcome {
                    Completion::Response(stored) => Claimed::Replay(stored),
                    Completion::NotReplayable => {
                        refuse(IdempotencyRejection::ResultUnavailable, None)
                    }
                };
            }
            Ok(Claim::InFlight { .. }) => match deadline {
                // Bounded by the deadline; the pause doubles up to 250 ms.
                Some(deadline) if Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                _ => return refuse(IdempotencyRejection::InFlight, Some(IN_FLIGHT_RETRY_AFTER)),
            },
            Err(error) => {
                crate::log::store_error("claim", &error);
                // An open breaker knows when it next tries the store.
                let wait = error.retry_after().unwrap_or(STORE_RETRY_AFTER);
                return refuse(IdempotencyRejection::StoreUnavailable, Some(wait));
            }
        }
    }
}

/// Runs the handler under the claim, then records its result.
async fn execute<S, St, ReqBody, ResBody>(
    config: &Config<St>,
    mut inner: S,
    admitted: Admitted,
    token: FencingToken,
    protocol: Protocol,
) -> Answer<ResBody, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    St: IdempotencyStore,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let Admitted {
        mut parts,
        body,
        key,
        scoped,
        fingerprint,
    } = admitted;
    // From here on, the claim is released if this future is dropped or panics, and its lease
    // is renewed while the handler runs.
    let mut guard = ClaimGuard::new(config.store.clone(), scoped, token);
    parts.extensions.insert(ScopedKey::new(key, scoped, token));
    let call = inner.call(Request::from_parts(parts, RequestBody::read(body)));
    let response = match guard.hold_while(call, config.lease).await {
        Ok(response) => response,
        Err(error) => {
            guard.release().await;
            return Err(error);
        }
    };
    if !config.policy.keeps(outcome_status(&response, protocol)) {
        guard.release().await;
        return Ok(executed(response.map(ResponseBody::inner)));
    }
    guard.handler_finished(fingerprint, config.ttl);
    record(config, guard, fingerprint, response, protocol).await
}

/// The status the outcome policy judges: the HTTP status, or for a gRPC answer that carries its
/// `grpc-status` in the header block, the status of that code.
fn outcome_status<B>(response: &Response<B>, protocol: Protocol) -> StatusCode {
    let code = match protocol {
        Protocol::Grpc => response.headers().get(GRPC_STATUS),
        _ => None,
    };
    code.and_then(GrpcCode::from_header)
        .map_or(response.status(), GrpcCode::http_status)
}

/// Keeps the handler's response for replay if it can, and answers with it.
async fn record<St, ResBody, E>(
    config: &Config<St>,
    guard: ClaimGuard<St>,
    fingerprint: Fingerprint,
    response: Response<ResBody>,
    protocol: Protocol,
) -> Answer<ResBody, E>
where
    St: IdempotencyStore,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let start = StoredResponse {
        status: parts.status,
        headers: keep_headers(&parts.headers, &config.replayed_headers, protocol),
        body: Bytes::new(),
        trailers: Vec::new(),
    };
    if protocol == Protocol::Grpc && !body.is_end_stream() {
        // A gRPC response may be a stream: it goes through as it comes, and a copy is kept for
        // as long as it is one message. (Without a runtime to renew the lease it is not kept.)
        let header_status = parts
            .headers
            .get(GRPC_STATUS)
            .and_then(GrpcCode::from_header);
        return Ok(executed(
            match tee(config, guard, fingerprint, start, header_status) {
                Some(tee) => Response::from_parts(parts, ResponseBody::kept(body, tee)),
                None => Response::from_parts(parts, ResponseBody::inner(body)),
            },
        ));
    }
    let fits = body
        .size_hint()
        .upper()
        .is_some_and(|upper| upper <= config.max_response_body as u64);
    if !fits || is_event_stream(&parts.headers) {
        // Keeping it would mean buffering a stream: complete without a replayable result, so
        // the handler never runs twice, and pass the stream on untouched.
        guard
            .complete(fingerprint, Completion::NotReplayable, config.ttl)
            .await;
        return Ok(executed(Response::from_parts(
            parts,
            ResponseBody::inner(body),
        )));
    }
    // Only whether it failed matters; the error itself may not be `Send`.
    // Bounded by the size hint's upper bound, checked above, and by the limit should the
    // body send more than it announced.
    let limited = Limited::new(body, config.max_response_body);
    match read_whole(limited).await.map_err(drop) {
        Ok((bytes, trailers)) => {
            let stored = StoredResponse {
                body: bytes.clone(),
                trailers: trailers.as_ref().map(lines).unwrap_or_default(),
                ..start
            };
            guard
                .complete(fingerprint, Completion::Response(stored), config.ttl)
                .await;
            let body = ResponseBody::full(bytes, trailers);
            Ok(executed(Response::from_parts(parts, body)))
        }
        Err(()) => {
            // The handler ran, but its body broke on the way: never run it again.
            guard
                .complete(fingerprint, Completion::NotReplayable, config.ttl)
                .await;
            Ok(respond(
                config,
                IdempotencyRejection::ResponseBodyFailed,
                None,
                protocol,
            ))
        }
    }
}

/// The copy of a gRPC response that settles the claim when the response ends.
fn tee<St: IdempotencyStore>(
    config: &Config<St>,
    guard: ClaimGuard<St>,
    fingerprint: Fingerprint,
    start: StoredResponse,
    header_status: Option<GrpcCode>,
) -> Option<Tee> {
    let renewal = Renewal::new(guard.renewal(config.lease)?);
    let ttl = config.ttl;
    let settle = Box::new(move |settlement| {
        let settled = async move {
            match settlement {
                Settlement::Keep(stored) => {
                    guard
                        .complete(fingerprint, Completion::Response(stored), ttl)
                        .await;
                }
                Settlement::Unreplayable => {
                    guard
                        .complete(fingerprint, Completion::NotReplayable, ttl)
                        .await;
                }
                Settlement::Release => guard.release().await,
            }
        };
        // The write outlives the body: it is not the client's to wait for.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(settled);
        }
    });
    Some(Tee::new(
        start,
        header_status,
        config.max_response_body,
        config.policy,
        settle,
        renewal,
    ))
}

fn respond<St, B>(
    config: &Config<St>,
    reason: IdempotencyRejection,
    retry_after: Option<Duration>,
    protocol: Protocol,
) -> Response<ResponseBody<B>> {
    let rejection = rejection(&config.catalog, &reason, retry_after);
    let mut response = config
        .responder
        .respond(rejection, protocol)
        .map(|bytes| ResponseBody::full(bytes, None));
    response.extensions_mut().insert(reason);
    response
        .extensions_mut()
        .insert(IdempotencyOutcome::Rejected);
    response
}

fn executed<B>(mut response: Response<B>) -> Response<B> {
    response
        .extensions_mut()
        .insert(IdempotencyOutcome::Executed);
    response
}

fn bypass<B, E>(result: Result<Response<B>, E>) -> Answer<B, E> {
    result.map(|response| {
        let mut response = response.map(ResponseBody::inner);
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
