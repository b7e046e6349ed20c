//! Order storage on SQLite (the default) or PostgreSQL, on sqlx's native driver for each.
//!
//! Every statement is a constant, with `$N` placeholders that both drivers bind by number, and
//! every row is read into a typed tuple: no SQL is assembled at run time. The keyset queries
//! are the ones `tower-cursor` generates for this listing (a test holds them equal).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tower_cursor::{Direction, PageRequest};
use tower_idempotency::SqlStore;

use crate::order::{Item, NewOrder, Order, Status, new_order_id};

/// A database error; logged with the request id. [`failure`] says how it is answered.
pub type DbError = sqlx::Error;

/// What a database error means for the request that met it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The database is down, unreachable, overloaded or its pool exhausted: 503
    /// `database-unavailable`, worth retrying soon.
    Unavailable,
    /// The statement ran past its `statement_timeout` (the request deadline): 503
    /// `deadline-exceeded`.
    Deadline,
    /// Anything else (a bug, a corrupt row): 500 `internal`.
    Internal,
}

/// Classifies a database error.
pub fn failure(error: &DbError) -> Failure {
    match error {
        // PostgreSQL `query_canceled`: our statement_timeout.
        sqlx::Error::Database(error) if error.code().as_deref() == Some("57014") => {
            Failure::Deadline
        }
        // Down, unreachable, overloaded, shutting down; SQLite BUSY and LOCKED after the busy
        // timeout: the one classification the idempotency store uses too.
        error if tower_idempotency::is_outage(error) => Failure::Unavailable,
        _ => Failure::Internal,
    }
}

/// How the pool behaves.
#[derive(Clone, Copy, Debug)]
pub struct PoolOptions {
    /// The most connections.
    pub max_connections: u32,
    /// How long a caller waits for a connection, a new connection's handshake included.
    pub acquire_timeout: Duration,
    /// The longest a statement may run (PostgreSQL `statement_timeout`, SQLite
    /// `busy_timeout`), so the database stops when the request's deadline passes.
    pub statement_timeout: Duration,
}

/// The keys of one page position: `(created_at, id)`.
pub type OrderPosition = (i64, String);

/// An order row: id, status, customer id, items (JSON), currency, total, created at,
/// cancelled at.
type OrderRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

macro_rules! columns {
    () => {
        "id, status, customer_id, items, currency, total, created_at, cancelled_at"
    };
}

const INSERT: &str = "INSERT INTO orders (id, tenant, idempotency_key, request_fingerprint, \
     status, customer_id, items, currency, total, created_at, cancelled_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL) \
     ON CONFLICT (tenant, idempotency_key) DO NOTHING";
const BY_KEY: &str =
    "SELECT id, request_fingerprint FROM orders WHERE tenant = $1 AND idempotency_key = $2";
const BY_ID: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orders WHERE tenant = $1 AND id = $2"
);
// Many ids in one statement, bound as one value (an array on PostgreSQL, a JSON array that
// SQLite's `json_each` unpacks), so the SQL stays constant whatever the number of ids.
const BY_IDS_POSTGRES: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orders WHERE tenant = $1 AND id = ANY($2)"
);
const BY_IDS_SQLITE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orders WHERE tenant = $1 AND id IN (SELECT value FROM json_each($2))"
);
// One conditional UPDATE: two concurrent cancels cannot both succeed.
const CANCEL: &str = "UPDATE orders SET status = $1, cancelled_at = $2 \
     WHERE tenant = $3 AND id = $4 AND status = $5";
const COUNT: &str = "SELECT COUNT(*) FROM orders WHERE tenant = $1";

/// The listing, newest first: `tower-cursor`'s keyset for `(created_at DESC, id DESC)`, whose
/// predicate binds the boundary's `created_at` as `$2` and `id` as `$3`.
const PAGE_FIRST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orders WHERE tenant = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
);
const PAGE_AFTER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orders WHERE tenant = $1 AND ",
    "(created_at, id) < ($2, $3)",
    " ORDER BY created_at DESC, id DESC LIMIT $4"
);
const PAGE_BEFORE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orders WHERE tenant = $1 AND ",
    "(created_at, id) > ($2, $3)",
    " ORDER BY created_at ASC, id ASC LIMIT $4"
);

/// The schema. `(tenant, idempotency_key)` is unique, so a retry whose idempotency record was
/// lost (a crash between the commit and the store's completion) finds the order it created
/// instead of inserting a second one. Both databases allow many rows with a NULL key.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        idempotency_key TEXT,
        request_fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        items TEXT NOT NULL,
        currency TEXT NOT NULL,
        total BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        cancelled_at BIGINT,
        CONSTRAINT orders_idempotency UNIQUE (tenant, idempotency_key)
    )",
    // The listing's keyset index: tenant, then newest first.
    "CREATE INDEX IF NOT EXISTS orders_by_tenant_created ON orders (tenant, created_at, id)",
];

/// Which SQL dialect the pool speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// What inserting an order did.
#[derive(Debug)]
pub enum Inserted {
    /// A new order.
    Created(Order),
    /// The tenant already placed an order with this idempotency key and the same content.
    Existing(Order),
    /// The tenant already used this idempotency key for a different order.
    KeyReused,
}

/// What cancelling an order did.
#[derive(Debug)]
pub enum Cancelled {
    /// It was pending and is now cancelled.
    Done(Order),
    /// It is not pending (any more).
    NotCancellable(Order),
    /// No such order for this tenant.
    NotFound,
}

/// The order store.
#[derive(Clone, Debug)]
pub struct Database {
    pool: Pool,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same typed statement on whichever driver the pool has.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match &$db.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

impl Database {
    /// Connects (creating a SQLite file when missing) and creates the schema.
    ///
    /// # Errors
    ///
    /// When the URL is not SQLite or PostgreSQL, or the database cannot be reached.
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Self, DbError> {
        let pool = if url.starts_with("sqlite:") {
            Pool::Sqlite(connect_sqlite(url, options).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(connect_postgres(url, options).await?)
        } else {
            return Err(sqlx::Error::Configuration(
                format!("unsupported database URL {url:?}: use sqlite://FILE or postgres://…")
                    .into(),
            ));
        };
        let db = Database { pool };
        db.create_schema().await?;
        Ok(db)
    }

    async fn create_schema(&self) -> Result<(), DbError> {
        // In one transaction, and on PostgreSQL under an advisory lock: instances starting
        // together would otherwise race on `CREATE TABLE IF NOT EXISTS` (a unique violation
        // in PostgreSQL's catalog).
        on_pool!(self, |pool| {
            let mut transaction = pool.begin().await?;
            if self.backend() == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(7428001)")
                    .execute(&mut *transaction)
                    .await?;
            }
            for statement in SCHEMA {
                sqlx::query(*statement).execute(&mut *transaction).await?;
            }
            transaction.commit().await
        })
    }

    /// The dialect.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// An idempotency store in this database's `idempotency_records` table, on the same
    /// pool, its schema created (so replays survive restarts, and on PostgreSQL every instance
    /// shares them).
    ///
    /// # Errors
    ///
    /// When the migration fails.
    pub async fn idempotency_store(&self) -> Result<SqlStore, guardrail_store::StoreError> {
        let store = match &self.pool {
            Pool::Sqlite(pool) => SqlStore::sqlite(pool.clone()),
            Pool::Postgres(pool) => SqlStore::postgres(pool.clone()),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Whether the database answers.
    ///
    /// # Errors
    ///
    /// When it does not.
    pub async fn ping(&self) -> Result<(), DbError> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))
    }

    /// Inserts an order. With an idempotency key, a second insert with the same key returns
    /// the first order (or [`Inserted::KeyReused`] when the content differs).
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn insert(
        &self,
        tenant: &str,
        idempotency_key: Option<&str>,
        new: &NewOrder,
        now_micros: i64,
    ) -> Result<Inserted, DbError> {
        let fingerprint = new.fingerprint();
        let items = serde_json::to_string(&new.items).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let id = new_order_id();
        let total = to_i64(new.total);
        let inserted = on_pool!(self, |pool| sqlx::query(INSERT)
            .bind(&id)
            .bind(tenant)
            .bind(idempotency_key)
            .bind(&fingerprint)
            .bind(Status::Pending.as_str())
            .bind(&new.customer_id)
            .bind(&items)
            .bind(&new.currency)
            .bind(total)
            .bind(now_micros)
            .execute(pool)
            .await?
            .rows_affected());
        if inserted == 1 {
            return Ok(Inserted::Created(Order {
                id,
                status: Status::Pending,
                customer_id: new.customer_id.clone(),
                items: new.items.clone(),
                currency: new.currency.clone(),
                total: new.total,
                created_at: now_micros,
                cancelled_at: None,
            }));
        }
        // The key was taken: find the order that took it (a rare path: a retry whose
        // idempotency record was lost).
        let (taken_by, stored): (String, String) = on_pool!(self, |pool| sqlx::query_as(BY_KEY)
            .bind(tenant)
            .bind(idempotency_key)
            .fetch_one(pool)
            .await?);
        let order = self
            .get(tenant, &taken_by)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok(if stored == fingerprint {
            Inserted::Existing(order)
        } else {
            Inserted::KeyReused
        })
    }

    /// The tenant's order `id`.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<Order>, DbError> {
        let row: Option<OrderRow> = on_pool!(self, |pool| sqlx::query_as(BY_ID)
            .bind(tenant)
            .bind(id)
            .fetch_optional(pool)
            .await?);
        row.map(order_from_row).transpose()
    }

    /// The tenant's orders among `ids`, in one statement, in no particular order (callers
    /// bound `ids`: the gRPC batch read takes at most 100).
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn get_many(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Order>, DbError> {
        let rows: Vec<OrderRow> = match &self.pool {
            Pool::Postgres(pool) => {
                sqlx::query_as(BY_IDS_POSTGRES)
                    .bind(tenant)
                    .bind(ids)
                    .fetch_all(pool)
                    .await?
            }
            Pool::Sqlite(pool) => {
                let ids = serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(e.into()))?;
                sqlx::query_as(BY_IDS_SQLITE)
                    .bind(tenant)
                    .bind(ids)
                    .fetch_all(pool)
                    .await?
            }
        };
        rows.into_iter().map(order_from_row).collect()
    }

    /// Cancels the tenant's order `id` if it is pending.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn cancel(
        &self,
        tenant: &str,
        id: &str,
        now_micros: i64,
    ) -> Result<Cancelled, DbError> {
        let updated = on_pool!(self, |pool| sqlx::query(CANCEL)
            .bind(Status::Cancelled.as_str())
            .bind(now_micros)
            .bind(tenant)
            .bind(id)
            .bind(Status::Pending.as_str())
            .execute(pool)
            .await?
            .rows_affected());
        Ok(match (updated, self.get(tenant, id).await?) {
            (_, None) => Cancelled::NotFound,
            (1, Some(order)) => Cancelled::Done(order),
            (_, Some(order)) => Cancelled::NotCancellable(order),
        })
    }

    /// One page of the tenant's orders, newest first, from the cursor's position; one row more
    /// than the page is fetched so the paginator can tell whether there is a next page.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn page(
        &self,
        tenant: &str,
        page: &PageRequest<OrderPosition>,
    ) -> Result<Vec<Order>, DbError> {
        let limit = i64::try_from(page.fetch_limit()).unwrap_or(i64::MAX);
        let rows: Vec<OrderRow> = match page.position() {
            None => on_pool!(self, |pool| sqlx::query_as(PAGE_FIRST)
                .bind(tenant)
                .bind(limit)
                .fetch_all(pool)
                .await?),
            Some(position) => {
                let sql = match position.direction() {
                    Direction::After => PAGE_AFTER,
                    Direction::Before => PAGE_BEFORE,
                };
                let (created_at, id) = position.keys();
                on_pool!(self, |pool| sqlx::query_as(sql)
                    .bind(tenant)
                    .bind(*created_at)
                    .bind(id.as_str())
                    .bind(limit)
                    .fetch_all(pool)
                    .await?)
            }
        };
        rows.into_iter().map(order_from_row).collect()
    }

    /// How many orders a tenant has (tests, the storm tool's duplicate check).
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn count(&self, tenant: &str) -> Result<i64, DbError> {
        let (count,): (i64,) = on_pool!(self, |pool| sqlx::query_as(COUNT)
            .bind(tenant)
            .fetch_one(pool)
            .await?);
        Ok(count)
    }

    /// Closes the pool, waiting for connections in use (callers bound the wait).
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await);
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

async fn connect_sqlite(url: &str, options: PoolOptions) -> Result<SqlitePool, DbError> {
    // `busy_timeout` bounds a statement's wait for the write lock by the request deadline.
    let mut connect = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .busy_timeout(options.statement_timeout);
    // Every connection to `:memory:` opens a database of its own: keep to one.
    let in_memory = url.contains(":memory:");
    if !in_memory {
        // Readers never wait for the writer.
        connect = connect.journal_mode(SqliteJournalMode::Wal);
    }
    SqlitePoolOptions::new()
        .max_connections(if in_memory {
            1
        } else {
            options.max_connections.max(1)
        })
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
}

async fn connect_postgres(url: &str, options: PoolOptions) -> Result<PgPool, DbError> {
    // Set at connection start-up, so the server itself stops a statement at the deadline.
    let connect = PgConnectOptions::from_str(url)?.options([(
        "statement_timeout",
        millis(options.statement_timeout).to_string(),
    )]);
    PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
}

fn to_i64(value: u64) -> i64 {
    // Totals are at most 10¹⁵ (see `representation`), far below i64::MAX.
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn order_from_row(row: OrderRow) -> Result<Order, DbError> {
    let corrupt = |what: &str| sqlx::Error::Decode(format!("corrupt order row: {what}").into());
    let (id, status, customer_id, items, currency, total, created_at, cancelled_at) = row;
    Ok(Order {
        id,
        status: Status::from_name(&status).ok_or_else(|| corrupt("status"))?,
        customer_id,
        items: serde_json::from_str::<Vec<Item>>(&items).map_err(|_| corrupt("items"))?,
        currency,
        total: u64::try_from(total).map_err(|_| corrupt("total"))?,
        created_at,
        cancelled_at,
    })
}

#[cfg(test)]
mod tests {
    use tower_cursor::{Keyset, Placeholders, SortOrder};

    use super::*;

    /// The constant keyset queries are exactly what `tower-cursor` generates for the listing.
    #[test]
    fn page_queries_are_the_cursor_crates_keyset() {
        let keyset = Keyset::builder()
            .column("created_at", SortOrder::Desc)
            .unique_column("id", SortOrder::Desc)
            .expect("a valid keyset");
        let query = |direction| {
            let placeholders = Placeholders::postgres().starting_at(2).expect("valid");
            let sql = keyset.sql(direction, placeholders);
            let limit = 2 + sql.binds();
            let predicate = sql
                .predicate()
                .map(|p| format!(" AND {p}"))
                .unwrap_or_default();
            format!(
                "SELECT {} FROM orders WHERE tenant = $1{predicate} ORDER BY {} LIMIT ${limit}",
                columns!(),
                sql.order_by()
            )
        };
        assert_eq!(query(None), PAGE_FIRST);
        assert_eq!(query(Some(Direction::After)), PAGE_AFTER);
        assert_eq!(query(Some(Direction::Before)), PAGE_BEFORE);
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn an_unreachable_or_exhausted_database_is_unavailable_not_internal() {
        assert_eq!(failure(&sqlx::Error::PoolTimedOut), Failure::Unavailable);
        assert_eq!(failure(&sqlx::Error::PoolClosed), Failure::Unavailable);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(failure(&sqlx::Error::Io(refused)), Failure::Unavailable);
        assert_eq!(failure(&sqlx::Error::RowNotFound), Failure::Internal);
        assert_eq!(
            failure(&sqlx::Error::Decode("corrupt".into())),
            Failure::Internal
        );
    }
}
