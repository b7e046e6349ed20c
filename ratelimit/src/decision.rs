//! The outcome of checking a request against its policies.

use std::fmt;
use std::time::Duration;

use smallvec::SmallVec;

/// One policy's verdict on one request.
///
/// Equality compares what the accessors report, not how the figures are kept.
#[derive(Clone)]
pub struct Decision {
    verdict: Verdict,
    limit: u64,
    /// Units left; for [`Verdict::GcraAdmitted`], the bucket's deficit in nanoseconds.
    remaining: u64,
    /// Nanoseconds; for [`Verdict::GcraAdmitted`], the emission interval. (Kept small:
    /// decisions are built and moved on every request.)
    reset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Admitted,
    /// Admitted by the memory store's GCRA, which keeps the deficit and interval and derives
    /// `remaining` and `reset` only when asked: each is a division, and a layer that renders
    /// no header never asks.
    GcraAdmitted,
    /// Refused until `reset` has passed.
    Refused,
    /// Refused for good: the cost exceeds the capacity.
    TooCostly,
}

/// Saturating: a wait beyond 584 years is as good as forever.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Decision {
    /// Admitted by a policy of capacity `limit`, which has `remaining` units left and is
    /// full again (or gains its next unit) after `reset`. For stores of your own.
    pub fn admitted(limit: u64, remaining: u64, reset: Duration) -> Self {
        Decision {
            verdict: Verdict::Admitted,
            limit,
            remaining,
            reset: nanos(reset),
        }
    }

    /// Admitted by a GCRA bucket of capacity `burst` that is now `deficit` nanoseconds of
    /// emission below full (at most `burst × interval`), for an emission interval of
    /// `interval` nanoseconds (at least 1).
    pub(crate) fn gcra_admitted(burst: u64, deficit: u64, interval: u64) -> Self {
        Decision {
            verdict: Verdict::GcraAdmitted,
            limit: burst,
            remaining: deficit,
            reset: interval,
        }
    }

    /// Refused by a policy of capacity `limit` until `wait` has passed (which is also the
    /// `reset`); `remaining` is what it could admit now. For stores of your own.
    pub fn refused(limit: u64, remaining: u64, wait: Duration) -> Self {
        Decision {
            verdict: Verdict::Refused,
            limit,
            remaining,
            reset: nanos(wait),
        }
    }

    /// Refused for good by a policy of capacity `limit`: the cost exceeds it, so no wait
    /// helps (the 429 then carries no `Retry-After`). For stores of your own.
    pub fn too_costly(limit: u64) -> Self {
        Decision {
            verdict: Verdict::TooCostly,
            limit,
            remaining: 0,
            reset: 0,
        }
    }

    /// Whether this policy admits the request.
    pub fn allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Admitted | Verdict::GcraAdmitted)
    }

    /// The policy's capacity (burst, or units per window).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Units still available after this request (before it, when it was refused).
    pub fn remaining(&self) -> u64 {
        match self.verdict {
            // Whole units below the horizon: burst - ceil(deficit / interval).
            Verdict::GcraAdmitted => self
                .limit
                .saturating_sub(self.remaining.div_ceil(self.reset.max(1))),
            _ => self.remaining,
        }
    }

    /// Time until more quota is available (the `t` of the `RateLimit` header): when refused,
    /// the same as [`retry_after`](Self::retry_after); when admitted, until the bucket gains
    /// its next unit (GCRA; zero when full) or the current window ends (sliding window).
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.reset_nanos())
    }

    fn reset_nanos(&self) -> u64 {
        match (self.verdict, self.remaining) {
            // Until the bucket gains its next whole unit; 0 when it is full.
            (Verdict::GcraAdmitted, 0) => 0,
            (Verdict::GcraAdmitted, deficit) => (deficit - 1) % self.reset.max(1) + 1,
            _ => self.reset,
        }
    }

    /// When refused: the least time after which the same request would be admitted. `None`
    /// when admitted, or when the request costs more than the policy's capacity and will never
    /// be admitted.
    pub fn retry_after(&self) -> Option<Duration> {
        (self.verdict == Verdict::Refused).then(|| Duration::from_nanos(self.reset))
    }
}

impl PartialEq for Decision {
    fn eq(&self, other: &Self) -> bool {
        let verdict = |d: &Decision| match d.verdict {
            Verdict::GcraAdmitted => Verdict::Admitted,
            verdict => verdict,
        };
        verdict(self) == verdict(other)
            && self.limit == other.limit
            && self.remaining() == other.remaining()
            && self.reset_nanos() == other.reset_nanos()
    }
}

impl Eq for Decision {}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("allowed", &self.allowed())
            .field("limit", &self.limit)
            .field("remaining", &self.remaining())
            .field("reset", &self.reset())
            .field("retry_after", &self.retry_after())
            .finish()
    }
}

/// The verdicts of every policy of a layer, in the layer's policy order.
///
/// A request is admitted only if every policy admits it; then each one consumed the cost. If
/// any refuses, none consumed anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decisions {
    // Inline for up to two policies (burst + sustained), so the hot path does not allocate.
    decisions: SmallVec<[Decision; 2]>,
}

impl Decisions {
    /// The verdicts of a limiter's policies, in policy order. For stores of your own.
    pub fn new(decisions: impl IntoIterator<Item = Decision>) -> Self {
        Decisions {
            decisions: decisions.into_iter().collect(),
        }
    }

    /// A single policy's verdict, written in place (no vector to fill and copy).
    pub(crate) fn one(decision: Decision) -> Self {
        Decisions {
            decisions: SmallVec::from_buf_and_len([decision, Decision::too_costly(0)], 1),
        }
    }

    /// The verdicts, already collected (the memory store's admitted path: no second copy).
    pub(crate) fn from_small_vec(decisions: SmallVec<[Decision; 2]>) -> Self {
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
