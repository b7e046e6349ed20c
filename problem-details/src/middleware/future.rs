use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{
    CONTENT_DISPOSITION, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_LOCATION,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED, TRANSFER_ENCODING,
};
use http::response::Parts;
use http::{HeaderName, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use super::layer::Config;
use super::request_id::{REQUEST_ID_MEMBER, RequestId};
use crate::body::ResponseBody;
use crate::catalog::ProblemKind;
#[cfg(feature = "grpc")]
use crate::grpc::{GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS, GrpcCode};
use crate::problem::Problem;
use crate::rejection::{Protocol, Rejection};
use crate::response::{is_problem_content_type, media_type_is};

/// Headers about the body, removed when the body is replaced by a problem.
const STALE_BODY_HEADERS: [HeaderName; 11] = [
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    CONTENT_LANGUAGE,
    CONTENT_LOCATION,
    CONTENT_DISPOSITION,
    TRANSFER_ENCODING,
    ETAG,
    LAST_MODIFIED,
    HeaderName::from_static("digest"),
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
];

pin_project! {
    /// The response future of [`ProblemService`](super::ProblemService).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        config: Arc<Config>,
        request_id: RequestId,
        protocol: Protocol,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling { #[pin] future: F },
        Panicked,
        ReadingDetail { parts: Option<Parts>, #[pin] body: B, buf: Vec<u8> },
        Done,
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(
        future: F,
        config: Arc<Config>,
        request_id: RequestId,
        protocol: Protocol,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            config,
            request_id,
            protocol,
        }
    }

    pub(crate) fn panicked(
        payload: &(dyn Any + Send),
        config: Arc<Config>,
        request_id: RequestId,
        protocol: Protocol,
    ) -> Self {
        log_panic(payload, &request_id);
        ResponseFuture {
            state: State::Panicked,
            config,
            request_id,
            protocol,
        }
    }
}

enum Step<T, S> {
    Ready(T),
    Next(S),
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let config = &**this.config;
            let id = &*this.request_id;
            let protocol = *this.protocol;
            let step = match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    // A panic while polling leaves the inner future poisoned; it is never
                    // polled again because the state moves to `Done`.
                    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(Err(error))) => Step::Ready(Err(error)),
                        Ok(Poll::Ready(Ok(response))) => {
                            on_response(response, this.config, id, protocol)
                        }
                        Err(panic) => {
                            log_panic(&*panic, id);
                            Step::Ready(Ok(internal_error(config, id, protocol)))
                        }
                    }
                }
                StateProj::Panicked => Step::Ready(Ok(internal_error(config, id, protocol))),
                StateProj::ReadingDetail { parts, body, buf } => {
                    let text = ready!(read_text(body, buf, config.client_error_detail_limit, cx));
                    let parts = parts.take().expect("polled after completion");
                    let mut problem = Problem::new(parts.status);
                    if let Some(text) = text {
                        problem = problem.with_detail(text);
                    }
                    Step::Ready(Ok(problem_response(
                        parts,
                        Rejection::new(problem),
                        config,
                        id,
                        protocol,
                    )))
                }
                StateProj::Done => panic!("`ResponseFuture` polled after completion"),
            };
            match step {
                Step::Ready(output) => {
                    this.state.set(State::Done);
                    return Poll::Ready(output);
                }
                Step::Next(next) => this.state.set(next),
            }
        }
    }
}

type Output<B, E> = Result<Response<ResponseBody<B>>, E>;

/// Decides what becomes of the inner service's response.
fn on_response<F, B: Body, E>(
    response: Response<B>,
    config: &Arc<Config>,
    id: &RequestId,
    protocol: Protocol,
) -> Step<Output<B, E>, State<F, B>> {
    let status = response.status();
    #[cfg(feature = "grpc")]
    if protocol == Protocol::Grpc && status.is_success() {
        return Step::Ready(Ok(hide_grpc_internals(response, config, id)));
    }
    let content_type = response.headers().get(CONTENT_TYPE);
    let is_error = status.is_client_error() || status.is_server_error();
    // A problem content type with an empty body is still a bare error.
    let is_problem =
        content_type.is_some_and(is_problem_content_type) && !response.body().is_end_stream();
    if !is_error || is_problem {
        let mut response = response.map(ResponseBody::new);
        stamp_request_id(&mut response, config, id);
        return Step::Ready(Ok(response));
    }
    let limit = config.client_error_detail_limit as u64;
    let readable_text = status.is_client_error()
        && limit > 0
        && content_type.is_some_and(|v| media_type_is(v, "text/plain"))
        && !response.body().is_end_stream()
        && response.body().size_hint().lower() <= limit;
    let (parts, body) = response.into_parts();
    if readable_text {
        return Step::Next(State::ReadingDetail {
            parts: Some(parts),
            body,
            buf: Vec::new(),
        });
    }
    #[cfg(feature = "tracing")]
    if status.is_server_error() {
        tracing::debug!(request_id = %id, %status, "bare server error replaced by a problem; its body was dropped");
    }
    // A 5xx body may hold internals: it is dropped unread.
    Step::Ready(Ok(problem_response(
        parts,
        Rejection::new(Problem::new(status)),
        config,
        id,
        protocol,
    )))
}

/// Reads a body of at most `limit` bytes as trimmed UTF-8 text; `None` when it is longer,
/// fails, is not UTF-8 or is blank.
fn read_text<B: Body<Data = Bytes>>(
    mut body: Pin<&mut B>,
    buf: &mut Vec<u8>,
    limit: usize,
    cx: &mut Context<'_>,
) -> Poll<Option<String>> {
    loop {
        match ready!(body.as_mut().poll_frame(cx)) {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Poll::Ready(None);
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Poll::Ready(None),
        }
    }
    let text = std::str::from_utf8(buf).ok().map(str::trim);
    Poll::Ready(text.filter(|t| !t.is_empty()).map(str::to_owned))
}

fn internal_error<B>(
    config: &Config,
    id: &RequestId,
    protocol: Protocol,
) -> Response<ResponseBody<B>> {
    let (parts, ()) = Response::new(()).into_parts();
    let rejection = config.catalog.rejection(ProblemKind::Internal);
    problem_response(parts, rejection, config, id, protocol)
}

fn problem_response<B>(
    mut parts: Parts,
    mut rejection: Rejection,
    config: &Config,
    id: &RequestId,
    protocol: Protocol,
) -> Response<ResponseBody<B>> {
    stamp_rejection(&mut rejection, config, id);
    let problem = rejection.problem().clone();
    // Headers that describe the replaced body would now describe the wrong one. (A 416
    // keeps `Content-Range: bytes */len`, which describes the resource, not the body.)
    for name in STALE_BODY_HEADERS {
        parts.headers.remove(name);
    }
    if problem.status() != StatusCode::RANGE_NOT_SATISFIABLE {
        parts.headers.remove(CONTENT_RANGE);
    }
    let (rendered, body) = config.responder.respond(rejection, protocol).into_parts();
    parts.status = rendered.status;
    overlay(&mut parts.headers, &rendered.headers);
    parts.extensions.insert(problem);
    let mut response = Response::from_parts(parts, ResponseBody::full(body));
    stamp_request_id(&mut response, config, id);
    response
}

/// Identifies the request in the problem: as its `instance`, or in a member.
fn stamp_rejection(rejection: &mut Rejection, config: &Config, id: &RequestId) {
    let problem = rejection.problem_mut();
    match config.request_id_as_instance.then(|| id.as_urn()).flatten() {
        Some(instance) => *problem = problem.clone().with_instance(instance),
        None => {
            problem.insert_extension_unchecked(REQUEST_ID_MEMBER.into(), id.as_str().into());
        }
    }
}

/// Sets every field of `from` in `to`, replacing the values `to` had, in place.
fn overlay(to: &mut http::HeaderMap, from: &http::HeaderMap) {
    for name in from.keys() {
        let mut values = from.get_all(name).iter();
        if let Some(first) = values.next() {
            to.insert(name.clone(), first.clone());
        }
        for value in values {
            to.append(name.clone(), value.clone());
        }
    }
}

/// A gRPC answer whose status says the server failed (`UNKNOWN`, `INTERNAL`, `DATA_LOSS`), in
/// its header block (a Trailers-Only answer: a handler's error, or tonic's own) or in its
/// trailers (a stream that failed after its first messages), gets the catalog's `internal`
/// status instead, so its message and details, which may hold internals, never reach the
/// client.
#[cfg(feature = "grpc")]
fn hide_grpc_internals<B: Body>(
    response: Response<B>,
    config: &Arc<Config>,
    id: &RequestId,
) -> Response<ResponseBody<B>> {
    let trailers_only = response.headers().contains_key(GRPC_STATUS);
    let mut response = if trailers_only || response.body().is_end_stream() {
        response.map(ResponseBody::new)
    } else {
        let (config, id) = (Arc::clone(config), id.clone());
        response.map(|body| {
            ResponseBody::rewriting_trailers(
                body,
                Box::new(move |trailers| replace_internal_status(trailers, &config, &id)),
            )
        })
    };
    replace_internal_status(response.headers_mut(), config, id);
    stamp_request_id(&mut response, config, id);
    response
}

/// Puts the catalog's `internal` status in place of a failed one in `fields` (a header block
/// or trailers).
#[cfg(feature = "grpc")]
fn replace_internal_status(fields: &mut http::HeaderMap, config: &Config, id: &RequestId) {
    // Parsed as clients parse it, so that ` 13` or `013` is no way around the check.
    let failed = fields
        .get(GRPC_STATUS)
        .and_then(GrpcCode::from_header)
        .is_some_and(|code| {
            matches!(
                code,
                GrpcCode::Unknown | GrpcCode::Internal | GrpcCode::DataLoss
            )
        });
    if !failed {
        return;
    }
    #[cfg(feature = "tracing")]
    tracing::debug!(
        request_id = %id,
        grpc_status = ?fields.get(GRPC_STATUS),
        grpc_message = ?fields.get(GRPC_MESSAGE),
        "gRPC server error replaced by the internal status; its message was dropped"
    );
    let mut rejection = config.catalog.rejection(ProblemKind::Internal);
    stamp_rejection(&mut rejection, config, id);
    let rendered = config.responder.respond(rejection, Protocol::Grpc);
    fields.remove(GRPC_MESSAGE);
    fields.remove(GRPC_STATUS_DETAILS);
    for name in [GRPC_STATUS, GRPC_MESSAGE, GRPC_STATUS_DETAILS] {
        if let Some(value) = rendered.headers().get(&name) {
            fields.insert(name, value.clone());
        }
    }
}

fn stamp_request_id<B>(response: &mut Response<B>, config: &Config, id: &RequestId) {
    if !response.headers().contains_key(&config.request_id_header) {
        response
            .headers_mut()
            .insert(config.request_id_header.clone(), id.header_value().clone());
    }
    response.extensions_mut().insert(id.clone());
}

fn log_panic(payload: &(dyn Any + Send), id: &RequestId) {
    #[cfg(feature = "tracing")]
    {
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("<non-string panic payload>");
        tracing::error!(request_id = %id, panic = message, "inner service panicked; answered with a 500 problem");
    }
    // Without the `tracing` feature there is nowhere to report the panic to.
    #[cfg(not(feature = "tracing"))]
    let _ = (payload, id);
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}
