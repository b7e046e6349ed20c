//! Rate limiting in memory: the cost of one decision, beside governor's keyed limiter.
//!
//! Run: `cargo bench -p guardrail-benches --bench ratelimit`.
//! Targets (issue 18): a hot key at most 0.8× governor; 100k keys in random order at most
//! 1.0×; the whole layer at most 0.8× `tower_governor`'s. Both sides use an `IpAddr` key, the real clock and one policy, on the admit path (the
//! quota is too large to refuse), and both read the state that headers need: governor through
//! `StateInformationMiddleware` (its `remaining_burst_capacity`), ours through the `Decision`
//! it always returns. governor with its default no-op middleware is shown as well.
//! Bytes per key are measured by the `ratelimit_memory` bench (it needs a counting allocator,
//! which would slow every allocation here).
//!
//! `ratelimit/1m_keys_random` shows how the cost grows with resident keys (cache and TLB misses).
//! `ratelimit/layer` compares the whole layer with `tower_governor`'s, each over the same inner
//! service, keyed by the peer address, rendering its rate-limit headers, on the admit path.

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use criterion::{Criterion, criterion_group};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota as GovernorQuota, RateLimiter};
use http::{Request, Response};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;
use tower_ratelimit::{
    KeyExtractor, MemoryStore, Policy, Quota, RateLimitKey, RateLimitLayer, RateLimitStore,
    TrustedProxies,
};

/// Far more than a bench can ask for in a second: every decision admits, and writes.
const RATE: u32 = 1_000_000_000;
const KEYS: usize = 100_000;
const MANY_KEYS: usize = 1_000_000;

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
fn addresses(keys: usize) -> Vec<IpAddr> {
    (0..keys)
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
fn order(keys: usize) -> Vec<usize> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % keys as u64).expect("fits")
        })
        .collect()
}

// Prints the store's clock: which clock it reads is part of the figure.
#[allow(clippy::print_stderr)]
fn hot_key(c: &mut Criterion) {
    let address = addresses(1)[0];
    let mut group = c.benchmark_group("ratelimit/hot_key");

    let store = MemoryStore::new();
    // Which clock the store reads (tokio's when a `test-util` build leaked in): part of the figure.
    eprintln!("{store:?}");
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
    resident_keys(c, "ratelimit/100k_keys_random", KEYS);
}

fn many_keys(c: &mut Criterion) {
    resident_keys(c, "ratelimit/1m_keys_random", MANY_KEYS);
}

/// `keys` callers resident in both limiters, then visited in a fixed random order.
fn resident_keys(c: &mut Criterion, group: &str, keys: usize) {
    let addresses = addresses(keys);
    let order = order(keys);
    let mut group = c.benchmark_group(group);

    let store = MemoryStore::with_max_keys(keys).expect("non-zero");
    let prepared = store.prepare(&[policy()]);
    let resident: Vec<RateLimitKey> = addresses.iter().map(|a| RateLimitKey::ip(*a)).collect();
    for key in &resident {
        store.decide(&prepared, key, 1);
    }
    assert_eq!(store.key_count(), keys, "every key resident before timing");
    let mut next = order.iter().cycle();
    group.bench_function("tower-ratelimit", |b| {
        b.iter(|| {
            let key = &resident[*next.next().expect("cycle")];
            let decisions = store.decide(&prepared, key, 1);
            black_box(decisions.iter().next().map(|d| d.remaining()))
        });
    });

    let governor =
        RateLimiter::keyed(governor_quota()).with_middleware::<StateInformationMiddleware>();
    for address in &addresses {
        let _ = governor.check_key(address);
    }
    assert_eq!(governor.len(), keys, "every key resident before timing");
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

/// The inner service of both layers: an empty 200.
async fn ok(_request: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::empty()))
}

/// A request from `peer`, as axum's `into_make_service_with_connect_info` delivers it.
fn request(peer: SocketAddr) -> Request<Body> {
    let mut request = Request::new(Body::empty());
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// One request through a fresh clone of `service` (as a server does per connection), with its
/// response headers read back.
async fn send<S, B>(service: &S, peer: SocketAddr) -> usize
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let response = service
        .clone()
        .oneshot(request(peer))
        .await
        .expect("infallible");
    assert!(
        response.status().is_success(),
        "the quota admits every request"
    );
    response.headers().len()
}

/// Ours over the inner service, as `ratelimit/layer` measures it.
fn ours(
    decisions_in_extensions: bool,
) -> impl Service<Request<Body>, Response = Response<impl Sized>, Error = Infallible> + Clone {
    let layer = RateLimitLayer::new(
        MemoryStore::new(),
        [policy()],
        KeyExtractor::peer_ip(TrustedProxies::none()),
    )
    .expect("layer");
    let layer = if decisions_in_extensions {
        layer.decisions_in_extensions()
    } else {
        layer
    };
    layer.layer(service_fn(ok))
}

/// `tower_governor`'s over the same inner service, with its headers.
fn theirs()
-> impl Service<Request<Body>, Response = Response<impl Sized>, Error = impl std::fmt::Debug> + Clone
{
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(RATE)
        .key_extractor(PeerIpKeyExtractor)
        .use_headers()
        .finish()
        .expect("config");
    GovernorLayer::new(config).layer(service_fn(ok))
}

fn layer(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let peer = SocketAddr::new(addresses(1)[0], 40_000);
    let mut group = c.benchmark_group("ratelimit/layer");
    let (bare, ours, theirs) = (service_fn(ok), ours(false), theirs());
    group.bench_function("bare service", |b| {
        b.iter(|| black_box(runtime.block_on(send(&bare, peer))));
    });
    group.bench_function("tower-ratelimit", |b| {
        b.iter(|| black_box(runtime.block_on(send(&ours, peer))));
    });
    group.bench_function("tower_governor (use_headers)", |b| {
        b.iter(|| black_box(runtime.block_on(send(&theirs, peer))));
    });
    group.finish();
}

/// Instruction counts for `ratelimit/layer`, for `valgrind --tool=callgrind`
/// (`benches/count.sh`): `RATELIMIT_COUNT=<case>:<requests>` sends that many requests through
/// one service (`bare`, `ours`, `ours-decisions`: with `decisions_in_extensions`, `theirs`)
/// on a current-thread runtime, and no criterion bench;
/// a run of 0 requests gives the set-up's count to subtract.
fn count(case: &str, requests: u64) {
    let runtime = guardrail_benches::current_thread();
    let peer = SocketAddr::new(addresses(1)[0], 40_000);
    let (bare, theirs) = (service_fn(ok), theirs());
    let (ours, with_decisions) = (ours(false), ours(true));
    for _ in 0..requests {
        let headers = match case {
            "bare" => runtime.block_on(send(&bare, peer)),
            "ours" => runtime.block_on(send(&ours, peer)),
            "ours-decisions" => runtime.block_on(send(&with_decisions, peer)),
            "theirs" => runtime.block_on(send(&theirs, peer)),
            other => panic!("unknown case {other}: bare, ours, ours-decisions or theirs"),
        };
        black_box(headers);
    }
}

criterion_group!(benches, hot_key, random_keys, many_keys, layer);

fn main() {
    if let Some((case, requests)) = guardrail_benches::count_request("RATELIMIT_COUNT") {
        count(&case, requests);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
