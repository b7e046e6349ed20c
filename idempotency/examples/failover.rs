//! A retry storm against `RedisStore` on a local Redis Cluster with one replica per primary,
//! while a primary dies: how many keys run their handler twice, with and without
//! `RedisStore::durable` (`WAIT` for one replica).
//!
//! ```sh
//! cargo run --release -p tower-idempotency --features redis --example failover
//! ```
//!
//! Each mode gets a fresh cluster (three primaries with two replicas each, started from
//! `redis-server`, node timeout 2 s) and the same storm: `CLIENTS` clients work through `KEYS`
//! keys, retrying a key on 409 (in flight) and 503 (store down) until it is answered 201, for
//! at most `KEY_DEADLINE`. One second in, both replicas of primary 0 are frozen (`SIGSTOP`)
//! and cut off from it (`CLIENT KILL TYPE replica`), as in a network partition: what primary
//! 0 acknowledges from then on reaches no replica. Half a second later primary 0 is killed
//! (`SIGKILL`) and the replicas thawed; the cluster elects the more up-to-date one once
//! the node timeout has passed. When the storm is over, every key is sent once more (a
//! client's late retry). A key whose handler ran more than once is a duplicate.

// The report is this program's output.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use guardrail_store::redis::{Durability, RedisBackend};
use guardrail_test_support::ClusterNodes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_idempotency::{IdempotencyLayer, RedisStore, RequestBody, Scope};

const KEYS: usize = 20_000;
const CLIENTS: usize = 32;
const KEY_DEADLINE: Duration = Duration::from_secs(15);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const HANDLER_TIME: Duration = Duration::from_millis(5);

/// What one storm measured.
#[derive(Debug, Default)]
struct Report {
    keys: usize,
    executions: u64,
    duplicates: usize,
    unresolved: usize,
    late_in_flight: usize,
    unavailable: u64,
    in_flight: u64,
    failover: Duration,
    elapsed: Duration,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for durable in [false, true] {
        let report = storm(durable).await?;
        rows.push((durable, report));
    }
    println!(
        "| mode | keys | handler runs | keys run twice | keys unresolved after {} s | late retries answered 409 | 503 answers | 409 answers | failover took | storm took |",
        KEY_DEADLINE.as_secs()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (durable, r) in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s | {:.1} s |",
            if durable {
                "`durable` (WAIT 1 replica, 100 ms)"
            } else {
                "default (asynchronous replication)"
            },
            r.keys,
            r.executions,
            r.duplicates,
            r.unresolved,
            r.late_in_flight,
            r.unavailable,
            r.in_flight,
            r.failover.as_secs_f64(),
            r.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

async fn storm(durable: bool) -> Result<Report, Box<dyn std::error::Error>> {
    let mut nodes = tokio::task::block_in_place(|| ClusterNodes::start(2))?;
    let backend = RedisBackend::connect_cluster(&nodes.urls()).await?;
    let mut store = RedisStore::new(backend, "failover")?;
    if durable {
        store = store.durable(Durability::new(1, Duration::from_millis(100))?)?;
    }
    store.preload().await?;
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let service = {
        let runs = Arc::clone(&runs);
        ServiceBuilder::new()
            .layer(IdempotencyLayer::new(
                store,
                Scope::header(HeaderName::from_static("x-tenant")),
            ))
            .service(service_fn(
                move |request: Request<RequestBody<Full<Bytes>>>| {
                    let runs = Arc::clone(&runs);
                    async move {
                        let key = request.headers()["idempotency-key"]
                            .to_str()
                            .unwrap_or_default()
                            .to_owned();
                        *runs.lock().expect("not poisoned").entry(key).or_default() += 1;
                        tokio::time::sleep(HANDLER_TIME).await;
                        let mut response = Response::new(Full::<Bytes>::from("created"));
                        *response.status_mut() = StatusCode::CREATED;
                        Ok::<_, Infallible>(response)
                    }
                },
            ))
    };
    let send = move |key: String| {
        let service = service.clone();
        async move {
            let request = Request::post("/orders")
                .header("idempotency-key", key)
                .header("x-tenant", "acme")
                .body(Full::<Bytes>::from("{}"))
                .expect("a request");
            service.oneshot(request).await.map(|r| r.status())
        }
    };
    let counts: Arc<Mutex<(u64, u64, usize)>> = Arc::default();
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (send, counts) = (send.clone(), Arc::clone(&counts));
        clients.spawn(async move {
            for n in (client..KEYS).step_by(CLIENTS) {
                let key = format!("key-{n}");
                let deadline = Instant::now() + KEY_DEADLINE;
                loop {
                    let status = send(key.clone()).await.unwrap_or(StatusCode::BAD_GATEWAY);
                    if status == StatusCode::CREATED {
                        break;
                    }
                    let gave_up = {
                        let mut counts = counts.lock().expect("not poisoned");
                        match status {
                            StatusCode::SERVICE_UNAVAILABLE => counts.0 += 1,
                            StatusCode::CONFLICT => counts.1 += 1,
                            _ => {}
                        }
                        let gave_up = Instant::now() >= deadline;
                        if gave_up {
                            counts.2 += 1;
                        }
                        gave_up
                    };
                    if gave_up {
                        break;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        });
    }
    // The fault, while the storm runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for replica in nodes.replicas_of(0) {
        replica.pause();
    }
    nodes.cut_replication_of(0)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes.kill_master(0);
    for replica in nodes.replicas_of(0) {
        replica.resume();
    }
    let failover = tokio::task::block_in_place(|| nodes.await_failover_of(0))?;
    while clients.join_next().await.is_some() {}
    // A late retry of every key, after the failover. A 409 here is a key whose completion
    // was lost with primary 0 while its claim survived: blocked for the rest of the lease.
    let mut late_in_flight = 0;
    for n in 0..KEYS {
        if send(format!("key-{n}")).await.ok() == Some(StatusCode::CONFLICT) {
            late_in_flight += 1;
        }
    }
    let elapsed = started.elapsed();
    let runs = runs.lock().expect("not poisoned");
    let (unavailable, in_flight, unresolved) = *counts.lock().expect("not poisoned");
    Ok(Report {
        keys: KEYS,
        executions: runs.values().map(|n| u64::from(*n)).sum(),
        duplicates: runs.values().filter(|n| **n > 1).count(),
        unresolved,
        late_in_flight,
        unavailable,
        in_flight,
        failover,
        elapsed,
    })
}
