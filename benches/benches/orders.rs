//! The orders service end to end: what the guardrails cost a whole request, and what a page
//! costs at depth, through the service's own router (every layer, every handler, a real
//! SQLite file).
//!
//! Run: `cargo bench -p guardrail-benches --bench orders`.
//!
//! `orders_full_stack`: the same service built twice, each on its own SQLite file in a temp
//! dir, with the in-memory stores. `guarded` is the service as shipped (rate limit per tenant,
//! set to 10⁹ per second and burst so it admits every request but still decides and stamps
//! its headers; idempotency on POSTs). `unguarded` is `demo_disable_guardrails`: the same
//! handlers and database with no idempotency layer and no rate limit (authentication, the
//! problem layer, observability, sunset and the cursor layer stay). Three requests, each
//! for both: `create` (POST `/v2/orders`, a fresh `Idempotency-Key` every iteration: the
//! write path), `get` (GET `/v2/orders/{id}`: the read path) and `list_first_page`
//! (GET `/v2/orders?limit=20`). Every iteration builds the request, sends it with
//! `oneshot`, reads the whole body and checks the status.
//! Target (DESIGN.md): guarded throughput ≥ 0.7× unguarded, that is, for each request,
//! `unguarded time / guarded time ≥ 0.7` (guarded time ≤ 1.43× unguarded time). Criterion
//! reports both as a time and as requests per second (`thrpt`).
//! `create` commits one row per request, and SQLite fsyncs its WAL at every commit, so the
//! disk's fsync latency is most of its time in both variants.
//!
//! `orders_page_depth`: one guarded service, 100,000 orders for one tenant. `first_page`
//! (GET `/v2/orders?limit=20`) against `depth_100k` (the same request with a cursor 99,960
//! rows deep, reached by following `next_cursor`; 40 rows remain, so both pages are full
//! and both issue a next cursor). Target (DESIGN.md): the page at depth within 1.25× of the
//! first page.
//! The rows: one order is placed through the service's `Database::insert`, and the other
//! 99,999 are copies of it (new id and `created_at`) written by one SQL statement. Placing
//! each through `insert` would commit, and fsync, 100,000 times: minutes of setup.

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::response::Parts;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use orders::auth::Tenant;
use orders::db::Inserted;
use orders::order::{Item, NewOrder};
use orders::{App, Config};
use serde_json::Value;
use tokio::runtime::Runtime;
use tower::ServiceExt;

const API_KEY: &str = "bench_key_orders";
const BEARER: &str = "Bearer bench_key_orders";
const CURSOR_SECRET: &str = "the orders bench cursor secret, at least 32 bytes long";
/// The order every `create` places, and every seeded row holds (see [`sample_order`]).
const CREATE_BODY: &str = r#"{"customer_id":"cus_1","items":[{"sku":"a","quantity":1,"unit_price":{"amount":100,"currency":"usd"}}]}"#;
/// `2026-01-01T00:00:00Z` in microseconds: the `created_at` of the oldest seeded order.
const BASE_MICROS: i64 = 1_767_225_600_000_000;
/// Orders seeded for the full-stack group: more than a page.
const SEEDED: i64 = 50;
/// Orders for the depth group.
const ROWS: usize = 100_000;
/// How deep the cursor of `depth_100k` is: 40 rows remain after it.
const DEPTH: usize = ROWS - 40;
/// The largest page the service serves.
const MAX_LIMIT: usize = 100;
/// The page both groups read.
const FIRST_PAGE: &str = "/v2/orders?limit=20";

/// The `NewOrder` that [`CREATE_BODY`] parses to.
fn sample_order() -> NewOrder {
    NewOrder {
        customer_id: "cus_1".into(),
        items: vec![Item {
            sku: "a".into(),
            quantity: 1,
            unit_price: 100,
        }],
        currency: "usd".into(),
        total: 100,
    }
}

/// One built service on its own SQLite file.
struct Service {
    app: App,
    router: Router,
    dir: PathBuf,
    database: PathBuf,
}

impl Service {
    fn build(runtime: &Runtime, name: &str, guardrails: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("orders-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let database = dir.join("orders.db");
        let mut config = Config::with_database(format!("sqlite://{}", database.display()));
        // Set whatever the environment (`ORDERS_*`) could have changed and the bench relies on.
        config.redis = None;
        config.api_keys = vec![API_KEY.to_owned()];
        config.cursor_secret = Some(CURSOR_SECRET.to_owned());
        config.rate_limit_per_second = 1_000_000_000;
        config.rate_limit_burst = 1_000_000_000;
        config.demo_disable_guardrails = !guardrails;
        // Built inside the runtime: the pool and the stores start their tasks on it.
        let app = runtime
            .block_on(App::build(&config))
            .expect("the app builds");
        let router = app.router();
        Service {
            app,
            router,
            dir,
            database,
        }
    }

    fn close(self, runtime: &Runtime) {
        runtime.block_on(self.app.database().close());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn create(idempotency_key: &str) -> Request<Body> {
    Request::post("/v2/orders")
        .header(AUTHORIZATION, BEARER)
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", idempotency_key)
        .body(Body::from(CREATE_BODY))
        .expect("a valid request")
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(AUTHORIZATION, BEARER)
        .body(Body::empty())
        .expect("a valid request")
}

async fn send(router: &Router, request: Request<Body>) -> (Parts, Bytes) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a readable body").to_bytes();
    (parts, body)
}

/// One request, its whole body read and its status checked: what every iteration does.
fn call(runtime: &Runtime, router: &Router, request: Request<Body>, expected: StatusCode) -> Bytes {
    let (parts, body) = runtime.block_on(send(router, request));
    assert_eq!(parts.status, expected, "{}", String::from_utf8_lossy(&body));
    body
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("a JSON body")
}

/// `SEEDED` orders through the service's own insert, so `get` and `list_first_page` read
/// what the service wrote; returns the id of one of them.
fn seed(runtime: &Runtime, service: &Service, tenant: &Tenant) -> String {
    let order = sample_order();
    runtime.block_on(async {
        let mut id = String::new();
        for n in 0..SEEDED {
            let inserted = service
                .app
                .database()
                .insert(tenant.as_str(), None, &order, BASE_MICROS + n)
                .await
                .expect("an insert");
            match inserted {
                Inserted::Created(created) => id = created.id,
                other => panic!("expected a new order, got {other:?}"),
            }
        }
        id
    })
}

/// Before measuring: each variant answers as expected, and the guardrails are on exactly
/// where they should be (a replayed POST and the rate-limit headers).
fn check(runtime: &Runtime, name: &str, service: &Service, guarded: bool, id: &str) {
    runtime.block_on(async {
        let key = format!("{name}-check");
        let (first, body) = send(&service.router, create(&key)).await;
        assert_eq!(first.status, StatusCode::CREATED, "{name}: create");
        let first_id = json(&body)["id"].as_str().expect("an id").to_owned();
        let (retry, body) = send(&service.router, create(&key)).await;
        assert_eq!(retry.status, StatusCode::CREATED, "{name}: retry");
        let retry_id = json(&body)["id"].as_str().expect("an id").to_owned();
        assert_eq!(
            retry.headers.contains_key("idempotent-replayed"),
            guarded,
            "{name}: replay"
        );
        assert_eq!(retry_id == first_id, guarded, "{name}: deduplication");

        let (read, body) = send(&service.router, get(&format!("/v2/orders/{id}"))).await;
        assert_eq!(read.status, StatusCode::OK, "{name}: get");
        assert_eq!(json(&body)["id"], id, "{name}: get");

        let (list, body) = send(&service.router, get(FIRST_PAGE)).await;
        assert_eq!(list.status, StatusCode::OK, "{name}: list");
        assert_eq!(
            list.headers.contains_key("ratelimit-policy"),
            guarded,
            "{name}: rate limit"
        );
        let page = json(&body);
        assert_eq!(page["data"].as_array().map(Vec::len), Some(20), "{name}");
        assert_eq!(page["has_more"], true, "{name}");
    });
}

fn full_stack(c: &mut Criterion) {
    let runtime = guardrail_benches::current_thread();
    let tenant = Tenant::of_key(API_KEY);
    let variants: Vec<(&str, Service, String)> = [("guarded", true), ("unguarded", false)]
        .into_iter()
        .map(|(name, guarded)| {
            let service = Service::build(&runtime, name, guarded);
            let id = seed(&runtime, &service, &tenant);
            check(&runtime, name, &service, guarded, &id);
            (name, service, id)
        })
        .collect();

    let mut group = c.benchmark_group("orders_full_stack");
    group.throughput(Throughput::Elements(1));
    // One counter for the whole run: a key is never sent twice, so every `create` executes.
    let mut counter: u64 = 0;
    for (name, service, _) in &variants {
        group.bench_function(BenchmarkId::new(*name, "create"), |b| {
            b.iter(|| {
                counter += 1;
                call(
                    &runtime,
                    &service.router,
                    create(&format!("{name}-{counter}")),
                    StatusCode::CREATED,
                )
            });
        });
    }
    for (name, service, id) in &variants {
        let path = format!("/v2/orders/{id}");
        group.bench_function(BenchmarkId::new(*name, "get"), |b| {
            b.iter(|| call(&runtime, &service.router, get(&path), StatusCode::OK));
        });
    }
    for (name, service, _) in &variants {
        group.bench_function(BenchmarkId::new(*name, "list_first_page"), |b| {
            b.iter(|| call(&runtime, &service.router, get(FIRST_PAGE), StatusCode::OK));
        });
    }
    group.finish();

    for (_, service, _) in variants {
        service.close(&runtime);
    }
}

/// `ROWS` orders for `tenant`: one through `Database::insert`, the rest copies of it written
/// in one statement (one commit), each with its own id and a later `created_at`. The ids are
/// `ord_` and 32 lower-case hex digits, like the service's, and encode the copy's position
/// so the page at depth can be checked.
fn fill(runtime: &Runtime, service: &Service, tenant: &Tenant) {
    let inserted = runtime
        .block_on(service.app.database().insert(
            tenant.as_str(),
            None,
            &sample_order(),
            BASE_MICROS,
        ))
        .expect("an insert");
    let template = match inserted {
        Inserted::Created(order) => order.id,
        other => panic!("expected a new order, got {other:?}"),
    };
    let copies = i64::try_from(ROWS - 1).expect("fits");
    let db = rusqlite::Connection::open(&service.database).expect("the bench database");
    db.execute(
        "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < ?2)
         INSERT INTO orders (id, tenant, idempotency_key, request_fingerprint, status,
                             customer_id, items, currency, total, created_at, cancelled_at)
         SELECT printf('ord_%016x%016x', t.created_at + n.value, n.value), t.tenant, NULL,
                t.request_fingerprint, t.status, t.customer_id, t.items, t.currency, t.total,
                t.created_at + n.value, NULL
         FROM n, orders AS t
         WHERE t.id = ?1",
        (template.as_str(), copies),
    )
    .expect("the copies");
    // Move the rows from the WAL into the database file, as a running service's checkpoints
    // would have.
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("a checkpoint");
    drop(db);
    let count = runtime
        .block_on(service.app.database().count(tenant.as_str()))
        .expect("a count");
    assert_eq!(count, i64::try_from(ROWS).expect("fits"));
}

/// The id `fill` gave the order `offset` rows after the oldest.
fn copy_id(offset: usize) -> String {
    let offset = i64::try_from(offset).expect("fits");
    let created_at = BASE_MICROS + offset;
    format!("ord_{created_at:016x}{offset:016x}")
}

/// Follows `next_cursor`, the largest pages first, until `DEPTH` rows are behind it.
fn cursor_at_depth(runtime: &Runtime, router: &Router) -> String {
    let mut skipped = 0;
    let mut cursor: Option<String> = None;
    while skipped < DEPTH {
        let limit = (DEPTH - skipped).min(MAX_LIMIT);
        let path = match &cursor {
            None => format!("/v2/orders?limit={limit}"),
            Some(cursor) => format!("/v2/orders?limit={limit}&cursor={cursor}"),
        };
        let page = json(&call(runtime, router, get(&path), StatusCode::OK));
        assert_eq!(
            page["data"].as_array().map(Vec::len),
            Some(limit),
            "a full page after {skipped} rows"
        );
        cursor = Some(
            page["next_cursor"]
                .as_str()
                .expect("a next page")
                .to_owned(),
        );
        skipped += limit;
    }
    cursor.expect("at least one page")
}

fn page_depth(c: &mut Criterion) {
    let runtime = guardrail_benches::current_thread();
    let tenant = Tenant::of_key(API_KEY);
    let service = Service::build(&runtime, "depth", true);
    fill(&runtime, &service, &tenant);
    let cursor = cursor_at_depth(&runtime, &service.router);
    let depth_path = format!("/v2/orders?limit=20&cursor={cursor}");

    // Both pages are full, both issue a next cursor, and each starts where it should.
    for (path, newest) in [
        (FIRST_PAGE, ROWS - 1),
        (depth_path.as_str(), ROWS - DEPTH - 1),
    ] {
        let page = json(&call(&runtime, &service.router, get(path), StatusCode::OK));
        assert_eq!(page["data"].as_array().map(Vec::len), Some(20), "{path}");
        assert_eq!(page["data"][0]["id"], copy_id(newest).as_str(), "{path}");
        assert_eq!(page["has_more"], true, "{path}");
    }

    let mut group = c.benchmark_group("orders_page_depth");
    group.throughput(Throughput::Elements(1));
    group.bench_function("first_page", |b| {
        b.iter(|| call(&runtime, &service.router, get(FIRST_PAGE), StatusCode::OK));
    });
    group.bench_function("depth_100k", |b| {
        b.iter(|| call(&runtime, &service.router, get(&depth_path), StatusCode::OK));
    });
    group.finish();

    service.close(&runtime);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    targets = full_stack, page_depth
}
criterion_main!(benches);
