//! The circuit breaker seen from the layer, on a paused clock, over a fake Redis connection:
//! during an outage the layer applies its policy (fail open, or 503 when fail-closed) at once
//! instead of waiting out the store timeout, the decision hook sees why, and decisions come
//! from Redis again once it answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use guardrail_store::CircuitBreaker;
use guardrail_test_support::{FakeRedis, Reply};
use http::header::RETRY_AFTER;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::Full;
use redis::Value;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_ratelimit::{
    KeyExtractor, Policy, Quota, RateLimitLayer, RedisBackend, RedisStore, StoreErrorKind, Verdict,
};

type Body = Full<Bytes>;

const TIMEOUT: Duration = Duration::from_millis(100);

/// The error kinds the decision hook saw, in order (`None` for a decision Redis made).
type Seen = Arc<Mutex<Vec<Option<StoreErrorKind>>>>;

fn layer(redis: &FakeRedis) -> (RateLimitLayer<RedisStore<FakeRedis>>, Seen) {
    let breaker = CircuitBreaker::new()
        .failure_threshold(3)
        .unwrap()
        .back_off(Duration::from_millis(200), Duration::from_secs(1))
        .unwrap();
    let backend = RedisBackend::new(redis.clone())
        .timeout(TIMEOUT)
        .unwrap()
        .breaker(breaker);
    let store = RedisStore::new(backend, "rl").unwrap();
    let policies = [Policy::gcra("burst", Quota::per_second(10).unwrap()).unwrap()];
    let key = KeyExtractor::header(HeaderName::from_static("x-api-key"));
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let layer = RateLimitLayer::new(store, policies, key)
        .unwrap()
        .on_decision(move |event| {
            let kind = match &event.verdict {
                Verdict::StoreError { error, .. } => Some(error.kind()),
                _ => None,
            };
            log.lock().unwrap().push(kind);
        });
    (layer, seen)
}

fn service(
    layer: RateLimitLayer<RedisStore<FakeRedis>>,
) -> impl Service<
    Request<Body>,
    Response = Response<tower_problem_details::ResponseBody<Body>>,
    Error = BoxError,
> + Clone {
    ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<Body>| async {
            Ok::<_, BoxError>(Response::new(Body::from("ok")))
        }))
}

fn request() -> Request<Body> {
    Request::get("/")
        .header("x-api-key", "k")
        .body(Body::default())
        .unwrap()
}

/// The script's answer for one admitting GCRA policy: admitted, 9 left, reset, no wait.
fn admits() -> Reply {
    Reply::always(Value::Array(
        [1, 9, 100_000, 0].into_iter().map(Value::Int).collect(),
    ))
}

#[tokio::test(start_paused = true)]
async fn fail_open_lets_requests_through_without_waiting_once_the_breaker_opens() {
    let redis = FakeRedis::new(Reply::Hang);
    let (layer, seen) = layer(&redis);
    let service = service(layer);
    // Time is tokio's paused clock: the elapsed figures below are exact, not measured.
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        let response = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "fail open");
    }
    assert_eq!(started.elapsed(), TIMEOUT * 3);
    let opened = tokio::time::Instant::now();
    for _ in 0..50 {
        let response = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "fail open");
        assert!(
            !response.headers().contains_key("ratelimit"),
            "no decision was made"
        );
    }
    assert_eq!(opened.elapsed(), Duration::ZERO);
    assert_eq!(redis.calls(), 3, "an open breaker sends nothing to Redis");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[..3], [Some(StoreErrorKind::Timeout); 3]);
    assert!(
        seen[3..]
            .iter()
            .all(|k| *k == Some(StoreErrorKind::CircuitOpen)),
        "the hook tells a fast failure from a timeout: {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fail_closed_answers_503_at_once_and_decides_again_after_a_probe() {
    let redis = FakeRedis::new(Reply::Refuse);
    let (layer, seen) = layer(&redis);
    let service = service(layer.fail_closed());
    for _ in 0..10 {
        let response = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }
    assert_eq!(redis.calls(), 3);

    redis.set(admits());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let response = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers().contains_key("ratelimit"),
            "Redis decided"
        );
    }
    assert_eq!(redis.calls(), 8, "the probe, then every request");
    assert_eq!(seen.lock().unwrap().last(), Some(&None));
}
