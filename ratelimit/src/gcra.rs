//! GCRA arithmetic, in integer nanoseconds. Shared by the memory store and the tests; the
//! Redis script implements the same steps in microseconds.

use std::time::Duration;

use crate::arith::divide;
use crate::decision::Decision;

/// Decides `cost` units at `now` against a bucket whose theoretical arrival time is `tat`
/// (0 for a new key), with emission interval `interval` and capacity `burst`. Returns the
/// decision and, when admitted, the new `tat` to store (nothing is stored on a refusal).
// Always inlined: returned through memory, its result cost a store-forwarding stall per
// decision (perf annotate on `ratelimit/hot_key`).
#[inline(always)]
pub(crate) fn check(
    tat: u64,
    now: u64,
    interval: u64,
    burst: u64,
    cost: u64,
) -> (Decision, Option<u64>) {
    if cost > burst {
        return (Decision::too_costly(burst), None);
    }
    // The common case in 64 bits: a bucket whose whole window fits (`cost <= burst`, so
    // nothing below overflows once the horizon does not).
    let tat = tat.max(now);
    if let Some(horizon) = interval
        .checked_mul(burst)
        .and_then(|window| now.checked_add(window))
    {
        let new_tat = tat.saturating_add(interval * cost);
        if horizon >= new_tat {
            let decision = Decision::gcra_admitted(burst, new_tat - now, interval);
            return (decision, Some(new_tat));
        }
    }
    check_wide(tat, now, interval, burst, cost)
}

/// [`check`] in 128 bits, so that no step saturates (`now` may be smaller than a whole
/// window): every case the 64-bit path leaves, and the oracle it is tested against.
fn check_wide(tat: u64, now: u64, interval: u64, burst: u64, cost: u64) -> (Decision, Option<u64>) {
    if cost > burst {
        return (Decision::too_costly(burst), None);
    }
    let (now, interval) = (u128::from(now), u128::from(interval));
    let tat = u128::from(tat).max(now);
    let new_tat = tat + interval * u128::from(cost);
    let horizon = now + interval * u128::from(burst);
    let narrow = |value: u128| u64::try_from(value).unwrap_or(u64::MAX);
    let nanos = |value: u128| Duration::from_nanos(narrow(value));
    if horizon >= new_tat {
        let remaining = narrow(divide(horizon - new_tat, interval));
        let reset = nanos(next_unit(new_tat - now, interval));
        (
            Decision::admitted(burst, remaining, reset),
            Some(narrow(new_tat)),
        )
    } else {
        let remaining = narrow(divide(horizon.saturating_sub(tat), interval));
        (
            Decision::refused(burst, remaining, nanos(new_tat - horizon)),
            None,
        )
    }
}

/// Time until the bucket gains its next whole unit, given how far it is below full (`deficit`
/// nanoseconds of emission); 0 when it is full.
fn next_unit(deficit: u128, interval: u128) -> u128 {
    if deficit == 0 {
        0
    } else {
        let below = deficit - 1;
        below - divide(below, interval) * interval + 1
    }
}

/// Whether a bucket at `tat` is full again at `now`, so forgetting it changes nothing.
pub(crate) fn is_idle(tat: u64, now: u64) -> bool {
    tat <= now
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{check, check_wide};

    fn figure() -> impl Strategy<Value = u64> {
        prop_oneof![0_u64..10_000, any::<u64>(), Just(u64::MAX)]
    }

    proptest! {
        /// The 64-bit fast path decides, and stores, exactly what the 128-bit arithmetic does.
        #[test]
        fn prop_the_64_bit_path_agrees_with_the_128_bit_one(
            tat in figure(),
            now in figure(),
            interval in prop_oneof![1_u64..1_000_000_000, any::<u64>().prop_map(|i| i.max(1))],
            burst in prop_oneof![1_u64..1_000, any::<u64>().prop_map(|b| b.max(1))],
            cost in 0_u64..1_000,
        ) {
            prop_assert_eq!(
                check(tat, now, interval, burst, cost),
                check_wide(tat, now, interval, burst, cost)
            );
        }
    }
}
