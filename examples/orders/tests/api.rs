//! The composed service, in process, through its public router: every status code the API
//! promises, and the guardrails working together.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use orders::auth::Tenant;
use orders::order::NewOrder;
use orders::{App, Config};
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "test_key_alice";
const OTHER_KEY: &str = "test_key_bob";

fn config(name: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("orders-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut config = Config::with_database(format!("sqlite://{}", dir.join("orders.db").display()));
    config.cursor_secret = Some("a test secret of at least thirty-two bytes".into());
    config.rate_limit_per_second = 1_000;
    config.rate_limit_burst = 1_000;
    config
}

async fn app(config: &Config) -> App {
    App::build(config).await.expect("the app builds")
}

fn v1_body() -> Value {
    json!({"customer_id": "cus_42", "currency": "usd",
        "items": [{"sku": "tea-1", "quantity": 2, "unit_price": 1250}]})
}

fn post(
    path: &str,
    key: Option<&str>,
    idempotency_key: Option<&str>,
    body: &Value,
) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    request.body(Body::from(body.to_string())).expect("request")
}

fn get(path: &str, key: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    request.body(Body::empty()).expect("request")
}

async fn send(router: &Router, request: Request<Body>) -> (Response<()>, Value) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (Response::from_parts(parts, ()), json)
}

fn header<'a>(response: &'a Response<()>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |value| value.to_str().expect("ascii"))
}

fn assert_problem(response: &Response<()>, body: &Value, status: StatusCode, slug: &str) {
    assert_eq!(response.status(), status, "{body}");
    assert_eq!(header(response, "content-type"), "application/problem+json");
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    assert_eq!(body["status"], status.as_u16());
}

#[tokio::test]
async fn create_replay_and_reuse() {
    let router = app(&config("create")).await.router();
    let (created, order) = send(
        &router,
        post("/v1/orders", Some(KEY), Some("k-1"), &v1_body()),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().expect("an id");
    assert_eq!(header(&created, "location"), format!("/v1/orders/{id}"));
    assert_eq!(order["status"], "pending");
    assert_eq!(order["total"], 2500);
    assert_eq!(order["currency"], "usd");
    assert_eq!(order["cancelled_at"], Value::Null);

    let (replayed, again) = send(
        &router,
        post("/v1/orders", Some(KEY), Some("k-1"), &v1_body()),
    )
    .await;
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(header(&replayed, "idempotent-replayed"), "true");
    assert_eq!(header(&replayed, "location"), header(&created, "location"));
    assert_eq!(again, order);

    let mut other = v1_body();
    other["items"][0]["quantity"] = json!(3);
    let (reused, problem) = send(&router, post("/v1/orders", Some(KEY), Some("k-1"), &other)).await;
    assert_problem(
        &reused,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    );

    let (missing, problem) = send(&router, post("/v1/orders", Some(KEY), None, &v1_body())).await;
    assert_problem(
        &missing,
        &problem,
        StatusCode::BAD_REQUEST,
        "idempotency-key-missing",
    );
}

#[tokio::test]
async fn a_retry_after_a_lost_idempotency_record_finds_the_committed_order() {
    // The crash window: the order was committed, but the process died before the
    // idempotency store recorded the response. The store knows nothing; the database does.
    let app = app(&config("crash")).await;
    let router = app.router();
    let new = NewOrder {
        customer_id: "cus_42".into(),
        items: vec![orders::order::Item {
            sku: "tea-1".into(),
            quantity: 2,
            unit_price: 1250,
        }],
        currency: "usd".into(),
        total: 2500,
    };
    let tenant = Tenant::of_key(KEY);
    let committed = match app
        .database()
        .insert(
            tenant.as_str(),
            Some("k-crash"),
            &new,
            1_767_225_600_000_000,
        )
        .await
        .expect("insert")
    {
        orders::db::Inserted::Created(order) => order,
        other => panic!("expected a new order, got {other:?}"),
    };
    let (retry, order) = send(
        &router,
        post("/v1/orders", Some(KEY), Some("k-crash"), &v1_body()),
    )
    .await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(order["id"], committed.id);
    assert_eq!(
        app.database().count(tenant.as_str()).await.expect("count"),
        1
    );

    // The same key for another order is refused by the database too.
    let mut other = v1_body();
    other["customer_id"] = json!("cus_43");
    let (reused, problem) = send(
        &router,
        post("/v1/orders", Some(KEY), Some("k-crash"), &other),
    )
    .await;
    assert_problem(
        &reused,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    );
}

#[tokio::test]
async fn authentication_and_tenants() {
    let router = app(&config("auth")).await.router();
    let (missing, problem) = send(&router, get("/v2/orders", None)).await;
    assert_problem(&missing, &problem, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        header(&missing, "www-authenticate"),
        "Bearer realm=\"orders\""
    );

    let (invalid, problem) = send(&router, get("/v2/orders", Some("bad key!"))).await;
    assert_problem(&invalid, &problem, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(header(&invalid, "www-authenticate").contains("error=\"invalid_token\""));

    let (_, order) = send(
        &router,
        post("/v1/orders", Some(KEY), Some("k-a"), &v1_body()),
    )
    .await;
    let path = format!("/v2/orders/{}", order["id"].as_str().expect("id"));
    let (mine, _) = send(&router, get(&path, Some(KEY))).await;
    assert_eq!(mine.status(), StatusCode::OK);
    let (theirs, problem) = send(&router, get(&path, Some(OTHER_KEY))).await;
    assert_problem(&theirs, &problem, StatusCode::NOT_FOUND, "not-found");
    let (listed, page) = send(&router, get("/v2/orders", Some(OTHER_KEY))).await;
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(page["data"], json!([]));
}

#[tokio::test]
async fn a_restricted_key_list_refuses_other_keys() {
    let mut config = config("keys");
    config.api_keys = vec![KEY.to_owned()];
    let router = app(&config).await.router();
    assert_eq!(
        send(&router, get("/v2/orders", Some(KEY))).await.0.status(),
        StatusCode::OK
    );
    let (refused, problem) = send(&router, get("/v2/orders", Some(OTHER_KEY))).await;
    assert_problem(&refused, &problem, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn bad_bodies_are_problems_with_pointers() {
    let router = app(&config("bodies")).await.router();
    let body = json!({"customer_id": "nope", "currency": "usd", "items": [{"sku": "x", "quantity": 0, "unit_price": 1}]});
    let (invalid, problem) = send(&router, post("/v1/orders", Some(KEY), Some("k-v"), &body)).await;
    assert_problem(
        &invalid,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    let pointers: Vec<_> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["pointer"].as_str().expect("pointer"))
        .collect();
    assert_eq!(pointers, ["#/customer_id", "#/items/0/quantity"]);

    let malformed = Request::post("/v1/orders")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "k-m")
        .body(Body::from("{\"customer_id\":"))
        .expect("request");
    let (malformed, problem) = send(&router, malformed).await;
    assert_problem(
        &malformed,
        &problem,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    );
    assert_eq!(problem["errors"][0]["pointer"], "#");

    let text = Request::post("/v1/orders")
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "text/plain")
        .header("idempotency-key", "k-t")
        .body(Body::from(v1_body().to_string()))
        .expect("request");
    let (text, problem) = send(&router, text).await;
    assert_problem(
        &text,
        &problem,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );

    let huge = json!({"customer_id": "cus_1", "currency": "usd", "items": [], "pad": "x".repeat(1024 * 1024)});
    let (too_large, problem) =
        send(&router, post("/v1/orders", Some(KEY), Some("k-big"), &huge)).await;
    assert_problem(
        &too_large,
        &problem,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );
}

#[tokio::test]
async fn pages_follow_cursors_without_gaps_or_repeats() {
    let router = app(&config("pages")).await.router();
    let mut created = Vec::new();
    for n in 0..5 {
        let (_, order) = send(&router, post("/v2/orders", Some(KEY), Some(&format!("k-{n}")), &json!({
            "customer_id": "cus_42",
            "items": [{"sku": "tea-1", "quantity": 1, "unit_price": {"amount": 100, "currency": "eur"}}]
        })))
        .await;
        created.push(order["id"].as_str().expect("id").to_owned());
    }
    created.reverse(); // newest first
    let mut seen = Vec::new();
    let mut path = "/v2/orders?limit=2".to_owned();
    loop {
        let (response, page) = send(&router, get(&path, Some(KEY))).await;
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|o| o["id"].as_str().expect("id").to_owned()),
        );
        if page["has_more"] == json!(false) {
            assert_eq!(page["next_cursor"], Value::Null);
            break;
        }
        let next = page["next_cursor"].as_str().expect("a cursor");
        assert!(header(&response, "link").contains("rel=\"next\""));
        assert!(next.len() <= 120, "cursor of {} characters", next.len());
        path = format!("/v2/orders?limit=2&cursor={next}");
    }
    assert_eq!(seen, created);

    let (_, first) = send(&router, get("/v2/orders?limit=2", Some(KEY))).await;
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    let (other_tenant, problem) = send(
        &router,
        get(&format!("/v2/orders?cursor={cursor}"), Some(OTHER_KEY)),
    )
    .await;
    assert_problem(
        &other_tenant,
        &problem,
        StatusCode::BAD_REQUEST,
        "invalid-cursor",
    );
    let (other_version, problem) = send(
        &router,
        get(&format!("/v1/orders?cursor={cursor}"), Some(KEY)),
    )
    .await;
    assert_problem(
        &other_version,
        &problem,
        StatusCode::BAD_REQUEST,
        "invalid-cursor",
    );
    let mut tampered = cursor.clone();
    tampered.replace_range(10..11, if &cursor[10..11] == "A" { "B" } else { "A" });
    let (tampered, problem) = send(
        &router,
        get(&format!("/v2/orders?cursor={tampered}"), Some(KEY)),
    )
    .await;
    assert_problem(
        &tampered,
        &problem,
        StatusCode::BAD_REQUEST,
        "invalid-cursor",
    );
    for limit in ["0", "101", "x"] {
        let (bad, problem) = send(
            &router,
            get(&format!("/v2/orders?limit={limit}"), Some(KEY)),
        )
        .await;
        assert_problem(&bad, &problem, StatusCode::BAD_REQUEST, "invalid-page-size");
    }
}

#[tokio::test]
async fn cancel_once_then_conflict() {
    let router = app(&config("cancel")).await.router();
    let (_, order) = send(
        &router,
        post("/v1/orders", Some(KEY), Some("k-o"), &v1_body()),
    )
    .await;
    let cancel = format!("/v1/orders/{}/cancel", order["id"].as_str().expect("id"));
    let empty = Value::Null;
    let (done, cancelled) = send(&router, post(&cancel, Some(KEY), Some("c-1"), &empty)).await;
    assert_eq!(done.status(), StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["cancelled_at"].is_string());
    let (replay, again) = send(&router, post(&cancel, Some(KEY), Some("c-1"), &empty)).await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(again, cancelled);
    let (conflict, problem) = send(&router, post(&cancel, Some(KEY), Some("c-2"), &empty)).await;
    assert_problem(
        &conflict,
        &problem,
        StatusCode::CONFLICT,
        "order-not-cancellable",
    );
    let (missing, problem) = send(
        &router,
        post(
            "/v1/orders/ord_00000000000000000000000000000000/cancel",
            Some(KEY),
            Some("c-3"),
            &empty,
        ),
    )
    .await;
    assert_problem(&missing, &problem, StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn v1_is_a_deprecated_view_of_the_same_orders() {
    let router = app(&config("versions")).await.router();
    let (created, order) = send(
        &router,
        post("/v1/orders", Some(KEY), Some("k-v1"), &v1_body()),
    )
    .await;
    assert_eq!(header(&created, "deprecation"), "@1793491200");
    assert_eq!(header(&created, "sunset"), "Fri, 31 Dec 2027 23:59:59 GMT");
    let links: Vec<_> = created
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert!(
        links.contains(&"</v2/orders>; rel=\"successor-version\""),
        "{links:?}"
    );

    let id = order["id"].as_str().expect("id");
    let (v2, order2) = send(&router, get(&format!("/v2/orders/{id}"), Some(KEY))).await;
    assert!(v2.headers().get("deprecation").is_none());
    assert_eq!(order2["total"], json!({"amount": 2500, "currency": "usd"}));
    assert_eq!(
        order2["items"][0]["unit_price"],
        json!({"amount": 1250, "currency": "usd"})
    );
    assert_eq!(order2["created_at"], order["created_at"]);

    // Rejections of /v1 carry the headers too.
    let (unauthorized, _) = send(&router, get("/v1/orders", Some(KEY))).await;
    assert_eq!(header(&unauthorized, "deprecation"), "@1793491200");
}

#[tokio::test]
async fn v1_answers_410_after_its_sunset() {
    let mut config = config("sunset");
    config.v1_deprecated_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    config.v1_sunset_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let router = app(&config).await.router();
    let (gone, problem) = send(&router, get("/v1/orders", Some(KEY))).await;
    assert_problem(&gone, &problem, StatusCode::GONE, "api-version-sunset");
    assert_eq!(
        send(&router, get("/v2/orders", Some(KEY))).await.0.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let mut config = config("ratelimit");
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 2;
    let router = app(&config).await.router();
    for _ in 0..2 {
        let (ok, _) = send(&router, get("/v2/orders", Some(KEY))).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(header(&ok, "ratelimit").starts_with("\"per-key\";r="));
    }
    let (limited, problem) = send(&router, get("/v2/orders", Some(KEY))).await;
    assert_problem(
        &limited,
        &problem,
        StatusCode::TOO_MANY_REQUESTS,
        "quota-exceeded",
    );
    assert_eq!(header(&limited, "retry-after"), "1");
    // Per key: another tenant is not affected.
    assert_eq!(
        send(&router, get("/v2/orders", Some(OTHER_KEY)))
            .await
            .0
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_guardrails_retries_duplicate_orders() {
    let mut config = config("unguarded");
    config.demo_disable_guardrails = true;
    let app = app(&config).await;
    let router = app.router();
    for _ in 0..3 {
        let (created, _) = send(
            &router,
            post("/v1/orders", Some(KEY), Some("k-dup"), &v1_body()),
        )
        .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    assert_eq!(
        app.database()
            .count(Tenant::of_key(KEY).as_str())
            .await
            .expect("count"),
        3
    );
}

#[tokio::test]
async fn public_endpoints_and_unknown_routes() {
    let router = app(&config("public")).await.router();
    let (health, body) = send(&router, get("/health", None)).await;
    assert_eq!(
        (health.status(), body),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let (ready, body) = send(&router, get("/ready", None)).await;
    assert_eq!(
        (ready.status(), body),
        (StatusCode::OK, json!({"status": "ready"}))
    );
    let (spec, body) = send(&router, get("/openapi.yaml", None)).await;
    assert_eq!(spec.status(), StatusCode::OK);
    assert_eq!(header(&spec, "content-type"), "application/yaml");
    assert!(body.as_str().expect("text").starts_with("openapi: 3.1"));

    let (unknown, problem) = send(&router, get("/v3/orders", Some(KEY))).await;
    assert_problem(&unknown, &problem, StatusCode::NOT_FOUND, "not-found");
    assert!(header(&unknown, "x-request-id").len() >= 8);
    let delete = Request::delete("/v2/orders")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .expect("request");
    let (not_allowed, _) = send(&router, delete).await;
    assert_eq!(not_allowed.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        header(&not_allowed, "content-type"),
        "application/problem+json"
    );
}
