//! The layer over the memory store, driven through `ServiceBuilder` stacks on a paused clock.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_ratelimit::{
    Decisions, KeyExtractor, MemoryStore, Policy, Quota, RateLimitKey, RateLimitLayer,
    RateLimitRejection, RateLimitStore, StoreError, StoreErrorKind, TrustedProxies, Verdict,
};

type Body = Full<Bytes>;

fn ok_service()
-> impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future = impl Send> + Clone
{
    service_fn(|_: Request<Body>| async { Ok::<_, BoxError>(Response::new(Body::from("ok"))) })
}

fn api_key() -> KeyExtractor {
    KeyExtractor::header(HeaderName::from_static("x-api-key"))
}

fn burst(n: u64) -> Policy {
    Policy::gcra(
        "burst",
        Quota::per_second(1).unwrap().with_burst(n).unwrap(),
    )
    .unwrap()
}

fn request(key: &str) -> Request<Body> {
    Request::get("/")
        .header("x-api-key", key)
        .body(Body::default())
        .unwrap()
}

async fn json<B: http_body::Body<Error: std::fmt::Debug>>(response: Response<B>) -> Value {
    serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_request_sent_exactly_at_retry_after_is_admitted() {
    let layer = RateLimitLayer::new(
        MemoryStore::new(),
        [Policy::gcra("slow", Quota::per_minute(2).unwrap()).unwrap()],
        api_key(),
    )
    .unwrap()
    .decisions_in_extensions();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(ok_service());
    for _ in 0..2 {
        assert_eq!(
            service
                .clone()
                .oneshot(request("a"))
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let refused = service.clone().oneshot(request("a")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(wait, 30);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    assert_eq!(refused.headers()["ratelimit-policy"], r#""slow";q=4;w=60"#);
    assert_eq!(refused.headers()["ratelimit"], r#""slow";r=0;t=30"#);
    assert_eq!(
        refused.extensions().get::<RateLimitRejection>(),
        Some(&RateLimitRejection::QuotaExceeded {
            violated_policies: vec!["slow".into()]
        })
    );
    assert!(!refused.extensions().get::<Decisions>().unwrap().allowed());
    let problem = json(refused).await;
    assert_eq!(problem["type"], "/problems/quota-exceeded");
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["violated-policies"], serde_json::json!(["slow"]));

    tokio::time::advance(Duration::from_secs(wait) - Duration::from_millis(1)).await;
    assert_eq!(
        service
            .clone()
            .oneshot(request("a"))
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let admitted = service.clone().oneshot(request("a")).await.unwrap();
    assert_eq!(admitted.status(), StatusCode::OK);
    assert!(admitted.extensions().get::<Decisions>().unwrap().allowed());
    // Another key has its own bucket.
    assert_eq!(
        service.oneshot(request("b")).await.unwrap().status(),
        StatusCode::OK
    );
    let counters = layer.counters();
    assert_eq!((counters.allowed, counters.rejected), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_rounded_up_and_never_zero() {
    // 3 per second: one unit is worth 333 ms; the wait after a burst is under a second.
    let layer = RateLimitLayer::new(
        MemoryStore::new(),
        [Policy::gcra("p", Quota::per_second(3).unwrap()).unwrap()],
        api_key(),
    )
    .unwrap();
    let service = ServiceBuilder::new().layer(layer).service(ok_service());
    for _ in 0..3 {
        service.clone().oneshot(request("a")).await.unwrap();
    }
    let refused = service.oneshot(request("a")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_decides_and_stamps_but_never_refuses() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let layer = RateLimitLayer::new(MemoryStore::new(), [burst(1)], api_key())
        .unwrap()
        .shadow()
        .on_decision(move |event| {
            let name = match event.verdict {
                Verdict::Allowed(_) => "allowed",
                Verdict::ShadowRejected(_) => "shadow",
                _ => "other",
            };
            seen.lock().unwrap().push(name);
        });
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(ok_service());
    for _ in 0..3 {
        let response = service.clone().oneshot(request("a")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key("ratelimit"));
    }
    assert_eq!(*events.lock().unwrap(), ["allowed", "shadow", "shadow"]);
    assert_eq!(layer.counters().shadow_rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn legacy_headers_are_opt_in() {
    let plain = ServiceBuilder::new()
        .layer(RateLimitLayer::new(MemoryStore::new(), [burst(5)], api_key()).unwrap())
        .service(ok_service());
    let response = plain.oneshot(request("a")).await.unwrap();
    assert!(!response.headers().contains_key("x-ratelimit-remaining"));

    let legacy = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(MemoryStore::new(), [burst(5)], api_key())
                .unwrap()
                .legacy_headers(),
        )
        .service(ok_service());
    let response = legacy.oneshot(request("a")).await.unwrap();
    assert_eq!(response.headers()["x-ratelimit-limit"], "5");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "4");
    assert_eq!(response.headers()["x-ratelimit-reset"], "1");
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_gets_a_problem_not_a_500() {
    let layer = RateLimitLayer::new(MemoryStore::new(), [burst(5)], api_key()).unwrap();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(ok_service());
    let response = service
        .oneshot(Request::get("/").body(Body::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        response.extensions().get::<RateLimitRejection>(),
        Some(&RateLimitRejection::MissingKey)
    );
    assert_eq!(layer.counters().missing_key, 1);

    let by_ip = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(
                MemoryStore::new(),
                [burst(5)],
                KeyExtractor::peer_ip(TrustedProxies::none()),
            )
            .unwrap(),
        )
        .service(ok_service());
    let response = by_ip
        .oneshot(Request::get("/").body(Body::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn a_cost_above_the_capacity_is_refused_without_retry_after() {
    let layer = RateLimitLayer::new(MemoryStore::new(), [burst(5)], api_key())
        .unwrap()
        .cost(|parts| {
            parts
                .headers
                .get("x-cost")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1)
        });
    let service = ServiceBuilder::new().layer(layer).service(ok_service());
    let heavy = Request::get("/")
        .header("x-api-key", "a")
        .header("x-cost", "6")
        .body(Body::default())
        .unwrap();
    let refused = service.clone().oneshot(heavy).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!refused.headers().contains_key("retry-after"));
    assert!(
        json(refused).await["detail"]
            .as_str()
            .unwrap()
            .contains("can never be admitted")
    );
    // All or nothing: 3 + 3 does not fit in 5.
    let three = || {
        Request::get("/")
            .header("x-api-key", "a")
            .header("x-cost", "3")
            .body(Body::default())
            .unwrap()
    };
    assert_eq!(
        service.clone().oneshot(three()).await.unwrap().status(),
        StatusCode::OK
    );
    let response = service.clone().oneshot(three()).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["ratelimit"], r#""burst";r=2;t=1"#);
}

#[tokio::test(start_paused = true)]
async fn peer_ip_keys_walk_trusted_proxies() {
    let proxies = TrustedProxies::none().trust("10.0.0.0/8").unwrap();
    let service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(
                MemoryStore::new(),
                [burst(1)],
                KeyExtractor::peer_ip(proxies),
            )
            .unwrap(),
        )
        .service(ok_service());
    let via_proxy = |client: &str| {
        let mut request = Request::get("/")
            .header("x-forwarded-for", format!("1.1.1.1, {client}"))
            .body(Body::default())
            .unwrap();
        request
            .extensions_mut()
            .insert(SocketAddr::from(([10, 0, 0, 1], 443)));
        request
    };
    assert_eq!(
        service
            .clone()
            .oneshot(via_proxy("198.51.100.1"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        service
            .clone()
            .oneshot(via_proxy("198.51.100.2"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        service
            .oneshot(via_proxy("198.51.100.1"))
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_unique_keys_stays_within_the_bound() {
    let store = MemoryStore::with_max_keys(100).unwrap();
    let layer = RateLimitLayer::new(store.clone(), [burst(2)], api_key()).unwrap();
    let service = ServiceBuilder::new().layer(layer).service(ok_service());
    let mut refused = 0;
    for i in 0..1_000 {
        let response = service
            .clone()
            .oneshot(request(&format!("key-{i}")))
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    // 100 own buckets and one shared overflow bucket; the overflow bucket limits the rest as
    // one caller.
    assert!(store.key_count() <= 101, "{} keys", store.key_count());
    assert!(refused >= 1_000 - 100 - 2, "{refused} refused");
    // Once the buckets are idle, a sweep makes room again.
    tokio::time::advance(Duration::from_secs(5)).await;
    let response = service.oneshot(request("newcomer")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        store.key_count() <= 2,
        "{} keys after the sweep",
        store.key_count()
    );
}

/// A store that always fails, to drive the failure policies.
#[derive(Clone)]
struct BrokenStore;

impl RateLimitStore for BrokenStore {
    type Prepared = ();
    type Future = Ready<Result<Decisions, StoreError>>;

    fn prepare(&self, _: &[Policy]) {}

    fn check(&self, _: &(), _: &RateLimitKey, _: u64) -> Self::Future {
        ready(Err(StoreError::new(StoreErrorKind::Unavailable, "down")))
    }
}

#[tokio::test]
async fn a_failing_store_fails_open_by_default_and_closed_on_request() {
    let open = RateLimitLayer::new(BrokenStore, [burst(1)], api_key()).unwrap();
    let service = ServiceBuilder::new()
        .layer(open.clone())
        .service(ok_service());
    let response = service.oneshot(request("a")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("ratelimit"));
    assert_eq!(open.counters().store_errors, 1);

    let closed = RateLimitLayer::new(BrokenStore, [burst(1)], api_key())
        .unwrap()
        .fail_closed();
    let calls = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&calls);
    let service =
        ServiceBuilder::new()
            .layer(closed)
            .service(service_fn(move |_: Request<Body>| {
                *counted.lock().unwrap() += 1;
                async { Ok::<_, BoxError>(Response::new(Body::from("ok"))) }
            }));
    let response = service.oneshot(request("a")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.extensions().get::<RateLimitRejection>(),
        Some(&RateLimitRejection::StoreUnavailable)
    );
    assert_eq!(
        json(response).await["type"],
        "/problems/rate-limit-store-unavailable"
    );
    assert_eq!(*calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn poll_ready_is_delegated_to_the_inner_service() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut service = ServiceBuilder::new()
        .layer(RateLimitLayer::new(MemoryStore::new(), [burst(5)], api_key()).unwrap())
        .service(mock);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    handle.allow(0);
    assert!(service.poll_ready(&mut cx).is_pending());
    handle.allow(1);
    assert!(service.poll_ready(&mut cx).is_ready());
}

#[test]
fn invalid_settings_are_refused_when_set() {
    assert!(Quota::per_second(0).is_err());
    assert!(Quota::new(2_000_000_000, Duration::from_secs(1)).is_err());
    assert!(Quota::per_second(1).unwrap().with_burst(0).is_err());
    assert!(Policy::gcra("has space", Quota::per_second(1).unwrap()).is_err());
    assert!(Policy::gcra("", Quota::per_second(1).unwrap()).is_err());
    assert!(Policy::sliding_window("w", 10, Duration::from_millis(1500)).is_err());
    assert!(RateLimitLayer::new(MemoryStore::new(), [], api_key()).is_err());
    assert!(RateLimitLayer::new(MemoryStore::new(), [burst(1), burst(2)], api_key()).is_err());
    assert!(MemoryStore::with_max_keys(0).is_err());
    assert!(TrustedProxies::none().trust("10.0.0.0/33").is_err());
}

#[test]
fn layer_service_and_future_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    type Inner =
        tower::util::ServiceFn<fn(Request<Body>) -> Ready<Result<Response<Body>, Infallible>>>;
    assert_send_sync::<RateLimitLayer<MemoryStore>>();
    assert_send_sync::<tower_ratelimit::RateLimit<Inner, MemoryStore>>();
    fn assert_send<T: Send>() {}
    assert_send::<tower_ratelimit::ResponseFuture<Inner, MemoryStore, Body>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_on_many_threads_never_exceed_the_capacity() {
    // An hourly quota: nothing refills during the test, so exactly the capacity is admitted,
    // however the compare-and-swap races fall out. Both algorithms, and two policies at once
    // (a refusal by one must give back what the other took).
    let policies = [
        Policy::gcra("hourly", Quota::per_hour(100).unwrap()).unwrap(),
        Policy::sliding_window("window", 150, Duration::from_secs(3600)).unwrap(),
    ];
    let store = MemoryStore::new();
    let layer = RateLimitLayer::new(store, policies, api_key()).unwrap();
    let service = ServiceBuilder::new().layer(layer).service(ok_service());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let service = service.clone();
        tasks.spawn(async move {
            let mut admitted = 0;
            for _ in 0..50 {
                let response = service.clone().oneshot(request("hot")).await.unwrap();
                if response.status() == StatusCode::OK {
                    admitted += 1;
                }
            }
            admitted
        });
    }
    let mut admitted = 0;
    while let Some(count) = tasks.join_next().await {
        admitted += count.unwrap();
    }
    assert_eq!(
        admitted, 100,
        "400 concurrent attempts on a capacity of 100"
    );
}

#[tokio::test(start_paused = true)]
async fn a_replaced_responder_shapes_every_rejection_and_the_typed_reason_stays() {
    // A service that must answer plain text, for clients that cannot read JSON.
    let responder = tower_problem_details::Responder::new(|rejection, _protocol| {
        let text = format!("{}\n", rejection.problem().detail().unwrap_or("refused"));
        let mut response = Response::new(Bytes::from(text));
        *response.status_mut() = rejection.problem().status();
        if let Some(wait) = rejection.retry_after() {
            response.headers_mut().insert(
                "retry-after",
                tower_problem_details::retry_after_seconds(wait).into(),
            );
        }
        response
    });
    let layer = RateLimitLayer::new(MemoryStore::new(), [burst(1)], api_key())
        .unwrap()
        .responder(responder);
    let service = ServiceBuilder::new().layer(layer).service(ok_service());
    assert_eq!(
        service
            .clone()
            .oneshot(request("a"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let refused = service.clone().oneshot(request("a")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.headers().get("content-type").is_none());
    // The layer's own headers and typed reason do not depend on the responder.
    assert_eq!(refused.headers()["ratelimit"], r#""burst";r=0;t=1"#);
    assert!(matches!(
        refused.extensions().get::<RateLimitRejection>(),
        Some(RateLimitRejection::QuotaExceeded { .. })
    ));
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "The quota of burst is used up; retry in 1 s.\n");

    let no_key = Request::get("/").body(Body::default()).unwrap();
    let refused = service.oneshot(no_key).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.extensions().get::<RateLimitRejection>(),
        Some(&RateLimitRejection::MissingKey)
    );
}

#[tokio::test]
async fn the_decisions_stay_out_of_the_extensions_unless_asked_for() {
    let policy = || Policy::gcra("one", Quota::per_minute(1).unwrap()).unwrap();
    let quiet = RateLimitLayer::new(MemoryStore::new(), [policy()], api_key()).unwrap();
    let service = ServiceBuilder::new().layer(quiet).service(ok_service());
    let admitted = service.clone().oneshot(request("a")).await.unwrap();
    assert_eq!(admitted.status(), StatusCode::OK);
    assert!(admitted.headers().contains_key("ratelimit"));
    assert!(admitted.extensions().get::<Decisions>().is_none());
    let refused = service.oneshot(request("a")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.extensions().get::<Decisions>().is_none());
    assert!(refused.extensions().get::<RateLimitRejection>().is_some());
}
