//! `SunsetLayer` under `axum::Router`: one layer, cloned per route, shares its state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_sunset::{Phase, SunsetLayer};

#[tokio::test(start_paused = true)]
async fn every_route_of_the_v1_router_shares_one_lifecycle_and_hook() {
    let now = SystemTime::now();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let layer = SunsetLayer::new(now - Duration::from_secs(10))
        .and_then(|l| l.sunset_at(now + Duration::from_secs(60)))
        .expect("valid")
        .gone_after_sunset(true)
        .on_deprecated_call(move |_req: &Request<Body>, _phase: Phase| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let v1 = Router::new()
        .route("/orders", get(|| async { "list" }))
        .route("/orders", post(|| async { StatusCode::CREATED }))
        .route("/orders/{id}", get(|| async { StatusCode::NOT_FOUND }))
        .layer(layer);
    let app = Router::new().nest("/v1", v1);

    let send = |method: &str, uri: &str| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("valid");
        app.clone().oneshot(request)
    };
    let list = send("GET", "/v1/orders").await.expect("infallible");
    let create = send("POST", "/v1/orders").await.expect("infallible");
    let missing = send("GET", "/v1/orders/9").await.expect("infallible");
    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(create.status(), StatusCode::CREATED);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    for r in [&list, &create, &missing] {
        assert!(r.headers().contains_key("deprecation"));
        assert!(r.headers().contains_key("sunset"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    tokio::time::advance(Duration::from_secs(61)).await;
    for (method, uri) in [
        ("GET", "/v1/orders"),
        ("POST", "/v1/orders"),
        ("GET", "/v1/orders/9"),
    ] {
        let response = send(method, uri).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::GONE, "{method} {uri}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}
