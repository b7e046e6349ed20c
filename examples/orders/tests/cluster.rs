//! `orders` as processes: three on one PostgreSQL and one Redis, or one Redis Cluster (a retry
//! storm across them
//! creates exactly one order per key, a cursor from one instance works on the others, and the
//! rate limit is global, not per instance); one killed with SIGKILL in the middle of a create
//! (its retry on another instance gets 409 during the lease and one order after it); and a
//! replay that survives a restart on the embedded default (SQLite). The three instances also
//! serve gRPC, and the same holds across protocols and instances.
//!
//! PostgreSQL: `ORDERS_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`;
//! the test creates (and drops) a database of its own there. Redis: found or started by
//! `guardrail-test-support`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const CURSOR_SECRET: &str = "cluster test cursor secret, 32+ bytes long";
const PER_SECOND: u64 = 40;
const BURST: u64 = 40;

struct Instance {
    child: Child,
    url: String,
    /// Its `--grpc-listen` endpoint.
    grpc: String,
    /// What it was started with, to start it again on other ports (see `wait_ready`).
    database: String,
    args: Vec<String>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An instance on `database`, with `args` besides.
fn start_with<A: AsRef<str>>(database: &str, args: &[A]) -> Instance {
    let port = free_port();
    let grpc_port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_orders"));
    // The developer's own `ORDERS_*` settings must not configure the instances.
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("ORDERS_")) {
        command.env_remove(key);
    }
    let child = command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
        .args(["--database", database])
        .args(args.iter().map(AsRef::as_ref))
        .args(["--cursor-secret", CURSOR_SECRET])
        .args(["--rate-limit-per-second", &PER_SECOND.to_string()])
        .args(["--rate-limit-burst", &BURST.to_string()])
        .env("ORDERS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the orders binary starts");
    Instance {
        child,
        url: format!("http://127.0.0.1:{port}"),
        grpc: format!("http://127.0.0.1:{grpc_port}"),
        database: database.to_owned(),
        args: args.iter().map(|arg| arg.as_ref().to_owned()).collect(),
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Sends `request`: the status, the headers and the body as JSON (`Null` when it is not).
async fn send(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, Value) {
    let response = client.request(request).await.expect("the instance answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

/// A POST with an idempotency key: status, `Retry-After`, `Idempotent-Replayed`, body.
async fn post(
    client: &HttpClient,
    url: &str,
    api_key: &str,
    idempotency_key: &str,
    body: &str,
) -> (StatusCode, Option<String>, Option<String>, Value) {
    let request = Request::post(url)
        .header("authorization", format!("Bearer {api_key}"))
        .header("idempotency-key", idempotency_key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let (status, headers, body) = send(client, request).await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        status,
        header("retry-after"),
        header("idempotent-replayed"),
        body,
    )
}

/// A `/v2` order.
const NEW_ORDER: &str = r#"{"customer_id":"cus_42","items":[{"sku":"tea-1","quantity":2,"unit_price":{"amount":1250,"currency":"eur"}}]}"#;

async fn get(client: &HttpClient, url: &str, api_key: &str) -> (StatusCode, Value) {
    let request = Request::get(url)
        .header("authorization", format!("Bearer {api_key}"))
        .body(Full::default())
        .expect("request");
    let (status, _, body) = send(client, request).await;
    (status, body)
}

/// Waits until `instance` is ready. The ports `free_port` found free may be taken before the
/// instance binds them (by another test's connection, say): an instance that exits before it
/// is ready is started again on fresh ports, three times at most.
async fn wait_ready(client: &HttpClient, instance: &mut Instance) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut restarts = 0;
    loop {
        if let Some(status) = instance.child.try_wait().expect("the instance's status") {
            assert!(
                restarts < 3,
                "{} exited before it was ready ({status}), three times",
                instance.url
            );
            restarts += 1;
            *instance = start_with(&instance.database.clone(), &instance.args.clone());
            continue;
        }
        let request = Request::get(format!("{}/ready", instance.url))
            .body(Full::default())
            .expect("request");
        if let Ok(response) = client.request(request).await
            && response.status() == StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never became ready",
            instance.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_idempotency_cursors_and_rate_limits() {
    let redis = guardrail_test_support::redis("orders_cluster");
    let args = ["--redis", redis.url(), "--redis-prefix", redis.prefix()];
    three_instances_share_everything("orders_cluster", &args).await;
}

/// The same on a Redis Cluster (three masters), the seeds given as `host:port`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_a_redis_cluster_share_idempotency_cursors_and_rate_limits() {
    let cluster = guardrail_test_support::redis_cluster("orders_redis_cluster");
    let seeds: Vec<&str> = cluster
        .urls()
        .iter()
        .map(|url| url.trim_start_matches("redis://"))
        .collect();
    let seeds = seeds.join(",");
    let args = [
        "--redis-cluster",
        &seeds,
        "--redis-prefix",
        cluster.prefix(),
    ];
    three_instances_share_everything("orders_redis_cluster", &args).await;
}

/// Three instances on one PostgreSQL database of the test's own and the Redis that `args`
/// name: a storm, cursors across instances, and one global rate limit.
async fn three_instances_share_everything(test: &str, args: &[&str]) {
    let db = guardrail_test_support::postgres_database(test).await;
    let database = db.url().to_owned();
    let mut instances: Vec<Instance> = (0..3).map(|_| start_with(&database, args)).collect();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    for instance in &mut instances {
        wait_ready(&client, instance).await;
    }
    let urls: Vec<String> = instances.iter().map(|i| i.url.clone()).collect();

    // A storm: every key sent 3 times at once, one copy per instance, with retries.
    let storm = orders_storm::Storm {
        urls: urls.clone(),
        clients: 24,
        keys: 60,
        copies: 3,
        api_key: orders_storm::fresh_api_key(),
        timeout: Duration::from_secs(5),
        max_attempts: 30,
    };
    let api_key = storm.api_key.clone();
    let report = orders_storm::run(storm).await.expect("the storm runs");
    assert_eq!(report.orders, 60, "{}", report.markdown("storm", ""));
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.missing, 0);
    assert_eq!(report.gave_up, 0);
    assert_eq!(report.replay_mismatches, 0);
    assert_eq!(report.server_errors(), 0);
    assert_eq!(report.too_many_without_retry_after, 0);
    assert_eq!(report.too_many_without_problem, 0);

    // A cursor issued by one instance pages on every other.
    tokio::time::sleep(Duration::from_secs(2)).await; // refill the key's bucket
    let (status, first) = get(&client, &format!("{}/v2/orders?limit=7", urls[0]), &api_key).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let mut pages = Vec::new();
    for url in &urls {
        let (status, page) = get(
            &client,
            &format!("{url}/v2/orders?limit=7&cursor={cursor}"),
            &api_key,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        pages.push(page["data"].clone());
    }
    assert!(pages.iter().all(|page| *page == pages[0]));
    assert_eq!(pages[0].as_array().map(Vec::len), Some(7));

    // The rate limit is global: 3 × BURST requests spread over the instances at once admit
    // BURST plus what refills meanwhile, not 3 × BURST.
    let limited_key = orders_storm::fresh_api_key();
    let started = Instant::now();
    let sends = (0..3 * BURST).map(|n| {
        let url = format!(
            "{}/v2/orders?limit=1",
            urls[usize::try_from(n).expect("small") % urls.len()]
        );
        let (client, key) = (client.clone(), limited_key.clone());
        async move { get(&client, &url, &key).await.0 }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let elapsed = started.elapsed();
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // Whole requests: BURST at once, plus what refilled while they were sent, plus one.
    let refilled = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX) * PER_SECOND / 1000;
    let bound = usize::try_from(BURST + refilled + 1).expect("small");
    assert!(
        admitted <= bound,
        "admitted {admitted} > {bound}: the limit is per instance"
    );
    assert!(refused > 0);
    assert_eq!(statuses.len(), refused + admitted);

    grpc_across_instances(&instances, &client).await;

    drop(instances);
    db.drop_database().await;
}

/// A gRPC request with `api_key` as its bearer credentials.
fn authorized<T>(message: T, api_key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {api_key}").parse().expect("ASCII");
    request.metadata_mut().insert("authorization", value);
    request
}

/// gRPC on every instance: a create retried on the others (by gRPC and by REST) is one order,
/// a page token from one instance pages on the others, and gRPC and REST calls spread over
/// the instances spend one rate-limit budget.
async fn grpc_across_instances(instances: &[Instance], client: &HttpClient) {
    use orders::grpc::pb;
    use orders::grpc::pb::order_service_client::OrderServiceClient;

    let mut clients = Vec::new();
    for instance in instances {
        let channel = tonic::transport::Channel::from_shared(instance.grpc.clone())
            .expect("a URI")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("the gRPC listener answers");
        clients.push(OrderServiceClient::new(channel));
    }
    let api_key = orders_storm::fresh_api_key();
    let call = |message| authorized(message, &api_key);
    let list_call = |message| authorized(message, &api_key);
    let order = pb::Order {
        customer_id: "cus_7".into(),
        items: vec![pb::LineItem {
            sku: "tea".into(),
            quantity: 3,
            unit_price: Some(pb::Money {
                amount: 700,
                currency: "eur".into(),
            }),
        }],
        ..pb::Order::default()
    };
    let create = || pb::CreateOrderRequest {
        order: Some(order.clone()),
        request_id: "cluster-request-1".into(),
    };
    let mut names = Vec::new();
    for grpc in &mut clients {
        let created = grpc.create_order(call(create())).await.expect("created");
        names.push(created.into_inner().name);
    }
    let body = r#"{"customer_id": "cus_7", "items": [{"sku": "tea", "quantity": 3,
        "unit_price": {"amount": 700, "currency": "eur"}}]}"#;
    let url = format!("{}/v2/orders", instances[2].url);
    let (status, _, _, rest) = post(client, &url, &api_key, "cluster-request-1", body).await;
    assert_eq!(status, StatusCode::CREATED, "{rest}");
    names.push(format!("orders/{}", rest["id"].as_str().expect("an id")));
    names.dedup();
    assert_eq!(names.len(), 1, "one order on every instance: {names:?}");

    // More orders, then a page token from instance 0 read on the others.
    for n in 0..4 {
        let mut request = create();
        request.request_id = format!("cluster-request-more-{n}");
        clients[n % 3]
            .create_order(call(request))
            .await
            .expect("created");
    }
    let list = |token: &str| pb::ListOrdersRequest {
        page_size: 2,
        page_token: token.to_owned(),
    };
    let first = clients[0]
        .list_orders(list_call(list("")))
        .await
        .expect("a page")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let mut pages = Vec::new();
    for grpc in &mut clients {
        let page = grpc
            .list_orders(list_call(list(&first.next_page_token)))
            .await
            .expect("the token pages on every instance")
            .into_inner();
        pages.push(page.orders);
    }
    assert!(pages.iter().all(|page| *page == pages[0]));
    assert_eq!(pages[0].len(), 2);

    // One budget across instances and protocols: 3 × BURST calls at once, alternating gRPC
    // and REST over the instances, admit BURST plus what refills meanwhile.
    let limited_key = orders_storm::fresh_api_key();
    let started = Instant::now();
    let sends = (0..3 * BURST).map(|n| {
        let index = usize::try_from(n).expect("small") % instances.len();
        let url = format!("{}/v2/orders?limit=1", instances[index].url);
        let (client, key) = (client.clone(), limited_key.clone());
        let mut grpc = clients[index].clone();
        async move {
            if n % 2 == 0 {
                return get(&client, &url, &key).await.0 == StatusCode::OK;
            }
            let request = authorized(pb::ListOrdersRequest::default(), &key);
            match grpc.list_orders(request).await {
                Ok(_) => true,
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                    false
                }
            }
        }
    });
    let admitted = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .filter(|admitted| *admitted)
        .count();
    let refilled =
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) * PER_SECOND / 1000;
    let bound = usize::try_from(BURST + refilled + 1).expect("small");
    assert!(
        admitted <= bound,
        "admitted {admitted} > {bound}: the budget is not shared"
    );
    assert!(admitted >= usize::try_from(BURST).expect("small") / 2);
}

/// On the embedded default (a SQLite file, no Redis) the idempotency records are in the file:
/// after a restart a retried create is replayed, and a retried cancel gets its original 200,
/// not 409 `order-not-cancellable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_survives_a_restart_on_the_embedded_default() {
    let file = guardrail_test_support::SqliteFile::new("orders_restart");
    let database = file.url();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let api_key = orders_storm::fresh_api_key();

    let mut instance = start_with(&database, &[] as &[&str]);
    wait_ready(&client, &mut instance).await;
    let orders = format!("{}/v2/orders", instance.url);
    let (status, _, _, created) = post(&client, &orders, &api_key, "create-1", NEW_ORDER).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    let cancel = format!("{orders}/{id}/cancel");
    let (status, _, _, cancelled) = post(&client, &cancel, &api_key, "cancel-1", "").await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    drop(instance);

    let mut instance = start_with(&database, &[] as &[&str]);
    wait_ready(&client, &mut instance).await;
    let orders = format!("{}/v2/orders", instance.url);
    let cancel = format!("{orders}/{id}/cancel");
    let (status, _, replayed, again) =
        post(&client, &orders, &api_key, "create-1", NEW_ORDER).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, created);
    let (status, _, replayed, again) = post(&client, &cancel, &api_key, "cancel-1", "").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, cancelled);
}

/// How many backends wait on a lock for an `INSERT INTO orders`.
async fn inserts_waiting(admin: &mut sqlx::PgConnection) -> i64 {
    let (waiting,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO orders%'",
    )
    .fetch_one(admin)
    .await
    .expect("pg_stat_activity");
    waiting
}

/// An instance killed with SIGKILL while its create waits on the database (behind a table lock
/// the test holds): the retry on another instance gets 409 `idempotency-key-in-use` with
/// `Retry-After` while the dead instance's lease runs, 201 after it, and the tenant has
/// exactly one order. Idempotency records are in PostgreSQL (no Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_request_leaves_exactly_one_order() {
    use sqlx::Connection;

    let db = guardrail_test_support::postgres_database("orders_kill9").await;
    let lease = ["--idempotency-lease-ms", "5000"];
    let mut victim = start_with(db.url(), &lease);
    let mut survivor = start_with(db.url(), &lease);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    wait_ready(&client, &mut victim).await;
    wait_ready(&client, &mut survivor).await;
    let api_key = orders_storm::fresh_api_key();

    // Inserts into `orders` now wait for the test.
    let mut locker = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE orders IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock the orders table");
    let in_flight = {
        let (client, url, key) = (
            client.clone(),
            format!("{}/v2/orders", victim.url),
            api_key.clone(),
        );
        tokio::spawn(async move {
            let request = Request::post(url)
                .header("authorization", format!("Bearer {key}"))
                .header("idempotency-key", "killed-1")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(NEW_ORDER.as_bytes())))
                .expect("request");
            client.request(request).await
        })
    };
    let mut admin = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    while inserts_waiting(&mut admin).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the create never reached the insert"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.child.kill().expect("SIGKILL");
    victim.child.wait().expect("reaped");
    assert!(
        in_flight.await.expect("joined").is_err(),
        "the killed instance never answered"
    );

    // During the dead instance's lease: in use, come back later.
    let orders = format!("{}/v2/orders", survivor.url);
    let (status, retry_after, _, problem) =
        post(&client, &orders, &api_key, "killed-1", NEW_ORDER).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/idempotency-key-in-use")),
        "{problem}"
    );
    assert!(retry_after.is_some(), "a 409 in use says when to retry");

    // The lock goes; the dead instance's insert may still commit (PostgreSQL finishes a
    // statement whose client is gone), which the orders table's unique key absorbs.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        let (status, _, _, body) = post(&client, &orders, &api_key, "killed-1", NEW_ORDER).await;
        if status != StatusCode::CONFLICT {
            assert_eq!(status, StatusCode::CREATED, "{body}");
            break body;
        }
        assert!(Instant::now() < deadline, "the lease never ran out: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (orders_of_tenant,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM orders WHERE idempotency_key = 'killed-1'")
            .fetch_one(&mut admin)
            .await
            .expect("count");
    assert_eq!(orders_of_tenant, 1, "exactly one order: {created}");
    // And the retry after that is a replay of the same order.
    let (status, _, replayed, again) =
        post(&client, &orders, &api_key, "killed-1", NEW_ORDER).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again["id"], created["id"]);

    drop(admin);
    drop(locker);
    drop(survivor);
    db.drop_database().await;
}
