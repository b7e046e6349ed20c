//! The response headers: `RateLimit-Policy`, `RateLimit`, `Retry-After`, legacy `X-RateLimit-*`.

use http::{HeaderMap, HeaderName, HeaderValue};
use sfv::{KeyRef, ListSerializer, StringRef};

use crate::decision::{Decision, Decisions};
use crate::policy::{Algorithm, Policy, ceil_secs};

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// Legacy `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// Legacy `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// Legacy `X-RateLimit-Reset` (delta seconds, as in the early drafts).
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

fn integer(value: u64) -> sfv::Integer {
    i64::try_from(value)
        .ok()
        .and_then(|v| sfv::Integer::try_from(v).ok())
        .unwrap_or(sfv::Integer::MAX)
}

fn name(policy: &Policy) -> &StringRef {
    StringRef::from_str(policy.name()).expect("policy names are checked to be plain ASCII")
}

/// `"burst";q=20;w=2, "hourly";q=1000;w=3600`: for GCRA, `q` is the burst and `w` the time
/// the bucket takes to refill from empty (whole seconds, rounded up), so `q/w` is the rate.
pub(crate) fn policy_header(policies: &[Policy]) -> HeaderValue {
    let mut list = ListSerializer::new();
    for policy in policies {
        let (quota, window) = match policy.algorithm() {
            Algorithm::Gcra(quota) => (
                quota.burst(),
                ceil_secs(
                    quota
                        .emission_interval()
                        .saturating_mul(u32::try_from(quota.burst()).unwrap_or(u32::MAX)),
                )
                .max(1),
            ),
            Algorithm::SlidingWindow { limit, window } => (limit, window.as_secs()),
        };
        let _ = list
            .bare_item(name(policy))
            .parameter(KeyRef::constant("q"), integer(quota))
            .parameter(KeyRef::constant("w"), integer(window));
    }
    let text = list.finish().expect("a limiter has at least one policy");
    HeaderValue::try_from(text).expect("structured fields are visible ASCII")
}

/// `"burst";r=5;t=1, "hourly";r=900`: `t` is left out when the quota is full.
fn ratelimit_header(policies: &[Policy], decisions: &Decisions) -> HeaderValue {
    let mut list = ListSerializer::new();
    for (policy, decision) in policies.iter().zip(decisions) {
        let item = list
            .bare_item(name(policy))
            .parameter(KeyRef::constant("r"), integer(decision.remaining()));
        if !decision.reset().is_zero() {
            let _ = item.parameter(KeyRef::constant("t"), integer(ceil_secs(decision.reset())));
        }
    }
    let text = list.finish().expect("a limiter has at least one policy");
    HeaderValue::try_from(text).expect("structured fields are visible ASCII")
}

/// Writes the headers every response gets.
pub(crate) fn stamp(
    headers: &mut HeaderMap,
    policy_header: &HeaderValue,
    policies: &[Policy],
    decisions: &Decisions,
    legacy: bool,
) {
    headers.insert(RATELIMIT_POLICY, policy_header.clone());
    headers.insert(RATELIMIT, ratelimit_header(policies, decisions));
    if legacy && let Some(tightest) = decisions.iter().min_by_key(|d| d.remaining()) {
        stamp_legacy(headers, tightest);
    }
}

fn stamp_legacy(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(decision.limit()));
    headers.insert(
        X_RATELIMIT_REMAINING,
        HeaderValue::from(decision.remaining()),
    );
    headers.insert(
        X_RATELIMIT_RESET,
        HeaderValue::from(ceil_secs(decision.reset())),
    );
}
