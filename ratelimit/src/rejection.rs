//! The rejections the layer answers itself, and the typed reasons it records.

use std::time::Duration;

use guardrail_store::StoreError;
use tower_problem_details::{Problem, ProblemCatalog, ProblemKind, Rejection, retry_after_seconds};

use crate::decision::Decisions;
use crate::policy::Policy;

/// The problem member listing the policies that refused a request.
pub const VIOLATED_POLICIES_MEMBER: &str = "violated-policies";

/// Why the layer answered a request itself. Put into the response extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitRejection {
    /// 429: the named policies refused the request.
    QuotaExceeded {
        /// The refusing policies' names.
        violated_policies: Vec<String>,
    },
    /// 503: the store failed and the layer fails closed.
    StoreUnavailable,
    /// The request had no key to be limited by.
    MissingKey,
}

/// The 429 `quota-exceeded` rejection, with the typed reason.
pub(crate) fn quota_exceeded(
    catalog: &ProblemCatalog,
    policies: &[Policy],
    decisions: &Decisions,
) -> (Rejection, RateLimitRejection) {
    let violated: Vec<String> = policies
        .iter()
        .zip(decisions)
        .filter(|(_, decision)| !decision.allowed())
        .map(|(policy, _)| policy.name().to_owned())
        .collect();
    // A refusal that no wait can cure (the cost exceeds a capacity) gets no Retry-After, even
    // when another refusing policy has a wait.
    let never = decisions
        .iter()
        .any(|decision| !decision.allowed() && decision.retry_after().is_none());
    let wait = if never { None } else { decisions.retry_after() };
    let detail = match wait {
        Some(wait) => format!(
            "The quota of {} is used up; retry in {} s.",
            violated.join(", "),
            retry_after_seconds(wait)
        ),
        None => format!(
            "This request costs more than the capacity of {}; it can never be admitted.",
            violated.join(", ")
        ),
    };
    let mut rejection = catalog
        .rejection(ProblemKind::QuotaExceeded)
        .with_detail(detail);
    for name in &violated {
        let description = if never {
            "the request costs more than the quota's capacity"
        } else {
            "the quota is used up"
        };
        rejection = rejection.with_quota_violation(name.clone(), description);
    }
    if let Some(wait) = wait {
        rejection = rejection.with_retry_after(wait);
    }
    // Not a standard member name, so inserting it cannot fail.
    let _ = rejection
        .problem_mut()
        .insert_extension(VIOLATED_POLICIES_MEMBER, violated.clone());
    let reason = RateLimitRejection::QuotaExceeded {
        violated_policies: violated,
    };
    (rejection, reason)
}

/// The fail-closed rejection; `error` may know when the store is next tried (an open breaker).
pub(crate) fn store_unavailable(catalog: &ProblemCatalog, error: &StoreError) -> Rejection {
    catalog
        .rejection(ProblemKind::RateLimitStoreUnavailable)
        .with_detail("The rate-limit store cannot be reached; the request was not processed.")
        .with_retry_after(error.retry_after().unwrap_or(Duration::from_secs(1)))
}

/// The rejection of a request without a key.
pub(crate) fn missing_key(catalog: &ProblemCatalog, problem: &Problem) -> Rejection {
    catalog.rejection_of(problem.clone())
}
