//! GCRA arithmetic, in integer nanoseconds. Shared by the memory store and the tests; the
//! Redis script implements the same steps in microseconds.

/// The outcome of one GCRA check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GcraOutcome {
    /// Admitted: store `tat`. `reset`: time until one more unit is available (0 when full).
    Allow {
        tat: u64,
        remaining: u64,
        reset: u64,
    },
    /// Refused; nothing to store. `reset` equals `retry_after`.
    Deny {
        remaining: u64,
        reset: u64,
        retry_after: u64,
    },
    /// The cost exceeds the capacity: never admitted.
    TooCostly,
}

/// Decides `cost` units at `now` against a bucket whose theoretical arrival time is `tat`
/// (0 for a new key), with emission interval `interval` and capacity `burst`.
pub(crate) fn check(tat: u64, now: u64, interval: u64, burst: u64, cost: u64) -> GcraOutcome {
    if cost > burst {
        return GcraOutcome::TooCostly;
    }
    // In u128 so that no step saturates: `now` may be smaller than a whole window.
    let (now, interval) = (u128::from(now), u128::from(interval));
    let tat = u128::from(tat).max(now);
    let new_tat = tat + interval * u128::from(cost);
    let horizon = now + interval * u128::from(burst);
    let narrow = |value: u128| u64::try_from(value).unwrap_or(u64::MAX);
    if horizon >= new_tat {
        GcraOutcome::Allow {
            tat: narrow(new_tat),
            remaining: narrow((horizon - new_tat) / interval),
            reset: narrow(next_unit(new_tat - now, interval)),
        }
    } else {
        let wait = narrow(new_tat - horizon);
        GcraOutcome::Deny {
            remaining: narrow(horizon.saturating_sub(tat) / interval),
            reset: wait,
            retry_after: wait,
        }
    }
}

/// Time until the bucket gains its next whole unit, given how far it is below full (`deficit`
/// nanoseconds of emission); 0 when it is full.
fn next_unit(deficit: u128, interval: u128) -> u128 {
    if deficit == 0 {
        0
    } else {
        (deficit - 1) % interval + 1
    }
}

/// Whether a bucket at `tat` is full again at `now`, so forgetting it changes nothing.
pub(crate) fn is_idle(tat: u64, now: u64) -> bool {
    tat <= now
}
