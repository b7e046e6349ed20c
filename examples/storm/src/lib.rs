//! A retry storm against the orders service.
//!
//! `keys` idempotency keys, each sent `copies` times at once (spread over the service URLs)
//! by `clients` concurrent workers. Every send retries on timeouts, connection errors, 5xx,
//! 409 and 429, waiting `Retry-After` (or an exponential backoff) plus jitter. Afterwards the
//! storm lists every order of its API key and counts the orders per key: any key with more
//! than one order is a duplicate.

mod chart;
pub mod protocols;
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub use self::chart::svg_chart;
pub use self::report::Report;

/// What to send.
#[derive(Clone, Debug)]
pub struct Storm {
    /// Service base URLs (`http://127.0.0.1:8080`); copies of a key go to them in turn.
    pub urls: Vec<String>,
    /// Concurrent workers.
    pub clients: usize,
    /// Idempotency keys (each a distinct order).
    pub keys: usize,
    /// How many times each key is sent, at once.
    pub copies: usize,
    /// The API key (its tenant must be fresh for the duplicate count to mean anything).
    pub api_key: String,
    /// How long one attempt may take before the client gives up on it and retries.
    pub timeout: Duration,
    /// Attempts per send, the first included.
    pub max_attempts: u32,
}

/// One HTTP attempt, as the chart and report see it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    /// When it ended, since the storm began.
    pub at: Duration,
    /// Its status; `None` for a timeout or connection error.
    pub status: Option<StatusCode>,
    /// How long it took.
    pub latency: Duration,
    /// A 429 that had a `Retry-After` header.
    pub had_retry_after: bool,
    /// A 429 whose body was a problem document.
    pub had_problem_body: bool,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Shared {
    storm: Storm,
    client: HttpClient,
    started: Instant,
    attempts: Mutex<Vec<Attempt>>,
    /// The first 201 body per key, to check that every replay is identical.
    first_bodies: Mutex<Vec<Option<Bytes>>>,
    replay_mismatches: AtomicUsize,
    gave_up: AtomicUsize,
    next: AtomicUsize,
}

/// Runs the storm, then lists the orders it created.
///
/// # Errors
///
/// When listing the orders afterwards fails.
pub async fn run(storm: Storm) -> Result<Report, String> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(storm.clients)
        .build_http();
    let shared = Arc::new(Shared {
        first_bodies: Mutex::new(vec![None; storm.keys]),
        storm,
        client,
        started: Instant::now(),
        attempts: Mutex::new(Vec::new()),
        replay_mismatches: AtomicUsize::new(0),
        gave_up: AtomicUsize::new(0),
        next: AtomicUsize::new(0),
    });
    let workers: Vec<_> = (0..shared.storm.clients.max(1))
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();
    for worker in workers {
        worker.await.map_err(|e| format!("a worker failed: {e}"))?;
    }
    let elapsed = shared.started.elapsed();
    let orders_per_key = list_orders(&shared).await?;
    let attempts = std::mem::take(&mut *shared.attempts.lock().await);
    Ok(Report::new(
        &shared.storm,
        attempts,
        &orders_per_key,
        shared.replay_mismatches.load(Ordering::Relaxed),
        shared.gave_up.load(Ordering::Relaxed),
        elapsed,
    ))
}

/// Takes sends off the shared queue: send `n` is copy `n % copies` of key `n / copies`, so
/// the copies of one key are taken by different workers at about the same time.
async fn worker(shared: Arc<Shared>) {
    let total = shared.storm.keys * shared.storm.copies;
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return;
        }
        let (key, copy) = (n / shared.storm.copies, n % shared.storm.copies);
        send_with_retries(&shared, key, copy).await;
    }
}

fn order_body(key: usize) -> Bytes {
    Bytes::from(
        json!({
            "customer_id": format!("cus_storm_{key}"),
            "items": [{"sku": "storm-1", "quantity": 1, "unit_price": {"amount": 500, "currency": "usd"}}]
        })
        .to_string(),
    )
}

async fn send_with_retries(shared: &Shared, key: usize, copy: usize) {
    let storm = &shared.storm;
    let mut url_index = copy;
    for attempt in 1..=storm.max_attempts {
        let url = &storm.urls[url_index % storm.urls.len()];
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{url}/v2/orders"))
            .header("authorization", format!("Bearer {}", storm.api_key))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("storm-key-{key}"))
            .body(Full::new(order_body(key)))
            .expect("a valid request");
        let began = Instant::now();
        let outcome = tokio::time::timeout(storm.timeout, async {
            let response = shared.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts, body))
        })
        .await;
        let latency = began.elapsed();
        let retry_after = match outcome {
            Ok(Ok((parts, body))) => {
                let retry_after = parts
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let problem = parts
                    .headers
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes() == b"application/problem+json");
                record(
                    shared,
                    Some(parts.status),
                    latency,
                    retry_after.is_some(),
                    problem,
                )
                .await;
                if parts.status == StatusCode::CREATED {
                    check_replay(shared, key, body).await;
                    return;
                }
                let retryable = parts.status.is_server_error()
                    || parts.status == StatusCode::CONFLICT
                    || parts.status == StatusCode::TOO_MANY_REQUESTS;
                if !retryable {
                    shared.gave_up.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                retry_after
            }
            Ok(Err(_)) | Err(_) => {
                record(shared, None, latency, false, false).await;
                // Try another instance: the one we asked may be the one in trouble.
                url_index += 1;
                None
            }
        };
        if attempt == storm.max_attempts {
            break;
        }
        let backoff = retry_after.map_or_else(
            || Duration::from_millis(50 << attempt.min(6)),
            Duration::from_secs,
        );
        tokio::time::sleep(backoff + jitter(backoff / 2 + Duration::from_millis(20))).await;
    }
    shared.gave_up.fetch_add(1, Ordering::Relaxed);
}

async fn record(
    shared: &Shared,
    status: Option<StatusCode>,
    latency: Duration,
    had_retry_after: bool,
    had_problem_body: bool,
) {
    let at = shared.started.elapsed();
    shared.attempts.lock().await.push(Attempt {
        at,
        status,
        latency,
        had_retry_after,
        had_problem_body,
    });
}

async fn check_replay(shared: &Shared, key: usize, body: Bytes) {
    let mut firsts = shared.first_bodies.lock().await;
    match &firsts[key] {
        None => firsts[key] = Some(body),
        Some(first) if *first == body => {}
        Some(_) => {
            shared.replay_mismatches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A random duration in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return Duration::ZERO;
    }
    let fraction = f64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        / f64::from(u32::MAX);
    max.mul_f64(fraction)
}

/// Lists every order of the storm's tenant (through the first URL, following cursors and
/// honouring 429s) and counts them per key.
async fn list_orders(shared: &Shared) -> Result<Vec<usize>, String> {
    let storm = &shared.storm;
    let mut counts = vec![0usize; storm.keys];
    let mut cursor: Option<String> = None;
    loop {
        let mut uri = format!("{}/v2/orders?limit=100", storm.urls[0]);
        if let Some(cursor) = &cursor {
            uri.push_str("&cursor=");
            uri.push_str(cursor);
        }
        let request = Request::get(&uri)
            .header("authorization", format!("Bearer {}", storm.api_key))
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        let response = shared
            .client
            .request(request)
            .await
            .map_err(|e| format!("listing: {e}"))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
            continue;
        }
        if status != StatusCode::OK {
            return Err(format!(
                "listing answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let page: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        for order in page["data"].as_array().into_iter().flatten() {
            let key = order["customer_id"]
                .as_str()
                .and_then(|c| c.strip_prefix("cus_storm_"))
                .and_then(|k| k.parse::<usize>().ok());
            if let Some(count) = key.and_then(|k| counts.get_mut(k)) {
                *count += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(counts),
        }
    }
}

/// A fresh API key, so the storm's tenant starts empty.
pub fn fresh_api_key() -> String {
    let mut bytes = [0u8; 12];
    let _ = getrandom::fill(&mut bytes);
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("storm_{suffix}")
}
