//! Errors of this crate.

use std::borrow::Cow;
use std::fmt;

/// The error returned when an extension member cannot be added to a
/// [`Problem`](crate::Problem): its name is empty or is one of the standard members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionError {
    name: Cow<'static, str>,
}

impl ExtensionError {
    pub(crate) fn reserved(name: Cow<'static, str>) -> Self {
        ExtensionError { name }
    }

    /// The refused name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str("an extension member needs a name")
        } else {
            write!(
                f,
                "`{}` is a standard problem details member, not an extension",
                self.name
            )
        }
    }
}

impl std::error::Error for ExtensionError {}

/// The error returned when a body cannot be read as a problem details object.
///
/// Members of the wrong type are not errors: RFC 9457 §3.1 asks that they be ignored, and they
/// are. Use [`kind`](Self::kind) to tell the causes apart.
#[derive(Debug)]
pub struct ParseError {
    kind: ParseErrorKind,
    source: Option<serde_json::Error>,
}

/// What made a body unreadable as a problem details object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The body is not JSON (or is JSON nested deeper than the parser allows).
    InvalidJson,
    /// The body is JSON, but not an object.
    NotAnObject,
    /// The object has no usable `status` member (absent, not a number, or not a status
    /// code), and no fallback status was given.
    MissingStatus,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, source: Option<serde_json::Error>) -> Self {
        ParseError { kind, source }
    }

    /// What went wrong.
    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ParseErrorKind::InvalidJson => "problem details body is not valid JSON",
            ParseErrorKind::NotAnObject => "problem details body is not a JSON object",
            ParseErrorKind::MissingStatus => "problem details object has no usable status",
        })
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
