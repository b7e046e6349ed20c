#![doc = include_str!("../README.md")]

mod breaker;
mod error;
mod finish;
#[cfg(feature = "redis")]
pub mod redis;

use std::future::Future;
use std::pin::Pin;

pub use breaker::{
    BreakerState, CircuitBreaker, DEFAULT_BACK_OFF, DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_MAX_BACK_OFF, MAX_BACK_OFF, Transition,
};
pub use error::{ConfigError, ConfigErrorKind, StoreError, StoreErrorKind};
pub use finish::Finishing;

/// What an asynchronous store call returns: a boxed, `'static` future, so that it can run
/// after the request that started it is gone (a release from a drop guard).
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;
