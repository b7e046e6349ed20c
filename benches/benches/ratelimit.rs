//! Rate limiting in memory: the cost of one decision, beside governor's keyed limiter.
//!
//! Run: `cargo bench -p guardrail-benches --bench ratelimit`.
//! Targets (issue 3): a hot key within 1.0× of governor; 100k keys in random order within
//! 1.2×. Both sides use an `IpAddr` key, the real clock and one policy, on the admit path (the
//! quota is too large to refuse), and both read the state that headers need: governor through
//! `StateInformationMiddleware` (its `remaining_burst_capacity`), ours through the `Decision`
//! it always returns. governor with its default no-op middleware is shown as well.
//! Bytes per key are measured by the `ratelimit_memory` bench (it needs a counting allocator,
//! which would slow every allocation here).

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota as GovernorQuota, RateLimiter};
use tower_ratelimit::{MemoryStore, Policy, Quota, RateLimitKey, RateLimitStore};

/// Far more than a bench can ask for in a second: every decision admits, and writes.
const RATE: u32 = 1_000_000_000;
const KEYS: usize = 100_000;

fn governor_quota() -> GovernorQuota {
    GovernorQuota::per_second(NonZeroU32::new(RATE).expect("non-zero"))
}

fn policy() -> Policy {
    Policy::gcra(
        "sustained",
        Quota::per_second(u64::from(RATE)).expect("quota"),
    )
    .expect("policy")
}

/// Distinct client addresses, each in its own /56 (the store groups IPv6 callers by /56).
fn addresses() -> Vec<IpAddr> {
    (0..KEYS)
        .map(|i| {
            let i = u64::try_from(i).expect("small");
            IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_u128 << 96)
                    | (u128::from(i) << 72)
                    | u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            ))
        })
        .collect()
}

/// A fixed pseudo-random visiting order (xorshift), the same for both sides.
fn order() -> Vec<usize> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % KEYS as u64).expect("fits")
        })
        .collect()
}

fn hot_key(c: &mut Criterion) {
    let address = addresses()[0];
    let mut group = c.benchmark_group("ratelimit/hot_key");

    let store = MemoryStore::new();
    let prepared = store.prepare(&[policy()]);
    let key = RateLimitKey::ip(address);
    group.bench_function("tower-ratelimit", |b| {
        b.iter(|| {
            let decisions = store.decide(&prepared, black_box(&key), 1);
            black_box(decisions.iter().next().map(|d| d.remaining()))
        });
    });

    let governor =
        RateLimiter::keyed(governor_quota()).with_middleware::<StateInformationMiddleware>();
    group.bench_function("governor (state information)", |b| {
        b.iter(|| {
            black_box(
                governor
                    .check_key(black_box(&address))
                    .map(|state| state.remaining_burst_capacity()),
            )
        });
    });

    let governor_bare = RateLimiter::keyed(governor_quota());
    group.bench_function("governor (no-op middleware)", |b| {
        b.iter(|| black_box(governor_bare.check_key(black_box(&address)).is_ok()));
    });
    group.finish();
}

fn random_keys(c: &mut Criterion) {
    let addresses = addresses();
    let order = order();
    let mut group = c.benchmark_group("ratelimit/100k_keys_random");

    let store = MemoryStore::new();
    let prepared = store.prepare(&[policy()]);
    let keys: Vec<RateLimitKey> = addresses.iter().map(|a| RateLimitKey::ip(*a)).collect();
    for key in &keys {
        store.decide(&prepared, key, 1);
    }
    assert_eq!(store.key_count(), KEYS, "every key resident before timing");
    let mut next = order.iter().cycle();
    group.bench_function("tower-ratelimit", |b| {
        b.iter(|| {
            let key = &keys[*next.next().expect("cycle")];
            let decisions = store.decide(&prepared, key, 1);
            black_box(decisions.iter().next().map(|d| d.remaining()))
        });
    });

    let governor =
        RateLimiter::keyed(governor_quota()).with_middleware::<StateInformationMiddleware>();
    for address in &addresses {
        let _ = governor.check_key(address);
    }
    assert_eq!(governor.len(), KEYS, "every key resident before timing");
    let mut next = order.iter().cycle();
    group.bench_function("governor (state information)", |b| {
        b.iter(|| {
            let address = &addresses[*next.next().expect("cycle")];
            black_box(
                governor
                    .check_key(address)
                    .map(|state| state.remaining_burst_capacity()),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, hot_key, random_keys);
criterion_main!(benches);
