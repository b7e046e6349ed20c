//! The store error every guardrail store returns, and the configuration error of this crate.

use std::fmt;
use std::time::Duration;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// A store could not answer. Layers turn it into their documented policy: the idempotency
/// layer fails closed (503 + `Retry-After`), the rate limit fails open or closed as configured.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    pub(crate) message: &'static str,
    retry_after: Option<Duration>,
    source: Option<Source>,
}

/// Why a store could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached or is not serving (connection refused or dropped, loading,
    /// cluster down, a replica that cannot take writes). Counts towards opening the breaker.
    Unavailable,
    /// The store did not answer within its deadline. Counts towards opening the breaker.
    Timeout,
    /// The circuit breaker is open: the store was not called, because recent calls failed.
    CircuitOpen,
    /// The store answered, but not with something usable: a malformed record, a reply of an
    /// unexpected shape, a script error. The store is up, so this never opens the breaker.
    BadReply,
    /// The store is up but has no room (a memory store full of requests in flight). Not an
    /// outage: it never opens the breaker.
    Full,
}

impl StoreErrorKind {
    /// A stable `snake_case` name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::CircuitOpen => "circuit_open",
            StoreErrorKind::BadReply => "bad_reply",
            StoreErrorKind::Full => "full",
        }
    }

    /// Whether the error says the store is down (and so counts towards opening the breaker).
    pub fn is_outage(self) -> bool {
        matches!(self, StoreErrorKind::Unavailable | StoreErrorKind::Timeout)
    }
}

impl StoreError {
    /// An error of `kind`, with a message for logs (lowercase, no trailing period).
    pub fn new(kind: StoreErrorKind, message: &'static str) -> Self {
        StoreError {
            kind,
            message,
            retry_after: None,
            source: None,
        }
    }

    /// The same error with its cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same error with a hint of when the store may answer again.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Why the store could not answer.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// When the store may answer again, if known: an open breaker knows when it will next
    /// let a call through. Layers put it in `Retry-After` (rounded up to whole seconds).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An invalid setting, refused when it is set rather than on every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
}

/// The reason behind a [`ConfigError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A key prefix that is empty or contains `{` or `}` (they would break hash tags).
    KeyPrefix(String),
    /// A failure threshold of zero.
    FailureThreshold,
    /// A zero back-off, or a longest back-off shorter than the first.
    BackOff,
    /// A zero timeout.
    Timeout,
    /// A SQL table name that is not a plain identifier (letters, digits and `_`, optionally
    /// schema-qualified).
    Identifier(String),
    /// A durable write asked of zero replicas, with a zero wait, or with a wait that leaves no
    /// room within the call deadline.
    Durability,
    /// A memory store's byte budget of zero, or a per-scope share of zero or above the
    /// budget.
    MemoryBudget,
}

impl ConfigError {
    /// An error of `kind` (for stores of the guardrail crates and your own).
    pub fn new(kind: ConfigErrorKind) -> Self {
        ConfigError { kind }
    }

    /// What is wrong.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ConfigErrorKind::KeyPrefix(prefix) => write!(
                f,
                "`{prefix}` cannot be a key prefix (empty, or contains `{{` or `}}`)"
            ),
            ConfigErrorKind::FailureThreshold => {
                f.write_str("a circuit breaker needs a failure threshold of at least 1")
            }
            ConfigErrorKind::BackOff => f.write_str(
                "a circuit breaker needs a non-zero back-off, and a longest back-off at least as long",
            ),
            ConfigErrorKind::Timeout => f.write_str("a store timeout must be longer than zero"),
            ConfigErrorKind::Durability => f.write_str(
                "a durable write needs at least one replica and a wait shorter than the call deadline",
            ),
            ConfigErrorKind::Identifier(name) => write!(
                f,
                "`{name}` cannot be a table name (letters, digits and `_`, optionally `schema.table`)"
            ),
            ConfigErrorKind::MemoryBudget => f.write_str(
                "a memory store needs a non-zero byte budget and a per-scope share within it",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outages_open_the_breaker() {
        assert!(StoreErrorKind::Unavailable.is_outage());
        assert!(StoreErrorKind::Timeout.is_outage());
        assert!(!StoreErrorKind::BadReply.is_outage());
        assert!(!StoreErrorKind::CircuitOpen.is_outage());
        assert!(!StoreErrorKind::Full.is_outage());
    }

    #[test]
    fn the_error_keeps_its_cause_and_hint() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = StoreError::new(StoreErrorKind::Unavailable, "redis failed")
            .with_source(cause)
            .with_retry_after(Duration::from_millis(300));
        assert_eq!(error.to_string(), "redis failed");
        assert_eq!(error.kind(), StoreErrorKind::Unavailable);
        assert_eq!(error.retry_after(), Some(Duration::from_millis(300)));
        let source = std::error::Error::source(&error).expect("a cause");
        assert_eq!(source.to_string(), "refused");
    }
}
