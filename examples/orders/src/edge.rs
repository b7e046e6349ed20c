//! The request edge: what every request gets before any route sees it.
//!
//! - a method outside RFC 9110's set is labelled `other` ([`method_label`]), so it never
//!   becomes a metric label or a log field (routing answers it 405, or 404 off the routes);
//! - the request deadline: past it the inner work is dropped (cancelled) and the answer is
//!   503 `deadline-exceeded` with `Retry-After`, or 408 `request-timeout` when the client was
//!   still sending its body;
//! - the body inactivity timeout: a body that stalls longer than it is answered 408
//!   `request-timeout` and the connection closed;
//! - the rest of a refused body (a 413, a 401 to a client that sent a body) is read and
//!   thrown away beside the answer, which goes out at once, so that a client that writes its
//!   whole body before it reads sees the answer instead of a reset connection (nginx's
//!   lingering close does the same). The reading is bounded in bytes, between frames (the
//!   body timeout) and in all (the request's deadline, counted from its start); past a bound
//!   the body is dropped and the connection closed. Meanwhile the connection is marked
//!   [`Draining`]: no request head is timed, but it can still be shed or closed at shutdown.
//!   A body declared longer than the bound is not read at all: the answer says
//!   `Connection: close`.
//!
//! Why not tower-http's `TimeoutLayer` and `RequestBodyTimeoutLayer`: the first answers an
//! empty 408 or 503 whichever side was slow, and the second's timeout error cannot be told
//! apart from other body errors once a route has turned it into its own rejection; neither
//! can hand a refused body back to be read away. Request ids and the panic guard come from
//! `tower-problem-details`' `ProblemLayer`, which also makes every answer here a problem.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT};
use http::{HeaderValue, Method};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};
use tower_problem_details::Protocol;

use crate::config::Limits;
use crate::problems::Problems;
use crate::serve::Draining;

/// What the edge needs.
#[derive(Clone, Debug)]
pub struct EdgeState {
    /// The problem builder.
    pub problems: Problems,
    /// The deadline of a whole request.
    pub request_timeout: Duration,
    /// The longest a body may stall between two frames.
    pub body_timeout: Duration,
    /// The most bytes of a refused body read and thrown away.
    pub max_discard_bytes: u64,
}

impl EdgeState {
    /// The edge for these limits.
    pub fn new(problems: Problems, limits: &Limits) -> Self {
        EdgeState {
            problems,
            request_timeout: limits.request_timeout(),
            body_timeout: limits.body_timeout(),
            max_discard_bytes: limits.max_discard_bytes,
        }
    }
}

/// The label of a method: one of RFC 9110's (and PATCH), or `other`. A fixed set of values,
/// for metrics and logs.
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::CONNECT, "CONNECT"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::PATCH, "PATCH"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

/// On a response: the gRPC client's own `grpc-timeout`, shorter than the service's deadline,
/// ran out. The client has given up on the call by then; the access log counts it as the
/// client's (499), not as a server error.
#[derive(Clone, Copy, Debug)]
pub struct ClientDeadline;

/// Middleware: the edge (see the module docs).
pub async fn edge(State(edge): State<EdgeState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let protocol = Protocol::detect(request.extensions(), request.headers());
    // A gRPC client's own deadline, when it is sooner than the service's.
    let client_deadline = match protocol {
        Protocol::Grpc => grpc_timeout(request.headers()).filter(|t| *t < edge.request_timeout),
        _ => None,
    };
    let deadline = client_deadline.unwrap_or(edge.request_timeout);
    let expects_continue = request.headers().contains_key(EXPECT);
    let draining = request.extensions().get::<Draining>().cloned();
    let declared = declared_length(&request);
    let (parts, body) = request.into_parts();
    let (body, watch) = WatchedBody::new(body, edge.body_timeout);
    let request = Request::from_parts(parts, Body::new(body));

    let response = match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) if watch.is_receiving() => {
            return edge.problems.request_timeout(
                "The request body was still arriving at the request deadline.",
                protocol,
            );
        }
        Err(_) if client_deadline.is_some() => {
            tracing::debug!(
                ?deadline,
                "the client's grpc-timeout passed; work cancelled"
            );
            let mut response = edge.problems.deadline_exceeded(protocol);
            response.extensions_mut().insert(ClientDeadline);
            return response;
        }
        Err(_) => {
            tracing::warn!(?deadline, "request deadline exceeded; work cancelled");
            return edge.problems.deadline_exceeded(protocol);
        }
    };
    if watch.timed_out() {
        return edge
            .problems
            .request_timeout("The request body stalled; nothing was processed.", protocol);
    }
    match watch.unread_rest() {
        None => response,
        // Draining would first send `100 Continue`, inviting the very body being refused.
        Some(_) if expects_continue && !watch.was_polled() => close(response),
        Some(_) if declared.is_some_and(|n| n > edge.max_discard_bytes) => close(response),
        Some(rest) => {
            // The answer goes out now; the rest is read away beside it, so a refused client
            // waits for nothing and the connection stays usable once the body has ended.
            // Bounded in bytes, per frame (the body timeout) and in all (the request's
            // deadline); past a bound the body is dropped and hyper closes the connection.
            let (max, stall) = (edge.max_discard_bytes, edge.body_timeout);
            let deadline = started + edge.request_timeout;
            let mark = draining.as_ref().map(Draining::hold);
            tokio::spawn(async move {
                let _ = tokio::time::timeout_at(deadline, discard(rest, max, stall)).await;
                drop(mark);
            });
            response
        }
    }
}

/// The `grpc-timeout` of a gRPC request (`1*8DIGIT` and a unit of `H`, `M`, `S`, `m`, `u` or
/// `n`), or `None` when it is missing, repeated or malformed: the service's own deadline
/// applies then, as gRPC servers do for a timeout they cannot read.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let mut values = headers.get_all(GRPC_TIMEOUT).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        return None;
    }
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 8 digits: fits a u64 in any unit below.
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(amount * 3600),
        b"M" => Duration::from_secs(amount * 60),
        b"S" => Duration::from_secs(amount),
        b"m" => Duration::from_millis(amount),
        b"u" => Duration::from_micros(amount),
        b"n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

const GRPC_TIMEOUT: &str = "grpc-timeout";

fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Reads and drops the rest of a body, at most `max` bytes, no frame more than `stall` apart.
/// Whether it reached the end.
async fn discard(mut body: Body, max: u64, stall: Duration) -> bool {
    let mut read = 0_u64;
    loop {
        match tokio::time::timeout(stall, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
                if read > max {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// What the edge learns of a request body while the routes read it.
#[derive(Debug, Default)]
struct Watch {
    /// The routes polled it at least once.
    polled: AtomicBool,
    /// It reached its end.
    ended: AtomicBool,
    /// It stalled past the body timeout.
    timed_out: AtomicBool,
    /// The body, handed back unfinished when the routes dropped it.
    rest: Mutex<Option<Body>>,
}

/// The edge's side of a [`WatchedBody`].
#[derive(Clone, Debug)]
struct BodyWatch(Arc<Watch>);

impl BodyWatch {
    fn was_polled(&self) -> bool {
        self.0.polled.load(Ordering::Acquire)
    }

    /// Being read and not finished: the client is the one who is slow.
    fn is_receiving(&self) -> bool {
        self.was_polled() && !self.0.ended.load(Ordering::Acquire)
    }

    fn timed_out(&self) -> bool {
        self.0.timed_out.load(Ordering::Acquire)
    }

    fn unread_rest(&self) -> Option<Body> {
        self.0.rest.lock().ok()?.take()
    }
}

/// The request body as the routes see it: the inactivity timeout, and the unread rest
/// handed back to the edge on drop.
struct WatchedBody {
    inner: Option<Body>,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    watch: Arc<Watch>,
}

impl WatchedBody {
    fn new(inner: Body, stall: Duration) -> (Self, BodyWatch) {
        let watch = Arc::new(Watch::default());
        if inner.is_end_stream() {
            watch.ended.store(true, Ordering::Release);
        }
        let body = WatchedBody {
            inner: Some(inner),
            stall,
            timer: None,
            watch: Arc::clone(&watch),
        };
        (body, BodyWatch(watch))
    }
}

/// The body stalled past the body timeout.
#[derive(Debug)]
struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body stalled past the body timeout")
    }
}

impl std::error::Error for BodyStalled {}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.watch.polled.store(true, Ordering::Release);
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.watch.ended.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + this.stall);
                }
                Poll::Ready(Some(frame))
            }
            Poll::Pending => {
                let stall = this.stall;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.watch.timed_out.store(true, Ordering::Release);
                    this.inner = None;
                    return Poll::Ready(Some(Err(axum::Error::new(BodyStalled))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        let unfinished = !self.watch.ended.load(Ordering::Acquire)
            && !self.watch.timed_out.load(Ordering::Acquire);
        if let (true, Some(inner)) = (unfinished, self.inner.take())
            && let Ok(mut rest) = self.watch.rest.lock()
        {
            *rest = Some(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_refused_when_malformed() {
        let timeout = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for value in values {
                headers.append(GRPC_TIMEOUT, HeaderValue::from_str(value).expect("valid"));
            }
            grpc_timeout(&headers)
        };
        assert_eq!(timeout(&["2H"]), Some(Duration::from_secs(7200)));
        assert_eq!(timeout(&["3M"]), Some(Duration::from_secs(180)));
        assert_eq!(timeout(&["4S"]), Some(Duration::from_secs(4)));
        assert_eq!(timeout(&["250m"]), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout(&["99999999u"]),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout(&["7n"]), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S", " 1S", "1s"] {
            assert_eq!(timeout(&[bad]), None, "{bad:?}");
        }
        assert_eq!(timeout(&[]), None);
        assert_eq!(timeout(&["1S", "2S"]), None, "repeated");
    }

    proptest::proptest! {
        #[test]
        fn prop_grpc_timeout_never_panics_and_reads_back_what_it_wrote(
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            amount in 0_u64..100_000_000,
            unit in proptest::sample::select(vec!['H', 'M', 'S', 'm', 'u', 'n']),
        ) {
            let mut headers = http::HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                headers.insert(GRPC_TIMEOUT, value);
                let _ = grpc_timeout(&headers);
            }
            let value = format!("{amount}{unit}");
            headers.insert(GRPC_TIMEOUT, HeaderValue::from_str(&value).expect("valid"));
            let read = grpc_timeout(&headers).expect("well formed");
            let expected = match unit {
                'H' => Duration::from_secs(amount * 3600),
                'M' => Duration::from_secs(amount * 60),
                'S' => Duration::from_secs(amount),
                'm' => Duration::from_millis(amount),
                'u' => Duration::from_micros(amount),
                _ => Duration::from_nanos(amount),
            };
            proptest::prop_assert_eq!(read, expected);
        }
    }

    #[test]
    fn methods_outside_rfc_9110_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let odd = Method::from_bytes(b"BREW").expect("a token");
        assert_eq!(method_label(&odd), "other");
    }
}
