//! [`MemoryStore`]: buckets in this process, in a bounded concurrent map.

use std::collections::HashMap;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::decision::{Decision, Decisions};
use crate::error::{ConfigError, ConfigErrorKind, StoreError};
use crate::gcra::{self, GcraOutcome};
use crate::key::RateLimitKey;
use crate::policy::{Algorithm, Policy};
use crate::store::RateLimitStore;
use crate::window::{self, WindowOutcome, WindowState};

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
/// - **Bounded**: each policy holds at most `max_keys` keys (default 100,000). Keys whose
///   bucket is full again (GCRA) or whose windows are empty are idle: forgetting them changes
///   no decision, and they are swept on the request path, without a task to spawn. **Overflow
///   policy**: when a new key finds the table full even after a sweep, it shares one overflow
///   bucket per policy with every other such key until room frees up; a flood of unique keys is
///   thus limited as one caller instead of growing memory or evicting live buckets (which would
///   hand their callers a fresh allowance).
/// - **Time** is tokio's monotonic clock, so `tokio::time::pause()` and `advance()` drive it
///   in tests.
///
/// A limit kept in memory is per process: behind a load balancer with several instances, use
/// the Redis store (feature `redis`).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    max_keys: usize,
    tables: Mutex<HashMap<Policy, Arc<Table>>>,
}

impl MemoryStore {
    /// A store holding at most 100,000 keys per policy.
    pub fn new() -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
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
                epoch: Instant::now(),
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

    /// Nanoseconds since the store was made, never 0 (0 marks a new GCRA bucket).
    fn now(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Decides synchronously; what [`RateLimitStore::check`] returns, without the future.
    pub fn decide(&self, prepared: &MemoryPrepared, key: &RateLimitKey, cost: u64) -> Decisions {
        let now = self.now();
        let mut decisions = Vec::with_capacity(prepared.tables.len());
        for (index, (table, global)) in prepared.tables.iter().enumerate() {
            let key = if *global { &GLOBAL } else { key };
            let (decision, consumed) = table.consume(key, now, cost, self.inner.max_keys);
            if decision.allowed {
                decisions.push((decision, consumed));
                continue;
            }
            // Refused: give back what the policies before this one took, then report every
            // policy as it stands without this request.
            let mut refused = Vec::with_capacity(prepared.tables.len());
            for ((table, global), (_, consumed)) in prepared.tables.iter().zip(decisions) {
                let key = if *global { &GLOBAL } else { key };
                table.refund(key, consumed, now);
                refused.push(table.peek(key, now, cost));
            }
            refused.push(decision);
            for (table, global) in &prepared.tables[index + 1..] {
                let key = if *global { &GLOBAL } else { key };
                refused.push(table.peek(key, now, cost));
            }
            return Decisions::new(refused);
        }
        Decisions::new(
            decisions
                .into_iter()
                .map(|(decision, _)| decision)
                .collect(),
        )
    }
}

static GLOBAL: std::sync::LazyLock<RateLimitKey> = std::sync::LazyLock::new(RateLimitKey::global);

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
}

/// What a successful `consume` took, so a refund can give it back.
#[derive(Clone, Copy)]
enum Consumed {
    Gcra { units: u64, interval: u64 },
    Window { index: u64, units: u64 },
}

struct Table {
    kind: TableKind,
    /// When idle keys were last swept (store nanoseconds).
    last_sweep: AtomicU64,
}

enum TableKind {
    Gcra {
        buckets: DashMap<RateLimitKey, AtomicU64>,
        interval: u64,
        burst: u64,
    },
    Window {
        windows: DashMap<RateLimitKey, Mutex<WindowState>>,
        window: u64,
        limit: u64,
    },
}

impl Table {
    fn new(algorithm: Algorithm) -> Self {
        let kind = match algorithm {
            Algorithm::Gcra(quota) => TableKind::Gcra {
                buckets: DashMap::new(),
                interval: quota.emission_interval_nanos(),
                burst: quota.burst(),
            },
            Algorithm::SlidingWindow { limit, window } => TableKind::Window {
                windows: DashMap::new(),
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

    /// Decides and, when admitted, consumes. Never writes on a refusal.
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
                let consumed = Consumed::Gcra {
                    units: cost,
                    interval: *interval,
                };
                let decide = |tat: &AtomicU64| {
                    let mut current = tat.load(Ordering::Acquire);
                    loop {
                        let outcome = gcra::check(current, now, *interval, *burst, cost);
                        let GcraOutcome::Allow { tat: next, .. } = outcome else {
                            return gcra_decision(outcome, *burst);
                        };
                        match tat.compare_exchange_weak(
                            current,
                            next,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => return gcra_decision(outcome, *burst),
                            Err(actual) => current = actual,
                        }
                    }
                };
                if let Some(tat) = buckets.get(key) {
                    return (decide(&tat), consumed);
                }
                let key = self.admit_key(key, now, max_keys);
                let tat = buckets.entry(key).or_insert_with(|| AtomicU64::new(0));
                (decide(&tat), consumed)
            }
            TableKind::Window {
                windows,
                window,
                limit,
            } => {
                let decide = |state: &Mutex<WindowState>| {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    let outcome = window::check(*state, now, *window, *limit, cost);
                    if let WindowOutcome::Allow { state: next, .. } = outcome {
                        *state = next;
                    }
                    // The window actually charged: the state's, which may be newer than `now`.
                    let consumed = Consumed::Window {
                        index: state.index,
                        units: cost,
                    };
                    (window_decision(outcome, *limit), consumed)
                };
                if let Some(state) = windows.get(key) {
                    return decide(&state);
                }
                let key = self.admit_key(key, now, max_keys);
                let state = windows.entry(key).or_default();
                decide(&state)
            }
        }
    }

    /// The key a new caller gets: its own, or the overflow bucket when the table is full.
    fn admit_key(&self, key: &RateLimitKey, now: u64, max_keys: usize) -> RateLimitKey {
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
        if full && self.len() >= max_keys {
            RateLimitKey::overflow()
        } else {
            key.clone()
        }
    }

    fn sweep(&self, now: u64) {
        match &self.kind {
            TableKind::Gcra { buckets, .. } => {
                buckets.retain(|_, tat| !gcra::is_idle(tat.load(Ordering::Acquire), now));
            }
            TableKind::Window {
                windows, window, ..
            } => windows.retain(|_, state| {
                let state = state.get_mut().unwrap_or_else(PoisonError::into_inner);
                !state.is_idle(now, *window)
            }),
        }
    }

    /// Gives back what `consume` took.
    fn refund(&self, key: &RateLimitKey, consumed: Consumed, now: u64) {
        match (&self.kind, consumed) {
            (TableKind::Gcra { buckets, .. }, Consumed::Gcra { units, interval }) => {
                let key = if buckets.contains_key(key) {
                    key
                } else {
                    &*OVERFLOW
                };
                if let Some(tat) = buckets.get(key) {
                    let back = units.saturating_mul(interval);
                    let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                        // Never below `now`: a bucket at `now` is exactly as full as one
                        // that has been idle for longer.
                        Some(tat.saturating_sub(back).max(now.min(tat)))
                    });
                }
            }
            (
                TableKind::Window {
                    windows, window, ..
                },
                Consumed::Window { index, units },
            ) => {
                let key = if windows.contains_key(key) {
                    key
                } else {
                    &*OVERFLOW
                };
                if let Some(state) = windows.get(key) {
                    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                    let rolled = state.at(now, *window);
                    *state = rolled;
                    if state.index == index {
                        state.current = state.current.saturating_sub(units);
                    } else if state.index == index + 1 {
                        state.previous = state.previous.saturating_sub(units);
                    }
                }
            }
            _ => unreachable!("a table only ever consumes its own kind"),
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
                gcra_decision(gcra::check(tat, now, *interval, *burst, cost), *burst)
            }
            TableKind::Window {
                windows,
                window,
                limit,
            } => {
                let state = windows.get(key).map_or_else(WindowState::default, |state| {
                    *state.lock().unwrap_or_else(PoisonError::into_inner)
                });
                window_decision(window::check(state, now, *window, *limit, cost), *limit)
            }
        }
    }
}

static OVERFLOW: std::sync::LazyLock<RateLimitKey> =
    std::sync::LazyLock::new(RateLimitKey::overflow);

pub(crate) fn gcra_decision(outcome: GcraOutcome, burst: u64) -> Decision {
    match outcome {
        GcraOutcome::Allow {
            remaining, reset, ..
        } => Decision {
            allowed: true,
            limit: burst,
            remaining,
            reset: Duration::from_nanos(reset),
            retry_after: None,
        },
        GcraOutcome::Deny {
            remaining,
            reset,
            retry_after,
        } => Decision {
            allowed: false,
            limit: burst,
            remaining,
            reset: Duration::from_nanos(reset),
            retry_after: Some(Duration::from_nanos(retry_after)),
        },
        GcraOutcome::TooCostly => Decision {
            allowed: false,
            limit: burst,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: None,
        },
    }
}

pub(crate) fn window_decision(outcome: WindowOutcome, limit: u64) -> Decision {
    match outcome {
        WindowOutcome::Allow {
            remaining, reset, ..
        } => Decision {
            allowed: true,
            limit,
            remaining,
            reset: Duration::from_nanos(reset),
            retry_after: None,
        },
        WindowOutcome::Deny {
            remaining,
            reset,
            retry_after,
        } => Decision {
            allowed: false,
            limit,
            remaining,
            reset: Duration::from_nanos(reset),
            retry_after: Some(Duration::from_nanos(retry_after)),
        },
        WindowOutcome::TooCostly => Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: None,
        },
    }
}
