//! Configuration errors (store errors are `guardrail_store::StoreError`).

use std::fmt;

/// An invalid setting, refused when it is set rather than on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
}

/// The reason behind a [`ConfigError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A zero limit, period, burst or window, or a rate finer than a nanosecond per unit.
    Quota,
    /// A policy name that is empty, too long or has characters outside `A-Z a-z 0-9 - _ . :`.
    PolicyName(String),
    /// Two policies with the same name in one limiter.
    DuplicatePolicy(String),
    /// A limiter without policies.
    NoPolicies,
    /// A trusted-proxy entry that is neither an IP address nor a CIDR network.
    TrustedProxy(String),
    /// A key-table bound of zero.
    MaxKeys,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind) -> Self {
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
            ConfigErrorKind::Quota => f.write_str(
                "a quota needs a non-zero limit, period and burst, at most one unit per nanosecond, \
                 and a sliding window of whole seconds",
            ),
            ConfigErrorKind::PolicyName(name) => write!(
                f,
                "`{name}` is not a policy name (1 to 64 of A-Z a-z 0-9 - _ . :)"
            ),
            ConfigErrorKind::DuplicatePolicy(name) => write!(f, "policy `{name}` appears twice"),
            ConfigErrorKind::NoPolicies => f.write_str("a rate limiter needs at least one policy"),
            ConfigErrorKind::TrustedProxy(entry) => {
                write!(f, "`{entry}` is not an IP address or CIDR network")
            }
            ConfigErrorKind::MaxKeys => f.write_str("the key table needs room for at least one key"),
        }
    }
}

impl std::error::Error for ConfigError {}
