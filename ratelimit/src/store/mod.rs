//! Where buckets live: the [`RateLimitStore`] trait and its two implementations.

use std::future::Future;

use crate::decision::Decisions;
use crate::key::RateLimitKey;
use crate::policy::Policy;
use guardrail_store::StoreError;

pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// A place that keeps buckets and decides requests against them.
///
/// Implementations must decide all of a request's policies as one step: admit only if every
/// policy admits, consume from every policy then, and from none when any refuses.
pub trait RateLimitStore: Send + Sync + 'static {
    /// What the store precomputes for one set of policies (tables, script arguments).
    type Prepared: Send + Sync + 'static;
    /// The decision in progress.
    type Future: Future<Output = Result<Decisions, StoreError>> + Send + 'static;

    /// Prepares to decide `policies`; called once per limiter.
    fn prepare(&self, policies: &[Policy]) -> Self::Prepared;

    /// Decides a request of `cost` units from `key` against the prepared policies.
    fn check(&self, prepared: &Self::Prepared, key: &RateLimitKey, cost: u64) -> Self::Future;

    /// The same decision as [`check`](Self::check), when the store can make it without
    /// waiting (the memory store): the layer then calls the inner service from its own `call`,
    /// without holding the request in its future. `None` (the default) means the layer awaits
    /// [`check`](Self::check). A store returning `Some` must have consumed exactly what
    /// `check` would have.
    fn check_now(
        &self,
        prepared: &Self::Prepared,
        key: &RateLimitKey,
        cost: u64,
    ) -> Option<Result<Decisions, StoreError>> {
        let _ = (prepared, key, cost);
        None
    }
}
