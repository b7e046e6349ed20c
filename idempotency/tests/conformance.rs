//! The store conformance suite against the memory store, on a paused clock and on real time.

use tower_idempotency::{MemoryStore, conformance};

#[tokio::test(start_paused = true)]
async fn memory_store_keeps_the_contract_on_a_paused_clock() {
    conformance::run(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_keeps_the_contract_across_threads() {
    let store = MemoryStore::new();
    conformance::concurrent_claims_have_one_winner(&store, 256).await;
    conformance::run(&store).await;
}

#[tokio::test(start_paused = true)]
async fn a_full_memory_store_evicts_completed_records_never_claims_in_flight() {
    use std::time::Duration;
    use tower_idempotency::{Claim, Completion, ENTRY_OVERHEAD, Fingerprint, IdempotencyStore};

    let lease = Duration::from_secs(60);
    // Room for two entries.
    let store = MemoryStore::new()
        .max_bytes(2 * ENTRY_OVERHEAD)
        .unwrap()
        .max_bytes_per_scope(2 * ENTRY_OVERHEAD)
        .unwrap();
    let fingerprint = Fingerprint::from_bytes([1; 32]);
    let (a, b, c) = (
        conformance::fresh_key(),
        conformance::fresh_key(),
        conformance::fresh_key(),
    );
    let Claim::Claimed(token_a) = store.claim(a, fingerprint, lease).await.unwrap() else {
        panic!("vacant")
    };
    let Claim::Claimed(_) = store.claim(b, fingerprint, lease).await.unwrap() else {
        panic!("vacant")
    };
    // Full of claims in flight: a new key is refused, the claims stay.
    let refused = store.claim(c, fingerprint, lease).await.unwrap_err();
    assert_eq!(refused.kind(), tower_idempotency::StoreErrorKind::Full);
    assert!(matches!(
        store.claim(a, fingerprint, lease).await.unwrap(),
        Claim::InFlight { .. }
    ));
    assert!(matches!(
        store.claim(b, fingerprint, lease).await.unwrap(),
        Claim::InFlight { .. }
    ));
    // Once one completes, its record makes room.
    store
        .complete(
            a,
            token_a,
            fingerprint,
            Completion::NotReplayable,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert!(matches!(
        store.claim(c, fingerprint, lease).await.unwrap(),
        Claim::Claimed(_)
    ));
    assert!(matches!(
        store.claim(b, fingerprint, lease).await.unwrap(),
        Claim::InFlight { .. }
    ));
    assert_eq!(store.usage().entries, 2);
    assert_eq!(store.usage().bytes, 2 * ENTRY_OVERHEAD);
}
