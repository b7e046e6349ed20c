//! [`RedisStore`]: buckets in Redis, shared by every instance.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use crate::decision::{Decision, Decisions};
use crate::error::{ConfigError, ConfigErrorKind, StoreError};
use crate::key::RateLimitKey;
use crate::policy::{Algorithm, Policy};
use crate::store::RateLimitStore;

const SCRIPT: &str = include_str!("decide.lua");
/// The default time a decision may take before the store counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// Buckets in Redis: every instance using the same server and key prefix shares the limits.
///
/// - **One round trip** per request for all of a layer's policies: one `EVALSHA` of a script
///   loaded when the store connects (a server that lost its script cache gets it again,
///   transparently, on the first `NOSCRIPT`).
/// - **Redis's clock** (`TIME` inside the script): the instances' clocks never matter.
/// - **Writes only when admitted**; keys expire on their own (`PX`) once idle.
/// - **Redis Cluster**: every key of one decision shares a hash tag, so the script runs on one
///   slot. With per-key policies only, the tag is the caller (callers spread over the
///   cluster); when a layer mixes per-key and global policies, the tag is the prefix, so all of
///   that layer's keys live on one shard. Pass a cluster connection to [`RedisStore::new`]; it
///   sends scripts to primaries, never to replicas, unless told to read from replicas.
/// - **Timeouts**: a decision that takes longer than [`timeout`](Self::timeout) (default
///   100 ms) is a store error; the layer then fails open or closed as configured. The
///   connection manager reconnects in the background, so the store recovers by itself when
///   Redis is back.
/// - **Keys** look like `{ratelimit:ip:192.0.2.1}:burst:g200000:5` (policy name, then its
///   parameters, so only identical policies share state); text keys (API keys) are stored as
///   a SHA-256 prefix, never in clear. Time resolution is one microsecond: a GCRA emission
///   interval is rounded up to whole microseconds, so a rate is never loosened (and rates
///   above one million per second per key are capped there).
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    connection: C,
    prefix: Arc<str>,
    timeout: Duration,
    script: Arc<Script>,
}

impl RedisStore<ConnectionManager> {
    /// Connects to `url` (`redis://host:port/db`) with a reconnecting connection manager and
    /// loads the script. Keys start with `prefix`.
    ///
    /// # Errors
    ///
    /// Fails when the URL or prefix is invalid or the server cannot be reached now.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::new("invalid Redis URL", Some(Box::new(e))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_TIMEOUT * 5))
            // No response timeout in the manager: the store's own `timeout` bounds every
            // decision, and a manager limit would silently cap a longer one set there.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::new("cannot connect to Redis", Some(Box::new(e))))?;
        let store =
            RedisStore::new(manager, prefix).map_err(|e| StoreError::new(e.to_string(), None))?;
        store.preload().await?;
        Ok(store)
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store on an existing connection (a `ConnectionManager`, or a cluster connection).
    ///
    /// # Errors
    ///
    /// Fails when `prefix` is empty or contains `{` or `}`.
    pub fn new(connection: C, prefix: &str) -> Result<Self, ConfigError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(ConfigError::new(ConfigErrorKind::KeyPrefix(
                prefix.to_owned(),
            )));
        }
        Ok(RedisStore {
            connection,
            prefix: Arc::from(prefix),
            timeout: DEFAULT_TIMEOUT,
            script: Arc::new(Script::new(SCRIPT)),
        })
    }

    /// How long a decision may take before it counts as a store failure.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Loads the script into the server's cache (`SCRIPT LOAD`), so that requests need one
    /// round trip each.
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be reached.
    pub async fn preload(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        self.script
            .load_async(&mut connection)
            .await
            .map(drop)
            .map_err(|e| StoreError::new("cannot load the rate-limit script", Some(Box::new(e))))
    }

    /// The keys one request touches, in policy order.
    pub fn keys(&self, prepared: &RedisPrepared, key: &RateLimitKey) -> Vec<String> {
        let client = key.redis_id();
        prepared
            .policies
            .iter()
            .map(|(name, global)| {
                let who = if *global { "global" } else { client.as_str() };
                if prepared.shared_tag {
                    format!("{{{}}}:{who}:{name}", self.prefix)
                } else {
                    format!("{{{}:{who}}}:{name}", self.prefix)
                }
            })
            .collect()
    }
}

/// The Redis store's precomputed arguments for one limiter's policies.
#[derive(Clone, Debug)]
pub struct RedisPrepared {
    /// Per policy: the key suffix (name and parameters) and whether it is global.
    policies: Vec<(String, bool)>,
    /// Three numbers per policy, as the script reads them; shared by every request.
    args: Arc<[u64]>,
    capacities: Arc<[u64]>,
    shared_tag: bool,
}

impl<C> RateLimitStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    type Prepared = RedisPrepared;
    type Future = RedisFuture;

    fn prepare(&self, policies: &[Policy]) -> RedisPrepared {
        let mut args = Vec::with_capacity(policies.len() * 3);
        let mut suffixes = Vec::with_capacity(policies.len());
        for policy in policies {
            // The parameters are part of the key, so that two policies of one name but other
            // parameters never read each other's state (a wrong-type reply would fail open).
            let (kind, a, b) = match policy.algorithm() {
                Algorithm::Gcra(quota) => (
                    1,
                    quota.emission_interval_nanos().div_ceil(1_000),
                    quota.burst(),
                ),
                Algorithm::SlidingWindow { limit, window } => (
                    2,
                    u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
                    limit,
                ),
            };
            args.extend([kind, a, b]);
            let tag = if kind == 1 { 'g' } else { 'w' };
            suffixes.push((
                format!("{}:{tag}{a}:{b}", policy.name()),
                policy.is_global(),
            ));
        }
        let any_global = policies.iter().any(Policy::is_global);
        let any_per_key = policies.iter().any(|p| !p.is_global());
        RedisPrepared {
            policies: suffixes,
            args: args.into(),
            capacities: policies.iter().map(Policy::capacity).collect(),
            shared_tag: any_global && any_per_key,
        }
    }

    fn check(&self, prepared: &RedisPrepared, key: &RateLimitKey, cost: u64) -> RedisFuture {
        let keys = self.keys(prepared, key);
        let args = Arc::clone(&prepared.args);
        let capacities = Arc::clone(&prepared.capacities);
        let script = Arc::clone(&self.script);
        let mut connection = self.connection.clone();
        let timeout = self.timeout;
        RedisFuture(Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            invocation.arg(cost);
            for arg in args.iter() {
                invocation.arg(*arg);
            }
            let call = invocation.invoke_async::<Vec<i64>>(&mut connection);
            let reply = tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| StoreError::new("Redis did not answer in time", None))?
                .map_err(|e| StoreError::new("Redis failed", Some(Box::new(e))))?;
            parse_reply(&reply, &capacities)
        }))
    }
}

fn parse_reply(reply: &[i64], capacities: &[u64]) -> Result<Decisions, StoreError> {
    if reply.len() != capacities.len() * 4 {
        return Err(StoreError::new(
            "the rate-limit script answered an unexpected shape",
            None,
        ));
    }
    let micros = |value: i64| Duration::from_micros(u64::try_from(value).unwrap_or(0));
    let decisions = reply
        .chunks_exact(4)
        .zip(capacities)
        .map(|(values, &limit)| {
            let remaining = u64::try_from(values[1]).unwrap_or(0);
            match (values[0] == 1, values[3]) {
                (true, _) => Decision::admitted(limit, remaining, micros(values[2])),
                (false, wait) if wait >= 0 => Decision::refused(limit, remaining, micros(wait)),
                (false, _) => Decision::too_costly(limit),
            }
        });
    Ok(Decisions::new(decisions))
}

/// The decision of a [`RedisStore`] in progress.
pub struct RedisFuture(Pin<Box<dyn Future<Output = Result<Decisions, StoreError>> + Send>>);

impl Future for RedisFuture {
    type Output = Result<Decisions, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for RedisFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisFuture")
    }
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
