//! [`SqlStore`]: claims and results in a table of your PostgreSQL or SQLite database.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use guardrail_store::{
    CircuitBreaker, ConfigError, ConfigErrorKind, Finishing, StoreError, StoreErrorKind,
};
use sqlx::AssertSqlSafe;
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnection, PgPool};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use crate::key::ScopedKey;
use crate::store::{
    Claim, Completion, Fenced, FencingToken, Fingerprint, IdempotencyStore, StoreFuture, StoreKey,
    wire,
};

/// The table [`SqlStore`] uses unless told otherwise.
pub const DEFAULT_TABLE: &str = "idempotency_records";

/// The default time one store call may take, a wait for a pooled connection included, before
/// it counts as failed (1 s).
pub const DEFAULT_SQL_TIMEOUT: Duration = Duration::from_secs(1);

/// The most rows one [`SqlStore::sweep`] statement deletes; a sweep repeats it at most
/// [`SWEEP_MAX_BATCHES`] times, so one sweep never holds locks on more than this many rows at
/// once nor runs without end.
pub const SWEEP_BATCH: i64 = 1000;

/// The most statements of [`SWEEP_BATCH`] rows one [`SqlStore::sweep`] runs.
pub const SWEEP_MAX_BATCHES: u32 = 100;

/// The schema for PostgreSQL, as shipped: what [`SqlStore::migrate`] runs (with the table
/// name replaced), for operators who apply migrations with their own tool.
pub const POSTGRES_MIGRATION: &str =
    include_str!("../../migrations/postgres/0001_idempotency_records.sql");

/// The schema for SQLite, as shipped: what [`SqlStore::migrate`] runs (with the table name
/// replaced).
pub const SQLITE_MIGRATION: &str =
    include_str!("../../migrations/sqlite/0001_idempotency_records.sql");

/// A claim's state column. `Committed` is what [`SqlStore::commit_in`] writes inside the
/// handler's transaction: the effect is durable, the response not yet recorded.
const IN_FLIGHT: i32 = 0;
const COMMITTED: i32 = 1;
const COMPLETED: i32 = 2;

/// How long [`SqlStore::migrate`] may take (it may wait for another instance's migration).
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bounds the claim's read-after-conflict loop: a row that vanishes (released, expired) between
/// the failed insert and the read is retried at most this many times.
const CLAIM_ATTEMPTS: u32 = 3;

/// Claims and results in one table of a PostgreSQL or SQLite database: the store for services
/// that already run a database and not Redis. Every instance on the same database shares it.
///
/// - **Atomic claim**: one `INSERT … ON CONFLICT DO UPDATE … WHERE <expired>`; of many
///   concurrent claims on a vacant key, the database lets exactly one through. A second
///   statement reads what holds the key only when the claim lost.
/// - **Fencing**: `complete`, `release` and `renew` are `UPDATE`/`DELETE … WHERE token = $n`,
///   so a holder whose lease ran out never overwrites the request that took over.
/// - **Time** is the database's clock (PostgreSQL's `statement_timestamp()`, SQLite's
///   `unixepoch('subsec')`), so instances whose clocks disagree still agree on leases.
/// - **Lifetime**: a claim lives for its lease, a completed record for its TTL; expired rows
///   are vacant at once and deleted by [`sweep`](Self::sweep) (run it periodically, or let
///   [`spawn_sweeper`](Self::spawn_sweeper) do it). The table holds at most the records of one
///   TTL's worth of requests; size the TTL and the layer's response limit with that in mind.
/// - **In the handler's transaction**: [`commit_in_postgres`](Self::commit_in_postgres) (or `commit_in_sqlite`) marks the claim done in
///   the same transaction as the handler's own write. A crash after that commit and before the
///   layer records the response can no longer run the handler twice: a retry gets 409
///   `idempotency-result-unavailable` instead. And a handler whose lease ran out learns it
///   before committing, so its write rolls back instead of duplicating the one that took over.
/// - **Outages**: every call has a deadline ([`timeout`](Self::timeout), a wait for a pooled
///   connection included) and goes through a circuit breaker, as the Redis store's do;
///   recording a result skips the breaker, since losing it would let a retry run again. Calls
///   run in tasks of their own, to their end, so a caller that gives up never leaves the
///   breaker uninformed.
///
/// ```no_run
/// use sqlx::postgres::PgPoolOptions;
/// use tower_idempotency::SqlStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = PgPoolOptions::new().connect("postgres://localhost/orders").await?;
/// let store = SqlStore::postgres(pool);
/// store.migrate().await?;
/// let _sweeper = store.spawn_sweeper(std::time::Duration::from_secs(60));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqlStore {
    pool: Pool,
    table: Arc<str>,
    sql: Arc<Statements>,
    timeout: Duration,
    breaker: CircuitBreaker,
}

#[derive(Clone)]
enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
}

/// Runs `$sql` with `$bind`s on `$executor` (a pool or a connection): the rows it changed.
macro_rules! execute {
    ($executor:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        sqlx::query(AssertSqlSafe(Arc::clone($sql)))
            $(.bind($bind))*
            .execute($executor)
            .await
            .map(|done| done.rows_affected())
    };
}

/// Runs the same statement on whichever driver the pool has (both bind `$N` by number).
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres($p) => $body,
            #[cfg(feature = "sqlite")]
            Pool::Sqlite($p) => $body,
        }
    };
}

impl SqlStore {
    /// A store on `pool`, in the table [`DEFAULT_TABLE`]. Run [`migrate`](Self::migrate) (or
    /// apply [`POSTGRES_MIGRATION`] yourself) before the first request.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: PgPool) -> Self {
        Self::new(Pool::Postgres(pool))
    }

    /// A store on `pool`, in the table [`DEFAULT_TABLE`]. Give the pool a `busy_timeout` (the
    /// default 5 s is longer than this store's deadline) and, for a file, WAL journaling, so
    /// readers never wait for the writer.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: SqlitePool) -> Self {
        Self::new(Pool::Sqlite(pool))
    }

    fn new(pool: Pool) -> Self {
        let sql = Arc::new(Statements::new(dialect(&pool), DEFAULT_TABLE));
        SqlStore {
            pool,
            table: Arc::from(DEFAULT_TABLE),
            sql,
            timeout: DEFAULT_SQL_TIMEOUT,
            breaker: CircuitBreaker::new(),
        }
    }

    /// Uses the table `name` instead: an identifier of letters, digits and `_` (at most 63),
    /// on PostgreSQL optionally qualified by a schema (`guardrails.idempotency`). Its index is
    /// `<name>_expires`, in the table's schema.
    ///
    /// # Errors
    ///
    /// [`ConfigErrorKind::Identifier`] for any other name.
    pub fn table(mut self, name: &str) -> Result<Self, ConfigError> {
        let valid = |part: &str| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && part.len() <= 63
        };
        let parts: Vec<&str> = name.split('.').collect();
        // SQLite names the schema on the index, not on the table: plain names only there.
        let most = match dialect(&self.pool) {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => 2,
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => 1,
        };
        if parts.len() > most || !parts.iter().all(|part| valid(part)) {
            return Err(ConfigError::new(ConfigErrorKind::Identifier(
                name.to_owned(),
            )));
        }
        self.sql = Arc::new(Statements::new(dialect(&self.pool), name));
        self.table = Arc::from(name);
        Ok(self)
    }

    /// The longest one store call may take, a wait for a pooled connection included
    /// (default [`DEFAULT_SQL_TIMEOUT`]).
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

    /// Uses `breaker` (to share one with other stores on the same database, or to tune it).
    #[must_use]
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// The circuit breaker every call goes through.
    pub fn circuit_breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The table.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Creates the table and its index when they are missing ([`POSTGRES_MIGRATION`] or
    /// [`SQLITE_MIGRATION`] with the table's name), in one transaction; on PostgreSQL under an
    /// advisory lock, so instances starting together do not race. Safe to run at every start.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached or refuses the statements.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let sql = Arc::clone(&self.sql);
        let migrate = async {
            on_pool!(&self.pool, |pool| {
                let mut transaction = pool.begin().await?;
                for statement in &sql.schema {
                    sqlx::raw_sql(AssertSqlSafe(statement.as_str()))
                        .execute(&mut *transaction)
                        .await?;
                }
                transaction.commit().await
            })
        };
        deadline(MIGRATE_TIMEOUT, migrate).await
    }

    /// Deletes expired rows, [`SWEEP_BATCH`] per statement and at most [`SWEEP_MAX_BATCHES`]
    /// statements; returns how many rows went. Expired rows are already vacant: sweeping only
    /// gives their space back.
    ///
    /// # Errors
    ///
    /// When the database fails; rows deleted by earlier statements stay deleted.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for _ in 0..SWEEP_MAX_BATCHES {
            let sql = Arc::clone(&self.sql.sweep);
            let pool = self.pool.clone();
            let removed = self
                .call(async move { on_pool!(&pool, |p| execute!(p, &sql, SWEEP_BATCH)) })
                .await?;
            deleted += removed;
            if removed < SWEEP_BATCH.unsigned_abs() {
                break;
            }
        }
        Ok(deleted)
    }

    /// Sweeps every `every` on the current tokio runtime until the returned handle is dropped.
    /// Failures are logged (feature `tracing`) and retried at the next tick.
    pub fn spawn_sweeper(&self, every: Duration) -> Sweeper {
        let store = self.clone();
        let every = every.max(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = store.sweep().await {
                    crate::log::store_error("sweep", &error);
                }
            }
        });
        Sweeper { task }
    }

    /// Marks the layer's claim on `held` done inside the handler's PostgreSQL transaction,
    /// keeping the row for `ttl` (pass the layer's [`ttl`](crate::IdempotencyLayer::ttl)), and
    /// returns whether the claim was still this execution's. Call it on the transaction of the
    /// handler's own write, just before committing:
    ///
    /// - [`Fenced::Applied`]: commit. If the process dies before the layer records the
    ///   response, retries get 409 `idempotency-result-unavailable` (the effect happened, its
    ///   response is lost) and the handler never runs again for the key.
    /// - [`Fenced::Stale`]: the lease ran out and another request may have taken the key over:
    ///   roll back, and answer with an error.
    ///
    /// The row stays locked until the transaction ends, so a retry that would take the key
    /// over waits for the outcome instead of racing it. The transaction must be on the store's
    /// database, at PostgreSQL's default isolation, READ COMMITTED (under REPEATABLE READ or
    /// SERIALIZABLE, the layer's own lease renewal during the transaction makes this update
    /// fail with a serialization error), and short: call this just before the commit, since
    /// the layer's renewal of the row waits for the transaction meanwhile.
    ///
    /// # Errors
    ///
    /// When the statement fails or the store is not on PostgreSQL; roll back then too.
    #[cfg(feature = "postgres")]
    pub async fn commit_in_postgres(
        &self,
        transaction: &mut PgConnection,
        held: &ScopedKey,
        ttl: Duration,
    ) -> Result<Fenced, StoreError> {
        if dialect(&self.pool) != Dialect::Postgres {
            return Err(wrong_dialect());
        }
        let (key, token) = (held.scoped().as_bytes().to_vec(), token_bytes(held.token()));
        let update = async { execute!(transaction, &self.sql.commit, key, token, millis(ttl)) };
        Ok(fenced(deadline(self.timeout, update).await?))
    }

    /// [`commit_in_postgres`](Self::commit_in_postgres) for a SQLite transaction. Begin it with
    /// `BEGIN IMMEDIATE`, so that it takes the write lock before reading, and keep it short:
    /// SQLite has one write lock, and every other write of the service (this store's claims
    /// and renewals included) waits for it, for at most the store's deadline.
    ///
    /// # Errors
    ///
    /// When the statement fails or the store is not on SQLite; roll back then too.
    #[cfg(feature = "sqlite")]
    pub async fn commit_in_sqlite(
        &self,
        transaction: &mut SqliteConnection,
        held: &ScopedKey,
        ttl: Duration,
    ) -> Result<Fenced, StoreError> {
        if dialect(&self.pool) != Dialect::Sqlite {
            return Err(wrong_dialect());
        }
        let (key, token) = (held.scoped().as_bytes().to_vec(), token_bytes(held.token()));
        let update = async { execute!(transaction, &self.sql.commit, key, token, millis(ttl)) };
        Ok(fenced(deadline(self.timeout, update).await?))
    }

    /// Runs `call` under the deadline and through the breaker.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        self.breaker.run(deadline(self.timeout, call)).await
    }

    fn parts(&self) -> (Pool, Arc<Statements>, Duration, CircuitBreaker) {
        (
            self.pool.clone(),
            Arc::clone(&self.sql),
            self.timeout,
            self.breaker.clone(),
        )
    }
}

impl IdempotencyStore for SqlStore {
    fn claim(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> StoreFuture<Claim> {
        let (pool, sql, timeout, breaker) = self.parts();
        // One deadline for the whole claim, however many statements it takes: each statement
        // gets what is left of it, and the breaker sees how each one ended.
        finishing(async move {
            let until = tokio::time::Instant::now() + timeout;
            let left = || until.saturating_duration_since(tokio::time::Instant::now());
            let token = FencingToken::random();
            let lease = millis(lease);
            for _ in 0..CLAIM_ATTEMPTS {
                let insert = async {
                    on_pool!(&pool, |p| execute!(
                        p,
                        &sql.claim,
                        key.as_bytes().to_vec(),
                        scope_value(key),
                        fingerprint.as_bytes().to_vec(),
                        token_bytes(token),
                        lease
                    ))
                };
                if breaker.run(deadline(left(), insert)).await? == 1 {
                    return Ok(Claim::Claimed(token));
                }
                let inspect = async {
                    on_pool!(&pool, |p| sqlx::query_as::<_, HeldRow>(AssertSqlSafe(
                        Arc::clone(&sql.inspect)
                    ))
                    .bind(key.as_bytes().to_vec())
                    .fetch_optional(p)
                    .await)
                };
                let row = breaker.run(deadline(left(), inspect)).await?;
                if let Some(claim) = row.map(Held::from).map(Held::claim).transpose()?.flatten() {
                    return Ok(claim);
                }
                // Released or expired between the two statements: claim again.
            }
            Err(StoreError::new(
                StoreErrorKind::BadReply,
                "the idempotency key kept changing hands during the claim",
            ))
        })
    }

    fn complete(
        &self,
        key: StoreKey,
        token: FencingToken,
        fingerprint: Fingerprint,
        outcome: Completion,
        ttl: Duration,
    ) -> StoreFuture<Fenced> {
        let (pool, sql, timeout, _) = self.parts();
        finishing(async move {
            let record = wire::encode_outcome(&outcome)?;
            let update = async {
                on_pool!(&pool, |p| execute!(
                    p,
                    &sql.complete,
                    key.as_bytes().to_vec(),
                    token_bytes(token),
                    fingerprint.as_bytes().to_vec(),
                    record,
                    millis(ttl)
                ))
            };
            // Past the breaker: this records work already done (see the type's docs).
            Ok(fenced(deadline(timeout, update).await?))
        })
    }

    fn release(&self, key: StoreKey, token: FencingToken) -> StoreFuture<Fenced> {
        let (pool, sql, timeout, breaker) = self.parts();
        finishing(async move {
            let delete = async {
                on_pool!(&pool, |p| execute!(
                    p,
                    &sql.release,
                    key.as_bytes().to_vec(),
                    token_bytes(token)
                ))
            };
            if breaker.run(deadline(timeout, delete)).await? == 1 {
                return Ok(Fenced::Applied);
            }
            // A claim committed by `commit_in` is never given up: its effect happened. Its
            // lease ends now, so retries learn at once that the result is unavailable.
            let end = async {
                on_pool!(&pool, |p| execute!(
                    p,
                    &sql.end_lease,
                    key.as_bytes().to_vec(),
                    token_bytes(token)
                ))
            };
            breaker.run(deadline(timeout, end)).await?;
            Ok(Fenced::Stale)
        })
    }

    fn renew(&self, key: StoreKey, token: FencingToken, lease: Duration) -> StoreFuture<Fenced> {
        let (pool, sql, timeout, breaker) = self.parts();
        finishing(async move {
            let update = async {
                on_pool!(&pool, |p| execute!(
                    p,
                    &sql.renew,
                    key.as_bytes().to_vec(),
                    token_bytes(token),
                    millis(lease)
                ))
            };
            Ok(fenced(breaker.run(deadline(timeout, update)).await?))
        })
    }
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &dialect(&self.pool))
            .field("table", &self.table)
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// The background sweep of [`SqlStore::spawn_sweeper`]; dropping it stops the sweeps.
#[derive(Debug)]
pub struct Sweeper {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The inspect statement's row.
type HeldRow = (i32, Vec<u8>, Option<Vec<u8>>, i64, i64);

/// What holds a key: state, fingerprint, record, and the milliseconds left of the lease and
/// of the row.
struct Held {
    state: i32,
    fingerprint: Vec<u8>,
    record: Option<Vec<u8>>,
    lease_left: i64,
    row_left: i64,
}

impl From<HeldRow> for Held {
    fn from((state, fingerprint, record, lease_left, row_left): HeldRow) -> Self {
        Held {
            state,
            fingerprint,
            record,
            lease_left,
            row_left,
        }
    }
}

impl Held {
    /// The claim this row answers, or `None` when it expired (the key is vacant).
    fn claim(self) -> Result<Option<Claim>, StoreError> {
        if self.row_left <= 0 {
            return Ok(None);
        }
        let fingerprint = Fingerprint::from_bytes(
            <[u8; 32]>::try_from(self.fingerprint.as_slice()).map_err(|_| malformed())?,
        );
        let in_flight = Claim::InFlight {
            fingerprint,
            lease_remaining: Duration::from_millis(self.lease_left.max(0).unsigned_abs()),
        };
        Ok(Some(match (self.state, self.record) {
            (IN_FLIGHT, _) => in_flight,
            // The holder is recording the response right now, or died before it could.
            (COMMITTED, _) if self.lease_left > 0 => in_flight,
            (COMMITTED, _) => Claim::Completed {
                fingerprint,
                outcome: Completion::NotReplayable,
            },
            (COMPLETED, Some(record)) => Claim::Completed {
                fingerprint,
                outcome: wire::decode_outcome(&record)?,
            },
            _ => return Err(malformed()),
        }))
    }
}

/// Which SQL the statements are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "sqlite")]
    Sqlite,
}

fn dialect(pool: &Pool) -> Dialect {
    match pool {
        #[cfg(feature = "postgres")]
        Pool::Postgres(_) => Dialect::Postgres,
        #[cfg(feature = "sqlite")]
        Pool::Sqlite(_) => Dialect::Sqlite,
    }
}

/// Every statement, for one dialect and table, built once per store.
struct Statements {
    claim: Arc<str>,
    inspect: Arc<str>,
    complete: Arc<str>,
    release: Arc<str>,
    end_lease: Arc<str>,
    renew: Arc<str>,
    commit: Arc<str>,
    sweep: Arc<str>,
    schema: Vec<String>,
}

impl Statements {
    fn new(dialect: Dialect, table: &str) -> Self {
        // On PostgreSQL, instances migrating together would race on `CREATE TABLE IF NOT
        // EXISTS` (a unique violation in the catalog): the migration takes an advisory lock.
        // The sweep skips rows that a claim or a handler's transaction holds locked.
        let (now, migration, lock, skip_locked) = match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => (
                "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)",
                POSTGRES_MIGRATION,
                Some("SELECT pg_advisory_xact_lock(7428002)"),
                " FOR UPDATE SKIP LOCKED",
            ),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => (
                "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
                SQLITE_MIGRATION,
                None,
                "",
            ),
        };
        let index = table.rsplit('.').next().unwrap_or(table);
        let sql = |template: &str| -> Arc<str> {
            Arc::from(template.replace("{t}", table).replace("{now}", now))
        };
        Statements {
            // $1 key, $2 scope, $3 fingerprint, $4 token, $5 lease (ms).
            claim: sql(
                "INSERT INTO {t} AS held (key_hash, scope, fingerprint, token, state, record, lease_until, expires_at) \
                 VALUES ($1, $2, $3, $4, 0, NULL, {now} + $5, {now} + $5) \
                 ON CONFLICT (key_hash) DO UPDATE SET scope = excluded.scope, \
                 fingerprint = excluded.fingerprint, token = excluded.token, state = 0, \
                 record = NULL, lease_until = excluded.lease_until, expires_at = excluded.expires_at \
                 WHERE held.expires_at <= {now}",
            ),
            inspect: sql(
                "SELECT state, fingerprint, record, lease_until - {now} AS lease_left, \
                 expires_at - {now} AS row_left FROM {t} WHERE key_hash = $1",
            ),
            // $1 key, $2 token, $3 fingerprint, $4 record, $5 ttl (ms).
            complete: sql(
                "UPDATE {t} SET state = 2, fingerprint = $3, record = $4, expires_at = {now} + $5 \
                 WHERE key_hash = $1 AND token = $2 AND expires_at > {now} \
                 AND ((state = 0 AND lease_until > {now}) OR state = 1)",
            ),
            release: sql(
                "DELETE FROM {t} WHERE key_hash = $1 AND token = $2 AND state = 0 AND lease_until > {now}",
            ),
            end_lease: sql(
                "UPDATE {t} SET lease_until = {now} WHERE key_hash = $1 AND token = $2 AND state = 1",
            ),
            // $3 lease (ms).
            renew: sql("UPDATE {t} SET lease_until = {now} + $3, \
                 expires_at = CASE WHEN state = 0 THEN {now} + $3 ELSE expires_at END \
                 WHERE key_hash = $1 AND token = $2 AND state IN (0, 1) AND lease_until > {now}"),
            // $3 ttl (ms).
            commit: sql("UPDATE {t} SET state = 1, expires_at = {now} + $3 \
                 WHERE key_hash = $1 AND token = $2 AND state = 0 AND lease_until > {now}"),
            // The outer condition is checked again on the row the DELETE reaches: a row the
            // subquery saw expired but that a claim or a renew has revived since is kept.
            sweep: sql(&format!(
                "DELETE FROM {{t}} WHERE expires_at <= {{now}} AND key_hash IN \
                 (SELECT key_hash FROM {{t}} WHERE expires_at <= {{now}} LIMIT $1{skip_locked})"
            )),
            schema: lock
                .into_iter()
                .map(str::to_owned)
                .chain([migrate_into(migration, table, index)])
                .collect(),
        }
    }
}

/// The shipped migration for `table` (index `<index>_expires`): its two statements' names
/// replaced as whole phrases, so a name that contains the default one is not replaced twice.
fn migrate_into(migration: &str, table: &str, index: &str) -> String {
    migration
        .replace(
            &format!("CREATE TABLE IF NOT EXISTS {DEFAULT_TABLE} ("),
            &format!("CREATE TABLE IF NOT EXISTS {table} ("),
        )
        .replace(
            &format!("CREATE INDEX IF NOT EXISTS {DEFAULT_TABLE}_expires ON {DEFAULT_TABLE} ("),
            &format!("CREATE INDEX IF NOT EXISTS {index}_expires ON {table} ("),
        )
}

/// Whether a database error says the database is down, unreachable or overloaded (and not that
/// a statement was wrong): connection failures, an exhausted or closed pool, PostgreSQL's
/// connection exceptions (class `08`), insufficient resources (`53`), shutdown and start-up
/// (`57P01`–`57P03`), SQLite's `BUSY` and `LOCKED` after the busy timeout.
pub fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(&*code, "57P01" | "57P02" | "57P03")
                || matches!(&*code, "5" | "6" | "261" | "262" | "517")
        }),
        _ => false,
    }
}

fn failure(error: sqlx::Error, message: &'static str) -> StoreError {
    let kind = if is_outage(&error) {
        StoreErrorKind::Unavailable
    } else {
        StoreErrorKind::BadReply
    };
    StoreError::new(kind, message).with_source(error)
}

async fn deadline<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(failure(error, "the idempotency database failed")),
        Err(_) => Err(timed_out()),
    }
}

fn timed_out() -> StoreError {
    StoreError::new(
        StoreErrorKind::Timeout,
        "the idempotency database did not answer in time",
    )
}

fn malformed() -> StoreError {
    StoreError::new(
        StoreErrorKind::BadReply,
        "the idempotency table holds a malformed row",
    )
}

/// Runs a store call to its end (its deadline at most), even if the caller goes away: the
/// breaker learns how every call ended, and a statement is never abandoned halfway through on
/// a pooled connection. Polled in place; in a task only once the caller is gone.
fn finishing<T: Send + 'static>(
    call: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> StoreFuture<T> {
    Box::pin(Finishing::new(call))
}

fn wrong_dialect() -> StoreError {
    StoreError::new(
        StoreErrorKind::BadReply,
        "commit_in on a transaction of another database than the store's",
    )
}

fn fenced(rows: u64) -> Fenced {
    if rows == 1 {
        Fenced::Applied
    } else {
        Fenced::Stale
    }
}

fn token_bytes(token: FencingToken) -> Vec<u8> {
    token.as_u128().to_be_bytes().to_vec()
}

/// The scope id as the signed 64-bit integer both databases store (the same bits).
fn scope_value(key: StoreKey) -> i64 {
    i64::from_be_bytes(key.scope().as_u64().to_be_bytes())
}

/// A duration in whole milliseconds, rounded up, at least 1 (the layer caps leases and TTLs
/// at a year, far below `i64::MAX`).
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos().div_ceil(1_000_000))
        .unwrap_or(i64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_name_the_table_and_its_index_once() {
        for migration in [POSTGRES_MIGRATION, SQLITE_MIGRATION] {
            let moved = migrate_into(migration, "app.idempotency_records", "idempotency_records");
            assert!(moved.contains("CREATE TABLE IF NOT EXISTS app.idempotency_records ("));
            assert!(moved.contains(
                "CREATE INDEX IF NOT EXISTS idempotency_records_expires ON app.idempotency_records ("
            ));
            let longer = migrate_into(
                migration,
                "idempotency_records_v2",
                "idempotency_records_v2",
            );
            assert!(longer.contains("CREATE TABLE IF NOT EXISTS idempotency_records_v2 ("));
            assert!(longer.contains(
                "CREATE INDEX IF NOT EXISTS idempotency_records_v2_expires ON idempotency_records_v2 ("
            ));
            assert_eq!(
                migrate_into(migration, DEFAULT_TABLE, DEFAULT_TABLE),
                migration,
                "the shipped file names the default table"
            );
        }
    }
}
