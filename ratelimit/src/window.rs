//! Sliding-window-counter arithmetic, in integer nanoseconds (Cloudflare's approximation).

use std::time::Duration;

use crate::arith::divide;
use crate::decision::Decision;

/// Counts for the current fixed window and the one before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WindowState {
    /// The index (`time / window`) of the window `current` counts.
    pub(crate) index: u64,
    pub(crate) current: u64,
    pub(crate) previous: u64,
}

impl WindowState {
    /// The state as seen at `now`: windows that have ended are rolled over. A `now` older than
    /// the stored window (a thread that read the clock before another rolled the state
    /// forward) sees the state as it is: never roll back, which would wipe the counts.
    pub(crate) fn at(self, now: u64, window: u64) -> Self {
        let index = now / window;
        if index <= self.index {
            self
        } else if index == self.index + 1 {
            WindowState {
                index,
                current: 0,
                previous: self.current,
            }
        } else {
            WindowState {
                index,
                current: 0,
                previous: 0,
            }
        }
    }

    /// Whether both counts are zero at `now`, so forgetting the key changes nothing.
    pub(crate) fn is_idle(self, now: u64, window: u64) -> bool {
        let state = self.at(now, window);
        state.current == 0 && state.previous == 0
    }
}

/// Decides `cost` units at `now` for `limit` units per `window` nanoseconds.
///
/// Admits when `previous × (window − elapsed) / window + current + cost ≤ limit`, computed
/// exactly in integers (scaled by `window`). Returns the decision and, when admitted, the
/// state to store; `reset` is the time until the current window ends.
pub(crate) fn check(
    state: WindowState,
    now: u64,
    window: u64,
    limit: u64,
    cost: u64,
) -> (Decision, Option<WindowState>) {
    if cost > limit {
        return (Decision::too_costly(limit), None);
    }
    let state = state.at(now, window);
    // Measure from the state's window, in case `now` is older than it (see `at`).
    let now = now.max(state.index.saturating_mul(window));
    let (w, l) = (u128::from(window), u128::from(limit));
    let elapsed = now % window;
    let weighted_previous = u128::from(state.previous) * u128::from(window - elapsed);
    let used = |current: u64| weighted_previous + u128::from(current) * w;
    let reset = window - elapsed;
    let remaining_after = |current: u64| {
        let budget = divide((l * w).saturating_sub(used(current)), w);
        u64::try_from(budget).unwrap_or(u64::MAX)
    };
    let current = state.current.saturating_add(cost);
    if state.current.checked_add(cost).is_some() && used(current) <= l * w {
        let reset = Duration::from_nanos(reset);
        let decision = Decision::admitted(limit, remaining_after(current), reset);
        return (decision, Some(WindowState { current, ..state }));
    }
    let wait = Duration::from_nanos(retry_after(state, elapsed, window, limit, cost));
    (
        Decision::refused(limit, remaining_after(state.current), wait),
        None,
    )
}

/// The least time after which the same request would be admitted (no other traffic).
fn retry_after(state: WindowState, elapsed: u64, window: u64, limit: u64, cost: u64) -> u64 {
    let w = u128::from(window);
    // Later in this window, once enough of the previous window has slid out.
    let headroom = u128::from(limit).saturating_sub(u128::from(state.current) + u128::from(cost));
    if u128::from(state.current) + u128::from(cost) <= u128::from(limit) && state.previous > 0 {
        // previous × (window − e) ≤ headroom × window  ⇔  e ≥ window − ⌊headroom × window / previous⌋
        let slack = headroom * w / u128::from(state.previous);
        let at = w.saturating_sub(slack);
        let at = u64::try_from(at).expect("at most one window");
        if at > elapsed {
            return at - elapsed;
        }
    }
    // In the next window, where this window's count becomes the previous one.
    let to_next = window - elapsed;
    if state.current == 0 {
        return to_next;
    }
    let headroom = u128::from(limit - cost);
    let slack = headroom * w / u128::from(state.current);
    let at = u64::try_from(w.saturating_sub(slack)).expect("at most one window");
    to_next + at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_clock_reading_never_rolls_the_window_back() {
        let state = WindowState {
            index: 5,
            current: 3,
            previous: 7,
        };
        assert_eq!(state.at(4 * 10 + 9, 10), state);
        assert!(!state.is_idle(4 * 10 + 9, 10));
        let (decision, stored) = check(state, 49, 10, 10, 1);
        assert!(!decision.allowed() && stored.is_none(), "{decision:?}");
    }
}
