//! Three `orders` processes on one PostgreSQL and one Redis: a retry storm across them creates
//! exactly one order per key, a cursor from one instance works on the others, and the rate
//! limit is global, not per instance.
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

fn start(database: &str, redis_url: &str, prefix: &str) -> Instance {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_orders"));
    // The developer's own `ORDERS_*` settings must not configure the instances.
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("ORDERS_")) {
        command.env_remove(key);
    }
    let child = command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", database])
        .args(["--redis", redis_url, "--redis-prefix", prefix])
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
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn get(client: &HttpClient, url: &str, api_key: &str) -> (StatusCode, Value) {
    let request = Request::get(url)
        .header("authorization", format!("Bearer {api_key}"))
        .body(Full::default())
        .expect("request");
    let response = client.request(request).await.expect("the instance answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn wait_ready(client: &HttpClient, instance: &Instance) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
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
    let db = guardrail_test_support::postgres_database("orders_cluster").await;
    let database = db.url().to_owned();
    let instances: Vec<Instance> = (0..3)
        .map(|_| start(&database, redis.url(), redis.prefix()))
        .collect();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    for instance in &instances {
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

    drop(instances);
    db.drop_database().await;
}
