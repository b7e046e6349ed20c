//! The responses the layer answers itself, and the typed reasons it records.

use std::time::Duration;

use bytes::Bytes;
use guardrail_store::StoreError;
use http::header::RETRY_AFTER;
use http::{HeaderValue, Response};
use tower_problem_details::{Problem, ProblemCatalog, ProblemKind, retry_after_seconds};

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

pub(crate) fn quota_exceeded<B: From<Bytes>>(
    catalog: &ProblemCatalog,
    policies: &[Policy],
    decisions: &Decisions,
) -> Response<B> {
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
    let retry = if never {
        None
    } else {
        decisions.retry_after().map(retry_after_seconds)
    };
    let detail = match retry {
        Some(seconds) => format!(
            "The quota of {} is used up; retry in {seconds} s.",
            violated.join(", ")
        ),
        None => format!(
            "This request costs more than the capacity of {}; it can never be admitted.",
            violated.join(", ")
        ),
    };
    let mut problem = catalog
        .problem(ProblemKind::QuotaExceeded)
        .with_detail(detail);
    // Not a standard member name, so inserting it cannot fail.
    let _ = problem.insert_extension(VIOLATED_POLICIES_MEMBER, violated.clone());
    let mut response = problem.into_response::<B>();
    if let Some(seconds) = retry {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
        .extensions_mut()
        .insert(RateLimitRejection::QuotaExceeded {
            violated_policies: violated,
        });
    response
}

/// The fail-closed answer; `error` may know when the store is next tried (an open breaker).
pub(crate) fn store_unavailable<B: From<Bytes>>(
    catalog: &ProblemCatalog,
    error: &StoreError,
) -> Response<B> {
    let mut response = catalog
        .problem(ProblemKind::RateLimitStoreUnavailable)
        .with_detail("The rate-limit store cannot be reached; the request was not processed.")
        .into_response::<B>();
    let wait = error.retry_after().unwrap_or(Duration::from_secs(1));
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(wait)));
    response
        .extensions_mut()
        .insert(RateLimitRejection::StoreUnavailable);
    response
}

pub(crate) fn missing_key<B: From<Bytes>>(problem: &Problem) -> Response<B> {
    let mut response = problem.clone().into_response::<B>();
    response
        .extensions_mut()
        .insert(RateLimitRejection::MissingKey);
    response
}
