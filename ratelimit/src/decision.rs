//! The outcome of checking a request against its policies.

use std::time::Duration;

/// One policy's verdict on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub(crate) allowed: bool,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
    pub(crate) retry_after: Option<Duration>,
}

impl Decision {
    /// Admitted; `reset` in nanoseconds.
    pub(crate) fn admitted(limit: u64, remaining: u64, reset: u64) -> Self {
        Decision {
            allowed: true,
            limit,
            remaining,
            reset: Duration::from_nanos(reset),
            retry_after: None,
        }
    }

    /// Refused until `wait` nanoseconds have passed (which is also the `reset`).
    pub(crate) fn refused(limit: u64, remaining: u64, wait: u64) -> Self {
        Decision {
            allowed: false,
            limit,
            remaining,
            reset: Duration::from_nanos(wait),
            retry_after: Some(Duration::from_nanos(wait)),
        }
    }

    /// Refused for good: the cost exceeds the capacity.
    pub(crate) fn too_costly(limit: u64) -> Self {
        Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: None,
        }
    }

    /// Whether this policy admits the request.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// The policy's capacity (burst, or units per window).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Units still available after this request (before it, when it was refused).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until more quota is available (the `t` of the `RateLimit` header): when refused,
    /// the same as [`retry_after`](Self::retry_after); when admitted, until the bucket gains
    /// its next unit (GCRA; zero when full) or the current window ends (sliding window).
    pub fn reset(&self) -> Duration {
        self.reset
    }

    /// When refused: the least time after which the same request would be admitted. `None`
    /// when admitted, or when the request costs more than the policy's capacity and will never
    /// be admitted.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// The verdicts of every policy of a layer, in the layer's policy order.
///
/// A request is admitted only if every policy admits it; then each one consumed the cost. If
/// any refuses, none consumed anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decisions {
    decisions: Vec<Decision>,
}

impl Decisions {
    pub(crate) fn new(decisions: Vec<Decision>) -> Self {
        Decisions { decisions }
    }

    /// Whether every policy admits the request.
    pub fn allowed(&self) -> bool {
        self.decisions.iter().all(Decision::allowed)
    }

    /// Each policy's verdict, in policy order.
    pub fn iter(&self) -> std::slice::Iter<'_, Decision> {
        self.decisions.iter()
    }

    /// The number of verdicts.
    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    /// Whether there are none (a limiter always has at least one policy).
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }

    /// The longest wait any refusing policy asks for.
    pub fn retry_after(&self) -> Option<Duration> {
        self.decisions
            .iter()
            .filter_map(Decision::retry_after)
            .max()
    }
}

impl<'a> IntoIterator for &'a Decisions {
    type Item = &'a Decision;
    type IntoIter = std::slice::Iter<'a, Decision>;

    fn into_iter(self) -> Self::IntoIter {
        self.decisions.iter()
    }
}
