//! The contract every [`IdempotencyStore`] must keep, as a suite to run against your own.
//!
//! ```no_run
//! # async fn example() {
//! use tower_idempotency::{MemoryStore, conformance};
//!
//! // In a #[tokio::test] of your store's crate (multi-threaded runtime recommended):
//! conformance::run(&MemoryStore::new()).await;
//! # }
//! ```
//!
//! Each check uses fresh random keys, so the suite can run in parallel with others on a shared
//! server. Lease and lifetime checks sleep for a few hundred milliseconds on tokio's clock
//! (instant under a paused clock, real time otherwise). A violation panics with a message
//! naming the broken rule.

// Every check panics on a violation: that is what a test suite does, and the module docs say so.
#![allow(clippy::missing_panics_doc)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::task::JoinSet;

use crate::store::{
    Claim, Completion, Fenced, FencingToken, Fingerprint, IdempotencyStore, StoreKey,
    StoredResponse,
};

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(60);
/// Short enough to wait out, long enough for a round trip to a remote store.
const SHORT: Duration = Duration::from_millis(300);

/// Runs every check.
pub async fn run<St: IdempotencyStore>(store: &St) {
    claim_is_exclusive(store).await;
    completed_results_are_returned_intact(store).await;
    foreign_tokens_change_nothing(store).await;
    release_reopens_the_key(store).await;
    expired_lease_is_taken_over_and_fences_the_old_owner(store).await;
    renew_extends_the_lease(store).await;
    records_expire_after_their_ttl(store).await;
    not_replayable_results_are_kept(store).await;
    concurrent_claims_have_one_winner(store, 64).await;
}

/// A key no other check or run uses.
pub fn fresh_key() -> StoreKey {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&FencingToken::random().as_u128().to_be_bytes());
    bytes[16..].copy_from_slice(&FencingToken::random().as_u128().to_be_bytes());
    StoreKey::from_bytes(bytes)
}

fn fingerprint(tag: u8) -> Fingerprint {
    Fingerprint::from_bytes([tag; 32])
}

fn sample_response() -> StoredResponse {
    StoredResponse {
        status: StatusCode::CREATED,
        headers: vec![
            (
                HeaderName::from_static("location"),
                HeaderValue::from_static("/orders/1"),
            ),
            (
                HeaderName::from_static("link"),
                HeaderValue::from_static("</a>; rel=\"a\""),
            ),
            (
                HeaderName::from_static("link"),
                HeaderValue::from_static("</b>; rel=\"b\""),
            ),
        ],
        body: Bytes::from_static(b"{\"id\":1}\x00\xff binary-safe"),
        trailers: vec![(
            HeaderName::from_static("grpc-status"),
            HeaderValue::from_static("0"),
        )],
    }
}

async fn claimed<St: IdempotencyStore>(
    store: &St,
    key: StoreKey,
    fp: Fingerprint,
    lease: Duration,
) -> FencingToken {
    match store.claim(key, fp, lease).await.expect("claim failed") {
        Claim::Claimed(token) => token,
        other => panic!("a vacant key must be claimable, got {other:?}"),
    }
}

/// A claimed key answers `InFlight` with the holder's fingerprint and a lease no longer than
/// the one given.
pub async fn claim_is_exclusive<St: IdempotencyStore>(store: &St) {
    let key = fresh_key();
    let _token = claimed(store, key, fingerprint(1), LEASE).await;
    match store
        .claim(key, fingerprint(2), LEASE)
        .await
        .expect("claim failed")
    {
        Claim::InFlight {
            fingerprint: held,
            lease_remaining,
        } => {
            assert_eq!(
                held,
                fingerprint(1),
                "InFlight must report the holder's fingerprint"
            );
            assert!(
                lease_remaining <= LEASE,
                "lease_remaining exceeds the lease: {lease_remaining:?}"
            );
            assert!(
                lease_remaining > LEASE / 2,
                "lease_remaining far too short: {lease_remaining:?}"
            );
        }
        other => panic!("a held key must answer InFlight, got {other:?}"),
    }
}

/// `complete` by the holder applies, and later claims get the result back byte for byte,
/// header lines in order.
pub async fn completed_results_are_returned_intact<St: IdempotencyStore>(store: &St) {
    let key = fresh_key();
    let token = claimed(store, key, fingerprint(3), LEASE).await;
    let outcome = Completion::Response(sample_response());
    let fenced = store
        .complete(key, token, fingerprint(3), outcome.clone(), TTL)
        .await
        .expect("complete failed");
    assert_eq!(fenced, Fenced::Applied, "the holder's complete must apply");
    // The token is spent: a second complete or a release changes nothing.
    let again = store
        .complete(key, token, fingerprint(3), Completion::NotReplayable, TTL)
        .await
        .expect("complete failed");
    assert_eq!(
        again,
        Fenced::Stale,
        "a completed claim's token must be stale"
    );
    assert_eq!(
        store.release(key, token).await.expect("release failed"),
        Fenced::Stale
    );
    // A claim with another fingerprint sees the original, and overwrites nothing.
    match store
        .claim(key, fingerprint(30), LEASE)
        .await
        .expect("claim failed")
    {
        Claim::Completed {
            fingerprint: original,
            ..
        } => assert_eq!(
            original,
            fingerprint(3),
            "Completed must report the original fingerprint"
        ),
        other => panic!("a completed key must answer Completed, got {other:?}"),
    }
    for _ in 0..2 {
        match store
            .claim(key, fingerprint(3), LEASE)
            .await
            .expect("claim failed")
        {
            Claim::Completed {
                fingerprint: original,
                outcome: stored,
            } => {
                assert_eq!(original, fingerprint(3));
                assert_eq!(stored, outcome, "the stored result must come back intact");
            }
            other => panic!("a completed key must answer Completed, got {other:?}"),
        }
    }
}

/// `complete`, `release` and `renew` with a token that does not hold the key are `Stale`
/// and change nothing.
pub async fn foreign_tokens_change_nothing<St: IdempotencyStore>(store: &St) {
    let key = fresh_key();
    let token = claimed(store, key, fingerprint(4), LEASE).await;
    let foreign = FencingToken::random();
    let stale = |result: Result<Fenced, crate::StoreError>, what: &str| {
        assert_eq!(
            result.expect("store failed"),
            Fenced::Stale,
            "{what} with a foreign token must be Stale"
        );
    };
    stale(
        store
            .complete(key, foreign, fingerprint(4), Completion::NotReplayable, TTL)
            .await,
        "complete",
    );
    stale(store.release(key, foreign).await, "release");
    stale(store.renew(key, foreign, LEASE).await, "renew");
    // On a key nobody holds, too.
    let vacant = fresh_key();
    stale(
        store
            .complete(
                vacant,
                token,
                fingerprint(4),
                Completion::NotReplayable,
                TTL,
            )
            .await,
        "complete on a vacant key",
    );
    stale(
        store.release(vacant, token).await,
        "release on a vacant key",
    );
    assert!(
        matches!(
            store
                .claim(key, fingerprint(4), LEASE)
                .await
                .expect("claim failed"),
            Claim::InFlight { .. }
        ),
        "foreign tokens must not have changed the claim"
    );
    assert_eq!(
        store.release(key, token).await.expect("release failed"),
        Fenced::Applied
    );
}

/// `release` by the holder makes the key claimable again, with a new token; the old token is
/// then stale.
pub async fn release_reopens_the_key<St: IdempotencyStore>(store: &St) {
    let key = fresh_key();
    let first = claimed(store, key, fingerprint(5), LEASE).await;
    assert_eq!(
        store.release(key, first).await.expect("release failed"),
        Fenced::Applied
    );
    let second = claimed(store, key, fingerprint(5), LEASE).await;
    assert_ne!(first, second, "every claim must get a new token");
    assert_eq!(
        store
            .complete(key, first, fingerprint(5), Completion::NotReplayable, TTL)
            .await
            .expect("complete failed"),
        Fenced::Stale,
        "a released token must be stale"
    );
}

/// A lease that ran out counts as vacant; the old holder is fenced off and cannot overwrite
/// the new holder's result.
pub async fn expired_lease_is_taken_over_and_fences_the_old_owner<St: IdempotencyStore>(
    store: &St,
) {
    let key = fresh_key();
    let old = claimed(store, key, fingerprint(6), SHORT).await;
    tokio::time::sleep(SHORT * 2).await;
    let new = claimed(store, key, fingerprint(6), LEASE).await;
    assert_eq!(
        store
            .complete(key, old, fingerprint(6), Completion::NotReplayable, TTL)
            .await
            .expect("complete failed"),
        Fenced::Stale,
        "the overtaken holder's complete must be stale"
    );
    assert_eq!(
        store.release(key, old).await.expect("release failed"),
        Fenced::Stale
    );
    let outcome = Completion::Response(sample_response());
    assert_eq!(
        store
            .complete(key, new, fingerprint(6), outcome.clone(), TTL)
            .await
            .expect("complete failed"),
        Fenced::Applied
    );
    match store
        .claim(key, fingerprint(6), LEASE)
        .await
        .expect("claim failed")
    {
        Claim::Completed {
            outcome: stored, ..
        } => assert_eq!(stored, outcome),
        other => panic!("expected the new holder's result, got {other:?}"),
    }
    // A holder whose lease ran out with nobody taking over is fenced off as well.
    let key = fresh_key();
    let late = claimed(store, key, fingerprint(6), SHORT).await;
    tokio::time::sleep(SHORT * 2).await;
    assert_eq!(
        store
            .complete(key, late, fingerprint(6), Completion::NotReplayable, TTL)
            .await
            .expect("complete failed"),
        Fenced::Stale,
        "a complete after the lease must be stale"
    );
    assert_eq!(
        store.renew(key, late, LEASE).await.expect("renew failed"),
        Fenced::Stale,
        "a renew after the lease must be stale"
    );
}

/// `renew` by the holder extends its lease.
pub async fn renew_extends_the_lease<St: IdempotencyStore>(store: &St) {
    let key = fresh_key();
    let token = claimed(store, key, fingerprint(7), SHORT).await;
    assert_eq!(
        store.renew(key, token, LEASE).await.expect("renew failed"),
        Fenced::Applied
    );
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        matches!(
            store
                .claim(key, fingerprint(7), LEASE)
                .await
                .expect("claim failed"),
            Claim::InFlight { .. }
        ),
        "a renewed lease must still hold"
    );
    assert_eq!(
        store
            .complete(key, token, fingerprint(7), Completion::NotReplayable, TTL)
            .await
            .expect("complete failed"),
        Fenced::Applied
    );
}

/// A completed record lives for its own `ttl`, independent of the lease.
pub async fn records_expire_after_their_ttl<St: IdempotencyStore>(store: &St) {
    let key = fresh_key();
    let token = claimed(store, key, fingerprint(8), SHORT).await;
    store
        .complete(
            key,
            token,
            fingerprint(8),
            Completion::Response(sample_response()),
            SHORT * 3,
        )
        .await
        .expect("complete failed");
    // Past the lease, within the lifetime: still there.
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        matches!(
            store
                .claim(key, fingerprint(8), LEASE)
                .await
                .expect("claim failed"),
            Claim::Completed { .. }
        ),
        "a record must outlive the lease it was claimed with"
    );
    tokio::time::sleep(SHORT * 2).await;
    let _ = claimed(store, key, fingerprint(8), LEASE).await;
}

/// A result completed as not replayable is kept as such.
pub async fn not_replayable_results_are_kept<St: IdempotencyStore>(store: &St) {
    let key = fresh_key();
    let token = claimed(store, key, fingerprint(9), LEASE).await;
    store
        .complete(key, token, fingerprint(9), Completion::NotReplayable, TTL)
        .await
        .expect("complete failed");
    match store
        .claim(key, fingerprint(9), LEASE)
        .await
        .expect("claim failed")
    {
        Claim::Completed { outcome, .. } => assert_eq!(outcome, Completion::NotReplayable),
        other => panic!("expected Completed(NotReplayable), got {other:?}"),
    }
}

/// Of `n` concurrent claims on one vacant key, exactly one wins; the rest see it in flight.
pub async fn concurrent_claims_have_one_winner<St: IdempotencyStore>(store: &St, n: usize) {
    let key = fresh_key();
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let store = store.clone();
        tasks.spawn(async move { store.claim(key, fingerprint(10), LEASE).await });
    }
    let mut winners = 0;
    let mut in_flight = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("claim task panicked").expect("claim failed") {
            Claim::Claimed(_) => winners += 1,
            Claim::InFlight { .. } => in_flight += 1,
            Claim::Completed { .. } => panic!("nothing completed this key"),
        }
    }
    assert_eq!(winners, 1, "exactly one concurrent claim must win");
    assert_eq!(in_flight, n - 1);
}
