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
