//! [`MemoryStore`]: claims and results in this process, in a bounded concurrent map.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::time::Instant;

use crate::store::{
    Claim, Fenced, FencingToken, Fingerprint, IdempotencyStore, Outcome, StoreFuture, StoreKey,
};
use guardrail_store::{StoreError, StoreErrorKind};

/// How often the background sweep removes expired records.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Claims and results kept in this process.
///
/// - **Atomic claims** through dashmap's entry API: of many concurrent claims on one key,
///   exactly one wins.
/// - **Expiry** is checked on every read, so an expired lease or record is never served, and
///   a background task (started with the first claim, on the current tokio runtime, ending
///   when the store is dropped) sweeps expired entries every minute.
/// - **Bounded**: at most `max_entries` (default 100,000). A claim that finds the store full
///   first drops expired entries, then evicts the completed records closest to expiry (down
///   to 7/8 of the bound). In-flight claims are never evicted: when every entry is in flight,
///   the claim fails with a store error (the layer answers 503), which is better than running
///   a duplicate. Evicting a completed record re-opens its key: size the bound for your
///   traffic over one record lifetime.
/// - **Time** is tokio's clock, so tests can pause and advance it.
///
/// Results kept in memory are per process: behind a load balancer, use the Redis store.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    entries: DashMap<StoreKey, Slot>,
    max_entries: usize,
    /// When making room last failed (only claims in flight were left): claims fail at once
    /// for a second after that instead of scanning the table on every request.
    full_since: std::sync::Mutex<Option<Instant>>,
    sweeper: AtomicBool,
}

#[derive(Clone)]
enum Slot {
    InFlight {
        token: FencingToken,
        fingerprint: Fingerprint,
        until: Instant,
    },
    Completed {
        fingerprint: Fingerprint,
        outcome: Outcome,
        until: Instant,
    },
}

impl Slot {
    fn until(&self) -> Instant {
        match self {
            Slot::InFlight { until, .. } | Slot::Completed { until, .. } => *until,
        }
    }

    fn is_live(&self, now: Instant) -> bool {
        self.until() > now
    }

    /// Whether `token` holds this entry now.
    fn held_by(&self, token: FencingToken, now: Instant) -> bool {
        matches!(self, Slot::InFlight { token: held, until, .. } if *held == token && *until > now)
    }
}

impl MemoryStore {
    /// A store holding at most 100,000 entries.
    pub fn new() -> Self {
        Self::with_max_entries(100_000)
    }

    /// A store holding at most `max_entries` entries (at least 1).
    pub fn with_max_entries(max_entries: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                entries: DashMap::new(),
                max_entries: max_entries.max(1),
                full_since: std::sync::Mutex::new(None),
                sweeper: AtomicBool::new(false),
            }),
        }
    }

    /// How many entries (claims and records, expired ones not yet swept included) it holds.
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether it holds no entries.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// Removes expired entries now (the background task does this every minute).
    pub fn sweep(&self) {
        self.inner.sweep(Instant::now());
    }

    fn start_sweeper(&self) {
        // A read first: a write on every claim would bounce the flag between cores.
        if self.inner.sweeper.load(Ordering::Relaxed)
            || self.inner.sweeper.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: try again on the next claim; expiry on read still holds.
            self.inner.sweeper.store(false, Ordering::Relaxed);
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(SWEEP_EVERY);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.sweep(Instant::now());
            }
        });
    }

    fn claim_now(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let inner = &self.inner;
        // Counting entries visits every shard: only a new key needs it.
        if !inner.entries.contains_key(&key) && inner.entries.len() >= inner.max_entries {
            inner.make_room(now)?;
        }
        // A token only for a claim that wins: drawing one costs a system call.
        let fresh = || {
            let token = FencingToken::random();
            let slot = Slot::InFlight {
                token,
                fingerprint,
                until: later(now, lease),
            };
            (token, slot)
        };
        match inner.entries.entry(key) {
            Entry::Vacant(vacant) => {
                let (token, slot) = fresh();
                vacant.insert(slot);
                Ok(Claim::Claimed(token))
            }
            Entry::Occupied(mut occupied) => {
                let current = occupied.get();
                if !current.is_live(now) {
                    let (token, slot) = fresh();
                    occupied.insert(slot);
                    return Ok(Claim::Claimed(token));
                }
                Ok(match current {
                    Slot::InFlight {
                        fingerprint, until, ..
                    } => Claim::InFlight {
                        fingerprint: *fingerprint,
                        lease_remaining: until.saturating_duration_since(now),
                    },
                    Slot::Completed {
                        fingerprint,
                        outcome,
                        ..
                    } => Claim::Completed {
                        fingerprint: *fingerprint,
                        outcome: outcome.clone(),
                    },
                })
            }
        }
    }

    /// Replaces the entry with what `change` makes of it (nothing: removes it), if `token`
    /// holds it now.
    fn fenced(
        &self,
        key: StoreKey,
        token: FencingToken,
        change: impl FnOnce(&Slot, Instant) -> Option<Slot>,
    ) -> Fenced {
        let now = Instant::now();
        match self.inner.entries.entry(key) {
            Entry::Occupied(mut occupied) if occupied.get().held_by(token, now) => {
                match change(occupied.get(), now) {
                    Some(entry) => {
                        occupied.insert(entry);
                    }
                    None => {
                        occupied.remove();
                    }
                }
                Fenced::Applied
            }
            _ => Fenced::Stale,
        }
    }
}

impl Inner {
    fn sweep(&self, now: Instant) {
        self.entries.retain(|_, entry| entry.is_live(now));
    }

    /// Frees at least one slot, or fails when only live claims are left.
    fn make_room(&self, now: Instant) -> Result<(), StoreError> {
        let full = || {
            StoreError::new(
                StoreErrorKind::Unavailable,
                "the idempotency store is full of requests in flight",
            )
        };
        let mut full_since = self
            .full_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if full_since
            .is_some_and(|since| now.saturating_duration_since(since) < Duration::from_secs(1))
        {
            return Err(full());
        }
        self.sweep(now);
        if self.entries.len() < self.max_entries {
            return Ok(());
        }
        let target = self.max_entries - self.max_entries / 8;
        let mut completed: Vec<(Instant, StoreKey)> = self
            .entries
            .iter()
            .filter(|entry| matches!(entry.value(), Slot::Completed { .. }))
            .map(|entry| (entry.value().until(), *entry.key()))
            .collect();
        completed.sort_unstable_by_key(|(until, _)| *until);
        let excess = self.entries.len().saturating_sub(target).max(1);
        for (_, key) in completed.into_iter().take(excess) {
            self.entries
                .remove_if(&key, |_, entry| matches!(entry, Slot::Completed { .. }));
        }
        if self.entries.len() < self.max_entries {
            *full_since = None;
            Ok(())
        } else {
            *full_since = Some(now);
            Err(full())
        }
    }
}

/// `now + duration`, saturating far in the future instead of overflowing the clock.
fn later(now: Instant, duration: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    now + duration.min(CENTURY)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.len())
            .field("max_entries", &self.inner.max_entries)
            .finish()
    }
}

impl IdempotencyStore for MemoryStore {
    fn claim(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> StoreFuture<Claim> {
        self.start_sweeper();
        let result = self.claim_now(key, fingerprint, lease);
        Box::pin(std::future::ready(result))
    }

    fn complete(
        &self,
        key: StoreKey,
        token: FencingToken,
        fingerprint: Fingerprint,
        outcome: Outcome,
        ttl: Duration,
    ) -> StoreFuture<Fenced> {
        let fenced = self.fenced(key, token, |_, now| {
            Some(Slot::Completed {
                fingerprint,
                outcome,
                until: later(now, ttl),
            })
        });
        Box::pin(std::future::ready(Ok(fenced)))
    }

    fn release(&self, key: StoreKey, token: FencingToken) -> StoreFuture<Fenced> {
        let fenced = self.fenced(key, token, |_, _| None);
        Box::pin(std::future::ready(Ok(fenced)))
    }

    fn renew(&self, key: StoreKey, token: FencingToken, lease: Duration) -> StoreFuture<Fenced> {
        let fenced = self.fenced(key, token, |held, now| {
            let mut renewed = held.clone();
            if let Slot::InFlight { until, .. } = &mut renewed {
                *until = later(now, lease);
            }
            Some(renewed)
        });
        Box::pin(std::future::ready(Ok(fenced)))
    }
}
