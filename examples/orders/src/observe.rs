//! Observability: one structured log line per request, and Prometheus metrics.
//!
//! Metric names (the ops dashboard and alert rules use these; a test checks they are
//! exported):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `orders_http_requests_total` | counter | `route`, `method`, `status` |
//! | `orders_http_request_duration_seconds` | histogram | `route` |
//! | `orders_ratelimit_decisions_total` | counter | `decision` |
//! | `orders_idempotency_outcomes_total` | counter | `outcome`, `reason` |
//! | `orders_deprecated_calls_total` | counter | `version`, `phase` |

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_idempotency::{IdempotencyOutcome, IdempotencyRejection};
use tower_problem_details::RequestId;
use tower_ratelimit::{DecisionEvent, Decisions, Outcome, RateLimitRejection};
use tower_sunset::Phase;

use crate::auth::Tenant;

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
        handle
    })
}

/// Middleware, just inside the problem layer: counts and times every request and writes
/// its access log line.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();

    let response = next.run(request).await;

    let latency = started.elapsed();
    let status = response.status().as_u16();
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
    let tenant = extensions.get::<Tenant>().map_or("", Tenant::as_str);

    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method.to_string(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route.clone()).record(latency.as_secs_f64());
    if idempotency != "none" {
        metrics::counter!(IDEMPOTENCY_OUTCOMES, "outcome" => idempotency, "reason" => reason)
            .increment(1);
    }
    tracing::info!(
        target: "orders::access",
        request_id,
        method = %method,
        route,
        status,
        latency_ms = duration_ms(latency),
        tenant,
        idempotency,
        idempotency_reason = reason,
        ratelimit,
        "request"
    );
    response
}

/// Counts one rate-limit decision (the layer's `on_decision` hook).
pub fn count_decision(event: &DecisionEvent<'_>) {
    let decision = match event.outcome {
        Outcome::Allowed(_) => "allowed",
        Outcome::Rejected(_) => "rejected",
        Outcome::ShadowRejected(_) => "shadow_rejected",
        Outcome::StoreError { .. } => "store_error",
        Outcome::MissingKey => "missing_key",
        _ => "other",
    };
    metrics::counter!(RATELIMIT_DECISIONS, "decision" => decision).increment(1);
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
