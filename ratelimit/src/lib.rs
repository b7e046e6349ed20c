#![doc = include_str!("../README.md")]

mod arith;
mod clock;
mod decision;
mod error;
mod future;
mod gcra;
mod headers;
mod key;
mod layer;
mod metrics;
mod policy;
mod rejection;
mod service;
mod store;
mod window;

pub use decision::{Decision, Decisions};
pub use error::{ConfigError, ConfigErrorKind};
pub use future::ResponseFuture;
#[cfg(feature = "redis")]
pub use guardrail_store::redis::RedisBackend;
pub use guardrail_store::{StoreError, StoreErrorKind};
pub use headers::{
    RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
pub use key::{ForwardedHeader, KeyExtractor, MAX_TEXT_KEY_LEN, RateLimitKey, TrustedProxies};
pub use layer::RateLimitLayer;
pub use metrics::{CounterSnapshot, DecisionEvent, Verdict};
pub use policy::{Algorithm, Policy, Quota};
pub use rejection::{RateLimitRejection, VIOLATED_POLICIES_MEMBER};
pub use service::RateLimit;
pub use store::RateLimitStore;
pub use store::memory::{MemoryPrepared, MemoryStore};
#[cfg(feature = "redis")]
pub use store::redis::{RedisFuture, RedisPrepared, RedisStore};
