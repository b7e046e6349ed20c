//! [`MemoryStore`]: buckets in this process, in a bounded concurrent map.

use std::collections::HashMap;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ahash::RandomState;
use dashmap::DashMap;
use smallvec::SmallVec;

use crate::clock::Clock;
use crate::decision::{Decision, Decisions};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::gcra;
use crate::key::RateLimitKey;
use crate::policy::{Algorithm, Policy};
use crate::store::RateLimitStore;
use crate::window::{self, WindowState};
use guardrail_store::StoreError;

/// Sweeps of idle keys run at most this often, so a full table of active keys does not make
/// every new key pay for a scan.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Without pressure, idle keys are still swept this often, so memory shrinks after a burst of
/// one-off callers.
const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Buckets kept in this process.
///
/// - **Shared**: clones share the buckets, and policies equal in name and parameters share a
///   table, so every layer built from one store limits together.
/// - **Bounded in bytes**: each policy holds at most `max_keys` keys (default 100,000), and a
///   key's size is bounded too (an address, or a text key of at most [`MAX_TEXT_KEY_LEN`](crate::MAX_TEXT_KEY_LEN)
///   bytes: longer ones are kept as a 32-byte digest), so the key bound is a byte bound: about
///   43 to 69 bytes per GCRA key in the table (measured by the `ratelimit_memory` bench), plus
///   up to 64 bytes of key text, and a fixed window state per sliding-window key. Keys whose
///   bucket is full again (GCRA) or whose windows are empty are idle: forgetting them changes
///   no decision, and they are swept on the request path, without a task to spawn. **Overflow
///   policy**: when a new key finds the table full even after a sweep, it shares one overflow
///   bucket per policy with every other such key until room frees up; a flood of unique keys is
///   thus limited as one caller instead of growing memory or evicting live buckets (which would
///   hand their callers a fresh allowance).
/// - **Time** is the CPU's time-stamp counter, read through `quanta` (a few nanoseconds,
///   where `clock_gettime` was a third of a decision). With the crate feature `test-util`
///   (enable it in dev-dependencies, beside tokio's) it is tokio's clock instead, so
///   `tokio::time::pause()` and `advance()` drive it in tests.
///
/// A limit kept in memory is per process: behind a load balancer with several instances, use
/// the Redis store (feature `redis`).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Clock,
    max_keys: usize,
    tables: Mutex<HashMap<Policy, Arc<Table>>>,
}

impl MemoryStore {
    /// A store holding at most 100,000 keys per policy.
    pub fn new() -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                clock: Clock::new(),
                max_keys: 100_000,
                tables: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A store holding at most `max_keys` keys per policy.
    ///
    /// # Errors
    ///
    /// Fails when `max_keys` is zero.
    pub fn with_max_keys(max_keys: usize) -> Result<Self, ConfigError> {
        if max_keys == 0 {
            return Err(ConfigError::new(ConfigErrorKind::MaxKeys));
        }
        Ok(MemoryStore {
            inner: Arc::new(Inner {
                clock: Clock::new(),
                max_keys,
                tables: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// How many keys the store holds over all its policies (overflow buckets included).
    pub fn key_count(&self) -> usize {
        let tables = self
            .inner
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tables.values().map(|table| table.len()).sum()
    }

    /// Decides synchronously; what [`RateLimitStore::check`] returns, without the future.
    #[inline]
    pub fn decide(&self, prepared: &MemoryPrepared, key: &RateLimitKey, cost: u64) -> Decisions {
        let now = self.inner.clock.now();
        if let [(table, global)] = prepared.tables.as_slice() {
            // One policy: a refusal took nothing, so there is nothing to give back.
            let charged = if *global { &GLOBAL } else { key };
            let (decision, _) = table.consume(charged, now, cost, self.inner.max_keys);
            return Decisions::one(decision);
        }
        // Inline for up to two policies: the admitted path allocates nothing, and its
        // decisions are built where the answer keeps them.
        let mut admitted: SmallVec<[Decision; 2]> = SmallVec::new();
        // What each policy but the last took, in case a later one refuses.
        let mut taken: SmallVec<[Consumed; 2]> = SmallVec::new();
        let last = prepared.tables.len().saturating_sub(1);
        for (index, (table, global)) in prepared.tables.iter().enumerate() {
            let charged = if *global { &GLOBAL } else { key };
            let (decision, consumed) = table.consume(charged, now, cost, self.inner.max_keys);
            if !decision.allowed() {
                return refuse(prepared, key, cost, now, &taken, decision);
            }
            admitted.push(decision);
            if index < last {
                taken.push(consumed);
            }
        }
        Decisions::from_small_vec(admitted)
    }
}

/// Policy number `taken.len()` refused: gives back what the policies before it took, then
/// reports every policy as it stands without this request. Out of line, so the admitted path
/// keeps a small stack frame (not `#[cold]`: under a flood, refusals are the common case).
#[inline(never)]
fn refuse(
    prepared: &MemoryPrepared,
    key: &RateLimitKey,
    cost: u64,
    now: u64,
    taken: &[Consumed],
    refusal: Decision,
) -> Decisions {
    let mut refused: SmallVec<[Decision; 2]> = SmallVec::new();
    for ((table, global), consumed) in prepared.tables.iter().zip(taken) {
        let key = if *global { &GLOBAL } else { key };
        let charged = if consumed.overflow { &OVERFLOW } else { key };
        table.refund(charged, *consumed, cost, now);
        refused.push(table.peek(charged, now, cost));
    }
    refused.push(refusal);
    for (table, global) in &prepared.tables[taken.len() + 1..] {
        let key = if *global { &GLOBAL } else { key };
        refused.push(table.peek(key, now, cost));
    }
    Decisions::from_small_vec(refused)
}

/// Gives memory back after a burst of one-off callers has been swept: a table keeps its
/// capacity otherwise, and a flood would hold its high-water mark for good.
fn shrink_if_sparse<V>(table: &Keyed<V>) {
    if table.len() < table.capacity() / 4 {
        table.shrink_to_fit();
    }
}

/// A table of keys. Hashed with aHash, keyed at random per table: SipHash (std's default)
/// was a quarter of a hot-key decision's instructions (callgrind), and a random key still
/// keeps a client from choosing keys that collide.
type Keyed<V> = DashMap<RateLimitKey, V, RandomState>;

static GLOBAL: RateLimitKey = RateLimitKey::global();
static OVERFLOW: RateLimitKey = RateLimitKey::overflow();

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_keys", &self.inner.max_keys)
            .field("keys", &self.key_count())
            .field("clock", &self.inner.clock.source())
            .finish()
    }
}

/// The memory store's tables for one limiter's policies.
pub struct MemoryPrepared {
    tables: Vec<(Arc<Table>, bool)>,
}

impl fmt::Debug for MemoryPrepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPrepared")
            .field("policies", &self.tables.len())
            .finish()
    }
}

impl RateLimitStore for MemoryStore {
    type Prepared = MemoryPrepared;
    type Future = Ready<Result<Decisions, StoreError>>;

    fn prepare(&self, policies: &[Policy]) -> MemoryPrepared {
        let mut tables = self
            .inner
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tables = policies
            .iter()
            .map(|policy| {
                let table = tables
                    .entry(policy.clone())
                    .or_insert_with(|| Arc::new(Table::new(policy.algorithm())));
                (Arc::clone(table), policy.is_global())
            })
            .collect();
        MemoryPrepared { tables }
    }

    fn check(&self, prepared: &MemoryPrepared, key: &RateLimitKey, cost: u64) -> Self::Future {
        ready(Ok(self.decide(prepared, key, cost)))
    }

    fn check_now(
        &self,
        prepared: &MemoryPrepared,
        key: &RateLimitKey,
        cost: u64,
    ) -> Option<Result<Decisions, StoreError>> {
        Some(Ok(self.decide(prepared, key, cost)))
    }
}

/// Decides `cost` units against the GCRA bucket `tat` and, when admitted, takes them. Always
/// inlined, like [`gcra::check`]: a decision returned through memory cost a store-forwarding
/// stall (perf annotate on the `ratelimit/hot_key` bench).
#[inline(always)]
fn take(tat: &AtomicU64, now: u64, interval: u64, burst: u64, cost: u64) -> Decision {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let (decision, next) = gcra::check(current, now, interval, burst, cost);
        let Some(next) = next else { return decision };
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return decision,
            Err(actual) => current = actual,
        }
    }
}

/// What a successful `consume` took, and from which bucket, so a refund gives it back to
/// that bucket.
#[derive(Clone, Copy)]
struct Consumed {
    /// The window charged (sliding window only: the state's, which may be newer than `now`).
    window_index: u64,
    /// Whether the caller was charged in the overflow bucket.
    overflow: bool,
}

struct Table {
    kind: TableKind,
    /// When idle keys were last swept (store nanoseconds).
    last_sweep: AtomicU64,
}

enum TableKind {
    Gcra {
        buckets: Keyed<AtomicU64>,
        interval: u64,
        burst: u64,
    },
    Window {
        windows: Keyed<Mutex<WindowState>>,
        window: u64,
        limit: u64,
    },
}

impl Table {
    fn new(algorithm: Algorithm) -> Self {
        let kind = match algorithm {
            Algorithm::Gcra(quota) => TableKind::Gcra {
                buckets: DashMap::with_hasher(RandomState::new()),
                interval: quota.emission_interval_nanos(),
                burst: quota.burst(),
            },
            Algorithm::SlidingWindow { limit, window } => TableKind::Window {
                windows: DashMap::with_hasher(RandomState::new()),
                window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
                limit,
            },
        };
        Table {
            kind,
            last_sweep: AtomicU64::new(0),
        }
    }

    fn len(&self) -> usize {
        match &self.kind {
            TableKind::Gcra { buckets, .. } => buckets.len(),
            TableKind::Window { windows, .. } => windows.len(),
        }
    }

    /// Decides and, when admitted, consumes. Never writes on a refusal. Inlined, so the
    /// decision travels in registers rather than through a stack copy.
    #[inline(always)]
    fn consume(
        &self,
        key: &RateLimitKey,
        now: u64,
        cost: u64,
        max_keys: usize,
    ) -> (Decision, Consumed) {
        match &self.kind {
            TableKind::Gcra {
                buckets,
                interval,
                burst,
            } => {
                let consumed = |overflow| Consumed {
                    window_index: 0,
                    overflow,
                };
                if let Some(tat) = buckets.get(key) {
                    let decision = take(&tat, now, *interval, *burst, cost);
                    return (decision, consumed(false));
                }
                let overflow = self.admit_key(now, max_keys);
                let key = if overflow { &OVERFLOW } else { key };
                let tat = buckets
                    .entry(key.clone())
                    .or_insert_with(|| AtomicU64::new(0));
                (take(&tat, now, *interval, *burst, cost), consumed(overflow))
            }
            TableKind::Window {
                windows,
                window,
                limit,
            } => {
                let decide = |state: &Mutex<WindowState>, overflow| {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    let (decision, next) = window::check(*state, now, *window, *limit, cost);
                    if let Some(next) = next {
                        *state = next;
                    }
                    let consumed = Consumed {
                        window_index: state.index,
                        overflow,
                    };
                    (decision, consumed)
                };
                if let Some(state) = windows.get(key) {
                    return decide(&state, false);
                }
                let overflow = self.admit_key(now, max_keys);
                let key = if overflow { &OVERFLOW } else { key };
                let state = windows.entry(key.clone()).or_default();
                decide(&state, overflow)
            }
        }
    }

    /// Makes room for a new caller (sweeping idle keys when due); `true` when there is none
    /// and the caller goes to the overflow bucket.
    fn admit_key(&self, now: u64, max_keys: usize) -> bool {
        let last = self.last_sweep.load(Ordering::Relaxed);
        let since = Duration::from_nanos(now.saturating_sub(last));
        let full = self.len() >= max_keys;
        let due = (full && since >= SWEEP_INTERVAL) || since >= IDLE_SWEEP_INTERVAL;
        if due
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
        }
        full && self.len() >= max_keys
    }

    fn sweep(&self, now: u64) {
        match &self.kind {
            TableKind::Gcra { buckets, .. } => {
                buckets.retain(|_, tat| !gcra::is_idle(tat.load(Ordering::Acquire), now));
                shrink_if_sparse(buckets);
            }
            TableKind::Window {
                windows, window, ..
            } => {
                windows.retain(|_, state| {
                    let state = state.get_mut().unwrap_or_else(PoisonError::into_inner);
                    !state.is_idle(now, *window)
                });
                shrink_if_sparse(windows);
            }
        }
    }

    /// Gives back what `consume` took from the bucket of `key` (the one charged). A bucket
    /// swept in the meantime is full anyway: nothing to give back.
    fn refund(&self, key: &RateLimitKey, consumed: Consumed, units: u64, now: u64) {
        match &self.kind {
            TableKind::Gcra {
                buckets, interval, ..
            } => {
                if let Some(tat) = buckets.get(key) {
                    let back = units.saturating_mul(*interval);
                    let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                        // Never below `now`: a bucket at `now` is exactly as full as one
                        // that has been idle for longer.
                        Some(tat.saturating_sub(back).max(now.min(tat)))
                    });
                }
            }
            TableKind::Window {
                windows, window, ..
            } => {
                if let Some(state) = windows.get(key) {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    *state = state.at(now, *window);
                    if state.index == consumed.window_index {
                        state.current = state.current.saturating_sub(units);
                    } else if state.index == consumed.window_index + 1 {
                        state.previous = state.previous.saturating_sub(units);
                    }
                }
            }
        }
    }

    /// The decision `cost` units would get now, without consuming.
    fn peek(&self, key: &RateLimitKey, now: u64, cost: u64) -> Decision {
        match &self.kind {
            TableKind::Gcra {
                buckets,
                interval,
                burst,
            } => {
                let tat = buckets
                    .get(key)
                    .map_or(0, |tat| tat.load(Ordering::Acquire));
                gcra::check(tat, now, *interval, *burst, cost).0
            }
            TableKind::Window {
                windows,
                window,
                limit,
            } => {
                let state = windows.get(key).map_or_else(WindowState::default, |state| {
                    *state.lock().unwrap_or_else(PoisonError::into_inner)
                });
                window::check(state, now, *window, *limit, cost).0
            }
        }
    }
}
