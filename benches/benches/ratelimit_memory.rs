//! Rate limiting in memory: bytes held per key, beside governor's keyed limiter.
//!
//! Run: `cargo bench -p guardrail-benches --bench ratelimit_memory`.
//! Target (DESIGN.md): at most 64 bytes per key. dhat's counting allocator measures the live
//! heap before and after `n` distinct IPv6 callers are admitted once, for several `n`: hash
//! tables grow by doubling, so the figure moves with how full the table happens to be.
//! (Not a criterion bench: it measures space, and the counting allocator would distort timings.)

// A report binary: printing the table is its whole output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use governor::{Quota as GovernorQuota, RateLimiter};
use tower_ratelimit::{MemoryStore, Policy, Quota, RateLimitKey, RateLimitStore};

// dhat's allocator counts the live heap; the workspace forbids `unsafe`, so a hand-written
// counting allocator is not an option, and dhat is the standard tool for heap accounting.
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// The `i`-th caller, in its own /56 (the store groups IPv6 callers by /56).
fn address(i: u64) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        (0x2001_0db8_u128 << 96)
            | (u128::from(i) << 72)
            | u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    ))
}

/// Bytes currently allocated.
fn live() -> u64 {
    u64::try_from(dhat::HeapStats::get().curr_bytes).expect("fits")
}

fn per_key(before: u64, after: u64, n: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // Byte counts far below 2^52.
    let bytes = after.saturating_sub(before) as f64;
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    bytes / n
}

fn ours(n: u64) -> f64 {
    let store = MemoryStore::with_max_keys(usize::try_from(n).expect("fits")).expect("non-zero");
    let policy =
        Policy::gcra("sustained", Quota::per_second(1_000).expect("quota")).expect("policy");
    let prepared = store.prepare(&[policy]);
    let keys: Vec<RateLimitKey> = (0..n).map(|i| RateLimitKey::ip(address(i))).collect();
    // The keys the caller built are not the store's cost; only what the store keeps is.
    let before = live();
    for key in &keys {
        store.decide(&prepared, key, 1);
    }
    let after = live();
    assert_eq!(store.key_count() as u64, n);
    drop(keys);
    per_key(before, after, n)
}

fn governor(n: u64) -> f64 {
    let limiter = RateLimiter::keyed(GovernorQuota::per_second(
        NonZeroU32::new(1_000).expect("non-zero"),
    ));
    let keys: Vec<IpAddr> = (0..n).map(address).collect();
    let before = live();
    for key in &keys {
        let _ = limiter.check_key(key);
    }
    let after = live();
    assert_eq!(limiter.len() as u64, n);
    per_key(before, after, n)
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this binary too, so keep
    // that run small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[u64] = if quick {
        &[1_000]
    } else {
        &[10_000, 100_000, 500_000, 1_000_000, 2_000_000]
    };
    println!("ratelimit/bytes_per_key (IPv6 keys, one GCRA policy; live heap delta / keys)");
    println!(
        "{:>10}  {:>16}  {:>10}  {:>6}",
        "keys", "tower-ratelimit", "governor", "ratio"
    );
    for &n in sizes {
        let ours = ours(n);
        let theirs = governor(n);
        println!(
            "{n:>10}  {ours:>16.1}  {theirs:>10.1}  {:>6.2}",
            ours / theirs
        );
    }
}
