//! The service's configuration: command-line flags, each also an environment variable.

use std::net::SocketAddr;
use std::time::SystemTime;

use clap::Parser;

/// The orders service.
///
/// Runs on its embedded defaults (a SQLite file, in-memory idempotency and rate-limit stores);
/// give it `--redis` and a shared `--database` and `--cursor-secret` to run several instances
/// as one service.
#[derive(Clone, Debug, Parser)]
#[command(name = "orders", version, about, long_about = None)]
pub struct Config {
    /// The address to listen on.
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The database: `sqlite://FILE` (created when missing), `sqlite::memory:`, or
    /// `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "ORDERS_DATABASE", default_value = "sqlite://orders.db")]
    pub database: String,

    /// A Redis URL (`redis://127.0.0.1:6379`). With it, idempotency records and rate limits
    /// live in Redis and are shared by every instance; without it they are kept in memory.
    #[arg(long, env = "ORDERS_REDIS")]
    pub redis: Option<String>,

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

    /// Restricts callers to these API keys (comma-separated). Without it the service runs in
    /// demo mode: any key of 8 to 200 characters from `[A-Za-z0-9_-]` is accepted and is its
    /// own tenant.
    #[arg(
        long,
        env = "ORDERS_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// DEMO ONLY: turns the guardrails off (no idempotency layer, no rate limit, and the
    /// database no longer records idempotency keys), to show what a retry storm does to a
    /// service without them. Never set it in production.
    #[arg(long, env = "ORDERS_DEMO_DISABLE_GUARDRAILS")]
    pub demo_disable_guardrails: bool,

    /// The most database connections to open.
    #[arg(long, env = "ORDERS_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// How long shutdown waits for requests in flight before it gives up, in seconds.
    #[arg(long, env = "ORDERS_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
}

impl Config {
    /// The defaults, as `orders` with no flags and no environment would run, with another
    /// database. For tests and benches.
    pub fn with_database(database: impl Into<String>) -> Self {
        let mut config = Config::parse_from(["orders"]);
        config.database = database.into();
        config
    }
}

fn parse_rfc3339(value: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|error| format!("not an RFC 3339 time ({error}), e.g. 2027-12-31T23:59:59Z"))
}
