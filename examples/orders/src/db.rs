//! Order storage on SQLite (the default) or PostgreSQL, through one code path.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
// Every dynamic statement here is assembled from constant fragments and numbered
// placeholders; values are always bound, never formatted in.
use sqlx::{AnyPool, AssertSqlSafe, Row};
use tower_cursor::{Keyset, PageRequest, Placeholders, SortOrder};

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
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Failure::Unavailable,
        sqlx::Error::Database(error) => match error.code().as_deref() {
            // PostgreSQL `query_canceled`: our statement_timeout.
            Some("57014") => Failure::Deadline,
            // PostgreSQL: connection exceptions (class 08), shutting down or starting up,
            // too many connections, out of resources. SQLite: BUSY and LOCKED (with their
            // extended codes), after the busy timeout.
            Some(code)
                if code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(code, "57P01" | "57P02" | "57P03")
                    || matches!(code, "5" | "6" | "261" | "262" | "517") =>
            {
                Failure::Unavailable
            }
            _ => Failure::Internal,
        },
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

const COLUMNS: &str = "id, status, customer_id, items, currency, total, created_at, cancelled_at";

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
    pool: AnyPool,
    backend: Backend,
    keyset: Keyset,
}

impl Database {
    /// Connects (creating a SQLite file when missing) and creates the schema.
    ///
    /// # Errors
    ///
    /// When the URL is not SQLite or PostgreSQL, or the database cannot be reached.
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(sqlx::Error::Configuration(
                format!("unsupported database URL {url:?}: use sqlite://FILE or postgres://…")
                    .into(),
            ));
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        // Every connection to `:memory:` opens a database of its own: keep to one.
        let max_connections = if url.contains(":memory:") {
            1
        } else {
            options.max_connections.max(1)
        };
        let timeout_ms = options.statement_timeout.as_millis().max(1);
        // Integers only, formatted from a u128: no value reaches the SQL text unchecked.
        let session = match backend {
            Backend::Postgres => format!("SET statement_timeout = {timeout_ms}"),
            Backend::Sqlite => format!("PRAGMA busy_timeout = {timeout_ms}"),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |connection, _| {
                let session = session.clone();
                Box::pin(async move {
                    sqlx::raw_sql(AssertSqlSafe(session))
                        .execute(&mut *connection)
                        .await
                        .map(drop)
                })
            })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite && !url.contains(":memory:") {
            // Readers never wait for the writer; persistent for the file once set.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        // In one transaction, and on PostgreSQL under an advisory lock: instances starting
        // together would otherwise race on `CREATE TABLE IF NOT EXISTS` (a unique violation
        // in PostgreSQL's catalog).
        let mut transaction = pool.begin().await?;
        if backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7428001)")
                .execute(&mut *transaction)
                .await?;
        }
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        let keyset = Keyset::builder()
            .column("created_at", SortOrder::Desc)
            .unique_column("id", SortOrder::Desc)
            .map_err(|e| sqlx::Error::Configuration(e.into()))?;
        Ok(Database {
            pool,
            backend,
            keyset,
        })
    }

    /// The dialect.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    ///
    /// # Errors
    ///
    /// When it does not.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    fn placeholders(&self) -> Placeholders {
        match self.backend {
            Backend::Sqlite => Placeholders::sqlite(),
            Backend::Postgres => Placeholders::postgres(),
        }
    }

    fn p(&self, n: usize) -> String {
        match self.backend {
            Backend::Sqlite => format!("?{n}"),
            Backend::Postgres => format!("${n}"),
        }
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
        let sql = format!(
            "INSERT INTO orders (id, tenant, idempotency_key, request_fingerprint, status, \
             customer_id, items, currency, total, created_at, cancelled_at) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, NULL) \
             ON CONFLICT (tenant, idempotency_key) DO NOTHING",
            self.p(1),
            self.p(2),
            self.p(3),
            self.p(4),
            self.p(5),
            self.p(6),
            self.p(7),
            self.p(8),
            self.p(9),
            self.p(10),
        );
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(&id)
            .bind(tenant)
            .bind(idempotency_key)
            .bind(&fingerprint)
            .bind(Status::Pending.as_str())
            .bind(&new.customer_id)
            .bind(&items)
            .bind(&new.currency)
            .bind(to_i64(new.total))
            .bind(now_micros)
            .execute(&self.pool)
            .await?
            .rows_affected();
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
        // The key was taken: find the order that took it.
        let sql = format!(
            "SELECT {COLUMNS}, request_fingerprint FROM orders \
             WHERE tenant = {} AND idempotency_key = {}",
            self.p(1),
            self.p(2)
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(idempotency_key)
            .fetch_one(&self.pool)
            .await?;
        let stored: String = row.try_get("request_fingerprint")?;
        let order = order_from_row(&row)?;
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
        let sql = format!(
            "SELECT {COLUMNS} FROM orders WHERE tenant = {} AND id = {}",
            self.p(1),
            self.p(2)
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(order_from_row).transpose()
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
        // One conditional UPDATE: two concurrent cancels cannot both succeed.
        let sql = format!(
            "UPDATE orders SET status = {}, cancelled_at = {} \
             WHERE tenant = {} AND id = {} AND status = {}",
            self.p(1),
            self.p(2),
            self.p(3),
            self.p(4),
            self.p(5)
        );
        let updated = sqlx::query(AssertSqlSafe(sql))
            .bind(Status::Cancelled.as_str())
            .bind(now_micros)
            .bind(tenant)
            .bind(id)
            .bind(Status::Pending.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
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
        let placeholders = self
            .placeholders()
            .starting_at(2)
            .map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let keyset = self.keyset.sql_for(page, placeholders);
        let sql = format!(
            "SELECT {COLUMNS} FROM orders WHERE tenant = {}{} ORDER BY {} LIMIT {}",
            self.p(1),
            keyset
                .predicate()
                .map(|p| format!(" AND {p}"))
                .unwrap_or_default(),
            keyset.order_by(),
            page.fetch_limit(),
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant);
        if let Some(position) = page.position() {
            let (created_at, id) = position.keys();
            query = query.bind(*created_at).bind(id.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(order_from_row).collect()
    }

    /// How many orders a tenant has (tests, the storm tool's duplicate check).
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn count(&self, tenant: &str) -> Result<i64, DbError> {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM orders WHERE tenant = {}",
            self.p(1)
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")
    }

    /// Closes the pool, waiting for connections in use (callers bound the wait).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn sqlite_url(url: &str) -> Result<String, DbError> {
    // Validate early (so a typo is a clear error) and create the file when missing.
    SqliteConnectOptions::from_str(url)?;
    if url.contains("mode=") || url.contains(":memory:") {
        Ok(url.to_owned())
    } else if url.contains('?') {
        Ok(format!("{url}&mode=rwc"))
    } else {
        Ok(format!("{url}?mode=rwc"))
    }
}

fn to_i64(value: u64) -> i64 {
    // Totals are at most 10¹⁵ (see `representation`), far below i64::MAX.
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn order_from_row(row: &AnyRow) -> Result<Order, DbError> {
    let corrupt = |what: &str| sqlx::Error::Decode(format!("corrupt order row: {what}").into());
    let status: String = row.try_get("status")?;
    let items: String = row.try_get("items")?;
    let total: i64 = row.try_get("total")?;
    Ok(Order {
        id: row.try_get("id")?,
        status: Status::from_name(&status).ok_or_else(|| corrupt("status"))?,
        customer_id: row.try_get("customer_id")?,
        items: serde_json::from_str::<Vec<Item>>(&items).map_err(|_| corrupt("items"))?,
        currency: row.try_get("currency")?,
        total: u64::try_from(total).map_err(|_| corrupt("total"))?,
        created_at: row.try_get("created_at")?,
        cancelled_at: row.try_get("cancelled_at")?,
    })
}
