//! Quotas and policies: what is limited, by which algorithm.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ConfigError, ConfigErrorKind};

/// A rate: `limit` units per `period`, and how many may arrive at once (the burst).
///
/// ```
/// use std::time::Duration;
/// use tower_ratelimit::Quota;
///
/// // 10 requests per second, at most 20 at once.
/// let quota = Quota::per_second(10)?.with_burst(20)?;
/// assert_eq!(quota.emission_interval(), Duration::from_millis(100));
/// # Ok::<(), tower_ratelimit::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u64,
    period: Duration,
    burst: u64,
}

impl Quota {
    /// `limit` units per `period`; the burst defaults to `limit`.
    ///
    /// # Errors
    ///
    /// Fails when `limit` or `period` is zero, or when one unit would be worth less than a
    /// nanosecond.
    pub fn new(limit: u64, period: Duration) -> Result<Self, ConfigError> {
        let nanos = period.as_nanos();
        if limit == 0
            || nanos == 0
            || nanos / u128::from(limit) == 0
            || nanos > u128::from(u64::MAX)
        {
            return Err(ConfigError::new(ConfigErrorKind::Quota));
        }
        Ok(Quota {
            limit,
            period,
            burst: limit,
        })
    }

    /// `limit` units per second.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_second(limit: u64) -> Result<Self, ConfigError> {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` units per minute.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_minute(limit: u64) -> Result<Self, ConfigError> {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` units per hour.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_hour(limit: u64) -> Result<Self, ConfigError> {
        Self::new(limit, Duration::from_secs(3600))
    }

    /// How many units may arrive at once (the bucket's capacity).
    ///
    /// # Errors
    ///
    /// Fails when `burst` is zero.
    pub fn with_burst(mut self, burst: u64) -> Result<Self, ConfigError> {
        if burst == 0 {
            return Err(ConfigError::new(ConfigErrorKind::Quota));
        }
        self.burst = burst;
        Ok(self)
    }

    /// Units per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The capacity.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The time one unit is worth: `period / limit`.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_interval_nanos())
    }

    pub(crate) fn emission_interval_nanos(&self) -> u64 {
        u64::try_from(self.period.as_nanos() / u128::from(self.limit))
            .expect("checked in Quota::new")
    }
}

/// How a policy counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// GCRA, the exact token bucket: capacity `burst`, refilled at `limit / period`.
    Gcra(Quota),
    /// The sliding window counter: at most `limit` units in the current window plus the
    /// previous window's count weighted by how much of it still overlaps.
    SlidingWindow {
        /// Units per window.
        limit: u64,
        /// The window.
        window: Duration,
    },
}

/// One named limit. A layer decides all of its policies together.
///
/// The name appears in the `RateLimit-Policy` and `RateLimit` headers and in the 429 problem's
/// `violated-policies`; on one store, identical policies (same name and parameters) share
/// their buckets (on Redis: across every instance using the same key prefix).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    name: Arc<str>,
    algorithm: Algorithm,
    global: bool,
}

impl Policy {
    /// A token-bucket (GCRA) policy.
    ///
    /// # Errors
    ///
    /// Fails when the name is empty, longer than 64 characters, or has characters other than
    /// `A-Z a-z 0-9 - _ . :`.
    pub fn gcra(name: &str, quota: Quota) -> Result<Self, ConfigError> {
        Self::new(name, Algorithm::Gcra(quota))
    }

    /// A sliding-window-counter policy: `limit` units per `window` (at least one second, in
    /// whole seconds so that the `w` header parameter is exact).
    ///
    /// # Errors
    ///
    /// As [`Policy::gcra`], and when `limit` is zero or `window` is not a whole number of
    /// seconds of at least one.
    pub fn sliding_window(name: &str, limit: u64, window: Duration) -> Result<Self, ConfigError> {
        if limit == 0 || window.subsec_nanos() != 0 || window.as_secs() == 0 {
            return Err(ConfigError::new(ConfigErrorKind::Quota));
        }
        Self::new(name, Algorithm::SlidingWindow { limit, window })
    }

    fn new(name: &str, algorithm: Algorithm) -> Result<Self, ConfigError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !valid {
            return Err(ConfigError::new(ConfigErrorKind::PolicyName(
                name.to_owned(),
            )));
        }
        Ok(Policy {
            name: Arc::from(name),
            algorithm,
            global: false,
        })
    }

    /// One bucket shared by every caller, instead of one per key.
    #[must_use]
    pub fn global(mut self) -> Self {
        self.global = true;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The algorithm and its parameters.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether one bucket serves every caller.
    pub fn is_global(&self) -> bool {
        self.global
    }

    /// The most units one request may cost.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra(quota) => quota.burst(),
            Algorithm::SlidingWindow { limit, .. } => limit,
        }
    }
}

pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("global", &self.global)
            .finish()
    }
}
