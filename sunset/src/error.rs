//! Errors of this crate.

use std::fmt;

/// The error returned when a [`SunsetLayer`](crate::SunsetLayer) or a [`Link`](crate::Link)
/// is configured with something that cannot be served correctly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
}

/// What is wrong with a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The sunset is earlier than the deprecation (RFC 9745 §4 forbids it).
    SunsetBeforeDeprecation,
    /// A time is before 1970 or after 9999, which an HTTP date cannot express.
    TimeOutOfRange,
    /// A brownout window is empty, starts before the deprecation or ends after the sunset.
    InvalidBrownout,
    /// A link's media type is not a `type/subtype` pair of tokens.
    InvalidMediaType,
    /// A link's title is not printable ASCII.
    InvalidTitle,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind) -> Self {
        ConfigError { kind }
    }

    /// What is wrong.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ConfigErrorKind::SunsetBeforeDeprecation => {
                "the sunset must not be earlier than the deprecation"
            }
            ConfigErrorKind::TimeOutOfRange => "time must be between 1970 and 9999",
            ConfigErrorKind::InvalidBrownout => {
                "a brownout must be a non-empty window between the deprecation and the sunset"
            }
            ConfigErrorKind::InvalidMediaType => "invalid link media type",
            ConfigErrorKind::InvalidTitle => "link title must be printable ASCII",
        })
    }
}

impl std::error::Error for ConfigError {}

/// The error returned when a `Deprecation` or `Sunset` header value cannot be read, even
/// leniently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    _priv: (),
}

impl ParseError {
    pub(crate) fn new() -> Self {
        ParseError { _priv: () }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unreadable deprecation or sunset date")
    }
}

impl std::error::Error for ParseError {}
