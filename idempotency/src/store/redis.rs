//! [`RedisStore`]: claims and results in Redis, shared by every instance.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use guardrail_store::redis::{Durability, KeyPrefix, RedisBackend};
use guardrail_store::{ConfigError, ConfigErrorKind, StoreError, StoreErrorKind};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{FromRedisValue, Script, Value};

use crate::store::{
    Claim, Completion, Fenced, FencingToken, Fingerprint, IdempotencyStore, StoreFuture, StoreKey,
    wire,
};

/// Claims a vacant key, or reports what holds it.
///
/// - `KEYS[1]`: the record.
/// - `ARGV[1]`: the in-flight value to set (`F`, token, fingerprint).
/// - `ARGV[2]`: the lease in milliseconds.
/// - Returns `{0}` when claimed (or when the value there is this very claim: a client that
///   re-sent the script after a dropped connection), else `{1, value, PTTL}` of what is there.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {0}
end
if v == ARGV[1] then
  return {0}
end
return {1, v, redis.call('PTTL', KEYS[1])}
";

/// Acts on the claim held by a token, only while that token holds it (compare-and-set):
/// `complete`, `release` and `renew` are one script, so the fence is written once.
///
/// - `KEYS[1]`: the record.
/// - `ARGV[1]`: the fence, `F` and the token (17 bytes).
/// - `ARGV[2]`: the action: `complete` (`ARGV[3]` the completed value, `ARGV[4]` its lifetime
///   in milliseconds), `release`, or `renew` (`ARGV[3]` the new lease in milliseconds).
/// - Returns 1 when applied, 0 when the token no longer holds the key.
const FENCED: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 17) ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'complete' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
elseif ARGV[2] == 'release' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
";

/// Claims and results in Redis: every instance using the same server and key prefix shares
/// them, so a retry landing on another instance is still recognized.
///
/// - **One round trip** per operation: one `EVALSHA` of a script loaded by
///   [`preload`](Self::preload) (a server that lost its script cache gets it again,
///   transparently, on the first `NOSCRIPT`).
/// - **Fencing** by compare-and-set in Lua: `complete`, `release` and `renew` act only while
///   the stored claim still carries the caller's token, so a holder whose lease ran out can
///   never overwrite the work of the request that took over.
/// - **Expiry** by `PX`: a claim lives for its lease, a completed record for its own TTL; the
///   two are separate, so a crashed holder blocks its key for at most one lease.
/// - **Redis Cluster**: every script touches exactly one key, so no hash tags are needed and
///   keys spread over the cluster. Build the [`RedisBackend`] on a cluster connection;
///   scripts go to primaries and are never read from replicas.
/// - **Outages**: every call goes through the back end's deadline and circuit breaker
///   ([`RedisBackend`]): a call that times out or cannot reach Redis is a store error and the
///   layer fails closed (503 + `Retry-After`); once the breaker opens, that answer comes at
///   once instead of after a timeout. The connection manager reconnects in the background
///   and the breaker probes, so the store recovers by itself when Redis is back.
/// - **Keys** look like `prefix:<64 hex digits>`: only the SHA-256 of the scope and the
///   idempotency key is stored, never the raw key.
///
/// ```no_run
/// use guardrail_store::redis::RedisBackend;
/// use tower_idempotency::RedisStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect("redis://127.0.0.1:6379").await?;
/// let store = RedisStore::new(redis, "orders:idem")?;
/// store.preload().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    backend: RedisBackend<C>,
    prefix: KeyPrefix,
    claim_script: Arc<Script>,
    fenced_script: Arc<Script>,
    durability: Option<Durability>,
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
    pub fn new(backend: RedisBackend<C>, prefix: &str) -> Result<Self, ConfigError> {
        Ok(RedisStore {
            backend,
            prefix: KeyPrefix::new(prefix)?,
            claim_script: Arc::new(Script::new(CLAIM)),
            fenced_script: Arc::new(Script::new(FENCED)),
            durability: None,
        })
    }

    /// Makes every write wait for `durability`'s replicas (`WAIT`, in the same round trip):
    /// a claim or a record counts only once the replicas have it, so a failover to one of them
    /// cannot lose it. A write the replicas do not acknowledge in time is a store error (the
    /// layer answers 503 and the handler does not run). Redis replication is otherwise
    /// asynchronous: without this, a claim acknowledged by a primary that dies before
    /// replicating it is gone on the promoted replica, and a retry runs the handler again.
    ///
    /// Costs one replica round trip per write, and calls queue on the shared connection while
    /// a `WAIT` blocks it. A completion lost with its primary still blocks its key for the rest
    /// of the lease, after which a retry runs again: only a store that commits the record with
    /// the handler's effect closes that (the SQL store's `commit_in_*`).
    ///
    /// # Errors
    ///
    /// [`ConfigErrorKind::Durability`] when the wait is not shorter than the back end's call
    /// deadline ([`RedisBackend::call_timeout`]), which covers the write and the wait.
    pub fn durable(mut self, durability: Durability) -> Result<Self, ConfigError> {
        if durability.wait() >= self.backend.call_timeout() {
            return Err(ConfigError::new(ConfigErrorKind::Durability));
        }
        self.durability = Some(durability);
        Ok(self)
    }

    /// Loads the scripts into the server's cache (`SCRIPT LOAD`), so that requests need one
    /// round trip each.
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be reached.
    pub async fn preload(&self) -> Result<(), StoreError> {
        self.backend
            .preload(&[&self.claim_script, &self.fenced_script])
            .await
    }

    /// The back end: its connection, deadline and circuit breaker.
    pub fn backend(&self) -> &RedisBackend<C> {
        &self.backend
    }

    /// The Redis key of `key`: `prefix:` and the key's hex. Every script touches this one key
    /// only, so they all run on Redis Cluster without hash tags.
    pub fn redis_key(&self, key: &StoreKey) -> String {
        format!("{}:{}", self.prefix, key.to_hex())
    }

    /// Runs `script` on `key` with `args` along `write`'s path and parses the reply.
    fn eval<T, R>(
        &self,
        write: Write,
        script: &Arc<Script>,
        key: &StoreKey,
        args: Vec<Vec<u8>>,
        parse: impl FnOnce(T) -> Result<R, StoreError> + Send + 'static,
    ) -> StoreFuture<R>
    where
        T: FromRedisValue + Send + 'static,
        R: 'static,
    {
        let key = self.redis_key(key);
        if let Some(durability) = self.durability {
            let call = self.backend.eval_durable::<T>(
                script,
                vec![key],
                args,
                durability,
                matches!(write, Write::Record),
            );
            return Box::pin(async move { parse(call.await?) });
        }
        let build = move |invocation: &mut redis::ScriptInvocation<'_>| {
            invocation.key(key);
            for arg in args {
                invocation.arg(arg);
            }
        };
        let call = match write {
            Write::Guarded => self.backend.eval::<T, _>(script, build),
            Write::Record => self.backend.eval_essential::<T, _>(script, build),
        };
        Box::pin(async move { parse(call.await?) })
    }
}

/// Which path a script takes through the back end.
#[derive(Clone, Copy)]
enum Write {
    /// Through the breaker: `claim`, `release` and `renew`, whose fast failure loses
    /// nothing (a key not released, or a lease not renewed, frees itself when the lease ends).
    Guarded,
    /// Past it: `complete` records work already done; losing it lets a retry run the handler
    /// again after the lease, so it is worth the wait of one deadline.
    Record,
}

impl<C> IdempotencyStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn claim(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> StoreFuture<Claim> {
        let token = FencingToken::random();
        let mut value = fence(token).to_vec();
        value.extend_from_slice(fingerprint.as_bytes());
        let args = vec![value, millis(lease)];
        self.eval(
            Write::Guarded,
            &self.claim_script,
            &key,
            args,
            move |reply: Value| parse_claim(&reply, token),
        )
    }

    fn complete(
        &self,
        key: StoreKey,
        token: FencingToken,
        fingerprint: Fingerprint,
        outcome: Completion,
        ttl: Duration,
    ) -> StoreFuture<Fenced> {
        let value = match wire::encode_record(vec![b'C'], &fingerprint, &outcome) {
            Ok(value) => value,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let args = vec![
            fence(token).to_vec(),
            b"complete".to_vec(),
            value,
            millis(ttl),
        ];
        self.eval(Write::Record, &self.fenced_script, &key, args, parse_fenced)
    }

    fn release(&self, key: StoreKey, token: FencingToken) -> StoreFuture<Fenced> {
        let args = vec![fence(token).to_vec(), b"release".to_vec()];
        self.eval(
            Write::Guarded,
            &self.fenced_script,
            &key,
            args,
            parse_fenced,
        )
    }

    fn renew(&self, key: StoreKey, token: FencingToken, lease: Duration) -> StoreFuture<Fenced> {
        let args = vec![fence(token).to_vec(), b"renew".to_vec(), millis(lease)];
        self.eval(
            Write::Guarded,
            &self.fenced_script,
            &key,
            args,
            parse_fenced,
        )
    }
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("durability", &self.durability)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The start of every in-flight value of `token`: `F` and the token, big-endian.
fn fence(token: FencingToken) -> [u8; 17] {
    let mut out = [b'F'; 17];
    out[1..].copy_from_slice(&token.as_u128().to_be_bytes());
    out
}

/// A duration as a Redis argument: whole milliseconds, rounded up, at least 1.
fn millis(duration: Duration) -> Vec<u8> {
    let ms = u64::try_from(duration.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1);
    ms.to_string().into_bytes()
}

fn unexpected() -> StoreError {
    malformed("an idempotency script answered an unexpected shape")
}

fn malformed(message: &'static str) -> StoreError {
    StoreError::new(StoreErrorKind::BadReply, message)
}

fn parse_claim(reply: &Value, token: FencingToken) -> Result<Claim, StoreError> {
    let Value::Array(items) = reply else {
        return Err(unexpected());
    };
    match items.as_slice() {
        [Value::Int(0)] => Ok(Claim::Claimed(token)),
        [Value::Int(1), Value::BulkString(value), Value::Int(pttl)] => decode(value, *pttl),
        _ => Err(unexpected()),
    }
}

/// A stored value found by a claim, with its remaining time to live in milliseconds.
fn decode(value: &[u8], pttl: i64) -> Result<Claim, StoreError> {
    match value.split_first() {
        Some((b'F', rest)) => {
            let fingerprint = rest
                .get(16..)
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| malformed("Redis holds a malformed idempotency claim"))?;
            Ok(Claim::InFlight {
                fingerprint: Fingerprint::from_bytes(fingerprint),
                lease_remaining: Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
            })
        }
        Some((b'C', rest)) => {
            let (fingerprint, outcome) = wire::decode_record(rest)?;
            Ok(Claim::Completed {
                fingerprint,
                outcome,
            })
        }
        _ => Err(malformed("Redis holds an unknown idempotency value")),
    }
}

fn parse_fenced(reply: i64) -> Result<Fenced, StoreError> {
    match reply {
        1 => Ok(Fenced::Applied),
        0 => Ok(Fenced::Stale),
        _ => Err(unexpected()),
    }
}
