//! Paging a live SQLite table through the layer, with rows inserted between pages, and the
//! query plans of the generated SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use rusqlite::Connection;
use serde_json::Value;
use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
use tower_cursor::{
    CursorCodec, CursorLayer, CursorSecret, Direction, KeyId, KeyRing, Keyset, PageRequest,
    Paginator, Placeholders, SortOrder,
};

type Service = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    Response<tower_problem_details::ResponseBody<Full<Bytes>>>,
    BoxError,
>;

/// `/by-created`: `created_at DESC, id DESC` (one direction, the row-value form).
/// `/by-score`: `score DESC, id ASC` (mixed, the bounded expanded form).
fn listing(path: &str) -> (Keyset, &'static str) {
    match path {
        "/by-created" => (
            Keyset::builder()
                .column("created_at", SortOrder::Desc)
                .unique_column("id", SortOrder::Desc)
                .unwrap(),
            "created_at",
        ),
        "/by-score" => (
            Keyset::builder()
                .column("score", SortOrder::Desc)
                .unique_column("id", SortOrder::Asc)
                .unwrap(),
            "score",
        ),
        other => panic!("no listing at {other}"),
    }
}

fn database() -> Connection {
    let db = Connection::open_in_memory().unwrap();
    db.execute_batch(
        "CREATE TABLE items (
             id INTEGER PRIMARY KEY,
             created_at INTEGER NOT NULL,
             score INTEGER NOT NULL
         );
         CREATE INDEX items_by_created ON items (created_at DESC, id DESC);
         CREATE INDEX items_by_score ON items (score DESC, id ASC);",
    )
    .unwrap();
    db
}

/// A small deterministic generator: ties on the sort columns are frequent on purpose.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> (i64, i64) {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let bits = self.0 >> 33;
        (
            i64::try_from(bits % 12).unwrap(),
            i64::try_from((bits / 12) % 6).unwrap(),
        )
    }
}

fn insert(db: &Mutex<Connection>, keys: &mut Keys, count: usize) {
    let db = db.lock().unwrap();
    for _ in 0..count {
        let (created_at, score) = keys.next();
        db.execute(
            "INSERT INTO items (created_at, score) VALUES (?1, ?2)",
            (created_at, score),
        )
        .unwrap();
    }
}

fn service(db: Arc<Mutex<Connection>>) -> Service {
    let secret = CursorSecret::new([9u8; 32]).unwrap();
    let paginator =
        Paginator::new(CursorCodec::new(KeyRing::new(KeyId::new(1), &secret))).prev_cursor(true);
    let handler = service_fn(move |request: Request<Full<Bytes>>| {
        let db = Arc::clone(&db);
        async move {
            let page: &PageRequest<(i64, i64)> = request.extensions().get().unwrap();
            let (keyset, column) = listing(request.uri().path());
            let sql = keyset.sql_for(page, Placeholders::sqlite());
            let query = format!(
                "SELECT id, {column} FROM items {} ORDER BY {} LIMIT {}",
                sql.predicate()
                    .map(|p| format!("WHERE {p}"))
                    .unwrap_or_default(),
                sql.order_by(),
                page.fetch_limit()
            );
            let binds = page
                .position()
                .map_or(vec![], |p| vec![p.keys().0, p.keys().1]);
            let rows: Vec<(i64, i64)> = db
                .lock()
                .unwrap()
                .prepare(&query)?
                .query_map(rusqlite::params_from_iter(binds), |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            // Rows are (id, sort key); cursors carry (sort key, id).
            let page = page.paginate(rows, |&(id, key)| (key, id))?;
            Ok::<_, BoxError>(page.into_response())
        }
    });
    ServiceBuilder::new()
        .layer(CursorLayer::<(i64, i64)>::new(paginator))
        .service(handler)
        .boxed_clone()
}

async fn get(service: &Service, uri: &str) -> Value {
    let response = service
        .clone()
        .oneshot(Request::get(uri).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{uri}");
    serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// The page's rows as (id, sort key).
fn rows(page: &Value) -> Vec<(i64, i64)> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row[0].as_i64().unwrap(), row[1].as_i64().unwrap()))
        .collect()
}

/// Every row of the table as id → sort key.
fn snapshot(db: &Mutex<Connection>, column: &str) -> BTreeMap<i64, i64> {
    let db = db.lock().unwrap();
    let mut statement = db
        .prepare(&format!("SELECT id, {column} FROM items"))
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Whether `a` comes strictly before `b` in the listing at `path`.
fn precedes(path: &str, a: (i64, i64), b: (i64, i64)) -> bool {
    // (id, key): both listings sort the key descending; the tie-breaker differs.
    let tie = if path == "/by-created" {
        a.0 > b.0
    } else {
        a.0 < b.0
    };
    a.1 > b.1 || (a.1 == b.1 && tie)
}

fn assert_in_listing_order(path: &str, rows: &[(i64, i64)]) {
    for pair in rows.windows(2) {
        assert!(
            precedes(path, pair[0], pair[1]),
            "{path}: {pair:?} out of order"
        );
    }
}

async fn walk_forward_then_back(path: &str, seed: u64) {
    let db = Arc::new(Mutex::new(database()));
    let mut keys = Keys(seed);
    insert(&db, &mut keys, 60);
    let service = service(Arc::clone(&db));
    let (_, column) = listing(path);

    // Forward, inserting rows anywhere in the order between pages.
    let initial = snapshot(&db, column);
    let mut seen = Vec::new();
    let mut page = get(&service, &format!("{path}?limit=7")).await;
    loop {
        seen.extend(rows(&page));
        insert(&db, &mut keys, 3);
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        assert!(seen.len() < 1_000, "{path}: paging forward does not end");
        page = get(&service, &format!("{path}?limit=7&cursor={cursor}")).await;
    }
    assert_in_listing_order(path, &seen);
    let ids: BTreeSet<i64> = seen.iter().map(|row| row.0).collect();
    assert_eq!(ids.len(), seen.len(), "{path}: a row was repeated");
    for id in initial.keys() {
        assert!(
            ids.contains(id),
            "{path}: row {id} was skipped going forward"
        );
    }

    // Backward from the last page, still inserting.
    let last = rows(&page);
    let initial = snapshot(&db, column);
    let mut seen_back = Vec::new();
    loop {
        seen_back.splice(0..0, rows(&page));
        insert(&db, &mut keys, 3);
        let Some(cursor) = page["prev_cursor"].as_str() else {
            break;
        };
        assert!(
            seen_back.len() < 1_000,
            "{path}: paging backward does not end"
        );
        page = get(&service, &format!("{path}?limit=5&cursor={cursor}")).await;
        assert_in_listing_order(path, &rows(&page));
    }
    assert_in_listing_order(path, &seen_back);
    let ids: BTreeSet<i64> = seen_back.iter().map(|row| row.0).collect();
    assert_eq!(
        ids.len(),
        seen_back.len(),
        "{path}: a row was repeated going back"
    );
    let last_first = last[0];
    for (&id, &key) in &initial {
        if precedes(path, (id, key), last_first) || last.iter().any(|row| row.0 == id) {
            assert!(ids.contains(&id), "{path}: row {id} was skipped going back");
        }
    }
}

#[tokio::test]
async fn a_live_table_is_paged_without_skips_or_repeats_in_one_direction() {
    for seed in [1, 2, 3] {
        walk_forward_then_back("/by-created", seed).await;
    }
}

#[tokio::test]
async fn a_live_table_is_paged_without_skips_or_repeats_with_mixed_directions() {
    for seed in [1, 2, 3] {
        walk_forward_then_back("/by-score", seed).await;
    }
}

fn plan(db: &Connection, keyset: &Keyset, direction: Direction, column: &str) -> String {
    let sql = keyset.sql(Some(direction), Placeholders::sqlite());
    let query = format!(
        "EXPLAIN QUERY PLAN SELECT id, {column} FROM items WHERE {} ORDER BY {} LIMIT 21",
        sql.predicate().unwrap(),
        sql.order_by()
    );
    let mut statement = db.prepare(&query).unwrap();
    let details: Vec<String> = statement
        .query_map((5_i64, 100_i64), |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    details.join(" | ")
}

#[test]
fn the_generated_sql_seeks_the_index_without_sorting() {
    let db = database();
    let mut keys = Keys(7);
    let shared = Mutex::new(db);
    insert(&shared, &mut keys, 500);
    let db = shared.into_inner().unwrap();
    db.execute_batch("ANALYZE").unwrap();
    for (path, index) in [
        ("/by-created", "items_by_created"),
        ("/by-score", "items_by_score"),
    ] {
        let (keyset, column) = listing(path);
        for direction in [Direction::After, Direction::Before] {
            let plan = plan(&db, &keyset, direction, column);
            assert!(
                plan.contains(&format!("SEARCH items USING INDEX {index}"))
                    || plan.contains(&format!("SEARCH items USING COVERING INDEX {index}")),
                "{path} {direction:?}: {plan}"
            );
            assert!(
                !plan.contains("TEMP B-TREE"),
                "{path} {direction:?}: {plan}"
            );
        }
    }
}
