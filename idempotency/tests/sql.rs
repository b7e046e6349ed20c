//! The SQL store against a real PostgreSQL (a database of the test's own) and SQLite (a file
//! of its own): the conformance suite, the claim committed inside the handler's transaction,
//! the sweep, the migration and outages.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use guardrail_test_support::{SqliteFile, TestDatabase, postgres_database};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_idempotency::{
    Claim, Completion, Fenced, Fingerprint, IdempotencyLayer, IdempotencyStore, Scope, ScopedKey,
    SqlStore, StoreErrorKind, conformance,
};

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3600);

async fn postgres(test: &str) -> (TestDatabase, PgPool) {
    let database = postgres_database(test).await;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database.url())
        .await
        .expect("connect to the test database");
    (database, pool)
}

async fn sqlite(test: &str) -> (SqliteFile, SqlitePool) {
    let file = SqliteFile::new(test);
    let options = SqliteConnectOptions::new()
        .filename(file.path())
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .expect("open the SQLite file");
    (file, pool)
}

async fn migrated(store: SqlStore) -> SqlStore {
    store.migrate().await.expect("migrate");
    // Twice: the migration is safe to repeat at every start.
    store.migrate().await.expect("migrate again");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_keeps_the_contract() {
    let (database, pool) = postgres("idempotency_sql_contract").await;
    let store = migrated(SqlStore::postgres(pool)).await;
    conformance::concurrent_claims_have_one_winner(&store, 128).await;
    conformance::run(&store).await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_keeps_the_contract() {
    let (_file, pool) = sqlite("idempotency_sql_contract").await;
    let store = migrated(SqlStore::sqlite(pool)).await;
    conformance::concurrent_claims_have_one_winner(&store, 128).await;
    conformance::run(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_in_a_table_of_its_own_keeps_the_contract() {
    let (database, pool) = postgres("idempotency_sql_own_table").await;
    sqlx::query("CREATE SCHEMA guardrails")
        .execute(&pool)
        .await
        .unwrap();
    let store = SqlStore::postgres(pool.clone())
        .table("guardrails.idempotency_records")
        .unwrap();
    assert_eq!(store.table_name(), "guardrails.idempotency_records");
    let store = migrated(store).await;
    conformance::run(&store).await;
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM guardrails.idempotency_records")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(rows > 0, "the records went to the table named");
    database.drop_database().await;

    let (_file, pool) = sqlite("idempotency_sql_own_table").await;
    let store = migrated(
        SqlStore::sqlite(pool)
            .table("idempotency_records_v2")
            .unwrap(),
    )
    .await;
    conformance::run(&store).await;
}

#[test]
fn table_names_must_be_plain_identifiers() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    // A lazy pool: no connection is made.
    let pool = SqlitePoolOptions::new()
        .connect_lazy("sqlite::memory:")
        .unwrap();
    for bad in [
        "",
        "1st",
        "a-b",
        "a.b.c",
        "x; DROP TABLE y",
        "a b",
        "\"quoted\"",
    ] {
        let error = SqlStore::sqlite(pool.clone()).table(bad).unwrap_err();
        assert_eq!(
            error.kind(),
            &guardrail_store::ConfigErrorKind::Identifier(bad.to_owned()),
            "{bad:?}"
        );
    }
    for good in ["idem", "_idem_2", "idempotency_records_v2"] {
        assert!(
            SqlStore::sqlite(pool.clone()).table(good).is_ok(),
            "{good:?}"
        );
    }
    // SQLite names a schema on the index, not the table: qualified names are PostgreSQL's.
    assert!(SqlStore::sqlite(pool).table("guardrails.idem").is_err());
    let pg = PgPoolOptions::new()
        .connect_lazy("postgres://postgres@127.0.0.1:5432/none")
        .unwrap();
    assert!(SqlStore::postgres(pg).table("guardrails.idem").is_ok());
}

/// Concurrent migrations by instances starting together all succeed (PostgreSQL takes an
/// advisory lock; without it, `CREATE TABLE IF NOT EXISTS` races in the catalog).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_migrating_together_all_succeed() {
    let (database, pool) = postgres("idempotency_sql_migrate_together").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = SqlStore::postgres(pool.clone());
        tasks.spawn(async move { store.migrate().await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().expect("every concurrent migration succeeds");
    }
    database.drop_database().await;
}

/// A handler's write into `effects` and `commit_in_postgres` in one transaction, committed
/// when the claim was still held (rolled back otherwise).
async fn write_and_commit(store: &SqlStore, pool: &PgPool, held: &ScopedKey) -> Fenced {
    let mut transaction = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO effects DEFAULT VALUES")
        .execute(&mut *transaction)
        .await
        .unwrap();
    let fenced = store
        .commit_in_postgres(&mut transaction, held, TTL)
        .await
        .unwrap();
    if fenced == Fenced::Applied {
        transaction.commit().await.unwrap();
    }
    fenced
}

/// How many rows the handler's own table `effects` holds.
async fn effects(pool: &PgPool) -> i64 {
    let (effects,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM effects")
        .fetch_one(pool)
        .await
        .unwrap();
    effects
}

/// What a claim finds on a key committed by `commit_in` whose response was never recorded.
fn done_unreplayable(fingerprint: Fingerprint) -> Claim {
    Claim::Completed {
        fingerprint,
        outcome: Completion::NotReplayable,
    }
}

/// The claim the layer would hold, and the `ScopedKey` it would hand the handler.
async fn held(store: &SqlStore, lease: Duration) -> (ScopedKey, Fingerprint) {
    let key = conformance::fresh_key();
    let fingerprint = Fingerprint::from_bytes([7; 32]);
    let Claim::Claimed(token) = store.claim(key, fingerprint, lease).await.unwrap() else {
        panic!("a fresh key is vacant")
    };
    (ScopedKey::new(String::from("k"), key, token), fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_in_the_handlers_transaction_survives_a_crash_before_completion() {
    let (database, pool) = postgres("idempotency_sql_commit_crash").await;
    let store = migrated(SqlStore::postgres(pool.clone())).await;
    sqlx::query("CREATE TABLE effects (id BIGSERIAL PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    let lease = Duration::from_millis(1500);
    let (held, fingerprint) = held(&store, lease).await;

    // The handler's write and the claim's commit, in one transaction.
    assert_eq!(
        write_and_commit(&store, &pool, &held).await,
        Fenced::Applied
    );
    // The process dies here: no completion, no release.

    // While the lease runs, a retry waits (the holder may still record its response).
    assert!(matches!(
        store
            .claim(held.scoped(), fingerprint, LEASE)
            .await
            .unwrap(),
        Claim::InFlight { .. }
    ));
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    // After it, the key is never taken over: the effect happened, its response is lost.
    assert_eq!(
        store
            .claim(held.scoped(), fingerprint, LEASE)
            .await
            .unwrap(),
        done_unreplayable(fingerprint)
    );
    assert_eq!(effects(&pool).await, 1);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_in_after_the_lease_ran_out_is_stale_and_the_write_rolls_back() {
    let (database, pool) = postgres("idempotency_sql_commit_stale").await;
    let store = migrated(SqlStore::postgres(pool.clone())).await;
    let lease = Duration::from_millis(300);
    let (held, fingerprint) = held(&store, lease).await;
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    // A retry took the key over.
    let Claim::Claimed(_) = store
        .claim(held.scoped(), fingerprint, LEASE)
        .await
        .unwrap()
    else {
        panic!("an expired lease is taken over")
    };
    let mut transaction = pool.begin().await.unwrap();
    let fenced = store
        .commit_in_postgres(&mut transaction, &held, TTL)
        .await
        .unwrap();
    assert_eq!(
        fenced,
        Fenced::Stale,
        "the old holder learns before committing"
    );
    transaction.rollback().await.unwrap();
    // The new holder still holds the key.
    assert!(matches!(
        store
            .claim(held.scoped(), fingerprint, LEASE)
            .await
            .unwrap(),
        Claim::InFlight { .. }
    ));
    database.drop_database().await;
}

/// A takeover waits for the holder's transaction instead of racing it: the row is locked
/// from `commit_in` to the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_takeover_waits_for_the_committing_transaction() {
    let (database, pool) = postgres("idempotency_sql_commit_lock").await;
    let store = migrated(SqlStore::postgres(pool.clone())).await;
    let lease = Duration::from_millis(1500);
    let (held, fingerprint) = held(&store, lease).await;
    let mut transaction = pool.begin().await.unwrap();
    assert_eq!(
        store
            .commit_in_postgres(&mut transaction, &held, TTL)
            .await
            .unwrap(),
        Fenced::Applied
    );
    // The lease runs out while the transaction is still open.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let takeover = {
        let store = store.clone();
        let key = held.scoped();
        tokio::spawn(async move { store.claim(key, fingerprint, LEASE).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover waits on the row lock"
    );
    transaction.commit().await.unwrap();
    assert_eq!(
        takeover.await.unwrap().unwrap(),
        done_unreplayable(fingerprint),
        "after the commit, the key is done, not vacant"
    );
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commit_in_the_handlers_transaction_survives_a_crash_before_completion() {
    let (_file, pool) = sqlite("idempotency_sql_commit_crash").await;
    let store = migrated(SqlStore::sqlite(pool.clone())).await;
    sqlx::query("CREATE TABLE effects (id INTEGER PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    let lease = Duration::from_millis(300);
    let (held, fingerprint) = held(&store, lease).await;
    let mut transaction = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO effects DEFAULT VALUES")
        .execute(&mut *transaction)
        .await
        .unwrap();
    assert_eq!(
        store
            .commit_in_sqlite(&mut transaction, &held, TTL)
            .await
            .unwrap(),
        Fenced::Applied
    );
    transaction.commit().await.unwrap();
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(
        store
            .claim(held.scoped(), fingerprint, LEASE)
            .await
            .unwrap(),
        done_unreplayable(fingerprint)
    );
    // A commit on the wrong database's connection is refused, not run.
    let (database, pg) = postgres("idempotency_sql_commit_wrong_db").await;
    let mut transaction = pg.begin().await.unwrap();
    let error = store
        .commit_in_postgres(&mut transaction, &held, TTL)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::BadReply);
    drop(transaction);
    database.drop_database().await;
}

/// Through the layer: a handler that commits its write with `commit_in_postgres` and then
/// fails (the layer would release the key) has still done its work once; retries get 409
/// `idempotency-result-unavailable`, never a second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_committed_then_failed_never_runs_again() {
    let (database, pool) = postgres("idempotency_sql_commit_layer").await;
    let store = migrated(SqlStore::postgres(pool.clone())).await;
    sqlx::query("CREATE TABLE effects (id BIGSERIAL PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let service = {
        let (store, pool, runs) = (store.clone(), pool.clone(), Arc::clone(&runs));
        ServiceBuilder::new()
            .layer(IdempotencyLayer::new(
                store.clone(),
                Scope::header(http::HeaderName::from_static("x-tenant")),
            ))
            .service(service_fn(
                move |request: Request<tower_idempotency::RequestBody<Full<Bytes>>>| {
                    let (store, pool, runs) = (store.clone(), pool.clone(), Arc::clone(&runs));
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let held = request.extensions().get::<ScopedKey>().unwrap().clone();
                        let fenced = write_and_commit(&store, &pool, &held).await;
                        assert_eq!(fenced, Fenced::Applied);
                        // Committed, then something failed before the response was ready.
                        let mut response = Response::new(Full::<Bytes>::from("downstream failed"));
                        *response.status_mut() = StatusCode::BAD_GATEWAY;
                        Ok::<_, Infallible>(response)
                    }
                },
            ))
    };
    let request = || {
        Request::post("/orders")
            .header("idempotency-key", "k-1")
            .header("x-tenant", "acme")
            .body(Full::<Bytes>::from("{}"))
            .unwrap()
    };
    let first = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.status(), StatusCode::BAD_GATEWAY);
    let retry = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    let body = retry.into_body().collect().await.unwrap().to_bytes();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency-result-unavailable"),
        "{problem}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(effects(&pool).await, 1);
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_expired_rows_and_keeps_live_ones() {
    let (_file, pool) = sqlite("idempotency_sql_sweep").await;
    let store = migrated(SqlStore::sqlite(pool.clone())).await;
    let fingerprint = Fingerprint::from_bytes([1; 32]);
    for _ in 0..5 {
        store
            .claim(
                conformance::fresh_key(),
                fingerprint,
                Duration::from_millis(50),
            )
            .await
            .unwrap();
    }
    let live = conformance::fresh_key();
    store.claim(live, fingerprint, LEASE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.sweep().await.unwrap(), 5);
    assert_eq!(store.sweep().await.unwrap(), 0);
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM idempotency_records")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert!(matches!(
        store.claim(live, fingerprint, LEASE).await.unwrap(),
        Claim::InFlight { .. }
    ));
}

/// A database that does not answer is a store outage (the layer answers 503), within the
/// store's deadline; consecutive outages open the breaker, which then answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_an_outage_within_the_deadline() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/none"))
        .unwrap();
    let store = SqlStore::postgres(pool)
        .timeout(Duration::from_millis(300))
        .unwrap();
    let key = conformance::fresh_key();
    let fingerprint = Fingerprint::from_bytes([1; 32]);
    let mut kinds = Vec::new();
    for _ in 0..6 {
        kinds.push(
            store
                .claim(key, fingerprint, LEASE)
                .await
                .unwrap_err()
                .kind(),
        );
    }
    assert!(
        kinds[..5]
            .iter()
            .all(|kind| matches!(kind, StoreErrorKind::Unavailable | StoreErrorKind::Timeout)),
        "{kinds:?}"
    );
    assert_eq!(kinds[5], StoreErrorKind::CircuitOpen, "{kinds:?}");
}
