//! The Grafana dashboard and the Prometheus alert rules under `ops/` name only metrics that
//! `/metrics` exports.

use std::collections::BTreeSet;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use orders::{App, Config};
use tower::ServiceExt;

/// Every `orders_*` metric name in `text` (queries inside JSON or YAML).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(offset) = text[i..].find("orders_") {
        let start = i + offset;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        if boundary {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn every_metric_the_ops_files_name_is_exported() {
    let dir = std::env::temp_dir().join(format!("orders-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut config = Config::with_database(format!("sqlite://{}", dir.join("o.db").display()));
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 2;
    let app = App::build(&config).await.expect("app").router();
    let bearer = "Bearer ops_test_key";

    // One of each thing the metrics count: an order (idempotency executed), its replay,
    // a deprecated v1 call, and a 429 from the rate limit.
    let order = r#"{"customer_id":"cus_1","currency":"usd","items":[{"sku":"a","quantity":1,"unit_price":5}]}"#;
    for _ in 0..2 {
        let request = Request::post("/v1/orders")
            .header("authorization", bearer)
            .header("content-type", "application/json")
            .header("idempotency-key", "ops-1")
            .body(Body::from(order))
            .expect("request");
        assert_eq!(send(&app, request).await.0, StatusCode::CREATED);
    }
    let request = Request::get("/v2/orders")
        .header("authorization", bearer)
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, request).await.0, StatusCode::TOO_MANY_REQUESTS);

    let (status, exported) = send(
        &app,
        Request::get("/metrics")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let exported = metric_names(&exported);

    let ops = concat!(env!("CARGO_MANIFEST_DIR"), "/ops");
    for file in ["grafana-dashboard.json", "alerts.yaml"] {
        let text = std::fs::read_to_string(format!("{ops}/{file}")).expect("ops file");
        let named = metric_names(&text);
        assert!(!named.is_empty(), "{file} names no metric");
        let missing: Vec<_> = named.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics that are not exported: {missing:?}\nexported: {exported:?}"
        );
    }
}
