//! `Problem` and `ProblemLayer` under `axum::Router`.
#![cfg(feature = "axum")]

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use tower_problem_details::{
    JsonPointer, Problem, ProblemCatalog, ProblemKind, ProblemLayer, ValidationErrors,
};

#[derive(serde::Deserialize)]
struct NewOrder {
    #[allow(dead_code)] // read only by the extractor, to make it reject bad bodies
    quantity: u32,
}

fn app() -> Router {
    Router::new()
        .route(
            "/orders/{id}",
            get(|| async {
                ProblemCatalog::default()
                    .problem(ProblemKind::NotFound)
                    .with_detail("no such order")
            }),
        )
        .route(
            "/orders",
            post(|axum::Json(_order): axum::Json<NewOrder>| async { StatusCode::CREATED }),
        )
        .route(
            "/invalid",
            post(|| async {
                let mut errors = ValidationErrors::new();
                errors.push(
                    JsonPointer::root().push("items").push(0).push("quantity"),
                    "must be at least 1",
                );
                ProblemCatalog::default().validation_failed(errors)
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("secret");
                }
            }),
        )
        .layer(ProblemLayer::new())
}

async fn send(request: Request<Body>) -> (http::response::Parts, Value) {
    let response = app().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts, json)
}

#[tokio::test]
async fn a_handler_can_return_a_problem() {
    let (parts, json) = send(
        Request::get("/orders/9")
            .body(Body::empty())
            .expect("valid"),
    )
    .await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    assert_eq!(json["type"], "/problems/not-found");
    assert_eq!(json["detail"], "no such order");
}

#[tokio::test]
async fn an_unknown_route_gets_a_problem() {
    let (parts, json) = send(Request::get("/nowhere").body(Body::empty()).expect("valid")).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    assert_eq!(json["title"], "Not Found");
    assert_eq!(
        json["request_id"],
        parts.headers["x-request-id"].to_str().expect("ascii")
    );
}

#[tokio::test]
async fn axum_extractor_rejections_become_problems_with_their_text() {
    let request = Request::post("/orders")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"quantity": "two"}"#))
        .expect("valid");
    let (parts, json) = send(request).await;
    assert_eq!(parts.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    let detail = json["detail"].as_str().expect("detail kept");
    assert!(detail.contains("quantity"), "{detail}");

    let request = Request::post("/orders")
        .body(Body::from("{}"))
        .expect("valid");
    let (parts, json) = send(request).await;
    assert_eq!(parts.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(json["status"], 415);
}

#[tokio::test]
async fn validation_problems_carry_json_pointers() {
    let (parts, json) = send(
        Request::post("/invalid")
            .body(Body::empty())
            .expect("valid"),
    )
    .await;
    assert_eq!(parts.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json["errors"][0]["pointer"], "#/items/0/quantity");
    let problem = Problem::from_json(json.to_string().as_bytes()).expect("problem");
    assert_eq!(problem.validation_errors().len(), 1);
}

#[tokio::test]
async fn a_panicking_handler_gets_an_internal_problem() {
    let (parts, json) = send(Request::get("/panic").body(Body::empty()).expect("valid")).await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json["type"], "/problems/internal");
    assert!(!json.to_string().contains("secret"));
}
