//! [`MemoryStore`]: claims and results in this process, bounded in bytes, shared fairly
//! between scopes.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use guardrail_store::{ConfigError, ConfigErrorKind, StoreError, StoreErrorKind};
use http::{HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::store::{
    Claim, Completion, Fenced, FencingToken, Fingerprint, IdempotencyStore, ScopeId, StoreFuture,
    StoreKey, StoredResponse,
};

/// The default byte budget of a [`MemoryStore`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// The default share of the budget one scope may fill: an eighth (8 MiB of the default).
pub const DEFAULT_SCOPE_SHARE_DIVISOR: usize = 8;
/// What one entry costs beside its response: the key, the slot, the table's own overhead and
/// the eviction index, rounded up. Counted for every claim and record.
pub const ENTRY_OVERHEAD: usize = 256;
/// What one stored header line costs beside its name and value bytes.
const HEADER_OVERHEAD: usize = size_of::<(HeaderName, HeaderValue)>();

/// The most entries one claim or record evicts to make room for itself: enough for a 1 MiB
/// record in place of 4096 of the smallest (none is smaller than `ENTRY_OVERHEAD`).
const MAX_EVICTIONS: usize = 4096 + 64;
/// How often the background sweep removes expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Shards, chosen by scope: all of one scope's entries and its share live in one shard, so
/// fairness needs no lock but that shard's.
const SHARDS: usize = 16;

/// Claims and results kept in this process, bounded in bytes and shared fairly.
///
/// - **Atomic claims**: of many concurrent claims on one key, exactly one wins (one lock per
///   shard, held for the claim).
/// - **A byte budget** (default [`DEFAULT_MAX_BYTES`], 64 MiB) counts each entry's real
///   size: [`ENTRY_OVERHEAD`] plus, for a record, its body, header and trailer bytes (the body is
///   copied to an allocation of its own size, so a slice of a larger buffer never keeps the
///   rest alive).
/// - **A share per scope** (default an eighth of the budget): a scope (tenant) over its
///   share evicts its own completed records, those closest to expiry first, and never
///   another scope's. Only when the whole budget is full are other scopes' records evicted,
///   from the scope holding the most bytes first. An unscoped layer's keys
///   ([`ScopeId::UNSCOPED`]) may fill the whole budget; they also all live in one of the
///   store's 16 shards, behind one lock.
/// - **In-flight claims are never evicted**, since that would run a request twice. A claim
///   that finds no room (its scope's share, or the budget, full of claims in flight) fails
///   with a store error: the layer answers 503 with `Retry-After`. A response that finds no
///   room is recorded as completed but not replayable: retries get
///   `idempotency-result-unavailable`, and the handler still never runs twice.
/// - **Expiry** is checked on every read, so an expired lease or record is never served, and
///   a background task (started with the first claim, on the current tokio runtime, ending
///   when the store is dropped) sweeps expired entries every minute.
/// - **Time** is tokio's clock, so tests can pause and advance it.
///
/// Evicting a completed record re-opens its key: size the budget for your traffic over one
/// record lifetime ([`usage`](Self::usage) tells what is held). Results kept in memory are
/// per process: behind a load balancer, use a shared store.
///
/// ```
/// use tower_idempotency::MemoryStore;
///
/// // 16 MiB, of which one tenant may fill at most 4 MiB.
/// let store = MemoryStore::new()
///     .max_bytes(16 << 20)?
///     .max_bytes_per_scope(4 << 20)?;
/// assert_eq!(store.usage().bytes, 0);
/// # Ok::<(), guardrail_store::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Bytes held across shards; reserved before an entry grows, so never above the budget.
    bytes: AtomicUsize,
    max_bytes: usize,
    max_scope_bytes: usize,
    sweeper: AtomicBool,
}

#[derive(Default)]
struct Shard {
    // aHash, keyed at random per map, as the rate limiter's tables: SipHash showed in the
    // first execution's profile, and the keys are SHA-256 outputs a client cannot aim anyway.
    entries: HashMap<StoreKey, Slot, ahash::RandomState>,
    scopes: HashMap<ScopeId, ScopeUsage, ahash::RandomState>,
    /// When this shard was last swept to make room: at most once a second, so a scope stuck
    /// at its share does not scan the shard on every request.
    swept_at: Option<Instant>,
}

#[derive(Default)]
struct ScopeUsage {
    bytes: usize,
    /// The scope's completed records by expiry: the eviction order.
    completed: BTreeSet<(Instant, StoreKey)>,
}

impl ScopeUsage {
    /// Counts `slot`, stored at `key`.
    fn count(&mut self, key: StoreKey, slot: &Slot) {
        self.bytes += slot.bytes();
        if let Slot::Completed { until, .. } = slot {
            self.completed.insert((*until, key));
        }
    }

    /// Stops counting `slot`, no longer stored at `key`.
    fn uncount(&mut self, key: StoreKey, slot: &Slot) {
        self.bytes -= slot.bytes();
        if let Slot::Completed { until, .. } = slot {
            self.completed.remove(&(*until, key));
        }
    }
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
        outcome: Completion,
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

    /// The bytes this entry is counted for.
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Slot::Completed {
                    outcome: Completion::Response(response),
                    ..
                } => response_bytes(response),
                _ => 0,
            }
    }
}

fn response_bytes(response: &StoredResponse) -> usize {
    let headers: usize = response
        .headers
        .iter()
        .chain(&response.trailers)
        .map(|(name, value)| HEADER_OVERHEAD + name.as_str().len() + value.len())
        .sum();
    response.body.len() + headers
}

/// What is held, as [`MemoryStore::usage`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryUsage {
    /// Bytes counted against the budget.
    pub bytes: usize,
    /// Entries: claims in flight and completed records (expired ones not yet swept included).
    pub entries: usize,
    /// Scopes holding at least one entry.
    pub scopes: usize,
}

impl MemoryStore {
    /// A store with a budget of [`DEFAULT_MAX_BYTES`] and a share of an eighth of it per scope.
    pub fn new() -> Self {
        Self::with_limits(
            DEFAULT_MAX_BYTES,
            DEFAULT_MAX_BYTES / DEFAULT_SCOPE_SHARE_DIVISOR,
        )
    }

    fn with_limits(max_bytes: usize, max_scope_bytes: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                bytes: AtomicUsize::new(0),
                max_bytes,
                max_scope_bytes,
                sweeper: AtomicBool::new(false),
            }),
        }
    }

    /// Holds at most `bytes`, and lets one scope fill an eighth of it (at least one entry);
    /// set [`max_bytes_per_scope`](Self::max_bytes_per_scope) after this to change the share.
    /// Builds a new, empty store: set it before use.
    ///
    /// # Errors
    ///
    /// [`ConfigErrorKind::MemoryBudget`] when `bytes` cannot hold one entry.
    pub fn max_bytes(self, bytes: usize) -> Result<Self, ConfigError> {
        let share = (bytes / DEFAULT_SCOPE_SHARE_DIVISOR).max(ENTRY_OVERHEAD);
        Self::checked(bytes, share.min(bytes))
    }

    /// Lets one scope fill at most `bytes` of the budget (the whole budget for a layer with
    /// one caller, as `Scope::unscoped` has). Builds a new, empty store: set it before use.
    ///
    /// # Errors
    ///
    /// [`ConfigErrorKind::MemoryBudget`] when `bytes` cannot hold one entry or exceeds the
    /// budget.
    pub fn max_bytes_per_scope(self, bytes: usize) -> Result<Self, ConfigError> {
        Self::checked(self.inner.max_bytes, bytes)
    }

    fn checked(max_bytes: usize, max_scope_bytes: usize) -> Result<Self, ConfigError> {
        if max_scope_bytes < ENTRY_OVERHEAD || max_scope_bytes > max_bytes {
            return Err(ConfigError::new(ConfigErrorKind::MemoryBudget));
        }
        Ok(Self::with_limits(max_bytes, max_scope_bytes))
    }

    /// What the store holds now.
    pub fn usage(&self) -> MemoryUsage {
        let mut usage = MemoryUsage {
            bytes: self.inner.bytes.load(Ordering::Acquire),
            ..MemoryUsage::default()
        };
        for shard in &self.inner.shards {
            let shard = lock(shard);
            usage.entries += shard.entries.len();
            usage.scopes += shard.scopes.len();
        }
        usage
    }

    /// The bytes `scope` holds now.
    pub fn scope_bytes(&self, scope: ScopeId) -> usize {
        let shard = lock(self.inner.shard(scope));
        shard.scopes.get(&scope).map_or(0, |usage| usage.bytes)
    }

    /// Removes expired entries now (the background task does this every minute).
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in &self.inner.shards {
            self.inner.sweep(&mut lock(shard), now);
        }
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
                MemoryStore { inner }.sweep();
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
        let mut shard = lock(inner.shard(key.scope()));
        if let Some(current) = shard.entries.get(&key) {
            if current.is_live(now) {
                return Ok(match current {
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
                });
            }
            inner.remove(&mut shard, &key);
        }
        if !inner.make_room(&mut shard, key.scope(), ENTRY_OVERHEAD, now) {
            return Err(StoreError::new(
                StoreErrorKind::Full,
                "the idempotency store is full of requests in flight",
            ));
        }
        // A token only for a claim that wins: drawing one costs a system call.
        let token = FencingToken::random();
        let slot = Slot::InFlight {
            token,
            fingerprint,
            until: later(now, lease),
        };
        inner.attach(&mut shard, key, slot);
        Ok(Claim::Claimed(token))
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
        let inner = &self.inner;
        let mut shard = lock(inner.shard(key.scope()));
        let Some(held) = shard
            .entries
            .get(&key)
            .filter(|held| held.held_by(token, now))
        else {
            return Fenced::Stale;
        };
        let held_bytes = held.bytes();
        match change(held, now) {
            None => {
                inner.remove(&mut shard, &key);
            }
            Some(next) => {
                // The held claim stays counted while room is made for what the record adds,
                // so falling back to a record of the claim's own size always fits.
                let next = inner.fit(&mut shard, key.scope(), next, held_bytes, now);
                if let Some(smaller) = held_bytes.checked_sub(next.bytes()) {
                    inner.bytes.fetch_sub(smaller, Ordering::AcqRel);
                }
                inner.replace(&mut shard, key, next);
            }
        }
        Fenced::Applied
    }
}

impl Inner {
    fn shard(&self, scope: ScopeId) -> &Mutex<Shard> {
        // Scope ids are digests: their low bits are already uniform.
        let index = usize::try_from(scope.as_u64() % SHARDS as u64).expect("below 16");
        &self.shards[index]
    }

    /// Adds `slot`, whose bytes are already reserved in the total, to its scope's count.
    fn attach(&self, shard: &mut Shard, key: StoreKey, slot: Slot) {
        shard
            .scopes
            .entry(key.scope())
            .or_default()
            .count(key, &slot);
        shard.entries.insert(key, slot);
    }

    /// Puts `slot`, whose bytes are already reserved in the total, in place of the in-flight
    /// claim held at `key`, in the table and in its scope's count: one lookup, where a
    /// removal and an insertion would probe the table twice and move the record.
    fn replace(&self, shard: &mut Shard, key: StoreKey, slot: Slot) {
        let Shard {
            entries, scopes, ..
        } = shard;
        let usage = scopes.entry(key.scope()).or_default();
        usage.count(key, &slot);
        match entries.get_mut(&key) {
            Some(held) => usage.uncount(key, &std::mem::replace(held, slot)),
            None => {
                entries.insert(key, slot);
            }
        }
    }

    /// Takes `key`'s entry out of the table and its scope's count (not the total).
    fn detach(&self, shard: &mut Shard, key: &StoreKey) -> Option<Slot> {
        let slot = shard.entries.remove(key)?;
        if let Some(usage) = shard.scopes.get_mut(&key.scope()) {
            usage.uncount(*key, &slot);
            if usage.bytes == 0 {
                shard.scopes.remove(&key.scope());
            }
        }
        Some(slot)
    }

    /// Removes `key`'s entry and gives its bytes back to the budget.
    fn remove(&self, shard: &mut Shard, key: &StoreKey) -> Option<Slot> {
        let slot = self.detach(shard, key)?;
        self.bytes.fetch_sub(slot.bytes(), Ordering::AcqRel);
        Some(slot)
    }

    /// `slot` replacing an entry of `held` bytes, with room reserved for what it adds; when
    /// no room can be made, the same record marked not replayable, which adds nothing.
    fn fit(
        &self,
        shard: &mut Shard,
        scope: ScopeId,
        slot: Slot,
        held: usize,
        now: Instant,
    ) -> Slot {
        let grows = slot.bytes().saturating_sub(held);
        if grows == 0 || self.make_room(shard, scope, grows, now) {
            return slot;
        }
        match slot {
            Slot::Completed {
                fingerprint, until, ..
            } => Slot::Completed {
                fingerprint,
                outcome: Completion::NotReplayable,
                until,
            },
            in_flight @ Slot::InFlight { .. } => in_flight,
        }
    }

    /// Reserves `bytes` for `scope`: first within its share (evicting its own completed
    /// records), then within the budget (evicting the largest scopes' records). Returns
    /// whether the room was made; on `true` the bytes are counted in the total.
    fn make_room(&self, shard: &mut Shard, scope: ScopeId, bytes: usize, now: Instant) -> bool {
        let share = self.share(scope);
        if bytes > share {
            return false;
        }
        // Each pass frees an entry or sweeps once, and at most MAX_EVICTIONS pass: under
        // contention other threads may take what is freed, so a claim gives up rather than
        // loop.
        let mut swept = false;
        let mut passes = 0;
        while scope_bytes(shard, scope) + bytes > share {
            passes += 1;
            if passes <= MAX_EVICTIONS && self.evict_oldest(shard, scope) {
                continue;
            }
            if swept || !self.sweep_once(shard, now) {
                return false;
            }
            swept = true;
        }
        while !self.reserve(bytes) {
            passes += 1;
            if passes <= MAX_EVICTIONS && self.evict_elsewhere(shard) {
                continue;
            }
            if swept || !self.sweep_once(shard, now) {
                return false;
            }
            swept = true;
        }
        true
    }

    /// What `scope` may hold: its share, or the whole budget for an unscoped layer's keys (a
    /// layer with one caller has no one to share with).
    fn share(&self, scope: ScopeId) -> usize {
        if scope == ScopeId::UNSCOPED {
            self.max_bytes
        } else {
            self.max_scope_bytes
        }
    }

    /// Adds `bytes` to the total if it stays within the budget.
    fn reserve(&self, bytes: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes)
                    .filter(|total| *total <= self.max_bytes)
            })
            .is_ok()
    }

    /// Evicts `scope`'s completed record closest to expiry, if it has one.
    fn evict_oldest(&self, shard: &mut Shard, scope: ScopeId) -> bool {
        let oldest = shard
            .scopes
            .get(&scope)
            .and_then(|usage| usage.completed.first().map(|(_, key)| *key));
        oldest.is_some_and(|key| self.remove(shard, &key).is_some())
    }

    /// Under a full budget: evicts one completed record of the scope holding the most bytes,
    /// in this shard or (without waiting for a busy lock) another.
    fn evict_elsewhere(&self, shard: &mut Shard) -> bool {
        let own = largest_evictable(shard);
        let mut best: Option<(usize, &Mutex<Shard>)> = None;
        for other in &self.shards {
            // Our own shard is locked by us: `try_lock` skips it, as it skips a busy one.
            let Ok(guard) = other.try_lock() else {
                continue;
            };
            if let Some((held, _)) = largest_evictable(&guard)
                && best.is_none_or(|(most, _)| held > most)
            {
                best = Some((held, other));
            }
        }
        match (own, best) {
            (Some((held, scope)), best) if best.is_none_or(|(most, _)| held >= most) => {
                self.evict_oldest(shard, scope)
            }
            (_, Some((_, other))) => {
                let Ok(mut guard) = other.try_lock() else {
                    return false;
                };
                largest_evictable(&guard)
                    .is_some_and(|(_, scope)| self.evict_oldest(&mut guard, scope))
            }
            _ => false,
        }
    }

    /// Sweeps `shard` if it was not swept in the last second; returns whether it freed bytes.
    fn sweep_once(&self, shard: &mut Shard, now: Instant) -> bool {
        if shard
            .swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1))
        {
            return false;
        }
        shard.swept_at = Some(now);
        self.sweep(shard, now) > 0
    }

    /// Removes expired entries; returns how many.
    fn sweep(&self, shard: &mut Shard, now: Instant) -> usize {
        let expired: Vec<StoreKey> = shard
            .entries
            .iter()
            .filter(|(_, slot)| !slot.is_live(now))
            .map(|(key, _)| *key)
            .collect();
        for key in &expired {
            self.remove(shard, key);
        }
        expired.len()
    }
}

fn scope_bytes(shard: &Shard, scope: ScopeId) -> usize {
    shard.scopes.get(&scope).map_or(0, |usage| usage.bytes)
}

/// The scope of `shard` holding the most bytes among those with a completed record, with
/// its bytes.
fn largest_evictable(shard: &Shard) -> Option<(usize, ScopeId)> {
    shard
        .scopes
        .iter()
        .filter(|(_, usage)| !usage.completed.is_empty())
        .map(|(scope, usage)| (usage.bytes, *scope))
        .max()
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every change to a shard completes before its lock is released (nothing in between
    // can panic but allocation), so a poisoned shard is still consistent: keep using it.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
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
            .field("usage", &self.usage())
            .field("max_bytes", &self.inner.max_bytes)
            .field("max_bytes_per_scope", &self.inner.max_scope_bytes)
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
        outcome: Completion,
        ttl: Duration,
    ) -> StoreFuture<Fenced> {
        // Copied to an allocation of its own size: the budget counts what is really held.
        let outcome = match outcome {
            Completion::Response(mut response) => {
                response.body = bytes::Bytes::copy_from_slice(&response.body);
                Completion::Response(response)
            }
            Completion::NotReplayable => Completion::NotReplayable,
        };
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
