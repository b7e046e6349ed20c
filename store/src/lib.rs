//! Store plumbing shared by the API guardrail crates (`tower-idempotency`,
//! `tower-ratelimit`) and by stores of your own:
//!
//! - [`StoreError`], the one error every store returns, with a [`kind`](StoreError::kind)
//!   that tells an outage from a bad reply and an open breaker;
//! - [`CircuitBreaker`], which makes calls fail at once while a store is down, probes it
//!   with one call after a back-off, and closes again when it answers, so an outage costs
//!   the layers' fail-open or fail-closed answer, not a timeout per request;
//! - the Redis back end (feature `redis`): [`redis::RedisBackend`] (connection set-up,
//!   deadline, breaker, scripts with `NOSCRIPT` fallback) and [`redis::KeyPrefix`].
//!
//! ```
//! use std::time::Duration;
//! use guardrail_store::{BreakerState, CircuitBreaker, StoreError, StoreErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::new()
//!     .failure_threshold(3)?
//!     .back_off(Duration::from_millis(100), Duration::from_millis(500))?
//!     .on_transition(|t| println!("store breaker: {} -> {}", t.from.as_str(), t.to.as_str()));
//!
//! // A store call that times out, three times in a row...
//! for _ in 0..3 {
//!     let call = async { Err::<u64, _>(StoreError::new(StoreErrorKind::Timeout, "slow")) };
//!     assert!(breaker.run(call).await.is_err());
//! }
//! // ...opens the breaker: the next call is not made, and says when to come back.
//! let error = breaker.run(async { Ok(1) }).await.unwrap_err();
//! assert_eq!(error.kind(), StoreErrorKind::CircuitOpen);
//! assert_eq!(breaker.state(), BreakerState::Open);
//! # Ok(())
//! # }
//! ```

mod breaker;
mod error;
#[cfg(feature = "redis")]
pub mod redis;

use std::future::Future;
use std::pin::Pin;

pub use breaker::{
    BreakerState, CircuitBreaker, DEFAULT_BACK_OFF, DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_MAX_BACK_OFF, Transition,
};
pub use error::{ConfigError, ConfigErrorKind, StoreError, StoreErrorKind};

/// What an asynchronous store call returns: a boxed, `'static` future, so that it can run
/// after the request that started it is gone (a release from a drop guard).
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;
