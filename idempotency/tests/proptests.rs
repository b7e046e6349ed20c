//! Property tests: arbitrary interleavings of claim, complete, release, renew and lease expiry
//! by several holders agree with a reference model, on both stores. The model's fencing rule
//! is what makes "a stale owner's complete never overwrites the new owner's" hold.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use proptest::prelude::*;
use tower_idempotency::{
    Claim, Completion, Fenced, FencingToken, Fingerprint, IdempotencyStore, MemoryStore,
    StoredResponse, conformance,
};

const LEASE: Duration = Duration::from_secs(10);
const TTL: Duration = Duration::from_secs(24 * 3600);
const ACTORS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Op {
    Claim {
        actor: usize,
        fingerprint: u8,
    },
    Complete {
        actor: usize,
        body: u8,
    },
    Release {
        actor: usize,
    },
    Renew {
        actor: usize,
    },
    /// Time passes beyond every lease (records live far longer).
    ExpireLeases,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..ACTORS, 0u8..2).prop_map(|(actor, fingerprint)| Op::Claim { actor, fingerprint }),
        2 => (0..ACTORS, 0u8..3).prop_map(|(actor, body)| Op::Complete { actor, body }),
        1 => (0..ACTORS).prop_map(|actor| Op::Release { actor }),
        1 => (0..ACTORS).prop_map(|actor| Op::Renew { actor }),
        1 => Just(Op::ExpireLeases),
    ]
}

/// The reference: one key, and which claim (by number) holds it.
#[derive(Clone, Debug, PartialEq)]
enum Slot {
    Vacant,
    InFlight { claim: usize, fingerprint: u8 },
    Completed { fingerprint: u8, body: u8 },
}

/// What a fenced operation must answer, given whether its token holds the key.
fn expected(holds: bool) -> Fenced {
    if holds {
        Fenced::Applied
    } else {
        Fenced::Stale
    }
}

fn outcome(body: u8) -> Completion {
    Completion::Response(StoredResponse {
        status: StatusCode::CREATED,
        headers: Vec::new(),
        body: Bytes::from(vec![body; usize::from(body) + 1]),
        trailers: Vec::new(),
    })
}

fn fingerprint(tag: u8) -> Fingerprint {
    Fingerprint::from_bytes([tag; 32])
}

/// Runs `ops` against `store` and the model; `expire` makes the store's leases run out.
async fn check<St, F, Fut>(store: &St, ops: &[Op], expire: F)
where
    St: IdempotencyStore,
    F: Fn(tower_idempotency::StoreKey) -> Fut,
    Fut: Future<Output = ()>,
{
    let key = conformance::fresh_key();
    let mut slot = Slot::Vacant;
    let mut claims = 0usize;
    // Per actor: its latest claim's number, token and fingerprint.
    let mut held: [Option<(usize, FencingToken, u8)>; ACTORS] = [None; ACTORS];
    for op in ops {
        match *op {
            Op::Claim {
                actor,
                fingerprint: fp,
            } => {
                let got = store.claim(key, fingerprint(fp), LEASE).await.unwrap();
                match (&slot, got) {
                    (Slot::Vacant, Claim::Claimed(token)) => {
                        claims += 1;
                        held[actor] = Some((claims, token, fp));
                        slot = Slot::InFlight {
                            claim: claims,
                            fingerprint: fp,
                        };
                    }
                    (
                        Slot::InFlight {
                            fingerprint: expected,
                            ..
                        },
                        Claim::InFlight {
                            fingerprint: got, ..
                        },
                    ) => {
                        assert_eq!(got, fingerprint(*expected));
                    }
                    (
                        Slot::Completed {
                            fingerprint: f,
                            body,
                        },
                        Claim::Completed {
                            fingerprint: got,
                            outcome: o,
                        },
                    ) => {
                        assert_eq!(got, fingerprint(*f));
                        assert_eq!(o, outcome(*body));
                    }
                    (model, got) => panic!("claim: model {model:?}, store {got:?}"),
                }
            }
            Op::Complete { actor, body } => {
                let Some((claim, token, fp)) = held[actor] else {
                    continue;
                };
                let got = store
                    .complete(key, token, fingerprint(fp), outcome(body), TTL)
                    .await
                    .unwrap();
                let holds = matches!(slot, Slot::InFlight { claim: c, .. } if c == claim);
                assert_eq!(got, expected(holds), "complete by {actor} in {slot:?}");
                if holds {
                    slot = Slot::Completed {
                        fingerprint: fp,
                        body,
                    };
                }
            }
            Op::Release { actor } => {
                let Some((claim, token, _)) = held[actor] else {
                    continue;
                };
                let got = store.release(key, token).await.unwrap();
                let holds = matches!(slot, Slot::InFlight { claim: c, .. } if c == claim);
                assert_eq!(got, expected(holds), "release by {actor} in {slot:?}");
                if holds {
                    slot = Slot::Vacant;
                }
            }
            Op::Renew { actor } => {
                let Some((claim, token, _)) = held[actor] else {
                    continue;
                };
                let got = store.renew(key, token, LEASE).await.unwrap();
                let holds = matches!(slot, Slot::InFlight { claim: c, .. } if c == claim);
                assert_eq!(got, expected(holds), "renew by {actor} in {slot:?}");
            }
            Op::ExpireLeases => {
                expire(key).await;
                if matches!(slot, Slot::InFlight { .. }) {
                    slot = Slot::Vacant;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_memory_store_agrees_with_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = MemoryStore::new();
            check(&store, &ops, |_| tokio::time::advance(LEASE + Duration::from_millis(1))).await;
        });
    }
}

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use guardrail_test_support::redis;
    use tower_idempotency::RedisStore;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn prop_redis_store_agrees_with_the_model(ops in prop::collection::vec(op(), 1..40)) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let redis = redis("idempotency_prop_redis_store_agrees_with_the_model");
            runtime.block_on(async {
                let prefix = redis.prefix().trim_end_matches(':');
                let backend = tower_idempotency::RedisBackend::connect(redis.url()).await.unwrap();
                let store = RedisStore::new(backend, prefix).unwrap();
                let mut raw = redis::Client::open(redis.url())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                // A lease running out in Redis is its key expiring (`PX`); do that now rather
                // than wait: delete the key if (and only if) it holds a claim in flight.
                let expire = |key| {
                    let name = store.redis_key(&key);
                    let mut raw = raw.clone();
                    async move {
                        let value: Option<Vec<u8>> =
                            redis::cmd("GET").arg(&name).query_async(&mut raw).await.unwrap();
                        if value.is_some_and(|v| v.first() == Some(&b'F')) {
                            let _: () = redis::cmd("DEL").arg(&name).query_async(&mut raw).await.unwrap();
                        }
                    }
                };
                check(&store, &ops, expire).await;
                let _ = &mut raw;
            });
        }
    }
}
