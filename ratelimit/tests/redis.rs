//! The Redis store against a real Redis: shared limits, cluster key layout, one round trip per
//! request, and failure and recovery.

use std::time::Duration;

use bytes::Bytes;
use guardrail_test_support::{RedisServer, redis};
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_ratelimit::{KeyExtractor, Policy, Quota, RateLimitLayer, RedisBackend, RedisStore};

/// A store on its own back end (its own connection and breaker), scripts loaded.
async fn connect(url: &str, prefix: &str) -> RedisStore {
    let backend = RedisBackend::connect(url).await.unwrap();
    let store = RedisStore::new(backend, prefix).unwrap();
    store.preload().await.unwrap();
    store
}

type Body = Full<Bytes>;

fn service<C>(
    layer: RateLimitLayer<RedisStore<C>>,
) -> impl Service<
    Request<Body>,
    Response = Response<tower_problem_details::ResponseBody<Body>>,
    Error = BoxError,
> + Clone
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<Body>| async {
            Ok::<_, BoxError>(Response::new(Body::from("ok")))
        }))
}

fn request(key: &str) -> Request<Body> {
    Request::get("/")
        .header("x-api-key", key)
        .body(Body::default())
        .unwrap()
}

fn api_key() -> KeyExtractor {
    KeyExtractor::header(HeaderName::from_static("x-api-key"))
}

fn policies() -> [Policy; 2] {
    [
        Policy::gcra("burst", Quota::per_minute(3).unwrap()).unwrap(),
        Policy::sliding_window("hourly", 100, Duration::from_secs(3600)).unwrap(),
    ]
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Five requests of one caller alternating between two instances: the first three pass (the
/// burst of 3 per minute), the others are refused with a `Retry-After` within the minute.
async fn alternate_until_refused<S>(a: &S, b: &S)
where
    S: Service<Request<Body>, Response = Response<tower_problem_details::ResponseBody<Body>>>
        + Clone,
    S::Error: std::fmt::Debug,
{
    let mut statuses = Vec::new();
    for i in 0..5 {
        let service = if i % 2 == 0 { a.clone() } else { b.clone() };
        let response = service.oneshot(request("shared-key")).await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=20).contains(&wait), "retry-after {wait}");
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn two_layer_instances_on_one_redis_share_one_limit() {
    let redis = redis("two_layer_instances_on_one_redis_share_one_limit");
    let prefix = redis.prefix().trim_end_matches(':');
    // Two "instances": separate stores, connections and layers.
    let a = service(
        RateLimitLayer::new(connect(redis.url(), prefix).await, policies(), api_key()).unwrap(),
    );
    let b = service(
        RateLimitLayer::new(connect(redis.url(), prefix).await, policies(), api_key()).unwrap(),
    );
    alternate_until_refused(&a, &b).await;

    // Every key of one decision carries the same hash tag, so the script runs on one cluster
    // slot; the raw API key never appears.
    let mut redis_connection = connection(redis.url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{prefix}*"))
        .query_async(&mut redis_connection)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let tags: Vec<&str> = keys
        .iter()
        .map(|key| &key[key.find('{').unwrap() + 1..key.find('}').unwrap()])
        .collect();
    assert_eq!(tags[0], tags[1], "{keys:?}");
    assert!(
        keys.iter()
            .all(|key| key.starts_with('{') && !key.contains("shared-key")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn mixing_global_and_per_key_policies_tags_every_key_with_the_prefix() {
    let redis = redis("mixing_global_and_per_key_policies");
    let prefix = redis.prefix().trim_end_matches(':');
    let store = connect(redis.url(), prefix).await;
    // A slow rate, so that its key outlives the check below: a GCRA key lives until its bucket
    // has refilled (at 1000 per second, a millisecond, which a loaded machine can miss).
    let global = Policy::gcra(
        "global",
        Quota::new(1000, Duration::from_secs(3600)).unwrap(),
    )
    .unwrap()
    .global();
    let layer = RateLimitLayer::new(store, [policies()[0].clone(), global], api_key()).unwrap();
    let response = service(layer).oneshot(request("k1")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut redis_connection = connection(redis.url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{prefix}*"))
        .query_async(&mut redis_connection)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .all(|key| key.starts_with(&format!("{{{prefix}}}:"))),
        "{keys:?}"
    );
}

/// Calls per command, from `INFO commandstats`. Commands run inside scripts are counted too,
/// under their own names.
async fn command_calls(
    connection: &mut redis::aio::MultiplexedConnection,
) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn each_request_costs_exactly_one_redis_round_trip() {
    // A private server, so that no other test's commands are counted.
    let server = RedisServer::spawn().unwrap();
    let store = connect(&server.url(), "rt").await;
    let service = service(RateLimitLayer::new(store, policies(), api_key()).unwrap());
    let mut observer = connection(&server.url()).await;
    let before = command_calls(&mut observer).await;
    for i in 0..20 {
        service
            .clone()
            .oneshot(request(&format!("k{}", i % 3)))
            .await
            .unwrap();
    }
    let after = command_calls(&mut observer).await;
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    assert_eq!(delta("evalsha"), 20, "one EVALSHA per request");
    // Everything else the client could have sent: nothing but our own INFO.
    let inside_the_script = [
        "time", "get", "set", "hmget", "hset", "pexpire", "evalsha", "info",
    ];
    for name in after.keys() {
        if !inside_the_script.contains(&name.as_str()) {
            assert_eq!(delta(name), 0, "unexpected `{name}` commands");
        }
    }
}

#[tokio::test]
async fn redis_down_fails_open_or_closed_and_recovers_when_it_returns() {
    let server = RedisServer::spawn().unwrap();
    let port = server.port();
    let url = server.url();
    let open_layer =
        RateLimitLayer::new(connect(&url, "down").await, policies(), api_key()).unwrap();
    let closed_layer = RateLimitLayer::new(connect(&url, "down").await, policies(), api_key())
        .unwrap()
        .fail_closed();
    let (open, closed) = (service(open_layer.clone()), service(closed_layer.clone()));
    assert_eq!(
        open.clone().oneshot(request("k")).await.unwrap().status(),
        StatusCode::OK
    );

    drop(server);
    let response = open.clone().oneshot(request("k")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "fail open");
    assert!(!response.headers().contains_key("ratelimit"));
    let response = closed.clone().oneshot(request("k")).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "fail closed"
    );
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(open_layer.counters().store_errors >= 1);
    assert!(closed_layer.counters().store_errors >= 1);

    // Back on the same port: both layers decide again without being rebuilt.
    let _server = RedisServer::spawn_on(port).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        let response = closed.clone().oneshot(request("k")).await.unwrap();
        if response.status() == StatusCode::OK && response.headers().contains_key("ratelimit") {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store did not recover after Redis came back");
    // The fail-open layer's connection reconnects on its own schedule too.
    let mut recovered = false;
    for _ in 0..50 {
        let response = open.clone().oneshot(request("k")).await.unwrap();
        if response.headers().contains_key("ratelimit") {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the fail-open store did not recover after Redis came back"
    );
}

#[tokio::test]
async fn same_named_policies_with_other_parameters_never_share_state() {
    let redis = redis("same_named_policies_with_other_parameters");
    let prefix = redis.prefix().trim_end_matches(':');
    let gcra = Policy::gcra("p", Quota::per_minute(2).unwrap()).unwrap();
    let window = Policy::sliding_window("p", 5, Duration::from_secs(60)).unwrap();
    let a = RateLimitLayer::new(connect(redis.url(), prefix).await, [gcra], api_key()).unwrap();
    let b = RateLimitLayer::new(connect(redis.url(), prefix).await, [window], api_key()).unwrap();
    for _ in 0..2 {
        for layer in [&a, &b] {
            let response = service(layer.clone())
                .oneshot(request("same"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                response.headers().contains_key("ratelimit"),
                "decided, not failed open"
            );
        }
    }
    assert_eq!(a.counters().store_errors + b.counters().store_errors, 0);
}

/// A store on a Redis Cluster connection, scripts loaded.
async fn connect_cluster(
    cluster: &guardrail_test_support::TestRedisCluster,
) -> RedisStore<guardrail_store::redis::ClusterConnection> {
    let backend = RedisBackend::connect_cluster(cluster.urls()).await.unwrap();
    let store = RedisStore::new(backend, cluster.prefix().trim_end_matches(':')).unwrap();
    store.preload().await.unwrap();
    store
}

/// On a cluster: two instances share one limit, each caller's keys share one slot (its own
/// hash tag), and callers spread over every master.
#[tokio::test]
async fn on_a_cluster_callers_share_limits_and_spread_over_every_master() {
    let cluster = guardrail_test_support::redis_cluster("ratelimit_cluster_spread");
    let a = service(
        RateLimitLayer::new(connect_cluster(&cluster).await, policies(), api_key()).unwrap(),
    );
    let b = service(
        RateLimitLayer::new(connect_cluster(&cluster).await, policies(), api_key()).unwrap(),
    );
    alternate_until_refused(&a, &b).await;
    for caller in 0..60 {
        let response = a
            .clone()
            .oneshot(request(&format!("caller-{caller}")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let prefix = cluster.prefix().trim_end_matches(':');
    let by_master = cluster.keys_by_master(&format!("{{{prefix}:*"));
    // Two keys (two policies) per caller, the shared key's caller included.
    assert_eq!(by_master.iter().map(Vec::len).sum::<usize>(), 2 * 61);
    assert!(
        by_master.iter().all(|keys| !keys.is_empty()),
        "callers on every master: {:?}",
        by_master.iter().map(Vec::len).collect::<Vec<_>>()
    );
    for keys in &by_master {
        for key in keys {
            let tag = &key[1..key.find('}').unwrap()];
            assert_eq!(cluster.slot(key), cluster.slot(tag), "{key}");
        }
    }
}

/// On a cluster, a layer that mixes a global policy with per-key ones pins all its keys to
/// the slot of its prefix: one shard carries that layer (the hot shard the crate docs name).
#[tokio::test]
async fn on_a_cluster_a_global_policy_pins_the_layer_to_one_slot() {
    let cluster = guardrail_test_support::redis_cluster("ratelimit_cluster_global");
    let prefix = cluster.prefix().trim_end_matches(':').to_owned();
    let global = Policy::gcra(
        "global",
        Quota::new(1000, Duration::from_secs(3600)).unwrap(),
    )
    .unwrap()
    .global();
    let layer = RateLimitLayer::new(
        connect_cluster(&cluster).await,
        [policies()[0].clone(), global],
        api_key(),
    )
    .unwrap();
    let service = service(layer);
    for caller in 0..20 {
        let response = service
            .clone()
            .oneshot(request(&format!("caller-{caller}")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let by_master = cluster.keys_by_master(&format!("{{{prefix}}}:*"));
    let holding: Vec<usize> = by_master.iter().map(Vec::len).collect();
    assert_eq!(holding.iter().sum::<usize>(), 21, "{holding:?}");
    assert_eq!(
        holding.iter().filter(|n| **n > 0).count(),
        1,
        "one shard: {holding:?}"
    );
    let slot = cluster.slot(&prefix);
    assert!(
        by_master
            .iter()
            .flatten()
            .all(|key| cluster.slot(key) == slot)
    );
}
