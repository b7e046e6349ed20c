//! Observability: one structured log line per request, and Prometheus metrics.
//!
//! Metric names (the ops dashboard and alert rules use these; a test checks they are
//! exported):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `orders_http_requests_total` | counter | `protocol`, `route`, `method`, `status` |
//! | `orders_http_request_duration_seconds` | histogram | `protocol`, `route` |
//! | `orders_ratelimit_decisions_total` | counter | `decision` |
//! | `orders_idempotency_outcomes_total` | counter | `outcome`, `reason` |
//! | `orders_deprecated_calls_total` | counter | `version`, `phase` |
//! | `orders_connections_open` | gauge | |
//! | `orders_connections_closed_total` | counter | `reason` (`shed_idle`, `refused`) |
//! | `orders_redis_breaker_transitions_total` | counter | `to` (`open`, `half_open`, `closed`) |
//! | `orders_redis_breaker_open` | gauge | |
//!
//! Every label takes its values from a fixed set: `protocol` is `http` or `grpc`, `route` the
//! matched route template or, on gRPC, the method's path (of the service's own methods; or
//! `unmatched`), `method` one of RFC 9110's methods or `other`, `status` a status code (on
//! gRPC, the code's HTTP equivalent, and 499 for a call whose own `grpc-timeout` ran out; the
//! access log also gives `grpc_status`). Every
//! access-log field is bounded too: the request id is the problem layer's (at most 200
//! visible ASCII characters), the tenant a fixed-length hash; nothing the client chose
//! freely (a method, a path, a header) is logged verbatim.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use guardrail_store::{BreakerState, Transition};
use http_body::Frame;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_idempotency::{IdempotencyOutcome, IdempotencyRejection};
use tower_problem_details::{GRPC_STATUS, GrpcCode, Protocol, RequestId};
use tower_ratelimit::{DecisionEvent, Decisions, RateLimitRejection, Verdict};
use tower_sunset::Phase;

use crate::auth::Tenant;
use crate::edge::{ClientDeadline, method_label};

/// Requests by route, method and status.
pub const HTTP_REQUESTS: &str = "orders_http_requests_total";
/// Request latency by route.
pub const HTTP_DURATION: &str = "orders_http_request_duration_seconds";
/// Rate-limit decisions.
pub const RATELIMIT_DECISIONS: &str = "orders_ratelimit_decisions_total";
/// Idempotency outcomes.
pub const IDEMPOTENCY_OUTCOMES: &str = "orders_idempotency_outcomes_total";
/// Calls to the deprecated `/v1`.
pub const DEPRECATED_CALLS: &str = "orders_deprecated_calls_total";
/// Open client connections.
pub const CONNECTIONS_OPEN: &str = "orders_connections_open";
/// Connections closed by the connection cap.
pub const CONNECTIONS_CLOSED: &str = "orders_connections_closed_total";

/// State changes of the Redis circuit breaker.
pub const BREAKER_TRANSITIONS: &str = "orders_redis_breaker_transitions_total";
/// Whether the Redis circuit breaker fails calls fast (1: open, or half-open while one probe
/// runs) or lets them through (0: closed).
pub const BREAKER_OPEN: &str = "orders_redis_breaker_open";

/// Every metric with its HELP text, described once when the recorder is installed.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        HTTP_REQUESTS,
        "Requests answered, HTTP and gRPC, by protocol, route, method and status (a gRPC code's HTTP equivalent).",
    ),
    (
        HTTP_DURATION,
        "Time to answer a request, by protocol and route, in seconds (gRPC: until its status).",
    ),
    (RATELIMIT_DECISIONS, "Rate-limit decisions, by decision."),
    (
        IDEMPOTENCY_OUTCOMES,
        "Idempotency-Key outcomes, by outcome and rejection reason.",
    ),
    (
        DEPRECATED_CALLS,
        "Calls to a deprecated API version, by version and phase.",
    ),
    (CONNECTIONS_OPEN, "Client connections open now."),
    (
        CONNECTIONS_CLOSED,
        "Client connections closed or refused by the connection cap, by reason.",
    ),
    (
        BREAKER_TRANSITIONS,
        "State changes of the circuit breaker on Redis calls, by the state entered.",
    ),
    (
        BREAKER_OPEN,
        "1 while the circuit breaker on Redis calls is open or probing (calls fail fast), else 0.",
    ),
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process's Prometheus recorder, installed on first use. Metrics are process-global
/// (the `metrics` facade), so every app built in one process shares them.
///
/// # Panics
///
/// Never in practice: the only fixed bucket list is valid.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), LATENCY_BUCKETS)
            .expect("a non-empty bucket list")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application's); then this
        // handle renders only what this service records through it, which is nothing. Say so.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    for &(name, help) in DESCRIPTIONS {
        match name {
            CONNECTIONS_OPEN | BREAKER_OPEN => metrics::describe_gauge!(name, help),
            HTTP_DURATION => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
            _ => metrics::describe_counter!(name, help),
        }
    }
    // Registered at zero, so that dashboards see the series before the first event.
    metrics::gauge!(CONNECTIONS_OPEN).set(0.0);
    metrics::gauge!(BREAKER_OPEN).set(0.0);
    for state in [
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::Closed,
    ] {
        metrics::counter!(BREAKER_TRANSITIONS, "to" => state.as_str()).absolute(0);
    }
}

/// Sets the number of open client connections.
#[expect(
    clippy::cast_precision_loss,
    reason = "a connection count is far below 2^52"
)]
pub fn set_open_connections(open: usize) {
    metrics::gauge!(CONNECTIONS_OPEN).set(open as f64);
}

/// Counts one connection closed (`shed_idle`) or refused (`refused`) by the connection cap.
pub fn count_connection(reason: &'static str) {
    metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

/// Middleware, just inside the problem layer: counts and times every request and writes
/// its access log line. An HTTP request is recorded when its response head is ready; a gRPC
/// call when its status is known: at once for a Trailers-Only answer, else when the response
/// body ends with its trailers (or is dropped: `CANCELLED`).
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let protocol = Protocol::detect(request.extensions(), request.headers());
    let route = match protocol {
        Protocol::Grpc => crate::grpc::method_label(request.uri().path()).to_owned(),
        _ => request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned()),
    };
    let method = method_label(request.method());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();

    let response = next.run(request).await;

    let extensions = response.extensions();
    let (idempotency, reason) = idempotency_labels(
        extensions.get::<IdempotencyOutcome>(),
        extensions.get::<IdempotencyRejection>(),
    );
    let ratelimit = if extensions.get::<RateLimitRejection>().is_some() {
        "rejected"
    } else if extensions.get::<Decisions>().is_some() {
        "allowed"
    } else {
        "none"
    };
    let record = Record {
        client_deadline: extensions.get::<ClientDeadline>().is_some(),
        started,
        protocol,
        route,
        method,
        request_id,
        tenant: extensions.get::<Tenant>().cloned(),
        idempotency,
        reason,
        ratelimit,
    };
    if protocol != Protocol::Grpc {
        record.write(response.status(), None);
        return response;
    }
    if let Some(code) = response
        .headers()
        .get(GRPC_STATUS)
        .map(GrpcCode::from_header)
    {
        record.write(response.status(), Some(code.unwrap_or(GrpcCode::Unknown)));
        return response;
    }
    let status = response.status();
    response.map(|body| Body::new(GrpcObserved::new(body, record, status)))
}

/// What the access log and the metrics say of one request, once its status is known.
struct Record {
    client_deadline: bool,
    started: Instant,
    protocol: Protocol,
    route: String,
    method: &'static str,
    request_id: String,
    tenant: Option<Tenant>,
    idempotency: &'static str,
    reason: &'static str,
    ratelimit: &'static str,
}

impl Record {
    /// Counts, times and logs the request. A gRPC call's `status` label is its code's HTTP
    /// equivalent (`google/rpc/code.proto`), so one `status=~"5.."` covers both protocols;
    /// a call whose own `grpc-timeout` ran out is the client's 499, not a server's 504.
    fn write(self, http_status: http::StatusCode, grpc: Option<GrpcCode>) {
        let latency = self.started.elapsed();
        let status = if self.client_deadline {
            499
        } else {
            grpc.map_or(http_status, GrpcCode::http_status).as_u16()
        };
        let protocol = match self.protocol {
            Protocol::Grpc => "grpc",
            _ => "http",
        };
        let route = self.route;
        metrics::counter!(HTTP_REQUESTS, "protocol" => protocol, "route" => route.clone(), "method" => self.method, "status" => status.to_string())
            .increment(1);
        metrics::histogram!(HTTP_DURATION, "protocol" => protocol, "route" => route.clone())
            .record(latency.as_secs_f64());
        if self.idempotency != "none" {
            metrics::counter!(IDEMPOTENCY_OUTCOMES, "outcome" => self.idempotency, "reason" => self.reason)
                .increment(1);
        }
        tracing::info!(
            target: "orders::access",
            request_id = self.request_id,
            protocol,
            method = self.method,
            route,
            status,
            grpc_status = grpc.map(GrpcCode::name),
            latency_ms = duration_ms(latency),
            tenant = self.tenant.as_ref().map_or("", Tenant::as_str),
            idempotency = self.idempotency,
            idempotency_reason = self.reason,
            ratelimit = self.ratelimit,
            "request"
        );
    }
}

pin_project_lite::pin_project! {
    /// A gRPC response body that writes its call's [`Record`] when the status arrives in the
    /// trailers, when the body ends without one (`UNKNOWN`, as a client reads it), when it
    /// fails (`INTERNAL`) or when it is dropped unfinished (`CANCELLED`).
    struct GrpcObserved {
        #[pin]
        inner: Body,
        record: Option<Record>,
        status: http::StatusCode,
    }

    impl PinnedDrop for GrpcObserved {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                record.write(*this.status, Some(GrpcCode::Cancelled));
            }
        }
    }
}

impl GrpcObserved {
    fn new(inner: Body, record: Record, status: http::StatusCode) -> Self {
        GrpcObserved {
            inner,
            record: Some(record),
            status,
        }
    }
}

impl http_body::Body for GrpcObserved {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let polled = ready!(this.inner.poll_frame(cx));
        let code = match &polled {
            Some(Ok(frame)) => frame.trailers_ref().map(|trailers| {
                trailers
                    .get(GRPC_STATUS)
                    .and_then(GrpcCode::from_header)
                    .unwrap_or(GrpcCode::Unknown)
            }),
            // The server's body failed (a client's reset drops it instead: `CANCELLED`).
            Some(Err(_)) => Some(GrpcCode::Internal),
            None => Some(GrpcCode::Unknown),
        };
        if let Some(code) = code
            && let Some(record) = this.record.take()
        {
            record.write(*this.status, Some(code));
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts one state change of the Redis circuit breaker (its `on_transition` hook).
pub fn count_breaker_transition(transition: &Transition) {
    metrics::counter!(BREAKER_TRANSITIONS, "to" => transition.to.as_str()).increment(1);
    let open = transition.to != BreakerState::Closed;
    metrics::gauge!(BREAKER_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// Counts one rate-limit decision (the layer's `on_decision` hook).
pub fn count_decision(event: &DecisionEvent<'_>) {
    // The handles are registered once: `counter!` looks its key up in the recorder's registry
    // on every call (hashing and comparing the key), about 500 instructions of every rate-
    // limited request. The recorder is installed first, so no handle is a no-op one.
    static DECISIONS: OnceLock<[metrics::Counter; 6]> = OnceLock::new();
    let [
        allowed,
        rejected,
        shadow_rejected,
        store_error,
        missing_key,
        other,
    ] = DECISIONS.get_or_init(|| {
        prometheus();
        [
            "allowed",
            "rejected",
            "shadow_rejected",
            "store_error",
            "missing_key",
            "other",
        ]
        .map(|decision| metrics::counter!(RATELIMIT_DECISIONS, "decision" => decision))
    });
    let counter = match event.verdict {
        Verdict::Allowed(_) => allowed,
        Verdict::Rejected(_) => rejected,
        Verdict::ShadowRejected(_) => shadow_rejected,
        Verdict::StoreError { .. } => store_error,
        Verdict::MissingKey => missing_key,
        _ => other,
    };
    counter.increment(1);
}

/// Counts one call to a deprecated version (the sunset layer's hook).
pub fn count_deprecated_call(version: &'static str, phase: Phase) {
    let phase = match phase {
        Phase::Announced => "announced",
        Phase::Deprecated => "deprecated",
        Phase::Brownout => "brownout",
        Phase::Retired => "retired",
        _ => "other",
    };
    metrics::counter!(DEPRECATED_CALLS, "version" => version, "phase" => phase).increment(1);
}

fn idempotency_labels(
    outcome: Option<&IdempotencyOutcome>,
    rejection: Option<&IdempotencyRejection>,
) -> (&'static str, &'static str) {
    let outcome = match outcome {
        None => return ("none", "none"),
        Some(IdempotencyOutcome::Executed) => "executed",
        Some(IdempotencyOutcome::Replayed) => "replayed",
        Some(IdempotencyOutcome::Rejected) => "rejected",
        Some(IdempotencyOutcome::NotApplicable) => "not_applicable",
        Some(_) => "other",
    };
    let reason = match rejection {
        None => "none",
        Some(IdempotencyRejection::KeyMissing) => "key_missing",
        Some(IdempotencyRejection::KeyInvalid(_)) => "key_invalid",
        Some(IdempotencyRejection::ScopeMissing) => "scope_missing",
        Some(IdempotencyRejection::InFlight) => "in_flight",
        Some(IdempotencyRejection::Reused) => "reused",
        Some(IdempotencyRejection::ResultUnavailable) => "result_unavailable",
        Some(IdempotencyRejection::PayloadTooLarge { .. }) => "payload_too_large",
        Some(IdempotencyRejection::BodyUnreadable) => "body_unreadable",
        Some(IdempotencyRejection::StoreUnavailable) => "store_unavailable",
        Some(IdempotencyRejection::ResponseBodyFailed) => "response_body_failed",
        Some(_) => "other",
    };
    (outcome, reason)
}

fn duration_ms(latency: Duration) -> f64 {
    latency.as_secs_f64() * 1_000.0
}
