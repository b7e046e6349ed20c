//! The service's configuration: command-line flags, each also an environment variable.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use clap::{CommandFactory, FromArgMatches, Parser};

/// The orders service.
///
/// Runs on its embedded defaults (a SQLite file that also keeps the idempotency records, an
/// in-memory rate-limit store); give it `--redis` and a shared `--database` and
/// `--cursor-secret` to run several instances as one service.
#[derive(Clone, Debug, Parser)]
#[command(name = "orders", version, about, long_about = None)]
pub struct Config {
    /// The address to listen on.
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Also serve the internal gRPC API (`orders.v1.OrderService`, with health checking and
    /// server reflection) on this address, beside REST and on the same stores; off when
    /// unset.
    #[arg(long, env = "ORDERS_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,

    /// The database: `sqlite://FILE` (created when missing), `sqlite::memory:`, or
    /// `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "ORDERS_DATABASE", default_value = "sqlite://orders.db")]
    pub database: String,

    /// A Redis URL (`redis://127.0.0.1:6379`). With it, idempotency records and rate limits
    /// live in Redis and are shared by every instance; without it idempotency records live in
    /// the `--database` (shared when it is PostgreSQL, surviving restarts either way) and rate
    /// limits in this process's memory.
    #[arg(long, env = "ORDERS_REDIS")]
    pub redis: Option<String>,

    /// A Redis Cluster instead of one Redis: seed nodes, comma-separated (`host:port` or
    /// `redis://host:port`; one reachable seed is enough). Idempotency records and rate limits
    /// live there, as with `--redis`.
    #[arg(long, env = "ORDERS_REDIS_CLUSTER", value_delimiter = ',', conflicts_with = "redis", value_parser = parse_cluster_node)]
    pub redis_cluster: Vec<String>,

    /// The prefix of every Redis key this service writes, so several deployments (or test
    /// runs) can share one Redis.
    #[arg(long, env = "ORDERS_REDIS_PREFIX", default_value = "orders")]
    pub redis_prefix: String,

    /// The secret that signs pagination cursors, at least 32 bytes. Instances given the same
    /// secret accept each other's cursors. Without it a random one is drawn at start (with a
    /// warning), and cursors die with the process.
    #[arg(long, env = "ORDERS_CURSOR_SECRET", hide_env_values = true)]
    pub cursor_secret: Option<String>,

    /// Requests per second allowed per API key, sustained.
    #[arg(long, env = "ORDERS_RATE_LIMIT_PER_SECOND", default_value_t = 20)]
    pub rate_limit_per_second: u64,

    /// Requests an API key may send at once, above the sustained rate.
    #[arg(long, env = "ORDERS_RATE_LIMIT_BURST", default_value_t = 40)]
    pub rate_limit_burst: u64,

    /// When `/v1` was deprecated (RFC 3339). Sent as the `Deprecation` header on every `/v1`
    /// response.
    #[arg(long, env = "ORDERS_V1_DEPRECATED_AT", default_value = "2026-11-01T00:00:00Z", value_parser = parse_rfc3339)]
    pub v1_deprecated_at: SystemTime,

    /// When `/v1` stops answering (RFC 3339). Sent as the `Sunset` header; after it `/v1`
    /// answers 410 `api-version-sunset`.
    #[arg(long, env = "ORDERS_V1_SUNSET_AT", default_value = "2027-12-31T23:59:59Z", value_parser = parse_rfc3339)]
    pub v1_sunset_at: SystemTime,

    /// Restricts callers to these API keys (comma-separated, each trimmed of surrounding
    /// white space: `--api-keys "a, b"`). Without it the service runs in
    /// demo mode: any key of 8 to 200 characters from `[A-Za-z0-9_-]` is accepted and is its
    /// own tenant.
    #[arg(
        long,
        env = "ORDERS_API_KEYS",
        value_delimiter = ',',
        value_parser = parse_api_key,
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// DEMO ONLY: turns the guardrails off (no idempotency layer, no rate limit, and the
    /// database no longer records idempotency keys), to show what a retry storm does to a
    /// service without them. Never set it in production.
    #[arg(long, env = "ORDERS_DEMO_DISABLE_GUARDRAILS")]
    pub demo_disable_guardrails: bool,

    /// How long an idempotency claim holds its key while the request runs, in milliseconds
    /// (renewed every third of it while the handler works). A crashed instance blocks a key
    /// for at most this long; retries meanwhile get 409 `idempotency-key-in-use`.
    #[arg(long, env = "ORDERS_IDEMPOTENCY_LEASE_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1_000..))]
    pub idempotency_lease_ms: u64,

    /// The most database connections to open.
    #[arg(long, env = "ORDERS_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// How long a request waits for a database connection (and a new connection for its
    /// handshake) before it is answered 503 `database-unavailable`, in milliseconds.
    #[arg(
        long,
        env = "ORDERS_DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 1_000
    )]
    pub database_acquire_timeout_ms: u64,

    /// How long shutdown waits for requests in flight before it gives up, in seconds. The
    /// process exits within it, even with a database that never answers.
    #[arg(long, env = "ORDERS_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// The connection and request limits of the edge.
    #[command(flatten)]
    pub limits: Limits,
}

/// What one client may cost the service: every bound of the edge, each a flag and an
/// environment variable.
#[derive(Clone, Debug, clap::Args)]
pub struct Limits {
    /// The most open client connections. When a new one arrives at the cap, the longest-idle
    /// connection is closed to make room (or, with none idle, the new one is refused). Also
    /// capped at the process's open-file limit less a reserve of 64 descriptors for the
    /// database, Redis and the runtime.
    #[arg(long, env = "ORDERS_MAX_CONNECTIONS", default_value_t = 1_024)]
    pub max_connections: usize,

    /// How long a client may take to send a request head, from its first byte, in
    /// milliseconds; then a connection's first request is answered 408 `request-timeout`,
    /// and the connection is closed.
    #[arg(long, env = "ORDERS_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// How long a request body may stall between two reads, in milliseconds; then the request
    /// is answered 408 `request-timeout` and the connection closed.
    #[arg(long, env = "ORDERS_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,

    /// How long a connection may stay idle (no request in flight, no request head arriving),
    /// in milliseconds; then it is closed (HTTP/2 with a GOAWAY). A busy connection whose
    /// socket moves no byte for this (or the request deadline, if longer) plus a second is
    /// closed too: a client that never reads its answers.
    #[arg(long, env = "ORDERS_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// The deadline of every request, body included, in milliseconds. Past it the handler's
    /// work is cancelled (and the database's statement too: PostgreSQL's
    /// `statement_timeout` and SQLite's `busy_timeout` are set to it) and the answer is 503 `deadline-exceeded` with
    /// `Retry-After`, or 408 `request-timeout` if the client was still sending its body.
    #[arg(long, env = "ORDERS_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,

    /// The largest request body, in bytes; larger ones are answered 413 `payload-too-large`.
    #[arg(long, env = "ORDERS_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How much of a refused request's body is read and thrown away, in bytes, so that a
    /// client that writes its whole body before reading sees the answer. A longer body gets
    /// the answer and a closed connection.
    #[arg(long, env = "ORDERS_MAX_DISCARD_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_discard_bytes: u64,

    /// The largest request head, in bytes: HTTP/1's read buffer, HTTP/2's header list.
    /// Larger heads are refused by the protocol layer (HTTP/1: 431).
    #[arg(long, env = "ORDERS_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: u32,

    /// The most concurrent streams on one HTTP/2 connection.
    #[arg(
        long,
        env = "ORDERS_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 64
    )]
    pub http2_max_concurrent_streams: u32,
}

impl Limits {
    /// See [`Limits::header_read_timeout_ms`].
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// See [`Limits::body_timeout_ms`].
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// See [`Limits::idle_timeout_ms`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// See [`Limits::request_timeout_ms`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Config {
    /// The defaults, as `orders` with no flags would run, with another database. For tests
    /// and benches: the process's `ORDERS_*` environment is not read.
    ///
    /// # Panics
    ///
    /// Never: the defaults parse.
    pub fn with_database(database: impl Into<String>) -> Self {
        // clap reads `env` values while parsing; a command whose arguments forget their
        // environment variables gives the pure defaults.
        let command = Config::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["orders"])
            .expect("the defaults parse");
        let mut config = Config::from_arg_matches(&matches).expect("the defaults parse");
        config.database = database.into();
        config
    }
}

fn parse_api_key(value: &str) -> Result<String, String> {
    let key = value.trim();
    if key.is_empty() {
        Err("an empty API key (two commas in a row, or a trailing comma?)".to_owned())
    } else {
        Ok(key.to_owned())
    }
}

/// A cluster seed as a `redis://` URL.
fn parse_cluster_node(node: &str) -> Result<String, String> {
    let node = node.trim();
    if node.is_empty() {
        return Err("an empty cluster node".to_owned());
    }
    Ok(if node.contains("://") {
        node.to_owned()
    } else {
        format!("redis://{node}")
    })
}

fn parse_rfc3339(value: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|error| format!("not an RFC 3339 time ({error}), e.g. 2027-12-31T23:59:59Z"))
}
