//! Invariants of the algorithms, through the memory store on a paused clock.

use std::future::Future;
use std::time::Duration;

use proptest::prelude::*;
use tower_ratelimit::{MemoryStore, Policy, Quota, RateLimitKey, RateLimitStore};

fn paused<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(test);
}

async fn advance(nanos: u64) {
    tokio::time::advance(Duration::from_nanos(nanos)).await;
}

fn arrivals() -> impl Strategy<Value = Vec<(u64, u64)>> {
    // (gap before the arrival in ms, cost)
    prop::collection::vec((0u64..400, 1u64..4), 1..60)
}

/// The token bucket as textbooks state it, in integer nanoseconds: the level is kept scaled
/// by the emission interval so that refills are exact.
struct TokenBucket {
    level: u64,
    capacity: u64,
    interval: u64,
    last: u64,
}

impl TokenBucket {
    fn admit(&mut self, now: u64, cost: u64) -> bool {
        self.level = (self.level + (now - self.last)).min(self.capacity * self.interval);
        self.last = now;
        if self.level >= cost * self.interval {
            self.level -= cost * self.interval;
            true
        } else {
            false
        }
    }
}

/// The sliding window counter recomputed from the log of admitted requests.
fn window_admits(log: &[(u64, u64)], now: u64, window: u64, limit: u64, cost: u64) -> bool {
    let index = now / window;
    let count = |i: u64| -> u64 {
        log.iter()
            .filter(|(t, _)| *t / window == i)
            .map(|(_, c)| c)
            .sum()
    };
    let current = count(index);
    let previous = if index == 0 { 0 } else { count(index - 1) };
    let elapsed = now % window;
    u128::from(previous) * u128::from(window - elapsed)
        + u128::from(current + cost) * u128::from(window)
        <= u128::from(limit) * u128::from(window)
}

proptest! {
    #[test]
    fn prop_gcra_matches_a_token_bucket_and_never_exceeds_burst_plus_rate_times_t(
        per_second in 1u64..50, burst in 1u64..10, arrivals in arrivals()
    ) {
        paused(async move {
            let quota = Quota::per_second(per_second).unwrap().with_burst(burst).unwrap();
            let interval = u64::try_from(quota.emission_interval().as_nanos()).unwrap();
            let store = MemoryStore::new();
            let prepared = store.prepare(&[Policy::gcra("p", quota).unwrap()]);
            let key = RateLimitKey::new("k");
            let mut model = TokenBucket { level: burst * interval, capacity: burst, interval, last: 0 };
            let mut now = 0;
            let mut admitted = Vec::new();
            for (gap, cost) in arrivals {
                advance(gap * 1_000_000).await;
                now += gap * 1_000_000;
                let decisions = store.decide(&prepared, &key, cost);
                let expected = cost <= burst && model.admit(now, cost);
                assert_eq!(decisions.allowed(), expected, "at {now} ns, cost {cost}");
                if expected {
                    let remaining = decisions.iter().next().unwrap().remaining();
                    assert_eq!(remaining, model.level / interval, "remaining at {now} ns");
                }
                if decisions.allowed() {
                    admitted.push((now, cost));
                }
            }
            for (i, &(start, _)) in admitted.iter().enumerate() {
                let mut units = 0;
                for &(end, cost) in &admitted[i..] {
                    units += cost;
                    assert!(units * interval <= burst * interval + (end - start));
                }
            }
        });
    }

    #[test]
    fn prop_sliding_window_matches_the_recount_from_the_log(
        limit in 1u64..12, window_secs in 1u64..4, arrivals in arrivals()
    ) {
        paused(async move {
            let window = Duration::from_secs(window_secs);
            let store = MemoryStore::new();
            let prepared = store.prepare(&[Policy::sliding_window("w", limit, window).unwrap()]);
            let key = RateLimitKey::new("k");
            let nanos = window_secs * 1_000_000_000;
            let mut log = Vec::new();
            // The store's clock starts at 1 ns (0 marks a new bucket).
            let mut now = 1;
            for (gap, cost) in arrivals {
                advance(gap * 10_000_000).await;
                now += gap * 10_000_000;
                let decisions = store.decide(&prepared, &key, cost);
                let expected = cost <= limit && window_admits(&log, now, nanos, limit, cost);
                assert_eq!(decisions.allowed(), expected, "at {now} ns, cost {cost}");
                if decisions.allowed() {
                    log.push((now, cost));
                }
            }
        });
    }

    #[test]
    fn prop_a_refused_request_is_admitted_exactly_at_its_retry_after_and_not_before(
        gcra: bool, limit in 1u64..8, used in 1u64..20, cost in 1u64..3, gap in 0u64..2_000
    ) {
        prop_assume!(cost <= limit);
        paused(async move {
            let policy = if gcra {
                Policy::gcra("p", Quota::per_second(limit).unwrap()).unwrap()
            } else {
                Policy::sliding_window("p", limit, Duration::from_secs(1)).unwrap()
            };
            let store = MemoryStore::new();
            let prepared = store.prepare(&[policy]);
            let key = RateLimitKey::new("k");
            advance(gap * 1_000_000).await;
            let mut refused = None;
            for _ in 0..used {
                let decisions = store.decide(&prepared, &key, cost);
                if !decisions.allowed() {
                    refused = decisions.retry_after();
                    break;
                }
            }
            let Some(wait) = refused else { return };
            assert!(!wait.is_zero());
            advance(u64::try_from(wait.as_nanos()).unwrap() - 1).await;
            assert!(!store.decide(&prepared, &key, cost).allowed(), "admitted before {wait:?}");
            advance(1).await;
            assert!(store.decide(&prepared, &key, cost).allowed(), "refused at {wait:?}");
        });
    }

    #[test]
    fn prop_a_refusal_by_one_policy_consumes_nothing_from_the_others(
        tight in 1u64..4, loose in 5u64..20, requests in 1usize..30
    ) {
        paused(async move {
            let store = MemoryStore::new();
            let both = store.prepare(&[
                Policy::gcra("loose", Quota::per_minute(loose).unwrap()).unwrap(),
                Policy::gcra("tight", Quota::per_minute(tight).unwrap()).unwrap(),
            ]);
            let loose_only = store.prepare(&[
                Policy::gcra("loose", Quota::per_minute(loose).unwrap()).unwrap(),
            ]);
            let key = RateLimitKey::new("k");
            let mut admitted = 0;
            for _ in 0..requests {
                if store.decide(&both, &key, 1).allowed() {
                    admitted += 1;
                }
            }
            assert_eq!(admitted, requests.min(usize::try_from(tight).unwrap()));
            // The loose policy was only charged for the admitted requests.
            let left = store.decide(&loose_only, &key, 1);
            assert_eq!(left.iter().next().unwrap().remaining(), loose - admitted as u64 - 1);
        });
    }
}
