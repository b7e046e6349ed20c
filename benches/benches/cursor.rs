//! Cursors: the cost of issuing and checking a token, and the cost of a page at depth.
//!
//! Run: `cargo bench -p guardrail-benches --bench cursor`.
//! Targets (DESIGN.md): encode ≤ 1 µs, verify + decode ≤ 1 µs; a keyset page at depth 100k
//! within 1.25× of the first page, where OFFSET grows with the depth.

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rusqlite::Connection;
use tower_cursor::{
    CursorCodec, CursorSecret, Direction, KeyId, KeyRing, Keyset, Placeholders, Position,
    QueryFingerprint, SortOrder,
};
use uuid::Uuid;

/// A `(created_at in milliseconds, uuid)` position: the common case.
type Keys = (i64, Uuid);

fn keys() -> Keys {
    (
        1_714_564_800_123,
        Uuid::from_u128(0x0191_2d4e_8a3c_7b1f_9e6d_5c4b_3a29_1807),
    )
}

fn codecs() -> (CursorCodec, CursorCodec) {
    let secret = CursorSecret::new([42u8; 32]).expect("32 bytes");
    let signed = CursorCodec::new(KeyRing::new(KeyId::new(1), &secret));
    let encrypted = signed.clone().encrypted();
    (signed, encrypted)
}

fn query() -> QueryFingerprint {
    QueryFingerprint::builder()
        .path("/v1/orders")
        .param("status", "open")
        .finish()
}

/// The unsigned baseline: base64url of JSON, as async-graphql's `OpaqueCursor` does. Readable
/// and forgeable; it shows what signing costs.
fn unsigned_encode(position: &Keys) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).expect("serializable"))
}

fn unsigned_decode(token: &str) -> Keys {
    let bytes = URL_SAFE_NO_PAD.decode(token).expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

fn encode(c: &mut Criterion) {
    let (signed, encrypted) = codecs();
    let query = query();
    let position = Position::after(keys());
    let mut group = c.benchmark_group("cursor/encode");
    group.bench_function("signed", |b| {
        b.iter(|| {
            signed
                .encode(black_box(&position), &query)
                .expect("encodes")
        });
    });
    group.bench_function("encrypted", |b| {
        b.iter(|| {
            encrypted
                .encode(black_box(&position), &query)
                .expect("encodes")
        });
    });
    group.bench_function("unsigned base64 json", |b| {
        b.iter(|| unsigned_encode(black_box(position.keys())));
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let (signed, encrypted) = codecs();
    let query = query();
    let position = Position::after(keys());
    let signed_token = signed.encode(&position, &query).expect("encodes");
    let sealed_token = encrypted.encode(&position, &query).expect("encodes");
    let unsigned_token = unsigned_encode(position.keys());
    let mut group = c.benchmark_group("cursor/verify_and_decode");
    group.bench_function("signed", |b| {
        b.iter(|| {
            signed
                .decode::<Keys>(black_box(&signed_token), &query)
                .expect("verifies")
        });
    });
    group.bench_function("encrypted", |b| {
        b.iter(|| {
            encrypted
                .decode::<Keys>(black_box(&sealed_token), &query)
                .expect("verifies")
        });
    });
    group.bench_function("unsigned base64 json", |b| {
        b.iter(|| unsigned_decode(black_box(&unsigned_token)));
    });
    group.finish();
}

const ROWS: i64 = 100_000;
const PAGE: i64 = 20;

fn table(analyze: bool) -> Connection {
    let mut db = Connection::open_in_memory().expect("sqlite");
    db.execute_batch(
        "CREATE TABLE items (
             id INTEGER PRIMARY KEY,
             created_at INTEGER NOT NULL,
             payload TEXT NOT NULL
         );",
    )
    .expect("schema");
    let tx = db.transaction().expect("transaction");
    {
        let mut insert = tx
            .prepare("INSERT INTO items (id, created_at, payload) VALUES (?1, ?2, ?3)")
            .expect("statement");
        let payload = "x".repeat(100);
        let mut state: u64 = 1;
        for id in 1..=ROWS {
            // Timestamps with ties, out of id order, like real creation times.
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let created_at = i64::try_from(state >> 44).expect("20 bits");
            insert.execute((id, created_at, &payload)).expect("insert");
        }
    }
    tx.commit().expect("commit");
    db.execute_batch("CREATE INDEX items_by_created ON items (created_at, id);")
        .expect("index");
    if analyze {
        // With STAT4 statistics (the bundled SQLite has them), SQLite re-plans a statement
        // every time a range parameter is bound: every seek pays it, the unbound first page
        // does not. Measured both ways so the report shows the difference.
        db.execute_batch("ANALYZE;").expect("analyze");
    }
    db
}

fn page_at_depth(c: &mut Criterion) {
    pages(c, "cursor/page_at_depth", false);
    pages(c, "cursor/page_at_depth_after_analyze", true);
}

fn pages(c: &mut Criterion, group: &str, analyze: bool) {
    let db = table(analyze);
    let keyset = Keyset::builder()
        .column("created_at", SortOrder::Asc)
        .unique_column("id", SortOrder::Asc)
        .expect("keyset");
    let first = keyset.sql(None, Placeholders::sqlite());
    let seek = keyset.sql(Some(Direction::After), Placeholders::sqlite());
    let first_sql = format!(
        "SELECT id, created_at, payload FROM items ORDER BY {} LIMIT {}",
        first.order_by(),
        PAGE + 1
    );
    let seek_sql = format!(
        "SELECT id, created_at, payload FROM items WHERE {} ORDER BY {} LIMIT {}",
        seek.predicate().expect("a predicate"),
        seek.order_by(),
        PAGE + 1
    );
    let offset_sql = format!(
        "SELECT id, created_at, payload FROM items ORDER BY {} LIMIT {} OFFSET ?1",
        first.order_by(),
        PAGE + 1
    );
    let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, i64, String)> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    };

    let mut group = c.benchmark_group(group);
    for depth in [0, PAGE, 10_000, ROWS - PAGE] {
        // The boundary row a cursor would carry to reach this depth.
        let boundary: Option<(i64, i64)> = (depth > 0).then(|| {
            db.query_row(
                &format!(
                    "SELECT created_at, id FROM items ORDER BY created_at, id LIMIT 1 OFFSET {}",
                    depth - 1
                ),
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("boundary row")
        });
        let keyset_page = || -> Vec<(i64, i64, String)> {
            match boundary {
                None => db
                    .prepare_cached(&first_sql)
                    .expect("statement")
                    .query_map([], read)
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows"),
                Some(keys) => db
                    .prepare_cached(&seek_sql)
                    .expect("statement")
                    .query_map(keys, read)
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows"),
            }
        };
        let offset_page = || -> Vec<(i64, i64, String)> {
            db.prepare_cached(&offset_sql)
                .expect("statement")
                .query_map([depth], read)
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        // Both strategies must read the same page, or the comparison means nothing.
        assert_eq!(keyset_page(), offset_page(), "depth {depth}");
        group.bench_with_input(BenchmarkId::new("keyset", depth), &depth, |b, _| {
            b.iter(|| black_box(keyset_page()));
        });
        group.bench_with_input(BenchmarkId::new("offset", depth), &depth, |b, _| {
            b.iter(|| black_box(offset_page()));
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode, page_at_depth);
criterion_main!(benches);
