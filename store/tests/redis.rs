//! The Redis back end against private `redis-server`s that the tests freeze, stop and bring
//! back (never the shared server other tests use).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use guardrail_store::redis::RedisBackend;
use guardrail_store::{BreakerState, CircuitBreaker, StoreErrorKind};
use guardrail_test_support::RedisServer;
use redis::Script;
use tokio::time::{Instant, sleep};

type Seen = Arc<Mutex<Vec<(BreakerState, BreakerState)>>>;

async fn backend(url: &str) -> (RedisBackend, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let breaker = CircuitBreaker::new()
        .failure_threshold(3)
        .unwrap()
        .on_transition(move |t| log.lock().unwrap().push((t.from, t.to)));
    let backend = RedisBackend::connect(url)
        .await
        .unwrap()
        .timeout(Duration::from_millis(100))
        .unwrap()
        .breaker(breaker);
    (backend, seen)
}

fn script() -> Arc<Script> {
    Arc::new(Script::new("return tonumber(ARGV[1]) + 1"))
}

async fn add_one(backend: &RedisBackend, n: i64) -> Result<i64, guardrail_store::StoreError> {
    backend
        .eval::<i64, _>(&script(), move |i| {
            i.arg(n);
        })
        .await
}

/// Calls until one succeeds, for at most `within`.
async fn until_it_answers(backend: &RedisBackend, within: Duration) -> Vec<StoreErrorKind> {
    let deadline = Instant::now() + within;
    let mut errors = Vec::new();
    loop {
        match add_one(backend, 1).await {
            Ok(2) => return errors,
            Ok(other) => panic!("1 + 1 = {other}"),
            Err(e) => errors.push(e.kind()),
        }
        assert!(
            Instant::now() < deadline,
            "no answer within {within:?}: {errors:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_frozen_server_opens_the_breaker_and_calls_fail_fast_until_it_thaws() {
    let server = RedisServer::spawn().unwrap();
    let (backend, seen) = backend(&server.url()).await;
    assert_eq!(add_one(&backend, 41).await.unwrap(), 42);

    server.pause();
    for _ in 0..3 {
        let error = add_one(&backend, 1).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Timeout);
    }
    assert_eq!(backend.circuit_breaker().state(), BreakerState::Open);
    let error = add_one(&backend, 1).await.unwrap_err();
    assert_eq!(
        error.kind(),
        StoreErrorKind::CircuitOpen,
        "not sent to Redis"
    );
    assert!(error.retry_after().is_some());

    server.resume();
    until_it_answers(&backend, Duration::from_secs(5)).await;
    assert_eq!(backend.circuit_breaker().state(), BreakerState::Closed);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.first(),
        Some(&(BreakerState::Closed, BreakerState::Open))
    );
    assert_eq!(
        seen.last(),
        Some(&(BreakerState::HalfOpen, BreakerState::Closed))
    );
}

#[tokio::test]
async fn a_stopped_server_opens_the_breaker_and_the_backend_recovers_when_it_returns() {
    let server = RedisServer::spawn().unwrap();
    let port = server.port();
    let (backend, _) = backend(&server.url()).await;
    assert_eq!(add_one(&backend, 1).await.unwrap(), 2);

    drop(server);
    let mut kinds = Vec::new();
    while backend.circuit_breaker().state() == BreakerState::Closed {
        kinds.push(add_one(&backend, 1).await.unwrap_err().kind());
        assert!(
            kinds.len() <= 3,
            "three outages open the breaker: {kinds:?}"
        );
    }
    assert!(
        kinds.iter().all(|k| k.is_outage()),
        "a stopped server is an outage: {kinds:?}"
    );
    assert_eq!(
        add_one(&backend, 1).await.unwrap_err().kind(),
        StoreErrorKind::CircuitOpen
    );

    let _back = RedisServer::spawn_on(port).unwrap();
    until_it_answers(&backend, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_server_that_lost_its_scripts_gets_them_again_in_the_same_call() {
    let server = RedisServer::spawn().unwrap();
    let (backend, _) = backend(&server.url()).await;
    backend.preload(&[&script()]).await.unwrap();
    let mut connection = backend.connection().clone();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(add_one(&backend, 6).await.unwrap(), 7);
}

#[tokio::test]
async fn a_script_error_is_a_bad_reply_and_never_opens_the_breaker() {
    let server = RedisServer::spawn().unwrap();
    let (backend, _) = backend(&server.url()).await;
    let broken = Arc::new(Script::new("return redis.call('NOSUCHCOMMAND')"));
    for _ in 0..5 {
        let error = backend.eval::<i64, _>(&broken, |_| {}).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::BadReply);
    }
    assert_eq!(backend.circuit_breaker().state(), BreakerState::Closed);
}
