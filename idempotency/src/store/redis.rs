//! [`RedisStore`]: claims and results in Redis, shared by every instance.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Client, FromRedisValue, Script, Value};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::store::{
    Claim, Fenced, FencingToken, Fingerprint, IdempotencyStore, Outcome, StoreFuture, StoreKey,
    StoredResponse,
};

/// Claims a vacant key, or reports what holds it.
///
/// - `KEYS[1]`: the record.
/// - `ARGV[1]`: the in-flight value to set (`F`, token, fingerprint).
/// - `ARGV[2]`: the lease in milliseconds.
/// - Returns `{0}` when claimed, else `{1, value, PTTL}` of what is there.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
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

/// The default time one store operation may take before it counts as failed (250 ms).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// Claims and results in Redis: every instance using the same server and key prefix shares
/// them, so a retry landing on another instance is still recognized.
///
/// - **One round trip** per operation: one `EVALSHA` of a script loaded when the store
///   connects (a server that lost its script cache gets it again, transparently, on the first
///   `NOSCRIPT`).
/// - **Fencing** by compare-and-set in Lua: `complete`, `release` and `renew` act only while
///   the stored claim still carries the caller's token, so a holder whose lease ran out can
///   never overwrite the work of the request that took over.
/// - **Expiry** by `PX`: a claim lives for its lease, a completed record for its own TTL; the
///   two are separate, so a crashed holder blocks its key for at most one lease.
/// - **Redis Cluster**: every script touches exactly one key, so no hash tags are needed and
///   keys spread over the cluster. Pass a cluster connection to [`RedisStore::new`]; scripts
///   go to primaries and are never read from replicas.
/// - **Timeouts**: an operation that takes longer than [`timeout`](Self::timeout) (default
///   [`DEFAULT_TIMEOUT`]) is a store error, and the layer fails closed. The connection
///   manager reconnects in the background, so the store recovers by itself when Redis is
///   back.
/// - **Keys** look like `prefix:<64 hex digits>`: only the SHA-256 of the scope and the
///   idempotency key is stored, never the raw key.
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    connection: C,
    prefix: Arc<str>,
    timeout: Duration,
    claim_script: Arc<Script>,
    fenced_script: Arc<Script>,
}

impl RedisStore<ConnectionManager> {
    /// Connects to `url` (`redis://host:port/db`) with a reconnecting connection manager and
    /// loads the scripts. Keys start with `prefix`.
    ///
    /// # Errors
    ///
    /// Fails when the URL or prefix is invalid or the server cannot be reached now.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::new("invalid Redis URL", Some(Box::new(e))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_TIMEOUT * 4))
            // No response timeout in the manager: the store's own `timeout` bounds every
            // operation, and a manager limit would silently cap a longer one set there.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::new("cannot connect to Redis", Some(Box::new(e))))?;
        let store = RedisStore::new(manager, prefix)?;
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
    pub fn new(connection: C, prefix: &str) -> Result<Self, StoreError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(StoreError::new(
                format!("invalid Redis key prefix {prefix:?}: must be non-empty, without braces"),
                None,
            ));
        }
        Ok(RedisStore {
            connection,
            prefix: Arc::from(prefix),
            timeout: DEFAULT_TIMEOUT,
            claim_script: Arc::new(Script::new(CLAIM)),
            fenced_script: Arc::new(Script::new(FENCED)),
        })
    }

    /// How long one operation may take before it counts as a store failure.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Loads the scripts into the server's cache (`SCRIPT LOAD`), so that requests need one
    /// round trip each.
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be reached.
    pub async fn preload(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        for script in [&self.claim_script, &self.fenced_script] {
            script.load_async(&mut connection).await.map_err(|e| {
                StoreError::new("cannot load the idempotency scripts", Some(Box::new(e)))
            })?;
        }
        Ok(())
    }

    /// The Redis key of `key`: `prefix:` and the key's hex. Every script touches this one key
    /// only, so they all run on Redis Cluster without hash tags.
    pub fn redis_key(&self, key: &StoreKey) -> String {
        format!("{}:{}", self.prefix, key.to_hex())
    }

    /// Runs `script` on `key` with `args` in one round trip, bounded by the timeout, and
    /// parses the reply.
    fn eval<T, R>(
        &self,
        script: &Arc<Script>,
        key: &StoreKey,
        args: Vec<Vec<u8>>,
        parse: impl FnOnce(T) -> Result<R, StoreError> + Send + 'static,
    ) -> StoreFuture<R>
    where
        T: FromRedisValue + Send + 'static,
        R: 'static,
    {
        let script = Arc::clone(script);
        let key = self.redis_key(key);
        let mut connection = self.connection.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let mut invocation = script.prepare_invoke();
            invocation.key(key);
            for arg in args {
                invocation.arg(arg);
            }
            let call = invocation.invoke_async::<T>(&mut connection);
            let reply = tokio::time::timeout(timeout, call)
                .await
                .map_err(|e| StoreError::new("Redis did not answer in time", Some(Box::new(e))))?
                .map_err(|e| StoreError::new("Redis failed", Some(Box::new(e))))?;
            parse(reply)
        })
    }
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
        self.eval(&self.claim_script, &key, args, move |reply: Value| {
            parse_claim(&reply, token)
        })
    }

    fn complete(
        &self,
        key: StoreKey,
        token: FencingToken,
        fingerprint: Fingerprint,
        outcome: Outcome,
        ttl: Duration,
    ) -> StoreFuture<Fenced> {
        let value = match encode_completed(&fingerprint, &outcome) {
            Ok(value) => value,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let args = vec![
            fence(token).to_vec(),
            b"complete".to_vec(),
            value,
            millis(ttl),
        ];
        self.eval(&self.fenced_script, &key, args, parse_fenced)
    }

    fn release(&self, key: StoreKey, token: FencingToken) -> StoreFuture<Fenced> {
        let args = vec![fence(token).to_vec(), b"release".to_vec()];
        self.eval(&self.fenced_script, &key, args, parse_fenced)
    }

    fn renew(&self, key: StoreKey, token: FencingToken, lease: Duration) -> StoreFuture<Fenced> {
        let args = vec![fence(token).to_vec(), b"renew".to_vec(), millis(lease)];
        self.eval(&self.fenced_script, &key, args, parse_fenced)
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

/// A completed record as stored, after the `C` byte.
#[derive(Serialize, Deserialize)]
struct Wire {
    fingerprint: [u8; 32],
    outcome: WireOutcome,
}

/// [`Outcome`] as stored.
#[derive(Serialize, Deserialize)]
enum WireOutcome {
    Response {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    NotReplayable,
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

fn corrupt(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::new(
        "Redis holds a malformed idempotency record",
        Some(Box::new(source)),
    )
}

fn unexpected() -> StoreError {
    StoreError::new("an idempotency script answered an unexpected shape", None)
}

fn encode_completed(fingerprint: &Fingerprint, outcome: &Outcome) -> Result<Vec<u8>, StoreError> {
    let outcome = match outcome {
        Outcome::Response(response) => WireOutcome::Response {
            status: response.status.as_u16(),
            headers: response
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect(),
            body: response.body.to_vec(),
        },
        Outcome::NotReplayable => WireOutcome::NotReplayable,
    };
    let wire = Wire {
        fingerprint: *fingerprint.as_bytes(),
        outcome,
    };
    postcard::to_extend(&wire, vec![b'C'])
        .map_err(|e| StoreError::new("cannot encode the idempotency record", Some(Box::new(e))))
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
                .ok_or_else(|| {
                    StoreError::new("Redis holds a malformed idempotency claim", None)
                })?;
            Ok(Claim::InFlight {
                fingerprint: Fingerprint::from_bytes(fingerprint),
                lease_remaining: Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
            })
        }
        Some((b'C', rest)) => {
            let (wire, trailing) = postcard::take_from_bytes::<Wire>(rest).map_err(corrupt)?;
            if !trailing.is_empty() {
                return Err(StoreError::new(
                    "Redis holds a malformed idempotency record",
                    None,
                ));
            }
            Ok(Claim::Completed {
                fingerprint: Fingerprint::from_bytes(wire.fingerprint),
                outcome: decode_outcome(wire.outcome)?,
            })
        }
        _ => Err(StoreError::new(
            "Redis holds an unknown idempotency value",
            None,
        )),
    }
}

fn decode_outcome(outcome: WireOutcome) -> Result<Outcome, StoreError> {
    Ok(match outcome {
        WireOutcome::NotReplayable => Outcome::NotReplayable,
        WireOutcome::Response {
            status,
            headers,
            body,
        } => Outcome::Response(StoredResponse {
            status: StatusCode::from_u16(status).map_err(corrupt)?,
            headers: headers
                .into_iter()
                .map(|(name, value)| -> Result<_, StoreError> {
                    Ok((
                        HeaderName::from_bytes(name.as_bytes()).map_err(corrupt)?,
                        HeaderValue::from_bytes(&value).map_err(corrupt)?,
                    ))
                })
                .collect::<Result<_, StoreError>>()?,
            body: Bytes::from(body),
        }),
    })
}

fn parse_fenced(reply: i64) -> Result<Fenced, StoreError> {
    match reply {
        1 => Ok(Fenced::Applied),
        0 => Ok(Fenced::Stale),
        _ => Err(unexpected()),
    }
}
