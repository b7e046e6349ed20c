//! Idempotency: what the layer adds to a request, beside the bare service, in one run.
//!
//! Run: `cargo bench -p guardrail-benches --bench idempotency`.
//! Targets (DESIGN.md): with the memory store, a first execution with a 1 KiB body within
//! 2 µs of the bare service, a replay within 1 µs. The Redis group (same cases, a real server
//! at `REDIS_URL`, default `redis://127.0.0.1:6379`) shows throughput; its round trips (two
//! for a first execution, one for a replay) are counted by the crate's tests.
//! Every case builds the same request and reads the whole response body, so the differences
//! are the layer's cost.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_idempotency::{
    IdempotencyLayer, IdempotencyStore, MemoryStore, RedisBackend, RedisStore, Scope,
};

type Body = Full<Bytes>;

static BODY: [u8; 1024] = [b'x'; 1024];

fn request(key: &str) -> Request<Body> {
    request_with(key, Bytes::from_static(&BODY))
}

fn request_with(key: &str, body: Bytes) -> Request<Body> {
    Request::post("/v1/orders")
        .header("x-tenant", "acme")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body))
        .expect("valid request")
}

/// The handler, for any request body: the bare service reads the request's own body, the
/// guarded one the layer's `RequestBody`.
fn handler<B>()
-> impl Service<Request<B>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static
where
    B: http_body::Body<Data = Bytes, Error: std::fmt::Debug> + Send + 'static,
{
    service_fn(|request: Request<B>| async move {
        // Read the body, as a real handler would.
        let body = request
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        let mut response = Response::new(Body::from(format!("{{\"received\":{}}}", body.len())));
        *response.status_mut() = StatusCode::CREATED;
        response
            .headers_mut()
            .insert("location", "/v1/orders/ord_1".parse().expect("valid"));
        Ok(response)
    })
}

async fn send<S, B>(service: &mut S, request: Request<Body>) -> Bytes
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes, Error: std::fmt::Debug>,
{
    let response = service
        .ready()
        .await
        .expect("infallible")
        .call(request)
        .await
        .expect("infallible");
    response
        .into_body()
        .collect()
        .await
        .expect("infallible")
        .to_bytes()
}

fn layered<St: IdempotencyStore>(
    store: St,
) -> impl Service<
    Request<Body>,
    Response = Response<tower_idempotency::ResponseBody<Body>>,
    Error = Infallible,
> + Clone {
    ServiceBuilder::new()
        .layer(IdempotencyLayer::new(
            store,
            Scope::header(http::HeaderName::from_static("x-tenant")),
        ))
        .service(handler())
}

fn cases<St: IdempotencyStore>(c: &mut Criterion, runtime: &Runtime, group: &str, store: St) {
    let mut group = c.benchmark_group(group);
    let mut bare = handler::<Body>();
    group.bench_function("bare service", |b| {
        b.iter(|| runtime.block_on(send(&mut bare, request("unused"))));
    });

    let mut service = layered(store);
    let counter = AtomicU64::new(0);
    let run = u64::from(std::process::id());
    group.bench_function("first execution", |b| {
        b.iter(|| {
            let key = format!("{run}-{}", counter.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(send(&mut service, request(&key)))
        });
    });

    let replayed = format!("{run}-replayed");
    runtime.block_on(send(&mut service, request(&replayed)));
    group.bench_function("replay", |b| {
        b.iter(|| black_box(runtime.block_on(send(&mut service, request(&replayed)))));
    });
    group.finish();
}

/// A memory store with room for every record the bench makes: every first execution adds one,
/// and evictions at the default bound would be measured instead of the layer.
fn roomy_store() -> MemoryStore {
    MemoryStore::new()
        .max_bytes(1 << 40)
        .and_then(|store| store.max_bytes_per_scope(1 << 40))
        .expect("a valid budget")
}

fn memory(c: &mut Criterion) {
    let runtime = guardrail_benches::current_thread();
    cases(c, &runtime, "idempotency/memory", roomy_store());

    // The steady state of a long-running service: a store at its default bound (64 MiB, one
    // tenant's share 8 MiB), filled first, so that every new record evicts the tenant's oldest.
    let mut group = c.benchmark_group("idempotency/memory");
    let store = MemoryStore::new();
    let share =
        tower_idempotency::DEFAULT_MAX_BYTES / tower_idempotency::DEFAULT_SCOPE_SHARE_DIVISOR;
    let mut service = layered(store.clone());
    let run = std::process::id();
    // Until the tenant's share is full: each record takes at least `ENTRY_OVERHEAD` bytes,
    // so this ends within share / ENTRY_OVERHEAD requests.
    let mut index = 0;
    while store.usage().bytes + tower_idempotency::ENTRY_OVERHEAD <= share {
        runtime.block_on(send(&mut service, request(&format!("{run}-fill-{index}"))));
        index += 1;
    }
    let counter = AtomicU64::new(0);
    group.bench_function("first execution, store at its bound", |b| {
        b.iter(|| {
            let key = format!("{run}-{}", counter.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(send(&mut service, request(&key)))
        });
    });
    group.finish();
}

/// How the first execution's cost grows with the body, beside the bare hashes of that body
/// (the fingerprint takes SHA-256 below 4 KiB, BLAKE3 from there) and the bare service: the
/// layer's cost per KiB against the hash's, and where one hash overtakes the other.
fn body_sizes(c: &mut Criterion) {
    use sha2::Digest as _;

    let runtime = guardrail_benches::current_thread();
    let mut service = layered(roomy_store());
    let mut bare = handler::<Body>();
    let counter = AtomicU64::new(0);
    let run = u64::from(std::process::id());
    let mut group = c.benchmark_group("idempotency/memory_body_size");
    for (label, size) in [
        ("1 KiB", 1usize << 10),
        ("4 KiB", 1 << 12),
        ("16 KiB", 1 << 14),
        ("64 KiB", 1 << 16),
        ("1 MiB", 1 << 20),
    ] {
        let body = Bytes::from(vec![b'x'; size]);
        group.throughput(criterion::Throughput::Bytes(size as u64));
        group.bench_function(format!("sha256 of the body/{label}"), |b| {
            b.iter(|| sha2::Sha256::digest(black_box(&body)));
        });
        group.bench_function(format!("blake3 of the body/{label}"), |b| {
            b.iter(|| blake3::hash(black_box(&body)));
        });
        group.bench_function(format!("bare service/{label}"), |b| {
            b.iter(|| runtime.block_on(send(&mut bare, request_with("unused", body.clone()))));
        });
        group.bench_function(format!("first execution/{label}"), |b| {
            b.iter(|| {
                let key = format!("{run}-{size}-{}", counter.fetch_add(1, Ordering::Relaxed));
                runtime.block_on(send(&mut service, request_with(&key, body.clone())))
            });
        });
    }
    group.finish();
}

fn redis(c: &mut Criterion) {
    let runtime = guardrail_benches::current_thread();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("idembench-{}", std::process::id());
    match runtime.block_on(RedisBackend::connect(&url)) {
        Ok(backend) => {
            let store = RedisStore::new(backend, &prefix).expect("a valid prefix");
            cases(c, &runtime, "idempotency/redis", store);
        }
        // A bench, not a test: say plainly what was not measured.
        #[allow(clippy::print_stderr)] // The only way a bench binary can say so.
        Err(error) => eprintln!("idempotency/redis not measured: no Redis at {url} ({error})"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3)).sample_size(30);
    targets = memory, body_sizes, redis
}
/// Instruction counts, for `valgrind --tool=callgrind` (`benches/count.sh`):
/// `IDEMPOTENCY_COUNT=<case>:<requests>` runs that many requests of one case (`bare`, `first`,
/// `replay`) and no criterion bench; a run of 0 requests gives the set-up's count to subtract.
fn count(case: &str, requests: u64) {
    let runtime = guardrail_benches::current_thread();
    let mut service = layered(roomy_store());
    let mut bare = handler::<Body>();
    runtime.block_on(send(&mut service, request("replayed")));
    for index in 0..requests {
        let body = match case {
            "bare" => runtime.block_on(send(&mut bare, request("unused"))),
            "first" => runtime.block_on(send(&mut service, request(&format!("key-{index}")))),
            "replay" => runtime.block_on(send(&mut service, request("replayed"))),
            other => panic!("unknown case {other}: bare, first or replay"),
        };
        black_box(body);
    }
}

fn main() {
    if let Some((case, requests)) = guardrail_benches::count_request("IDEMPOTENCY_COUNT") {
        count(&case, requests);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
