//! Property tests of the memory store's bounds: arbitrary claims, completions (of any size)
//! and releases by several scopes never take it over its byte budget or a scope over its
//! share, never evict a claim in flight, and a scope over its share evicts only its own
//! records.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use proptest::prelude::*;
use tower_idempotency::{
    Claim, Completion, ENTRY_OVERHEAD, Fenced, FencingToken, Fingerprint, IdempotencyStore,
    MemoryStore, ScopeId, StoreKey, StoredResponse,
};

/// The scopes: 1 and 17 share one of the store's 16 shards, 2 has one of its own. The fair
/// case below gives the budget room for the three shares.
const SCOPES: [u64; 3] = [1, 2, 17];
const KEYS: u8 = 6;
const SHARE: usize = 4 * 1024;
const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug)]
enum Op {
    Claim { scope: u64, key: u8 },
    Complete { scope: u64, key: u8, body: usize },
    Release { scope: u64, key: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let scope = prop::sample::select(&SCOPES[..]);
    let key = 0..KEYS;
    prop_oneof![
        (scope.clone(), key.clone()).prop_map(|(scope, key)| Op::Claim { scope, key }),
        (scope.clone(), key.clone(), 0..3 * SHARE / 2)
            .prop_map(|(scope, key, body)| Op::Complete { scope, key, body }),
        (scope, key).prop_map(|(scope, key)| Op::Release { scope, key }),
    ]
}

fn store_key(scope: u64, key: u8) -> StoreKey {
    let mut bytes = [0; 32];
    bytes[..8].copy_from_slice(&scope.to_be_bytes());
    bytes[8] = key;
    StoreKey::from_bytes(bytes).with_scope(ScopeId::from_u64(scope))
}

fn fingerprint() -> Fingerprint {
    Fingerprint::from_bytes([7; 32])
}

fn response(body: usize) -> Completion {
    Completion::Response(StoredResponse {
        status: StatusCode::CREATED,
        headers: vec![(http::header::LOCATION, "/orders/1".parse().unwrap())],
        body: Bytes::from(vec![b'x'; body]),
        trailers: Vec::new(),
    })
}

/// Runs `ops` on `store`, checking the bounds after each, and, when `fair` (the budget holds
/// every scope's full share), that no op evicts another scope's replayable record.
async fn check(store: &MemoryStore, max_bytes: usize, ops: &[Op], fair: bool) {
    let mut held: HashMap<StoreKey, FencingToken> = HashMap::new();
    let mut replayable: HashMap<StoreKey, u64> = HashMap::new();
    for &op in ops {
        let actor = match op {
            Op::Claim { scope, .. } | Op::Complete { scope, .. } | Op::Release { scope, .. } => {
                scope
            }
        };
        match op {
            Op::Claim { scope, key } => {
                let key = store_key(scope, key);
                if let Ok(Claim::Claimed(token)) = store.claim(key, fingerprint(), LEASE).await {
                    held.insert(key, token);
                    replayable.remove(&key);
                }
            }
            Op::Complete { scope, key, body } => {
                let key = store_key(scope, key);
                if let Some(token) = held.remove(&key) {
                    let done = store
                        .complete(key, token, fingerprint(), response(body), TTL)
                        .await
                        .unwrap();
                    assert_eq!(done, Fenced::Applied, "a held claim is never evicted");
                    if let Ok(Claim::Completed {
                        outcome: Completion::Response(_),
                        ..
                    }) = store.claim(key, fingerprint(), LEASE).await
                    {
                        replayable.insert(key, scope);
                    }
                }
            }
            Op::Release { scope, key } => {
                let key = store_key(scope, key);
                if let Some(token) = held.remove(&key) {
                    let done = store.release(key, token).await.unwrap();
                    assert_eq!(done, Fenced::Applied, "a held claim is never evicted");
                }
            }
        }

        let usage = store.usage();
        assert!(
            usage.bytes <= max_bytes,
            "{} bytes over {max_bytes}",
            usage.bytes
        );
        let by_scope: usize = SCOPES
            .iter()
            .map(|&scope| {
                let bytes = store.scope_bytes(ScopeId::from_u64(scope));
                assert!(bytes <= SHARE, "scope {scope} holds {bytes} over its share");
                bytes
            })
            .sum();
        assert_eq!(by_scope, usage.bytes, "the total is the sum of the scopes");
        assert!(usage.bytes >= usage.entries * ENTRY_OVERHEAD);
        for key in held.keys() {
            let claim = store.claim(*key, fingerprint(), LEASE).await.unwrap();
            assert!(
                matches!(claim, Claim::InFlight { .. }),
                "{key:?} evicted in flight"
            );
        }
        replayable = still_replayable(store, replayable, actor, fair).await;
    }
}

/// The tracked records still completed. Probing a record that was evicted claims its vacant
/// key (then releases it), and that claim may evict more of its scope's records: so other
/// scopes' records are checked first, and the actor's again until a pass loses none.
async fn still_replayable(
    store: &MemoryStore,
    records: HashMap<StoreKey, u64>,
    actor: u64,
    fair: bool,
) -> HashMap<StoreKey, u64> {
    let (mut own, others): (HashMap<_, _>, HashMap<_, _>) =
        records.into_iter().partition(|(_, scope)| *scope == actor);
    let mut kept = HashMap::new();
    for (key, scope) in others {
        if probe(store, key).await {
            kept.insert(key, scope);
        } else {
            assert!(!fair, "scope {actor} evicted a record of scope {scope}");
        }
    }
    loop {
        let before = own.len();
        let mut survivors = HashMap::new();
        for (key, scope) in own {
            if probe(store, key).await {
                survivors.insert(key, scope);
            }
        }
        own = survivors;
        if own.len() == before {
            break;
        }
    }
    kept.extend(own);
    kept
}

/// Whether `key` still holds a completed record; if it is vacant, the probe's claim is
/// released again.
async fn probe(store: &MemoryStore, key: StoreKey) -> bool {
    match store.claim(key, fingerprint(), LEASE).await {
        Ok(Claim::Completed { .. }) => true,
        Ok(Claim::Claimed(token)) => {
            store.release(key, token).await.unwrap();
            false
        }
        other => panic!("{key:?} was completed, now {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_memory_store_never_exceeds_its_budget_or_a_share_nor_evicts_a_claim_in_flight(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        // Less than the three shares together: the global bound is hit too.
        let max_bytes = 2 * SHARE;
        let store = MemoryStore::new().max_bytes(max_bytes).unwrap().max_bytes_per_scope(SHARE).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(check(&store, max_bytes, &ops, false));
    }

    #[test]
    fn prop_a_scope_over_its_share_evicts_only_its_own_records(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        // Room for every scope's whole share: only shares bind.
        let max_bytes = 3 * SHARE; // SCOPES shares
        let store = MemoryStore::new().max_bytes(max_bytes).unwrap().max_bytes_per_scope(SHARE).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(check(&store, max_bytes, &ops, true));
    }
}

/// A full budget takes room from the scope holding the most bytes, wherever its shard is:
/// not from a small scope that happens to share the claiming scope's shard.
#[tokio::test(start_paused = true)]
async fn a_full_budget_evicts_from_the_largest_scope_first() {
    let store = MemoryStore::new()
        .max_bytes(8 * ENTRY_OVERHEAD)
        .unwrap()
        .max_bytes_per_scope(8 * ENTRY_OVERHEAD)
        .unwrap();
    // Scope 2 (its own shard) holds two large records; scope 17 one small record in the
    // shard of scope 1, which then claims with the budget full.
    let record = |scope, key, body| {
        let store = store.clone();
        async move {
            let key = store_key(scope, key);
            let Ok(Claim::Claimed(token)) = store.claim(key, fingerprint(), LEASE).await else {
                panic!("vacant")
            };
            let done = store
                .complete(key, token, fingerprint(), response(body), TTL)
                .await;
            assert_eq!(done.unwrap(), Fenced::Applied);
            key
        }
    };
    let big = [
        record(2, 0, 2 * ENTRY_OVERHEAD).await,
        record(2, 1, 2 * ENTRY_OVERHEAD).await,
    ];
    let small = record(17, 0, 0).await;
    while store.usage().bytes + ENTRY_OVERHEAD <= 8 * ENTRY_OVERHEAD {
        let filler = store_key(1, u8::try_from(store.usage().entries).unwrap() + 100);
        assert!(matches!(
            store.claim(filler, fingerprint(), LEASE).await,
            Ok(Claim::Claimed(_))
        ));
    }
    assert!(matches!(
        store.claim(store_key(1, 0), fingerprint(), LEASE).await,
        Ok(Claim::Claimed(_))
    ));
    assert!(matches!(
        store.claim(small, fingerprint(), LEASE).await,
        Ok(Claim::Completed { .. })
    ));
    let lost = [
        store.claim(big[0], fingerprint(), LEASE).await.unwrap(),
        store.claim(big[1], fingerprint(), LEASE).await.unwrap(),
    ];
    assert!(
        lost.iter().any(|c| matches!(c, Claim::Claimed(_))),
        "the largest scope gave room"
    );
}
