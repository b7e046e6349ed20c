//! Counters and the decision hook, for exporting what the limiter does.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::Decisions;
use crate::key::RateLimitKey;
use crate::policy::Policy;
use guardrail_store::StoreError;

/// Totals since the layer was built, shared by every clone.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    allowed: AtomicU64,
    rejected: AtomicU64,
    shadow_rejected: AtomicU64,
    store_errors: AtomicU64,
    missing_key: AtomicU64,
}

impl Counters {
    pub(crate) fn count(&self, event: &DecisionEvent<'_>) {
        let counter = match event.verdict {
            Verdict::Allowed(_) => &self.allowed,
            Verdict::Rejected(_) => &self.rejected,
            Verdict::ShadowRejected(_) => &self.shadow_rejected,
            Verdict::StoreError { .. } => &self.store_errors,
            Verdict::MissingKey => &self.missing_key,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            allowed: self.allowed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            shadow_rejected: self.shadow_rejected.load(Ordering::Relaxed),
            store_errors: self.store_errors.load(Ordering::Relaxed),
            missing_key: self.missing_key.load(Ordering::Relaxed),
        }
    }
}

/// The layer's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Requests every policy admitted.
    pub allowed: u64,
    /// Requests answered 429.
    pub rejected: u64,
    /// Requests a policy refused but shadow mode let through.
    pub shadow_rejected: u64,
    /// Requests the store could not decide (let through or answered 503, per the layer).
    pub store_errors: u64,
    /// Requests without a key, answered with the missing-key problem.
    pub missing_key: u64,
}

/// What happened to one request, as given to the [`on_decision`] hook.
///
/// [`on_decision`]: crate::RateLimitLayer::on_decision
#[derive(Debug)]
#[non_exhaustive]
pub struct DecisionEvent<'a> {
    /// The caller; `None` when the request had no key.
    pub key: Option<&'a RateLimitKey>,
    /// The layer's policies, in the order of the decisions.
    pub policies: &'a [Policy],
    /// What the layer did with the request.
    pub verdict: Verdict<'a>,
}

/// What the layer did with a request, in a [`DecisionEvent`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict<'a> {
    /// Every policy admitted the request.
    Allowed(&'a Decisions),
    /// A policy refused: answered 429.
    Rejected(&'a Decisions),
    /// A policy refused, but the layer is in shadow mode: let through.
    ShadowRejected(&'a Decisions),
    /// The store failed.
    StoreError {
        /// The error.
        error: &'a StoreError,
        /// Whether the layer answered 503 (fail closed) rather than letting the request through.
        rejected: bool,
    },
    /// The request had no key.
    MissingKey,
}

pub(crate) type Hook = Arc<dyn Fn(&DecisionEvent<'_>) + Send + Sync>;

pub(crate) struct HookDebug<'a>(pub(crate) &'a Option<Hook>);

impl fmt::Debug for HookDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<fn>)"
        } else {
            "None"
        })
    }
}
