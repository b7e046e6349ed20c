//! The Redis store against a real Redis: the conformance suite, exactly-once execution across
//! two instances, round trips, and failure and recovery.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use guardrail_test_support::{RedisServer, redis};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_idempotency::{IdempotencyLayer, RedisBackend, RedisStore, Scope, conformance};

/// A store on its own back end (its own connection and breaker), scripts loaded.
async fn connect(url: &str, prefix: &str) -> RedisStore {
    let backend = RedisBackend::connect(url).await.unwrap();
    let store = RedisStore::new(backend, prefix).unwrap();
    store.preload().await.unwrap();
    store
}

type Body = Full<Bytes>;
/// What the handler behind the layer reads.
type Inner = tower_idempotency::RequestBody<Body>;
/// What the layer answers with.
type Out = tower_idempotency::ResponseBody<Body>;

fn post(key: &str) -> Request<Body> {
    Request::post("/orders")
        .header("idempotency-key", key)
        .header("x-tenant", "acme")
        .body(Body::from("{\"sku\":\"A1\"}"))
        .unwrap()
}

/// One "instance": its own store, connection and layer, around a handler counting its runs.
async fn instance(
    url: &str,
    prefix: &str,
    runs: &Arc<AtomicUsize>,
) -> impl Service<Request<Body>, Response = Response<Out>, Error = Infallible, Future: Send>
+ Clone
+ use<> {
    let store = connect(url, prefix).await;
    let runs = Arc::clone(runs);
    ServiceBuilder::new()
        .layer(IdempotencyLayer::new(
            store,
            Scope::header(http::HeaderName::from_static("x-tenant")),
        ))
        .service(service_fn(move |_: Request<Inner>| {
            let runs = Arc::clone(&runs);
            async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut response = Response::new(Body::from(format!("order {run}")));
                *response.status_mut() = StatusCode::CREATED;
                Ok::<_, Infallible>(response)
            }
        }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_keeps_the_contract() {
    let redis = redis("idempotency_redis_store_keeps_the_contract");
    let store = connect(redis.url(), redis.prefix().trim_end_matches(':')).await;
    conformance::run(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_requests_on_two_instances_run_once() {
    let redis = redis("idempotency_sixty_four_concurrent_requests_on_two_instances");
    let prefix = redis.prefix().trim_end_matches(':');
    let runs = Arc::new(AtomicUsize::new(0));
    let a = instance(redis.url(), prefix, &runs).await;
    let b = instance(redis.url(), prefix, &runs).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let service = if i % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            barrier.wait().await;
            service.oneshot(post("storm-1")).await.unwrap()
        });
    }
    let mut statuses = Vec::new();
    while let Some(response) = tasks.join_next().await {
        let response = response.unwrap();
        if response.status() == StatusCode::CONFLICT {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        statuses.push(response.status());
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "exactly one execution across both instances"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT)
    );
    let replay = b.oneshot(post("storm-1")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
}

async fn evalsha_calls(connection: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| {
            let stats = line.strip_prefix("cmdstat_evalsha:")?;
            stats
                .split(',')
                .find_map(|s| s.strip_prefix("calls="))?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_first_execution_costs_two_round_trips_and_a_replay_one() {
    // A private server, so that no other test's commands are counted.
    let server = RedisServer::spawn().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let service = instance(&server.url(), "rt", &runs).await;
    let mut observer = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let before = evalsha_calls(&mut observer).await;
    service.clone().oneshot(post("k")).await.unwrap();
    let after_first = evalsha_calls(&mut observer).await;
    assert_eq!(after_first - before, 2, "claim + complete");
    service.oneshot(post("k")).await.unwrap();
    assert_eq!(
        evalsha_calls(&mut observer).await - after_first,
        1,
        "claim only"
    );
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut observer)
        .await
        .unwrap();
    // The client sent nothing but scripts (plus the initial SCRIPT LOAD, connection set-up,
    // and the harness's PING and our INFO); GET, SET, PTTL ran inside the scripts.
    for line in info.lines().filter_map(|l| l.strip_prefix("cmdstat_")) {
        let name = line.split(':').next().unwrap();
        assert!(
            [
                "evalsha",
                "info",
                "ping",
                "script|load",
                "get",
                "set",
                "pttl",
                "hello",
                "client|setinfo",
            ]
            .contains(&name),
            "unexpected command {name}"
        );
    }
}

#[tokio::test]
async fn redis_down_gets_503_without_running_and_recovers_without_a_restart() {
    let server = RedisServer::spawn().unwrap();
    let port = server.port();
    let runs = Arc::new(AtomicUsize::new(0));
    let service = instance(&server.url(), "down", &runs).await;
    service.clone().oneshot(post("before")).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    drop(server);
    let response = service.clone().oneshot(post("during")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "nothing runs while the store is down"
    );

    let _server = RedisServer::spawn_on(port).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        let response = service.clone().oneshot(post("after")).await.unwrap();
        if response.status() == StatusCode::CREATED {
            recovered = true;
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store did not recover after Redis came back");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_frozen_redis_mid_stream_fails_closed_fast_and_recovers_when_it_thaws() {
    let server = RedisServer::spawn().unwrap();
    let store = connect(&server.url(), "frozen").await;
    let breaker = store.backend().circuit_breaker().clone();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let service = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(
            store,
            Scope::header(http::HeaderName::from_static("x-tenant")),
        ))
        .service(service_fn(move |_: Request<Inner>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::from("created"))) }
        }));

    // A stream of requests from 8 clients, running while the server freezes and thaws.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let statuses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (service, stop, statuses) =
                (service.clone(), Arc::clone(&stop), Arc::clone(&statuses));
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("c{client}-{n}");
                    let response = service.clone().oneshot(post(&key)).await.unwrap();
                    statuses.lock().unwrap().push(response.status());
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.pause();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while breaker.state() == guardrail_store::BreakerState::Closed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker never opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ran_before = runs.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        ran_before,
        "nothing runs while the store is frozen (fail closed)"
    );

    server.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while runs.load(Ordering::SeqCst) == ran_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request ran after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let statuses = statuses.lock().unwrap();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "only 200 or 503: {statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::SERVICE_UNAVAILABLE));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_keeps_the_contract_on_a_cluster() {
    let cluster = guardrail_test_support::redis_cluster("idempotency_cluster_contract");
    let store = connect_cluster(&cluster).await;
    conformance::run(&store).await;
}

/// Every script touches one key, with no hash tag: keys spread over every master, each on the
/// shard of its own slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_every_master_of_a_cluster() {
    use tower_idempotency::{Claim, Fingerprint, IdempotencyStore};

    let cluster = guardrail_test_support::redis_cluster("idempotency_cluster_spread");
    let store = connect_cluster(&cluster).await;
    let mut keys = Vec::new();
    for _ in 0..60 {
        let key = conformance::fresh_key();
        let claim = store
            .claim(
                key,
                Fingerprint::from_bytes([1; 32]),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(matches!(claim, Claim::Claimed(_)));
        keys.push(store.redis_key(&key));
    }
    let prefix = cluster.prefix().trim_end_matches(':');
    let by_master = cluster.keys_by_master(&format!("{prefix}:*"));
    assert_eq!(by_master.iter().map(Vec::len).sum::<usize>(), 60);
    assert!(
        by_master.iter().all(|keys| !keys.is_empty()),
        "keys on every master: {:?}",
        by_master.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(keys.iter().all(|key| !key.contains('{')));
}

/// `durable`: writes wait for a replica in the same round trip. With the replicas frozen, a
/// claim is refused as an outage (the handler would not run); thawed, the store keeps its
/// contract, a flushed script cache included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_writes_wait_for_a_replica_and_fail_when_none_acknowledges() {
    use guardrail_store::redis::Durability;
    use tower_idempotency::{Claim, Fingerprint, IdempotencyStore};

    let nodes = tokio::task::spawn_blocking(|| guardrail_test_support::ClusterNodes::start(1))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let backend = RedisBackend::connect_cluster(&nodes.urls()).await.unwrap();
    let store = RedisStore::new(backend, "durable")
        .unwrap()
        .durable(Durability::new(1, Duration::from_millis(100)).unwrap())
        .unwrap();
    store.preload().await.unwrap();
    conformance::run(&store).await;

    for replica in nodes.replicas() {
        replica.pause();
    }
    let error = store
        .claim(
            conformance::fresh_key(),
            Fingerprint::from_bytes([1; 32]),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(error.kind().is_outage(), "refused as an outage: {error}");
    for replica in nodes.replicas() {
        replica.resume();
    }

    // A primary that lost its scripts (a restart, a failover) gets them again in the call.
    for url in nodes.urls() {
        let mut connection = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut connection)
            .unwrap();
    }
    // Past the breaker's back-off after the refused claim.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let claim = store
        .claim(
            conformance::fresh_key(),
            Fingerprint::from_bytes([1; 32]),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Claimed(_)));
}

#[test]
fn a_durable_wait_must_fit_in_the_call_deadline() {
    use guardrail_store::ConfigErrorKind;
    use guardrail_store::redis::Durability;

    assert_eq!(
        Durability::new(0, Duration::from_millis(10))
            .unwrap_err()
            .kind(),
        &ConfigErrorKind::Durability
    );
    let connection = guardrail_test_support::FakeRedis::new(guardrail_test_support::Reply::Refuse);
    let store = RedisStore::new(RedisBackend::new(connection), "p").unwrap();
    // The default call deadline is 250 ms.
    let too_long = Durability::new(1, Duration::from_millis(250)).unwrap();
    assert_eq!(
        store.durable(too_long).unwrap_err().kind(),
        &ConfigErrorKind::Durability
    );
}

/// A primary killed with SIGKILL (two replicas each): the cluster elects a replica, the store
/// finds the new primary by itself and its durable writes are acknowledged again (by the
/// replica that moved to the new primary), and every claim made before is still there (a
/// retry of it is in flight, never claimed again). The replicas were in sync here; the
/// failover example shows what a lagging replica loses without `durable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_survive_a_failover_and_a_durable_store_follows_it() {
    use guardrail_store::redis::Durability;
    use std::time::Instant;
    use tower_idempotency::{Claim, Fingerprint, IdempotencyStore};

    let mut nodes = tokio::task::spawn_blocking(|| guardrail_test_support::ClusterNodes::start(2))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let backend = RedisBackend::connect_cluster(&nodes.urls()).await.unwrap();
    let store = RedisStore::new(backend, "failover")
        .unwrap()
        .durable(Durability::new(1, Duration::from_millis(100)).unwrap())
        .unwrap();
    store.preload().await.unwrap();
    let fingerprint = Fingerprint::from_bytes([3; 32]);
    let lease = Duration::from_secs(60);
    let mut held = Vec::new();
    for _ in 0..30 {
        let key = conformance::fresh_key();
        let claim = store.claim(key, fingerprint, lease).await.unwrap();
        assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
        held.push(key);
    }

    nodes.kill_master(0);
    let nodes = tokio::task::spawn_blocking(move || {
        nodes.await_failover_of(0).unwrap_or_else(|e| panic!("{e}"));
        nodes
    })
    .await
    .unwrap();

    // The client learns the new layout on its own; calls may fail meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store
            .claim(conformance::fresh_key(), fingerprint, lease)
            .await
        {
            Ok(Claim::Claimed(_)) => break,
            other => assert!(Instant::now() < deadline, "never recovered: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in held {
        let claim = store.claim(key, fingerprint, lease).await.unwrap();
        assert!(
            matches!(claim, Claim::InFlight { .. }),
            "an acknowledged claim was lost in the failover: {claim:?}"
        );
    }
    drop(nodes);
}
