//! The circuit breaker seen from the layer, on a paused clock, over a fake Redis connection
//! that hangs, refuses or answers as the test says: during an outage the layer fails closed
//! at once (503 `idempotency-store-unavailable` + `Retry-After`) instead of waiting out the
//! store timeout, and it runs requests again once Redis answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use guardrail_store::CircuitBreaker;
use guardrail_test_support::{FakeRedis, Reply};
use http::header::RETRY_AFTER;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use redis::Value;
use redis::{Arg, Cmd};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_idempotency::{IdempotencyLayer, IdempotencyRejection, RedisBackend, RedisStore, Scope};

type Body = Full<Bytes>;
/// What the handler behind the layer reads.
type Inner = tower_idempotency::RequestBody<Body>;
/// What the layer answers with.
type Out = tower_idempotency::ResponseBody<Body>;

const TIMEOUT: Duration = Duration::from_millis(200);

/// What the two idempotency scripts answer when Redis is healthy and every key is vacant:
/// a claim (`{0}`: claimed), and a fenced complete/release/renew (`1`: applied).
fn healthy() -> Reply {
    Reply::With(Arc::new(|cmd: &Cmd| {
        let fenced = cmd.args_iter().any(|arg| {
            matches!(arg, Arg::Simple(bytes) if [&b"complete"[..], b"release", b"renew"].contains(&bytes))
        });
        if fenced {
            Value::Int(1)
        } else {
            Value::Array(vec![Value::Int(0)])
        }
    }))
}

fn stack(
    redis: &FakeRedis,
    runs: &Arc<AtomicUsize>,
) -> impl Service<Request<Body>, Response = Response<Out>, Error = Infallible> + Clone {
    let breaker = CircuitBreaker::new()
        .failure_threshold(3)
        .unwrap()
        .back_off(Duration::from_millis(500), Duration::from_secs(2))
        .unwrap();
    let backend = RedisBackend::new(redis.clone())
        .timeout(TIMEOUT)
        .unwrap()
        .breaker(breaker);
    let store = RedisStore::new(backend, "idem").unwrap();
    let runs = Arc::clone(runs);
    ServiceBuilder::new()
        .layer(IdempotencyLayer::new(
            store,
            Scope::header(http::HeaderName::from_static("x-tenant")),
        ))
        .service(service_fn(move |_: Request<Inner>| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::from("created"))) }
        }))
}

fn post(key: &str) -> Request<Body> {
    Request::post("/orders")
        .header("idempotency-key", key)
        .header("x-tenant", "acme")
        .body(Body::from("{}"))
        .unwrap()
}

async fn unavailable(
    service: &mut (impl Service<Request<Body>, Response = Response<Out>, Error = Infallible> + Clone),
    key: &str,
) -> Response<Out> {
    let response = service.clone().oneshot(post(key)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::StoreUnavailable)
    );
    assert!(response.headers().contains_key(RETRY_AFTER));
    response
}

#[tokio::test(start_paused = true)]
async fn a_hung_redis_costs_three_timeouts_then_every_request_fails_closed_at_once() {
    let redis = FakeRedis::new(Reply::Hang);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut service = stack(&redis, &runs);

    // Time is tokio's paused clock: the elapsed figures below are exact, not measured.
    let started = tokio::time::Instant::now();
    for i in 0..3 {
        unavailable(&mut service, &format!("k{i}")).await;
    }
    assert_eq!(
        started.elapsed(),
        TIMEOUT * 3,
        "three calls waited out the timeout"
    );
    assert_eq!(redis.calls(), 3);

    let opened = tokio::time::Instant::now();
    for i in 0..100 {
        unavailable(&mut service, &format!("open{i}")).await;
    }
    assert_eq!(redis.calls(), 3, "an open breaker sends nothing to Redis");
    assert_eq!(
        opened.elapsed(),
        Duration::ZERO,
        "and answers without waiting"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "fail closed: the handler never ran"
    );
}

#[tokio::test(start_paused = true)]
async fn the_layer_runs_requests_again_once_a_probe_gets_through() {
    let redis = FakeRedis::new(Reply::Refuse);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut service = stack(&redis, &runs);
    for i in 0..4 {
        unavailable(&mut service, &format!("k{i}")).await;
    }
    assert_eq!(redis.calls(), 3);

    redis.set(healthy());
    // Still open: Redis is back, but nobody has looked yet.
    unavailable(&mut service, "early").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = service.clone().oneshot(post("probe")).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the probe runs the request"
    );
    for i in 0..5 {
        let response = service
            .clone()
            .oneshot(post(&format!("after{i}")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn retry_after_says_when_the_breaker_next_tries_redis() {
    let redis = FakeRedis::new(Reply::Refuse);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut service = stack(&redis, &runs);
    for i in 0..3 {
        unavailable(&mut service, &format!("k{i}")).await;
    }
    // Open for 500 ms after a first opening: rounded up to a whole second.
    let response = unavailable(&mut service, "open").await;
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    // Each failed probe doubles the back-off, up to 2 s.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        unavailable(&mut service, "probe").await;
    }
    let response = unavailable(&mut service, "open").await;
    assert_eq!(response.headers()[RETRY_AFTER], "2");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_still_lets_a_record_of_work_done_through() {
    use tower_idempotency::{
        Completion, Fenced, FencingToken, Fingerprint, IdempotencyStore, StoreKey,
    };
    let redis = FakeRedis::new(Reply::Refuse);
    let store = RedisStore::new(
        RedisBackend::new(redis.clone())
            .breaker(CircuitBreaker::new().failure_threshold(1).unwrap()),
        "idem",
    )
    .unwrap();
    let (key, fingerprint) = (
        StoreKey::from_bytes([1; 32]),
        Fingerprint::from_bytes([2; 32]),
    );
    let claim = store.claim(key, fingerprint, Duration::from_secs(60)).await;
    assert!(claim.is_err());
    assert_eq!(
        store.backend().circuit_breaker().state(),
        guardrail_store::BreakerState::Open
    );

    // Redis is back, the breaker does not know yet: a new claim fails fast...
    redis.set(healthy());
    let claim = store
        .claim(key, fingerprint, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(claim.kind(), guardrail_store::StoreErrorKind::CircuitOpen);
    let calls = redis.calls();
    // ...but the record of a handler that already ran is still written.
    let token = FencingToken::from_u128(7);
    let ttl = Duration::from_secs(3600);
    let done = store
        .complete(key, token, fingerprint, Completion::NotReplayable, ttl)
        .await;
    assert_eq!(done.unwrap(), Fenced::Applied);
    assert_eq!(redis.calls(), calls + 1);
}
