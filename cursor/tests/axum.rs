//! The layer under `axum::Router::layer`, with `Page` as an axum response.

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use tower_cursor::{
    CursorCodec, CursorLayer, CursorSecret, KeyId, KeyRing, Page, PageRequest, Paginator,
};

async fn numbers(Extension(page): Extension<PageRequest<u32>>) -> Page<u32> {
    let start = page.position().map_or(0, |position| position.keys() + 1);
    let rows: Vec<u32> = (start..30)
        .take(usize::try_from(page.fetch_limit()).unwrap())
        .collect();
    page.paginate(rows, |n| *n).unwrap()
}

fn app() -> Router {
    let secret = CursorSecret::new([1u8; 32]).unwrap();
    let paginator = Paginator::new(CursorCodec::new(KeyRing::new(KeyId::new(1), &secret)))
        .page_size(10, 20)
        .unwrap();
    Router::new()
        .route("/numbers", get(numbers))
        .route("/evens", get(numbers))
        .layer(CursorLayer::<u32>::new(paginator))
}

async fn call(app: &Router, uri: &str) -> (StatusCode, Value, Option<String>) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let link = response
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap(), link)
}

#[tokio::test]
async fn pages_through_an_axum_router_on_every_route() {
    let app = app();
    let (status, first, link) = call(&app, "/numbers?limit=12").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["data"][0], 0);
    assert_eq!(first["data"].as_array().unwrap().len(), 12);
    let cursor = first["next_cursor"].as_str().unwrap();
    assert!(
        link.unwrap()
            .contains(&format!("</numbers?limit=12&cursor={cursor}>"))
    );

    let (_, second, _) = call(&app, &format!("/numbers?cursor={cursor}")).await;
    assert_eq!(second["data"][0], 12);
    assert_eq!(second["data"].as_array().unwrap().len(), 10);

    // The cursor is bound to its route: the same layer on another route refuses it.
    let (status, problem, _) = call(&app, &format!("/evens?cursor={cursor}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["reason"], "query_mismatch");
    let (status, problem, _) = call(&app, "/evens?limit=21").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["type"], "/problems/invalid-page-size");
}

#[tokio::test]
async fn nested_routers_link_and_bind_with_the_full_path() {
    let app = Router::new().nest("/v1", app()).nest("/v2", app());
    let (status, first, link) = call(&app, "/v1/numbers?limit=3").await;
    assert_eq!(status, StatusCode::OK);
    let cursor = first["next_cursor"].as_str().unwrap();
    let link = link.unwrap();
    assert!(
        link.starts_with(&format!("</v1/numbers?limit=3&cursor={cursor}>")),
        "{link}"
    );
    let (status, second, _) = call(&app, &format!("/v1/numbers?limit=3&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["data"][0], 3);
    let (status, problem, _) = call(&app, &format!("/v2/numbers?limit=3&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["reason"], "query_mismatch");
}
