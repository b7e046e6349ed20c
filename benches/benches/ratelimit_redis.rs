//! Rate limiting on Redis: decisions per second from 64 concurrent tasks through
//! [`RedisStore`], to compare with `redis-benchmark` running the same script.
//!
//! Run both side by side with `benches/ratelimit-redis.sh` (it starts this binary, then
//! `redis-benchmark -c 64` with the same `EVALSHA`, and prints the ratio).
//! Alone: `cargo bench -p guardrail-benches --bench ratelimit_redis`.
//! Environment: `REDIS_URL` (default `redis://127.0.0.1:6379`), `BENCH_SECONDS` (default 5),
//! `TASKS` (default 64). One GCRA policy that always admits (the write path), over 100k
//! caller addresses in random order. Not a criterion bench: the figure is a throughput of many
//! tasks at once, which `Bencher::iter` does not model.

// A report binary: printing the table is its whole output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower_ratelimit::{Policy, Quota, RateLimitKey, RateLimitStore, RedisBackend, RedisStore};

const KEYS: u32 = 100_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this binary too: only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ratelimit_redis: run with `cargo bench` (or benches/ratelimit-redis.sh)");
        return;
    }
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let seconds: u64 = env_or("BENCH_SECONDS", 5);
    let tasks: usize = env_or("TASKS", 64);
    let prefix = format!("rlbench-{}", std::process::id());
    let store = RedisBackend::connect(&url).await.map(|backend| {
        let backend = backend.timeout(Duration::from_secs(5)).expect("non-zero");
        RedisStore::new(backend, &prefix).expect("a valid prefix")
    });
    let store = match store {
        Ok(store) => store,
        Err(error) => {
            eprintln!("ratelimit_redis: cannot use Redis at {url}: {error}");
            std::process::exit(2);
        }
    };
    // 1 µs emission interval and a burst of a million: every decision admits and writes.
    let quota = Quota::per_second(1_000_000)
        .and_then(|q| q.with_burst(1_000_000))
        .expect("quota");
    let policy = Policy::gcra("sustained", quota).expect("policy");
    let prepared = Arc::new(store.prepare(&[policy]));
    let sample = RateLimitKey::ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    println!("key shape: {:?}", store.keys(&prepared, &sample));

    let running = Arc::new(AtomicBool::new(true));
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let (store, prepared) = (store.clone(), Arc::clone(&prepared));
        let (running, measuring) = (Arc::clone(&running), Arc::clone(&measuring));
        let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
        handles.push(tokio::spawn(async move {
            let mut state = 0x9e37_79b9_u32 ^ u32::try_from(task).expect("few tasks");
            while running.load(Ordering::Relaxed) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let key =
                    RateLimitKey::ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (state % KEYS))));
                let result = store.check(&prepared, &key, 1).await;
                if measuring.load(Ordering::Relaxed) {
                    match result {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        }));
    }
    // One second of warm-up (connections, script cache, allocator), then the timed window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    running.store(false, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.await;
    }
    let done = done.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
    let rate = done as f64 / elapsed.as_secs_f64();
    println!(
        "tower-ratelimit RedisStore, {tasks} tasks: {rate:.0} decisions/s ({done} in {elapsed:.2?}, {failed} failed)"
    );
    // No clean-up needed: with a one-second bucket, every key expires (`PX`) within a second.
}
