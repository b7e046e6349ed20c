//! The response headers: `RateLimit-Policy`, `RateLimit`, `Retry-After`, legacy `X-RateLimit-*`.

use http::{HeaderName, HeaderValue, Response};
use sfv::{KeyRef, ListSerializer, StringRef};

use crate::decision::Decisions;
use crate::layer::Config;
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

/// `"burst";q=80;w=2, "hourly";q=2000;w=3600`. For GCRA, `w` is the time the bucket takes to
/// refill from empty (whole seconds, rounded up, at least 1) and `q` the most the policy can
/// admit in any window of `w` seconds: a full bucket plus every unit that refills during the
/// window. So `q` never understates what a client may send, whatever the burst and rate
/// (`prop_policy_header_never_understates` checks it against the algorithm itself).
pub(crate) fn policy_header(policies: &[Policy]) -> HeaderValue {
    let mut list = ListSerializer::new();
    for policy in policies {
        let (quota, window) = match policy.algorithm() {
            Algorithm::Gcra(quota) => gcra_quota_window(&quota),
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

/// `(q, w)` of a GCRA quota: see [`policy_header`].
fn gcra_quota_window(quota: &crate::policy::Quota) -> (u64, u64) {
    let interval = u128::from(quota.emission_interval_nanos().max(1));
    let refill = interval.saturating_mul(u128::from(quota.burst()));
    let window_secs = refill.div_ceil(1_000_000_000).max(1);
    // Within a closed window of w: the full bucket at its start, then one unit per interval.
    let refilled = window_secs * 1_000_000_000 / interval;
    let narrow = |value: u128| u64::try_from(value).unwrap_or(u64::MAX);
    (
        quota.burst().saturating_add(narrow(refilled)),
        narrow(window_secs),
    )
}

/// The `RateLimit` header of one limiter, with its fixed parts serialized once: each policy's
/// name as a structured-field string (by `sfv`, which does the escaping) followed by `;r=`.
/// Only the integers are written per response: serializing the whole list through `sfv` on
/// every response was a sixth of the layer's own cost (perf on the `ratelimit/layer` bench).
#[derive(Clone, Debug)]
pub(crate) struct RateLimitHeader {
    prefixes: Box<[Box<[u8]>]>,
}

impl RateLimitHeader {
    pub(crate) fn new(policies: &[Policy]) -> Self {
        let prefixes = policies
            .iter()
            .map(|policy| {
                let mut list = ListSerializer::new();
                let _ = list.bare_item(name(policy));
                let mut prefix = list.finish().expect("one item").into_bytes();
                prefix.extend_from_slice(b";r=");
                prefix.into_boxed_slice()
            })
            .collect();
        RateLimitHeader { prefixes }
    }

    /// `"burst";r=5;t=1, "hourly";r=900`: `t` is left out when the quota is full. The same
    /// bytes as serializing the list through `sfv` (`prop_rendered_header_is_sfvs`).
    fn render(&self, decisions: &Decisions) -> HeaderValue {
        let mut text = Vec::with_capacity(self.prefixes.iter().map(|p| p.len() + 24).sum());
        let mut digits = itoa::Buffer::new();
        for (index, (prefix, decision)) in self.prefixes.iter().zip(decisions).enumerate() {
            if index > 0 {
                text.extend_from_slice(b", ");
            }
            text.extend_from_slice(prefix);
            text.extend_from_slice(
                digits
                    .format(i64::from(integer(decision.remaining())))
                    .as_bytes(),
            );
            if !decision.reset().is_zero() {
                text.extend_from_slice(b";t=");
                let reset = integer(ceil_secs(decision.reset()));
                text.extend_from_slice(digits.format(i64::from(reset)).as_bytes());
            }
        }
        // As a boxed slice: `Bytes` takes a `Vec` with spare capacity through a second
        // allocation, where shrinking in place costs none.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text.into_boxed_slice()))
            .expect("structured fields are visible ASCII")
    }
}

/// `"burst";r=5;t=1, "hourly";r=900`, serialized item by item through `sfv`: the oracle of
/// [`RateLimitHeader::render`].
#[cfg(test)]
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

/// What a decided response gets on its way out: the rate-limit headers, rendered when the
/// decision is made, and the decisions, left in the extensions for outer layers.
pub(crate) struct Stamp {
    policy: HeaderValue,
    ratelimit: HeaderValue,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` of the tightest policy, when asked for
    /// (boxed: most layers never ask, and the stamp waits in every response future).
    legacy: Option<Box<[HeaderValue; 3]>>,
    /// Kept for the response extensions, when the layer is asked to (boxed, as `legacy`: the
    /// stamp is moved with every response future, and most layers never ask).
    decisions: Option<Box<Decisions>>,
}

impl Stamp {
    pub(crate) fn new(config: &Config, decisions: Decisions) -> Self {
        let legacy = config
            .legacy_headers
            .then(|| decisions.iter().min_by_key(|d| d.remaining()))
            .flatten()
            .map(|tightest| {
                Box::new([
                    HeaderValue::from(tightest.limit()),
                    HeaderValue::from(tightest.remaining()),
                    HeaderValue::from(ceil_secs(tightest.reset())),
                ])
            });
        Stamp {
            policy: config.policy_header.clone(),
            ratelimit: config.ratelimit_header.render(&decisions),
            legacy,
            decisions: config.decisions_extension.then(|| Box::new(decisions)),
        }
    }

    /// Writes the headers, and leaves the decisions in the extensions if they were kept.
    pub(crate) fn apply<B>(self, response: &mut Response<B>) {
        let headers = response.headers_mut();
        headers.insert(RATELIMIT_POLICY, self.policy);
        headers.insert(RATELIMIT, self.ratelimit);
        if let Some(legacy) = self.legacy {
            let [limit, remaining, reset] = *legacy;
            headers.insert(X_RATELIMIT_LIMIT, limit);
            headers.insert(X_RATELIMIT_REMAINING, remaining);
            headers.insert(X_RATELIMIT_RESET, reset);
        }
        if let Some(decisions) = self.decisions {
            response.extensions_mut().insert(*decisions);
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::gcra_quota_window;
    use crate::gcra::check;
    use crate::policy::Quota;

    /// The most a greedy client gets admitted in the closed window `[0, w]`, starting from a
    /// full bucket, by asking again the moment the algorithm says it may.
    fn admitted_in_window(quota: &Quota, window: Duration) -> u64 {
        let interval = quota.emission_interval_nanos();
        let end = u64::try_from(window.as_nanos()).expect("a short window");
        let (mut tat, mut now, mut admitted) = (0_u64, 0_u64, 0_u64);
        while now <= end {
            let (decision, new_tat) = check(tat, now, interval, quota.burst(), 1);
            match new_tat {
                Some(new_tat) => {
                    tat = new_tat;
                    admitted += 1;
                }
                None => {
                    let wait = decision.retry_after().expect("a refusal says when");
                    now += u64::try_from(wait.as_nanos()).expect("a short wait").max(1);
                }
            }
        }
        admitted
    }

    #[test]
    fn ten_per_second_with_a_burst_of_one_says_ten_per_second() {
        let quota = Quota::per_second(10)
            .and_then(|q| q.with_burst(1))
            .expect("valid");
        assert_eq!(gcra_quota_window(&quota), (11, 1));
        assert_eq!(admitted_in_window(&quota, Duration::from_secs(1)), 11);
    }

    proptest! {
        #[test]
        fn prop_policy_header_never_understates(
            limit in 1_u64..=200,
            period_secs in prop::sample::select(vec![1_u64, 2, 10, 60]),
            burst in 1_u64..=200,
        ) {
            let quota = Quota::new(limit, Duration::from_secs(period_secs))
                .and_then(|q| q.with_burst(burst))
                .expect("valid");
            let (q, w) = gcra_quota_window(&quota);
            prop_assert!(w >= 1);
            let admitted = admitted_in_window(&quota, Duration::from_secs(w));
            // Never understated, and exact: no more than the algorithm admits either.
            prop_assert_eq!(q, admitted, "limit {} per {} s, burst {}", limit, period_secs, burst);
        }
    }
}

#[cfg(test)]
mod render_tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::{RateLimitHeader, ratelimit_header};
    use crate::decision::{Decision, Decisions};
    use crate::policy::{Policy, Quota};

    fn decision() -> impl Strategy<Value = Decision> {
        let figure = prop_oneof![0_u64..1_000, Just(u64::MAX), any::<u64>()];
        let nanos = prop_oneof![Just(0_u64), 1_u64..5_000_000_000, any::<u64>()];
        (
            figure.clone(),
            figure,
            nanos,
            1_u64..=1_000_000_000,
            any::<u8>(),
        )
            .prop_map(|(limit, remaining, nanos, interval, kind)| match kind % 4 {
                0 => Decision::admitted(limit, remaining, Duration::from_nanos(nanos)),
                1 => Decision::refused(limit, remaining, Duration::from_nanos(nanos)),
                2 => Decision::too_costly(limit),
                // A deficit the bucket can hold: at most burst × interval.
                _ => Decision::gcra_admitted(
                    limit,
                    nanos.min(limit.saturating_mul(interval)),
                    interval,
                ),
            })
    }

    proptest! {
        #[test]
        fn prop_rendered_header_is_sfvs(
            names in prop::collection::vec("[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,20}", 1..4),
            decisions in prop::collection::vec(decision(), 4),
        ) {
            let mut names = names;
            names.sort();
            names.dedup();
            let quota = Quota::per_second(10).expect("quota");
            let policies: Vec<Policy> = names
                .iter()
                .map(|name| Policy::gcra(name.as_str(), quota).expect("a valid name"))
                .collect();
            let decisions = Decisions::new(decisions.into_iter().take(policies.len()));
            prop_assert_eq!(
                RateLimitHeader::new(&policies).render(&decisions),
                ratelimit_header(&policies, &decisions)
            );
        }
    }
}
