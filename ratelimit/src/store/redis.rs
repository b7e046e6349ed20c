//! [`RedisStore`]: buckets in Redis, shared by every instance.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use guardrail_store::redis::{KeyPrefix, RedisBackend};
use guardrail_store::{ConfigError as StoreConfigError, StoreError, StoreErrorKind, StoreFuture};
use redis::Script;
use redis::aio::{ConnectionLike, ConnectionManager};

use crate::decision::{Decision, Decisions};
use crate::key::RateLimitKey;
use crate::policy::{Algorithm, Policy};
use crate::store::RateLimitStore;

const SCRIPT: &str = include_str!("decide.lua");

/// Buckets in Redis: every instance using the same server and key prefix shares the limits.
///
/// - **One round trip** per request for all of a layer's policies: one `EVALSHA` of a script
///   loaded by [`preload`](Self::preload) (a server that lost its script cache gets it again,
///   transparently, on the first `NOSCRIPT`).
/// - **Redis's clock** (`TIME` inside the script): the instances' clocks never matter.
/// - **Writes only when admitted**; keys expire on their own (`PX`) once idle.
/// - **Redis Cluster**: every key of one decision shares a hash tag, so the script runs on one
///   slot. With per-key policies only, the tag is the caller (callers spread over the
///   cluster); when a layer mixes per-key and global policies, the tag is the prefix, so all of
///   that layer's keys live on one shard. Build the [`RedisBackend`] on a cluster connection;
///   it sends scripts to primaries, never to replicas, unless told to read from replicas.
/// - **Outages**: every decision goes through the back end's deadline and circuit breaker
///   ([`RedisBackend`]): a decision that times out or cannot reach Redis is a store error,
///   and the layer fails open or closed as configured; once the breaker opens, that answer
///   comes at once instead of after a timeout. The connection manager reconnects in the
///   background and the breaker probes, so the store recovers by itself when Redis is back.
/// - **Keys** look like `{ratelimit:ip:192.0.2.1}:burst:g200000:5` (policy name, then its
///   parameters, so only identical policies share state); text keys (API keys) are stored as
///   a SHA-256 prefix, never in clear. Time resolution is one microsecond: a GCRA emission
///   interval is rounded up to whole microseconds, so a rate is never loosened (and rates
///   above one million per second per key are capped there).
///
/// ```no_run
/// use guardrail_store::redis::RedisBackend;
/// use tower_ratelimit::RedisStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect("redis://127.0.0.1:6379").await?;
/// let store = RedisStore::new(redis, "orders:rl")?;
/// store.preload().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    backend: RedisBackend<C>,
    prefix: KeyPrefix,
    script: Arc<Script>,
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store on `backend` (share one back end between the stores of one Redis). Keys
    /// start with `prefix`.
    ///
    /// # Errors
    ///
    /// Fails when `prefix` is empty or contains `{` or `}`.
    pub fn new(backend: RedisBackend<C>, prefix: &str) -> Result<Self, StoreConfigError> {
        Ok(RedisStore {
            backend,
            prefix: KeyPrefix::new(prefix)?,
            script: Arc::new(Script::new(SCRIPT)),
        })
    }

    /// Loads the script into the server's cache (`SCRIPT LOAD`), so that requests need one
    /// round trip each.
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be reached.
    pub async fn preload(&self) -> Result<(), StoreError> {
        self.backend.preload(&[&self.script]).await
    }

    /// The back end: its connection, deadline and circuit breaker.
    pub fn backend(&self) -> &RedisBackend<C> {
        &self.backend
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
        let call = self
            .backend
            .eval::<Vec<i64>, _>(&self.script, move |invocation| {
                for key in &keys {
                    invocation.key(key);
                }
                invocation.arg(cost);
                for arg in args.iter() {
                    invocation.arg(*arg);
                }
            });
        RedisFuture(Box::pin(
            async move { parse_reply(&call.await?, &capacities) },
        ))
    }
}

fn parse_reply(reply: &[i64], capacities: &[u64]) -> Result<Decisions, StoreError> {
    if reply.len() != capacities.len() * 4 {
        return Err(StoreError::new(
            StoreErrorKind::BadReply,
            "the rate-limit script answered an unexpected shape",
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
pub struct RedisFuture(StoreFuture<Decisions>);

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
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}
