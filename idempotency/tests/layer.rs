//! The layer through its public API: exactly-once execution, replays, every rejection, the
//! outcome policy, cancellation, panics, leases and the `poll_ready` contract.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_idempotency::{
    Claim, Completion, Fenced, FencingToken, Fingerprint, IdempotencyLayer, IdempotencyOutcome,
    IdempotencyRejection, IdempotencyStore, MemoryStore, Scope, ScopedKey, StoreError,
    StoreErrorKind, StoreFuture, StoreKey,
};

type Body = Full<Bytes>;
/// What the handler behind the layer reads.
type Inner = tower_idempotency::RequestBody<Body>;
/// What the layer answers with.
type Out = tower_idempotency::ResponseBody<Body>;

fn tenant_scope() -> Scope {
    Scope::header(http::HeaderName::from_static("x-tenant"))
}

fn post(key: Option<&str>, body: &'static str) -> Request<Body> {
    let mut builder = Request::post("/orders?x=1")
        .header("x-tenant", "acme")
        .header(CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(body)).unwrap()
}

/// A handler counting its runs, answering 201 with Location, a cookie and the body it got.
fn counting(
    runs: Arc<AtomicUsize>,
    status: StatusCode,
) -> impl Service<Request<Inner>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send {
    service_fn(move |request: Request<Inner>| {
        let runs = Arc::clone(&runs);
        async move {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            let scoped = request.extensions().get::<ScopedKey>().cloned();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut response = Response::new(Body::from(format!(
                "run {run}: {} key={}",
                String::from_utf8_lossy(&body),
                scoped.map(|k| k.key().to_owned()).unwrap_or_default()
            )));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(LOCATION, "/orders/1".parse().unwrap());
            response
                .headers_mut()
                .insert(SET_COOKIE, "session=secret".parse().unwrap());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, "text/plain".parse().unwrap());
            Ok::<_, Infallible>(response)
        }
    })
}

/// A handler counting its runs that takes `delay`, then answers `status` with `body`.
fn slow(
    runs: &Arc<AtomicUsize>,
    delay: Duration,
    status: StatusCode,
    body: &'static str,
) -> impl Service<Request<Inner>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ use<> {
    let runs = Arc::clone(runs);
    service_fn(move |_: Request<Inner>| {
        runs.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(delay).await;
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    })
}

/// A handler answering `run N`, whose first run takes `first` (a stuck or slow original).
fn first_run_takes(
    runs: &Arc<AtomicUsize>,
    first: Duration,
) -> impl Service<Request<Inner>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ use<> {
    let runs = Arc::clone(runs);
    service_fn(move |_: Request<Inner>| {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if run == 1 {
                tokio::time::sleep(first).await;
            }
            Ok::<_, Infallible>(Response::new(Body::from(format!("run {run}"))))
        }
    })
}

async fn text<B>(response: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn problem_type(response: Response<Out>) -> String {
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
    body["type"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_retry_replays_the_original_status_headers_and_body() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));

    let first = service
        .clone()
        .oneshot(post(Some("\"k1\""), "{}"))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(
        first.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    assert!(
        first.headers().contains_key(SET_COOKIE),
        "the original keeps its cookie"
    );
    assert!(!first.headers().contains_key("idempotent-replayed"));
    assert_eq!(text(first).await, "run 1: {} key=k1");

    // Unquoted, the same key.
    let retry = service
        .clone()
        .oneshot(post(Some("k1"), "{}"))
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(
        retry.extensions().get(),
        Some(&IdempotencyOutcome::Replayed)
    );
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()[LOCATION], "/orders/1");
    assert_eq!(retry.headers()[CONTENT_TYPE], "text/plain");
    assert!(
        !retry.headers().contains_key(SET_COOKIE),
        "a replay never carries Set-Cookie"
    );
    assert_eq!(text(retry).await, "run 1: {} key=k1");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_identical_requests_run_the_handler_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = slow(
        &runs,
        Duration::from_millis(100),
        StatusCode::CREATED,
        "created",
    );
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(handler);
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (service, barrier) = (service.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            service
                .oneshot(post(Some("storm"), "{\"n\":1}"))
                .await
                .unwrap()
        });
    }
    let (mut created, mut conflicts) = (0, 0);
    while let Some(response) = tasks.join_next().await {
        let response = response.unwrap();
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                assert_eq!(response.headers()[RETRY_AFTER], "1");
                assert!(
                    problem_type(response)
                        .await
                        .ends_with("idempotency-key-in-use")
                );
                conflicts += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the handler must run exactly once"
    );
    assert_eq!(created + conflicts, 64);
    assert!(created >= 1);
    // Afterwards every retry is a replay.
    let retry = service
        .oneshot(post(Some("storm"), "{\"n\":1}"))
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_key_reused_for_another_request_gets_422() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));
    service
        .clone()
        .oneshot(post(Some("k"), "{\"a\":1}"))
        .await
        .unwrap();
    let other_body = service
        .clone()
        .oneshot(post(Some("k"), "{\"a\":2}"))
        .await
        .unwrap();
    assert_eq!(other_body.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other_body.extensions().get(),
        Some(&IdempotencyRejection::Reused)
    );
    assert!(
        problem_type(other_body)
            .await
            .ends_with("/idempotency-key-reused")
    );
    // Another endpoint with the same key is another request too.
    let mut elsewhere = post(Some("k"), "{\"a\":1}");
    *elsewhere.uri_mut() = "/payments".parse().unwrap();
    let elsewhere = service.clone().oneshot(elsewhere).await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keys_are_kept_apart_per_scope_and_a_missing_scope_is_401() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));
    service
        .clone()
        .oneshot(post(Some("shared"), "{}"))
        .await
        .unwrap();
    let mut other_tenant = post(Some("shared"), "{}");
    other_tenant
        .headers_mut()
        .insert("x-tenant", "globex".parse().unwrap());
    let response = service.clone().oneshot(other_tenant).await.unwrap();
    assert_eq!(
        response.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "another tenant's key is another key"
    );

    let mut anonymous = post(Some("shared"), "{}");
    anonymous.headers_mut().remove("x-tenant");
    let response = service.oneshot(anonymous).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(problem_type(response).await.ends_with("/unauthorized"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_handler_sees_the_scoped_key() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler = {
        let seen = Arc::clone(&seen);
        service_fn(move |request: Request<Inner>| {
            let seen = Arc::clone(&seen);
            async move {
                let key = request.extensions().get::<ScopedKey>().cloned().unwrap();
                seen.lock().unwrap().push(key);
                Ok::<_, Infallible>(Response::new(Body::default()))
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(handler);
    service
        .clone()
        .oneshot(post(Some("k"), "{}"))
        .await
        .unwrap();
    let mut other = post(Some("k"), "{}");
    other
        .headers_mut()
        .insert("x-tenant", "globex".parse().unwrap());
    service.oneshot(other).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].key(), "k");
    assert_ne!(
        seen[0].scoped(),
        seen[1].scoped(),
        "scoped keys differ per tenant"
    );
}

#[tokio::test]
async fn bad_keys_are_400_problems_and_run_nothing() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).require_key())
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));
    let missing = service.clone().oneshot(post(None, "{}")).await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(
        problem_type(missing)
            .await
            .ends_with("/idempotency-key-missing")
    );

    let long = "k".repeat(256);
    let mut twice = post(Some("a"), "{}");
    twice
        .headers_mut()
        .append("idempotency-key", "b".parse().unwrap());
    let cases = [
        post(Some(long.as_str()), "{}"),
        post(Some("\"\""), "{}"),
        post(Some("two words"), "{}"),
        post(Some("\"unterminated"), "{}"),
        twice,
    ];
    for request in cases {
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(matches!(
            response.extensions().get(),
            Some(IdempotencyRejection::KeyInvalid(_))
        ));
        assert!(
            problem_type(response)
                .await
                .ends_with("/idempotency-key-invalid")
        );
    }
    let mut control = post(None, "{}");
    control.headers_mut().insert(
        "idempotency-key",
        http::HeaderValue::from_bytes(b"tab\there").unwrap(),
    );
    let response = service.oneshot(control).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn other_methods_and_keyless_requests_pass_through() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(counting(Arc::clone(&runs), StatusCode::OK));
    for _ in 0..2 {
        let mut get = post(Some("k"), "");
        *get.method_mut() = http::Method::GET;
        let response = service.clone().oneshot(get).await.unwrap();
        assert_eq!(
            response.extensions().get(),
            Some(&IdempotencyOutcome::NotApplicable)
        );
        let keyless = service.clone().oneshot(post(None, "{}")).await.unwrap();
        assert_eq!(
            keyless.extensions().get(),
            Some(&IdempotencyOutcome::NotApplicable)
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn server_errors_release_the_key_unless_stripe_v1() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(counting(Arc::clone(&runs), StatusCode::SERVICE_UNAVAILABLE));
    for _ in 0..2 {
        let response = service
            .clone()
            .oneshot(post(Some("k"), "{}"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "a 5xx releases the key: the retry runs"
    );

    let runs = Arc::new(AtomicUsize::new(0));
    let stripe = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).stripe_v1())
        .service(counting(
            Arc::clone(&runs),
            StatusCode::INTERNAL_SERVER_ERROR,
        ));
    stripe.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    let replay = stripe.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A 429 from the handler is transient: released by default.
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(counting(Arc::clone(&runs), StatusCode::TOO_MANY_REQUESTS));
    service
        .clone()
        .oneshot(post(Some("k"), "{}"))
        .await
        .unwrap();
    service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_inner_error_releases_the_key_and_propagates() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        service_fn(move |_: Request<Inner>| {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            async move {
                if run == 0 {
                    Err::<Response<Body>, BoxError>("boom".into())
                } else {
                    Ok(Response::new(Body::from("ok")))
                }
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(handler);
    assert!(
        service
            .clone()
            .oneshot(post(Some("k"), "{}"))
            .await
            .is_err()
    );
    let retry = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(
        retry.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_panicking_handler_releases_the_key() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        service_fn(move |_: Request<Inner>| {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(run > 0, "the first run panics");
                Ok::<_, Infallible>(Response::new(Body::from("ok")))
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(
            SlowReleases(MemoryStore::new()),
            tenant_scope(),
        ))
        .service(handler);
    let first = tokio::spawn(service.clone().oneshot(post(Some("k"), "{}"))).await;
    assert!(first.unwrap_err().is_panic());
    // The release runs in a task spawned while unwinding; give it time to land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let retry = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(
        retry.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_request_releases_the_key() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = slow(&runs, Duration::from_secs(10), StatusCode::OK, "slow");
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(
            SlowReleases(MemoryStore::new()),
            tenant_scope(),
        ))
        .service(handler);
    // The client gives up after one second: the future is dropped mid-handler.
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        service.clone().oneshot(post(Some("k"), "{}")),
    )
    .await;
    assert!(gave_up.is_err());
    // Until the (slow) release lands, the key is still held; then a retry runs.
    let held = service
        .clone()
        .oneshot(post(Some("k"), "{}"))
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let retry = tokio::spawn(service.oneshot(post(Some("k"), "{}")));
    tokio::time::sleep(Duration::from_secs(11)).await;
    let retry = retry.await.unwrap().unwrap();
    assert_eq!(
        retry.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_keeps_its_key_past_the_lease() {
    let runs = Arc::new(AtomicUsize::new(0));
    // Six leases long: the layer renews the lease while it runs.
    let handler = first_run_takes(&runs, Duration::from_secs(30));
    let service = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).lease(Duration::from_secs(5)),
        )
        .service(handler);
    let original = tokio::spawn(service.clone().oneshot(post(Some("k"), "{}")));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let retry = service
            .clone()
            .oneshot(post(Some("k"), "{}"))
            .await
            .unwrap();
        assert_eq!(
            retry.status(),
            StatusCode::CONFLICT,
            "still in flight, never run twice"
        );
    }
    assert_eq!(text(original.await.unwrap().unwrap()).await, "run 1");
    let replay = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_holder_blocks_its_key_for_one_lease_only() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = first_run_takes(&runs, Duration::from_secs(3600));
    let service = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).lease(Duration::from_secs(5)),
        )
        .service(handler);
    // A "crash": the original claims the key and starts the handler, then vanishes without
    // releasing or renewing anything (its future is leaked, never polled or dropped again).
    let mut crashed = service.clone();
    crashed.ready().await.unwrap();
    let mut future = crashed.call(post(Some("k"), "{}"));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), &mut future)
            .await
            .is_err()
    );
    std::mem::forget(future);

    let early = service
        .clone()
        .oneshot(post(Some("k"), "{}"))
        .await
        .unwrap();
    assert_eq!(
        early.status(),
        StatusCode::CONFLICT,
        "within the lease: in flight"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let retry = service
        .clone()
        .oneshot(post(Some("k"), "{}"))
        .await
        .unwrap();
    assert_eq!(text(retry).await, "run 2", "past the lease, a retry runs");
    let replay = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(text(replay).await, "run 2");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_an_in_flight_original_replays_it() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = slow(&runs, Duration::from_millis(300), StatusCode::OK, "done");
    let service = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::new(MemoryStore::new(), tenant_scope())
                .wait_for_in_flight(Duration::from_secs(2)),
        )
        .service(handler);
    let original = tokio::spawn(service.clone().oneshot(post(Some("k"), "{}")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiting = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(waiting.headers()["idempotent-replayed"], "true");
    assert_eq!(text(waiting).await, "done");
    original.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn oversize_request_bodies_get_413_before_anything_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).max_request_body(8))
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));
    let response = service
        .clone()
        .oneshot(post(Some("k"), "0123456789"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(problem_type(response).await.ends_with("/payload-too-large"));
    // Declared too large: refused unread.
    let mut declared = post(Some("k"), "{}");
    declared
        .headers_mut()
        .insert("content-length", "1000000".parse().unwrap());
    let response = service.clone().oneshot(declared).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing was claimed: the same key still works with a small body.
    let ok = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn oversize_and_streaming_responses_complete_without_a_replay() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).max_response_body(4))
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));
    let first = service
        .clone()
        .oneshot(post(Some("k"), "{}"))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(
        text(first).await.starts_with("run 1"),
        "the original gets its whole body"
    );
    let retry = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert!(
        problem_type(retry)
            .await
            .ends_with("/idempotency-result-unavailable")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never run twice");

    // A stream of unknown length is passed on untouched and not kept.
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        service_fn(
            move |_: Request<tower_idempotency::RequestBody<axum::body::Body>>| {
                runs.fetch_add(1, Ordering::SeqCst);
                let chunks = vec![Ok::<_, Infallible>(Bytes::from("a")), Ok(Bytes::from("b"))];
                let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
                async move { Ok::<_, Infallible>(Response::new(body)) }
            },
        )
    };
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(handler);
    let request = || {
        let (parts, body) = post(Some("s"), "{}").into_parts();
        let _ = body;
        Request::from_parts(parts, axum::body::Body::from("{}"))
    };
    let first = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(text(first).await, "ab");
    let retry = service.oneshot(request()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert_eq!(
        retry.extensions().get(),
        Some(&IdempotencyRejection::ResultUnavailable)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The memory store, with releases that take a while, as over a network: a release that only
/// happens in a spawned task is then really exercised.
#[derive(Clone)]
struct SlowReleases(MemoryStore);

impl IdempotencyStore for SlowReleases {
    fn claim(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> StoreFuture<Claim> {
        self.0.claim(key, fingerprint, lease)
    }
    fn complete(
        &self,
        key: StoreKey,
        token: FencingToken,
        fingerprint: Fingerprint,
        outcome: Completion,
        ttl: Duration,
    ) -> StoreFuture<Fenced> {
        self.0.complete(key, token, fingerprint, outcome, ttl)
    }
    fn release(&self, key: StoreKey, token: FencingToken) -> StoreFuture<Fenced> {
        let store = self.0.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.release(key, token).await
        })
    }
    fn renew(&self, key: StoreKey, token: FencingToken, lease: Duration) -> StoreFuture<Fenced> {
        self.0.renew(key, token, lease)
    }
}

/// A store that always fails, to check that the layer fails closed.
#[derive(Clone)]
struct DownStore;

impl IdempotencyStore for DownStore {
    fn claim(&self, _: StoreKey, _: Fingerprint, _: Duration) -> StoreFuture<Claim> {
        Box::pin(async { Err(StoreError::new(StoreErrorKind::Unavailable, "down")) })
    }
    fn complete(
        &self,
        _: StoreKey,
        _: FencingToken,
        _: Fingerprint,
        _: Completion,
        _: Duration,
    ) -> StoreFuture<Fenced> {
        Box::pin(async { Err(StoreError::new(StoreErrorKind::Unavailable, "down")) })
    }
    fn release(&self, _: StoreKey, _: FencingToken) -> StoreFuture<Fenced> {
        Box::pin(async { Err(StoreError::new(StoreErrorKind::Unavailable, "down")) })
    }
    fn renew(&self, _: StoreKey, _: FencingToken, _: Duration) -> StoreFuture<Fenced> {
        Box::pin(async { Err(StoreError::new(StoreErrorKind::Unavailable, "down")) })
    }
}

#[tokio::test]
async fn a_failing_store_gets_503_and_the_handler_never_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(DownStore, tenant_scope()))
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));
    let response = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(
        problem_type(response)
            .await
            .ends_with("/idempotency-store-unavailable")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    let layer = IdempotencyLayer::new(MemoryStore::new(), tenant_scope());
    let (mut service, mut handle) =
        tower_test::mock::spawn_layer::<Request<Inner>, Response<Body>, _>(layer);
    handle.allow(0);
    assert!(service.poll_ready().is_pending());
    handle.allow(1);
    assert!(service.poll_ready().is_ready());
    // The inner service is called once the key is claimed, so the future must run.
    let response = tokio::spawn(service.call(post(Some("k"), "{}")));
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.extensions().get::<ScopedKey>().unwrap().key(), "k");
    send.send_response(Response::new(Body::from("ok")));
    assert_eq!(response.await.unwrap().unwrap().status(), StatusCode::OK);
}

/// A response body of known length that never delivers it: a stalled upstream.
enum MaybeStuck {
    Ready(Body),
    Stuck,
}

impl From<Bytes> for MaybeStuck {
    fn from(bytes: Bytes) -> Self {
        MaybeStuck::Ready(Body::from(bytes))
    }
}

impl http_body::Body for MaybeStuck {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MaybeStuck::Ready(body) => std::pin::Pin::new(body).poll_frame(cx),
            MaybeStuck::Stuck => std::task::Poll::Pending,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            MaybeStuck::Ready(body) => body.size_hint(),
            MaybeStuck::Stuck => http_body::SizeHint::with_exact(10),
        }
    }
}

/// A response body that announces at most 4 bytes and sends 64: a handler that lies.
struct Overlong(Option<Bytes>);

impl http_body::Body for Overlong {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .0
                .take()
                .map(|data| Ok(http_body::Frame::data(data))),
        )
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = http_body::SizeHint::new();
        hint.set_upper(4);
        hint
    }
}

#[tokio::test]
async fn a_response_body_longer_than_its_size_hint_is_cut_at_the_limit_and_not_kept() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        service_fn(move |_: Request<Inner>| {
            runs.fetch_add(1, Ordering::SeqCst);
            let body = Overlong(Some(Bytes::from(vec![b'x'; 64])));
            async { Ok::<_, Infallible>(Response::new(body)) }
        })
    };
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).max_response_body(8))
        .service(handler);
    let first = service
        .clone()
        .oneshot(post(Some("k"), "{}"))
        .await
        .unwrap();
    assert_eq!(
        first.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::ResponseBodyFailed),
        "64 bytes are never buffered under an 8-byte limit"
    );
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let retry = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(
        retry.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::ResultUnavailable),
        "the handler ran once: it must not run again"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_after_the_handler_answered_is_never_run_again() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        service_fn(move |_: Request<Inner>| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(MaybeStuck::Stuck)) }
        })
    };
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()))
        .service(handler);
    // The handler has run; the layer is reading its body when the client gives up.
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        service.clone().oneshot(post(Some("k"), "{}")),
    )
    .await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let retry = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(
        retry.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::ResultUnavailable),
        "completed, not replayable: the handler must not run again"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn event_streams_are_not_kept_and_credentials_are_never_replayed() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        service_fn(move |_: Request<Inner>| {
            runs.fetch_add(1, Ordering::SeqCst);
            let mut response = Response::new(Body::from("data: 1\n\n"));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, "text/event-stream".parse().unwrap());
            async { Ok::<_, Infallible>(response) }
        })
    };
    // Unscoped, and asking (wrongly) to replay Set-Cookie: refused by the layer.
    let service = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::new(MemoryStore::new(), Scope::unscoped()).replay_header(SET_COOKIE),
        )
        .service(handler);
    let mut anonymous = post(Some("sse"), "{}");
    anonymous.headers_mut().remove("x-tenant");
    let first = service.clone().oneshot(anonymous).await.unwrap();
    assert_eq!(text(first).await, "data: 1\n\n");
    let retry = service.oneshot(post(Some("sse"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).replay_header(SET_COOKIE))
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));
    service
        .clone()
        .oneshot(post(Some("k"), "{}"))
        .await
        .unwrap();
    let replay = service.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert!(!replay.headers().contains_key(SET_COOKIE));
}

#[tokio::test]
async fn a_replaced_responder_shapes_every_refusal_and_the_typed_reason_stays() {
    // An API that answers its refusals as `{"error": slug}`, with a support link.
    let responder = tower_problem_details::Responder::new(|rejection, _protocol| {
        let slug = rejection.kind().map_or("bad-request", |kind| kind.slug());
        let mut response = Response::new(Bytes::from(format!(r#"{{"error":"{slug}"}}"#)));
        *response.status_mut() = rejection.problem().status();
        response.headers_mut().insert(
            "link",
            "<https://example.com/help>; rel=\"help\"".parse().unwrap(),
        );
        response
    });
    let runs = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::new(MemoryStore::new(), tenant_scope())
                .require_key()
                .responder(responder),
        )
        .service(counting(Arc::clone(&runs), StatusCode::CREATED));

    let missing = service.clone().oneshot(post(None, "{}")).await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(missing.headers().contains_key("link"));
    assert_eq!(
        missing.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::KeyMissing)
    );
    assert_eq!(
        missing.extensions().get::<IdempotencyOutcome>(),
        Some(&IdempotencyOutcome::Rejected)
    );
    assert_eq!(
        text(missing).await,
        r#"{"error":"idempotency-key-missing"}"#
    );

    service
        .clone()
        .oneshot(post(Some("r"), "{}"))
        .await
        .unwrap();
    let reused = service
        .clone()
        .oneshot(post(Some("r"), "{\"a\":1}"))
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reused.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::Reused)
    );
    assert_eq!(text(reused).await, r#"{"error":"idempotency-key-reused"}"#);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn layers_services_bodies_and_futures_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    type Handler = tower::util::ServiceFn<
        fn(Request<Inner>) -> std::future::Ready<Result<Response<Body>, Infallible>>,
    >;
    assert_send_sync::<IdempotencyLayer<MemoryStore>>();
    assert_send_sync::<tower_idempotency::Idempotency<Handler, MemoryStore>>();
    assert_send_sync::<Inner>();
    assert_send_sync::<Out>();
    // Boxed behind `dyn Future + Send`: a future is polled by one task at a time.
    assert_send::<tower_idempotency::ResponseFuture<Out, Infallible>>();
}

#[tokio::test(start_paused = true)]
async fn a_grpc_response_the_client_stops_reading_keeps_its_claim_past_the_lease() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        service_fn(move |_: Request<Inner>| {
            runs.fetch_add(1, Ordering::SeqCst);
            // A gRPC response whose body never comes: a client that stopped reading looks the
            // same to the layer (the body is not polled).
            let body = http_body_util::StreamBody::new(futures_util::stream::pending::<
                Result<http_body::Frame<Bytes>, Infallible>,
            >());
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, "application/grpc".parse().unwrap());
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let service = ServiceBuilder::new()
        .layer(
            IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).lease(Duration::from_secs(3)),
        )
        .service(handler);
    let call = || {
        let mut request = post(Some("g"), "{}");
        request
            .headers_mut()
            .insert(CONTENT_TYPE, "application/grpc".parse().unwrap());
        request
    };
    let original = service.clone().oneshot(call()).await.unwrap();
    // Ten leases later, the original's claim still holds: a retry is refused, not run.
    for _ in 0..30 {
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
    let retry = service.clone().oneshot(call()).await.unwrap();
    assert_eq!(
        retry.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::InFlight)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The client goes away: the handler ran, so the key is completed, never run again.
    drop(original);
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    let retry = service.oneshot(call()).await.unwrap();
    assert_eq!(
        retry.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::ResultUnavailable)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_grpc_reply_over_the_response_limit_goes_through_whole_and_is_not_kept() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        service_fn(move |_: Request<Inner>| {
            runs.fetch_add(1, Ordering::SeqCst);
            // One gRPC message of 200 bytes (prefix: uncompressed, big-endian length), then
            // the status in the trailers.
            let mut message = vec![0, 0, 0, 0, 200];
            message.extend([7u8; 200]);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = tower_problem_details::ResponseBody::<Body>::with_trailers(
                Bytes::from(message),
                Some(trailers),
            );
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, "application/grpc".parse().unwrap());
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(MemoryStore::new(), tenant_scope()).max_response_body(64))
        .service(handler);
    let call = || {
        let mut request = post(Some("big"), "{}");
        request
            .headers_mut()
            .insert(CONTENT_TYPE, "application/grpc".parse().unwrap());
        request
    };
    let original = service.clone().oneshot(call()).await.unwrap();
    let original = original.into_body().collect().await.unwrap();
    assert_eq!(
        original.trailers().map(|t| &t["grpc-status"]),
        Some(&"0".parse().unwrap())
    );
    assert_eq!(original.to_bytes().len(), 205, "the client got all of it");
    // The claim is settled by a spawned write: let it run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let retry = service.oneshot(call()).await.unwrap();
    assert_eq!(
        retry.extensions().get::<IdempotencyRejection>(),
        Some(&IdempotencyRejection::ResultUnavailable)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The version 1 fingerprint (a bare SHA-256 over length-prefixed fields) that releases before
/// tagged fingerprints stored for `POST /orders?x=1` with a JSON `body`, written out byte for
/// byte: the oracle that pins the format old records hold.
fn version_1_fingerprint(body: &[u8]) -> Fingerprint {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for field in [
        &b"tower-idempotency/request/v1"[..],
        b"POST",
        b"/orders?x=1",
        b"application/json",
        body,
    ] {
        hash.update(u64::try_from(field.len()).unwrap().to_be_bytes());
        hash.update(field);
    }
    Fingerprint::from_bytes(hash.finalize().into())
}

/// A store as an earlier release used it: every fingerprint it writes is `written`, the
/// version 1 fingerprint of the request it serves.
#[derive(Clone)]
struct EarlierRelease {
    store: MemoryStore,
    written: Fingerprint,
}

impl IdempotencyStore for EarlierRelease {
    fn claim(&self, key: StoreKey, _: Fingerprint, lease: Duration) -> StoreFuture<Claim> {
        self.store.claim(key, self.written, lease)
    }
    fn complete(
        &self,
        key: StoreKey,
        token: FencingToken,
        _: Fingerprint,
        outcome: Completion,
        ttl: Duration,
    ) -> StoreFuture<Fenced> {
        self.store.complete(key, token, self.written, outcome, ttl)
    }
    fn release(&self, key: StoreKey, token: FencingToken) -> StoreFuture<Fenced> {
        self.store.release(key, token)
    }
    fn renew(&self, key: StoreKey, token: FencingToken, lease: Duration) -> StoreFuture<Fenced> {
        self.store.renew(key, token, lease)
    }
}

/// Upgrading loses no record: a retry of a request an earlier release recorded (with a version
/// 1 fingerprint) replays, for a small body (SHA-256 now) and a large one (BLAKE3 now), and the
/// same key with another body is still refused.
#[tokio::test]
async fn records_written_with_version_1_fingerprints_still_replay_after_the_upgrade() {
    let small: &'static str = "{\"sku\":1}";
    // Leaked: `post` takes a `&'static str`, and 8 KiB once per test run costs nothing.
    let large: &'static str = Box::leak(format!("{{\"note\":\"{}\"}}", "x".repeat(8192)).into());
    for body in [small, large] {
        let runs = Arc::new(AtomicUsize::new(0));
        let store = MemoryStore::new();
        let earlier = EarlierRelease {
            store: store.clone(),
            written: version_1_fingerprint(body.as_bytes()),
        };
        let before = ServiceBuilder::new()
            .layer(IdempotencyLayer::new(earlier, tenant_scope()))
            .service(counting(Arc::clone(&runs), StatusCode::CREATED));
        let original = before.oneshot(post(Some("k"), body)).await.unwrap();
        assert_eq!(original.status(), StatusCode::CREATED);
        let original = text(original).await;

        let after = ServiceBuilder::new()
            .layer(IdempotencyLayer::new(store, tenant_scope()))
            .service(counting(Arc::clone(&runs), StatusCode::CREATED));
        let retry = after.clone().oneshot(post(Some("k"), body)).await.unwrap();
        assert_eq!(retry.status(), StatusCode::CREATED, "{} bytes", body.len());
        assert_eq!(
            retry.extensions().get(),
            Some(&IdempotencyOutcome::Replayed)
        );
        assert_eq!(text(retry).await, original);

        let other = after.oneshot(post(Some("k"), "{\"sku\":2}")).await.unwrap();
        assert_eq!(
            other.extensions().get(),
            Some(&IdempotencyRejection::Reused)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    }
}
