//! The Redis back end over a fake connection, on a paused clock.

use std::sync::Arc;
use std::time::Duration;

use guardrail_store::redis::RedisBackend;
use guardrail_store::{BreakerState, CircuitBreaker, StoreErrorKind};
use guardrail_test_support::{FakeRedis, Reply};
use redis::Script;

#[tokio::test(start_paused = true)]
async fn callers_that_give_up_before_the_deadline_still_open_the_breaker() {
    let redis = FakeRedis::new(Reply::Hang);
    let backend = RedisBackend::new(redis.clone())
        .timeout(Duration::from_millis(200))
        .unwrap()
        .breaker(CircuitBreaker::new().failure_threshold(3).unwrap());
    let script = Arc::new(Script::new("return 1"));
    // Every caller waits 50 ms, a quarter of the store's deadline, then goes away.
    for _ in 0..3 {
        let call = backend.eval::<i64, _>(&script, |_| {});
        assert!(
            tokio::time::timeout(Duration::from_millis(50), call)
                .await
                .is_err()
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backend.circuit_breaker().state(), BreakerState::Open);
    let error = backend.eval::<i64, _>(&script, |_| {}).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::CircuitOpen);
    assert_eq!(redis.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn essential_calls_pass_an_open_breaker_and_are_not_counted_by_it() {
    let redis = FakeRedis::new(Reply::Refuse);
    let backend = RedisBackend::new(redis.clone())
        .breaker(CircuitBreaker::new().failure_threshold(1).unwrap());
    let script = Arc::new(Script::new("return 1"));
    let _ = backend.eval::<i64, _>(&script, |_| {}).await;
    assert_eq!(backend.circuit_breaker().state(), BreakerState::Open);

    redis.set(Reply::always(redis::Value::Int(1)));
    assert_eq!(
        backend
            .eval_essential::<i64, _>(&script, |_| {})
            .await
            .unwrap(),
        1
    );
    assert_eq!(redis.calls(), 2, "sent although the breaker is open");
    assert_eq!(
        backend.circuit_breaker().state(),
        BreakerState::Open,
        "and its success does not close it: only a probe does"
    );
}
