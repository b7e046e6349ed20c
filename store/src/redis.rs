//! The Redis back end every guardrail Redis store is built on: one connection set-up, one
//! key-prefix rule, one way to run a script (deadline, breaker, NOSCRIPT fallback).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{
    Client, FromRedisValue, IntoConnectionInfo, RedisError, Script, ScriptInvocation,
    ServerErrorKind,
};

use crate::breaker::CircuitBreaker;
use crate::error::{ConfigError, ConfigErrorKind, StoreError, StoreErrorKind};
use crate::{Finishing, StoreFuture};

/// The default time one store call may take before it counts as failed (250 ms). Long
/// enough for a busy server a network hop away; the breaker keeps an outage from costing it
/// on every request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// A validated key prefix: non-empty and without `{` or `}`, so that a store's own hash tags
/// (`{…}`) decide where keys go on Redis Cluster.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(Arc<str>);

impl KeyPrefix {
    /// Checks `prefix`.
    ///
    /// # Errors
    ///
    /// [`ConfigErrorKind::KeyPrefix`] when it is empty or contains `{` or `}`.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(ConfigError::new(ConfigErrorKind::KeyPrefix(
                prefix.to_owned(),
            )));
        }
        Ok(KeyPrefix(Arc::from(prefix)))
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Redis connection with the deadline and circuit breaker every store call goes through.
///
/// Clones share the connection and the breaker: build one per Redis deployment and hand
/// clones to every store on it (the idempotency store, the rate limit store, your own), so
/// that they share one connection and one view of Redis's health.
///
/// - **Deadline**: a call that takes longer than [`timeout`](Self::timeout) (default
///   [`DEFAULT_TIMEOUT`]) fails with [`StoreErrorKind::Timeout`].
/// - **Breaker**: consecutive outages open it, and calls then fail at once with
///   [`StoreErrorKind::CircuitOpen`] (see [`CircuitBreaker`]).
/// - **Scripts**: [`eval`](Self::eval) sends `EVALSHA`; a server that lost its script cache
///   (restarted, `SCRIPT FLUSH`, a failover to a replica) answers `NOSCRIPT`, and the script
///   is loaded and run again in the same call.
/// - **Connection**: any [`ConnectionLike`]: the reconnecting `ConnectionManager` from
///   [`connect`](RedisBackend::connect), or a cluster connection (scripts go to primaries).
///
/// ```no_run
/// use guardrail_store::redis::RedisBackend;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect("redis://127.0.0.1:6379").await?;
/// // Hand `redis.clone()` to each store.
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend<C = ConnectionManager> {
    connection: C,
    timeout: Duration,
    breaker: CircuitBreaker,
}

impl RedisBackend<ConnectionManager> {
    /// Connects to `url` (`redis://host:port/db`) with a reconnecting connection manager:
    /// each connection attempt is bounded by four call timeouts (1 s by default, one retry),
    /// and after a connection drops it reconnects in the background (retrying within
    /// 500 ms), so stores recover without a restart.
    ///
    /// On Linux the socket also gets a TCP user timeout of four call timeouts: a connection
    /// whose data goes unacknowledged that long (a peer gone without a reset, a network
    /// partition) is closed by the kernel and replaced, where a call's own deadline only
    /// abandons the call and the connection would wait for TCP to give up (minutes).
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Unavailable`] when the URL is not one the client can use or the
    /// server cannot be reached now (build the [`Client`] yourself and use
    /// [`connect_with`](Self::connect_with) to tell the two apart).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let invalid =
            |e| StoreError::new(StoreErrorKind::Unavailable, "invalid Redis URL").with_source(e);
        let info = url.into_connection_info().map_err(invalid)?;
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        let info = {
            let tcp = info
                .tcp_settings()
                .clone()
                .set_user_timeout(DEFAULT_TIMEOUT * 4);
            info.set_tcp_settings(tcp)
        };
        let client = Client::open(info).map_err(invalid)?;
        Self::connect_with(client).await
    }

    /// Connects with an existing [`Client`] (TLS settings, a username), as
    /// [`connect`](Self::connect) does.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Unavailable`] when the server cannot be reached now.
    pub async fn connect_with(client: Client) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_TIMEOUT * 4))
            // No response timeout in the manager: the backend's own `timeout` bounds every
            // call, and a manager limit would silently cap a longer one set there.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| failure(&e, "cannot connect to Redis").with_source(e))?;
        Ok(RedisBackend::new(manager))
    }
}

/// How many replicas must hold a write before it counts ([`RedisBackend::eval_durable`]),
/// and how long to wait for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durability {
    replicas: u32,
    wait: Duration,
}

impl Durability {
    /// At least `replicas` replicas (1 or more), within `wait` (shorter than the back end's
    /// call deadline, which covers the write and the wait together).
    ///
    /// # Errors
    ///
    /// [`ConfigErrorKind::Durability`] for zero replicas or a zero wait.
    pub fn new(replicas: u32, wait: Duration) -> Result<Self, ConfigError> {
        if replicas == 0 || wait.is_zero() {
            return Err(ConfigError::new(ConfigErrorKind::Durability));
        }
        Ok(Durability { replicas, wait })
    }

    /// The replicas that must acknowledge.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// How long to wait for them.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

/// `WAIT`'s timeout argument: whole milliseconds, rounded up, at least 1 (0 would mean
/// "forever").
fn wait_millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A connection to a Redis Cluster: routes each script to the primary of its key's slot,
/// follows `MOVED` and `ASK`, and rediscovers the slots after a failover.
pub type ClusterConnection = redis::cluster_async::ClusterConnection;

impl RedisBackend<ClusterConnection> {
    /// Connects to the Redis Cluster that the seed `urls` belong to (one reachable seed is
    /// enough; give several so a start-up survives one node being down). Each connection
    /// attempt is bounded by four call timeouts (1 s by default), and a call that meets a
    /// moved slot or a failover is retried by the client up to twice within the call's own
    /// deadline. Scripts run on primaries only.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Unavailable`] when a URL is invalid or no seed answers now.
    pub async fn connect_cluster<U: AsRef<str>>(urls: &[U]) -> Result<Self, StoreError> {
        let invalid = |e| {
            StoreError::new(StoreErrorKind::Unavailable, "invalid Redis Cluster URL").with_source(e)
        };
        let client =
            redis::cluster::ClusterClient::builder(urls.iter().map(|url| url.as_ref().to_owned()))
                .connection_timeout(DEFAULT_TIMEOUT * 4)
                .retries(2)
                .build()
                .map_err(invalid)?;
        let connection = client
            .get_async_connection()
            .await
            .map_err(|e| failure(&e, "cannot connect to the Redis Cluster").with_source(e))?;
        Ok(RedisBackend::new(connection))
    }
}

impl<C> RedisBackend<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A back end on an existing connection, with the default timeout and a default breaker.
    pub fn new(connection: C) -> Self {
        RedisBackend {
            connection,
            timeout: DEFAULT_TIMEOUT,
            breaker: CircuitBreaker::new(),
        }
    }

    /// How long one call may take before it counts as failed.
    ///
    /// # Errors
    ///
    /// Refuses zero.
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new(ConfigErrorKind::Timeout));
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// Uses `breaker` (for other thresholds, or a hook that counts its state changes).
    #[must_use]
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// The connection, for calls of your own (a readiness `PING`).
    pub fn connection(&self) -> &C {
        &self.connection
    }

    /// The breaker every call goes through.
    pub fn circuit_breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The deadline of one call.
    pub fn call_timeout(&self) -> Duration {
        self.timeout
    }

    /// Loads `scripts` into the server's cache (`SCRIPT LOAD`), so that the first calls need
    /// one round trip each. Optional: [`eval`](Self::eval) loads a missing script itself.
    ///
    /// # Errors
    ///
    /// Fails when the server cannot be reached within the timeout.
    pub async fn preload(&self, scripts: &[&Script]) -> Result<(), StoreError> {
        for script in scripts {
            let mut connection = self.connection.clone();
            let load = script.load_async(&mut connection);
            self.breaker
                .run(async {
                    deadline(self.timeout, load)
                        .await
                        .map(drop)
                        .map_err(|e| e.with_message("cannot load a script into Redis"))
                })
                .await?;
        }
        Ok(())
    }

    /// Runs `script` in one round trip (three after a `NOSCRIPT`: the failed `EVALSHA`,
    /// `SCRIPT LOAD`, `EVALSHA` again), its keys and arguments set by `build`, within the
    /// deadline and through the breaker.
    ///
    /// The call runs to its end even if the returned future is dropped (the rest of it in a
    /// task: see [`Finishing`]): the breaker counts every outcome. The future owns what it
    /// needs (`'static`), so a store can run it from a drop guard. It needs a tokio runtime
    /// with time enabled: awaited outside one, it fails with [`StoreErrorKind::BadReply`].
    pub fn eval<T, B>(&self, script: &Arc<Script>, build: B) -> StoreFuture<T>
    where
        T: FromRedisValue + Send + 'static,
        B: FnOnce(&mut ScriptInvocation<'_>) + Send + 'static,
    {
        self.guarded(self.call(script, build))
    }

    /// Runs `call` through the breaker, to its end (its deadline at most) even when its
    /// caller goes away, so the breaker learns how it ended: callers that all give up before
    /// the deadline (a short request timeout, clients hanging up) would otherwise never open
    /// it. Polled in place while its caller waits, in a task of its own only once the caller
    /// is gone ([`Finishing`]): a task per call was a tenth of a client's CPU per call.
    fn guarded<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> StoreFuture<T> {
        let breaker = self.breaker.clone();
        Box::pin(Finishing::new(async move { breaker.run(call).await }))
    }

    /// [`eval`](Self::eval), but tried even while the breaker is open (within the same
    /// deadline), and not counted by it: for the rare writes that record work already done
    /// (an idempotency record after its handler ran), where a wait is worth more than a fast
    /// failure that loses the record.
    pub fn eval_essential<T, B>(&self, script: &Arc<Script>, build: B) -> StoreFuture<T>
    where
        T: FromRedisValue + Send + 'static,
        B: FnOnce(&mut ScriptInvocation<'_>) + Send + 'static,
    {
        Box::pin(self.call(script, build))
    }

    /// [`eval`](Self::eval) of `script` on `keys` with `args`, followed in the same round trip
    /// by `WAIT`, so the call succeeds only once `durability`'s replicas have the write: a
    /// failover to one of them cannot lose it. Fails with [`StoreErrorKind::Unavailable`] when
    /// fewer replicas acknowledge within the wait (the write then exists on the primary
    /// only). `essential` calls skip the breaker, as [`eval_essential`](Self::eval_essential)
    /// does.
    ///
    /// The `WAIT` blocks the connection it runs on until the replicas answer, and the
    /// connection is shared by every caller: calls queue behind each other's acknowledgements.
    /// Like [`eval`](Self::eval), it needs a tokio runtime with time enabled.
    pub fn eval_durable<T>(
        &self,
        script: &Arc<Script>,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
        durability: Durability,
        essential: bool,
    ) -> StoreFuture<T>
    where
        T: FromRedisValue + Send + 'static,
    {
        let script = Arc::clone(script);
        let mut connection = self.connection.clone();
        let timeout = self.timeout;
        let call = async move {
            let pipeline = || {
                let mut pipe = redis::pipe();
                let eval = pipe.cmd("EVALSHA").arg(script.get_hash()).arg(keys.len());
                for key in &keys {
                    eval.arg(key.as_str());
                }
                for arg in &args {
                    eval.arg(arg.as_slice());
                }
                pipe.cmd("WAIT")
                    .arg(durability.replicas)
                    .arg(wait_millis(durability.wait));
                pipe
            };
            let run = async {
                match pipeline().query_async::<(T, i64)>(&mut connection).await {
                    Err(error)
                        if error.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) =>
                    {
                        script.load_async(&mut connection).await?;
                        pipeline().query_async::<(T, i64)>(&mut connection).await
                    }
                    other => other,
                }
            };
            let (value, acknowledged) = deadline(timeout, run).await?;
            if acknowledged < i64::from(durability.replicas) {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "too few Redis replicas acknowledged the write in time",
                ));
            }
            Ok(value)
        };
        if essential {
            return Box::pin(call);
        }
        self.guarded(call)
    }

    fn call<T, B>(
        &self,
        script: &Arc<Script>,
        build: B,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: FromRedisValue + Send + 'static,
        B: FnOnce(&mut ScriptInvocation<'_>) + Send + 'static,
    {
        let script = Arc::clone(script);
        let mut connection = self.connection.clone();
        let timeout = self.timeout;
        async move {
            let mut invocation = script.prepare_invoke();
            build(&mut invocation);
            deadline(timeout, invocation.invoke_async::<T>(&mut connection)).await
        }
    }
}

impl<C> fmt::Debug for RedisBackend<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

async fn deadline<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(failure(&error, "Redis failed").with_source(error)),
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Timeout,
            "Redis did not answer in time",
        )),
    }
}

/// What a Redis error says about the store: down (counts towards the breaker) or answering
/// badly (does not).
fn failure(error: &RedisError, message: &'static str) -> StoreError {
    let down = error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::AuthenticationFailed
                | redis::ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    let kind = if error.is_timeout() {
        StoreErrorKind::Timeout
    } else if down {
        StoreErrorKind::Unavailable
    } else {
        StoreErrorKind::BadReply
    };
    StoreError::new(kind, message)
}

impl StoreError {
    fn with_message(mut self, message: &'static str) -> Self {
        self.message = message;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_without_braces_only() {
        assert_eq!(
            KeyPrefix::new("app:idem").expect("valid").as_str(),
            "app:idem"
        );
        for bad in ["", "a{b", "a}b"] {
            let error = KeyPrefix::new(bad).expect_err("refused");
            assert_eq!(error.kind(), &ConfigErrorKind::KeyPrefix(bad.to_owned()));
        }
    }

    #[test]
    fn errors_are_classified_by_what_they_say_about_the_store() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(failure(&io, "x").kind(), StoreErrorKind::Unavailable);
        let timed_out = RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        assert_eq!(failure(&timed_out, "x").kind(), StoreErrorKind::Timeout);
        let script = RedisError::from((
            redis::ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR",
        ));
        assert_eq!(failure(&script, "x").kind(), StoreErrorKind::BadReply);
        let loading = RedisError::from((
            redis::ErrorKind::Server(ServerErrorKind::BusyLoading),
            "LOADING",
        ));
        assert_eq!(failure(&loading, "x").kind(), StoreErrorKind::Unavailable);
    }
}
