//! The REST-vs-gRPC benchmark: the same reads of the orders service over JSON on HTTP/1.1
//! keep-alive, JSON on HTTP/2 cleartext and gRPC, at the same concurrency and connection
//! counts, with the guardrails on (authentication and the rate limit run on every call).
//!
//! Each cell of the matrix opens its connections, runs its workers for a warm-up and then a
//! measured window, and reports requests per second, p50/p99 latency, the server's CPU time
//! per request (from `/proc/<pid>/stat`), the client's, and bytes on the wire per request. A
//! request counts only when its answer is a 200 that decodes and holds what was asked for, and
//! on gRPC only with `grpc-status: 0` in its trailers.

pub mod json;
mod report;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

pub use self::report::{markdown, svg};
use self::wire::{Call, Connection, Traffic};

/// The orders service's gRPC messages, generated from `../orders/proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::doc_markdown,
    clippy::must_use_candidate
)]
// Generated code: its items carry the proto's comments and the generator's conventions.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/orders.v1.rs"));
}

/// How a call travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// JSON over HTTP/1.1 keep-alive connections (one request in flight per connection).
    Http1,
    /// JSON over HTTP/2 cleartext (prior knowledge), streams multiplexed on each connection.
    H2c,
    /// gRPC (protobuf over HTTP/2 cleartext).
    Grpc,
}

impl Transport {
    /// Its name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Http1 => "JSON, HTTP/1.1",
            Transport::H2c => "JSON, h2c",
            Transport::Grpc => "gRPC",
        }
    }
}

/// What a call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// One order by id (`GET /v2/orders/{id}`, `GetOrder`).
    Get,
    /// A page of 100 orders (`GET /v2/orders?limit=100`, `ListOrders` with `page_size: 100`).
    List100,
    /// 100 orders by name (`BatchGetOrders`; REST has no batch read).
    BatchGet100,
}

impl Operation {
    /// Its name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Operation::Get => "one order by id",
            Operation::List100 => "a page of 100 orders",
            Operation::BatchGet100 => "100 orders by id (batch)",
        }
    }
}

/// One cell of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    /// What is asked.
    pub operation: Operation,
    /// How.
    pub transport: Transport,
    /// TCP connections.
    pub connections: usize,
    /// Requests in flight at once (on HTTP/1.1, one per connection).
    pub concurrency: usize,
}

/// What a cell measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The cell.
    pub cell: Cell,
    /// Successful requests in the measured window.
    pub requests: u64,
    /// Failed requests in the window (any answer that is not a success as defined above).
    pub failures: u64,
    /// The first failure's reason.
    pub first_failure: Option<String>,
    /// The window.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Server CPU time per request, in microseconds (`None` without a server pid).
    pub server_cpu_us: Option<f64>,
    /// This client's CPU time per request, in microseconds.
    pub client_cpu_us: f64,
    /// Bytes read and written per request (TCP payload).
    pub bytes_per_request: f64,
}

impl Measured {
    /// Successful requests per second.
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// A cell's median round, by requests per second, with every round it ran.
#[derive(Clone, Debug)]
pub struct Median {
    /// The median round: every figure of a row comes from the same round.
    pub median: Measured,
    /// Every round, in the order they ran.
    pub runs: Vec<Measured>,
}

impl Median {
    /// The median of `runs` (at least one).
    ///
    /// # Panics
    ///
    /// When `runs` is empty.
    pub fn of(runs: Vec<Measured>) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
        let median = sorted[sorted.len() / 2].clone();
        Median { median, runs }
    }

    /// The lowest and highest requests per second over the rounds.
    pub fn range(&self) -> (f64, f64) {
        let rates = self.runs.iter().map(Measured::per_second);
        let low = rates.clone().fold(f64::INFINITY, f64::min);
        (low, rates.fold(0.0, f64::max))
    }
}

/// The benchmark's settings.
#[derive(Clone, Debug)]
pub struct Bench {
    /// The REST listener.
    pub rest: SocketAddr,
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// An API key the service accepts.
    pub api_key: String,
    /// The server's process id, for its CPU time.
    pub server_pid: Option<u32>,
    /// The warm-up before each measured window.
    pub warmup: Duration,
    /// Each measured window.
    pub window: Duration,
    /// The in-flight counts to measure at (the first is usually 1, for latency).
    pub concurrency: Vec<usize>,
    /// The connections of the multiplexed HTTP/2 rows (streams shared among them).
    pub multiplexed_connections: usize,
}

/// The most latencies one worker keeps (a bound on memory whatever the window and rate).
const MAX_SAMPLES_PER_WORKER: usize = 1 << 20;

/// The matrix: every operation at every concurrency, each transport with one connection per
/// request in flight, and the HTTP/2 transports also with `multiplexed_connections`.
pub fn matrix(bench: &Bench) -> Vec<Cell> {
    let mut cells = Vec::new();
    for operation in [Operation::Get, Operation::List100, Operation::BatchGet100] {
        let transports: &[Transport] = match operation {
            Operation::BatchGet100 => &[Transport::Grpc],
            _ => &[Transport::Http1, Transport::H2c, Transport::Grpc],
        };
        for &concurrency in &bench.concurrency {
            for &transport in transports {
                cells.push(Cell {
                    operation,
                    transport,
                    connections: concurrency,
                    concurrency,
                });
            }
            if concurrency > bench.multiplexed_connections {
                for &transport in transports.iter().filter(|t| **t != Transport::Http1) {
                    cells.push(Cell {
                        operation,
                        transport,
                        connections: bench.multiplexed_connections,
                        concurrency,
                    });
                }
            }
        }
    }
    cells
}

/// Creates the 100 orders every cell reads, over REST; their ids.
///
/// # Errors
///
/// When the service refuses or does not answer.
pub async fn seed(bench: &Bench) -> Result<Vec<String>, String> {
    let traffic = Arc::new(Traffic::default());
    let mut connection = Connection::open(bench.rest, Transport::Http1, &traffic).await?;
    let mut ids = Vec::with_capacity(100);
    for n in 0..100 {
        let body = serde_json::json!({"customer_id": "cus_bench", "items": [
            {"sku": format!("sku-{n}"), "quantity": 1 + n % 5, "unit_price": {"amount": 1250, "currency": "usd"}},
            {"sku": "tea-1", "quantity": 2, "unit_price": {"amount": 399, "currency": "usd"}}]});
        let request = http::Request::post("/v2/orders")
            .header("host", bench.rest.to_string())
            .header("authorization", format!("Bearer {}", bench.api_key))
            .header("idempotency-key", format!("bench-seed-{n}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let response = connection.send(request).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        match (status.as_u16(), json["id"].as_str()) {
            (201, Some(id)) => ids.push(id.to_owned()),
            _ => return Err(format!("seeding: {status} {json}")),
        }
    }
    Ok(ids)
}

/// Runs one cell.
///
/// # Errors
///
/// When its connections cannot be opened.
pub async fn run_cell(bench: &Bench, cell: Cell, ids: &[String]) -> Result<Measured, String> {
    let address = match cell.transport {
        Transport::Grpc => bench.grpc,
        _ => bench.rest,
    };
    let traffic = Arc::new(Traffic::default());
    let mut connections = Vec::with_capacity(cell.connections);
    for _ in 0..cell.connections {
        connections.push(Connection::open(address, cell.transport, &traffic).await?);
    }
    let call = Call::new(
        cell.transport,
        cell.operation,
        address.to_string(),
        &bench.api_key,
        ids,
    );
    let start = Instant::now() + bench.warmup;
    let end = start + bench.window;
    // HTTP/1.1: a connection per worker; HTTP/2: the workers share the connections.
    let per_worker: Vec<Connection> = match cell.transport {
        Transport::Http1 if cell.connections == cell.concurrency => connections,
        Transport::Http1 => return Err("HTTP/1.1 needs a connection per request in flight".into()),
        _ => (0..cell.concurrency)
            .filter_map(|n| connections[n % cell.connections].share())
            .collect(),
    };
    let workers: Vec<_> = per_worker
        .into_iter()
        .map(|connection| tokio::spawn(worker(call.clone(), connection, start, end)))
        .collect();
    tokio::time::sleep_until(start.into()).await;
    let (bytes0, server0, client0) = (traffic.total(), server_ticks(bench), own_ticks());
    tokio::time::sleep_until(end.into()).await;
    let (bytes1, server1, client1) = (traffic.total(), server_ticks(bench), own_ticks());
    let mut latencies = Vec::new();
    let (mut requests, mut failures, mut first_failure) = (0, 0, None);
    for worker in workers {
        let done = worker.await.map_err(|e| e.to_string())?;
        requests += done.requests;
        failures += done.failures;
        first_failure = first_failure.or(done.first_failure);
        latencies.extend(done.latencies);
    }
    latencies.sort_unstable();
    // Nearest rank, in whole percent.
    let percentile = |percent: usize| {
        let index = (latencies.len().saturating_sub(1) * percent).div_ceil(100);
        latencies.get(index).copied().unwrap_or_default()
    };
    let per_request = |ticks: u64| ticks as f64 * 1e6 / ticks_per_second() / requests.max(1) as f64;
    Ok(Measured {
        cell,
        requests,
        failures,
        first_failure,
        elapsed: bench.window,
        p50: percentile(50),
        p99: percentile(99),
        server_cpu_us: server0
            .zip(server1)
            .map(|(before, after)| per_request(after - before)),
        client_cpu_us: per_request(client1.unwrap_or(0) - client0.unwrap_or(0)),
        bytes_per_request: (bytes1 - bytes0) as f64 / requests.max(1) as f64,
    })
}

struct Done {
    requests: u64,
    failures: u64,
    first_failure: Option<String>,
    latencies: Vec<Duration>,
}

/// Sends `call` back to back until `end`, counting the calls that started at or after `start`
/// and finished by `end`.
async fn worker(call: Call, mut connection: Connection, start: Instant, end: Instant) -> Done {
    let mut done = Done {
        requests: 0,
        failures: 0,
        first_failure: None,
        latencies: Vec::new(),
    };
    while Instant::now() < end {
        let began = Instant::now();
        let result = call.run(&mut connection).await;
        let finished = Instant::now();
        if began < start || finished > end {
            continue;
        }
        match result {
            Ok(()) => {
                done.requests += 1;
                if done.latencies.len() < MAX_SAMPLES_PER_WORKER {
                    done.latencies.push(finished - began);
                }
            }
            Err(reason) => {
                done.failures += 1;
                done.first_failure.get_or_insert(reason);
                // A broken connection fails at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    done
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// utime + stime of a process, in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces: read after its closing parenthesis, where
    // field 3 is index 0, so utime (field 14) is index 11 and stime index 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn server_ticks(bench: &Bench) -> Option<u64> {
    let pid = bench.server_pid?;
    cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn own_ticks() -> Option<u64> {
    cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
    }
}
