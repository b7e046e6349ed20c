//! Error types: why a cursor was refused, why one could not be made, why a setting is invalid.

use std::fmt;

use crate::secret::KeyId;

/// Why a cursor token was refused. Every kind becomes a 400 `invalid-cursor` problem.
///
/// Deliberately one opaque type: callers should restart pagination whatever the kind, and
/// the kind is only for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorError {
    kind: CursorErrorKind,
}

/// The reason behind a [`CursorError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CursorErrorKind {
    /// Not a token this crate issues: bad base64, unknown version, truncated, too long, a
    /// repeated `cursor` parameter, or a payload that is not the expected position type.
    Malformed,
    /// The signature (or, for encrypted tokens, the authentication tag) does not verify:
    /// the token was altered or forged.
    BadSignature,
    /// Signed with a key id the key ring does not hold (rotated out, or forged).
    UnknownKey,
    /// The token's expiry has passed.
    Expired,
    /// Issued for another query: other filters, another sort or another path.
    QueryMismatch,
}

impl CursorErrorKind {
    /// A stable `snake_case` name, used as the `reason` member of the problem.
    pub fn as_str(self) -> &'static str {
        match self {
            CursorErrorKind::Malformed => "malformed",
            CursorErrorKind::BadSignature => "bad_signature",
            CursorErrorKind::UnknownKey => "unknown_key",
            CursorErrorKind::Expired => "expired",
            CursorErrorKind::QueryMismatch => "query_mismatch",
        }
    }
}

impl CursorError {
    pub(crate) fn new(kind: CursorErrorKind) -> Self {
        CursorError { kind }
    }

    /// Why the token was refused.
    pub fn kind(&self) -> CursorErrorKind {
        self.kind
    }
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            CursorErrorKind::Malformed => "the cursor is malformed",
            CursorErrorKind::BadSignature => "the cursor's signature does not verify",
            CursorErrorKind::UnknownKey => "the cursor was signed with a key that is not accepted",
            CursorErrorKind::Expired => "the cursor has expired",
            CursorErrorKind::QueryMismatch => {
                "the cursor was issued for a different query (filters, sort or path)"
            }
        })
    }
}

impl std::error::Error for CursorError {}

/// Why a cursor could not be issued. A server-side bug, not a client mistake.
#[derive(Debug)]
pub struct EncodeError {
    kind: EncodeErrorKind,
}

/// The reason behind an [`EncodeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeErrorKind {
    /// The position type did not serialize (serde reported an error).
    Serialize,
    /// The token would be longer than [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN): keep sort keys
    /// small (ids, timestamps), not free text.
    TooLong,
    /// The expiry would fall after the end of time as `SystemTime` knows it.
    Expiry,
    /// The AEAD refused the payload (encrypted tokens only).
    Encrypt,
}

impl EncodeError {
    pub(crate) fn new(kind: EncodeErrorKind) -> Self {
        EncodeError { kind }
    }

    /// Why the cursor could not be issued.
    pub fn kind(&self) -> EncodeErrorKind {
        self.kind
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            EncodeErrorKind::Serialize => "the cursor position could not be serialized",
            EncodeErrorKind::TooLong => "the cursor would exceed the maximum token length",
            EncodeErrorKind::Expiry => "the cursor's expiry is out of range",
            EncodeErrorKind::Encrypt => "the cursor could not be encrypted",
        })
    }
}

impl std::error::Error for EncodeError {}

/// An invalid setting, refused when it is set rather than on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
}

/// The reason behind a [`ConfigError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A secret shorter than [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) bytes.
    SecretTooShort,
    /// The operating system's random generator failed.
    RandomUnavailable,
    /// The same key id twice in one key ring.
    DuplicateKeyId(KeyId),
    /// Page-size limits where the default is 0 or above the maximum.
    PageSizeLimits,
    /// A token lifetime of zero or of more than 100 years.
    Expiry,
    /// A placeholder numbering that starts at 0.
    Placeholder,
    /// A query parameter name that is empty or has control characters, or the same name for
    /// the cursor and the limit.
    ParameterName(String),
    /// A link base that is not an absolute `http`/`https` URI without query or fragment.
    LinkBase(String),
    /// A keyset column that is not a plain (optionally dotted) SQL identifier.
    Column(String),
    /// The same keyset column twice.
    DuplicateColumn(String),
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
            ConfigErrorKind::SecretTooShort => write!(
                f,
                "a cursor secret needs at least {} bytes",
                crate::MIN_SECRET_LEN
            ),
            ConfigErrorKind::RandomUnavailable => {
                f.write_str("the operating system's random generator is unavailable")
            }
            ConfigErrorKind::DuplicateKeyId(id) => write!(f, "key id {id} is already in the ring"),
            ConfigErrorKind::PageSizeLimits => {
                f.write_str("page-size limits need 1 <= default <= maximum < 2^32 - 1")
            }
            ConfigErrorKind::Expiry => {
                f.write_str("a cursor lifetime must be more than zero and at most 100 years")
            }
            ConfigErrorKind::Placeholder => f.write_str("placeholders are numbered from 1"),
            ConfigErrorKind::ParameterName(name) => {
                write!(f, "`{name}` cannot be used as a query parameter name")
            }
            ConfigErrorKind::LinkBase(base) => write!(
                f,
                "`{base}` is not an absolute http(s) URI without query or fragment"
            ),
            ConfigErrorKind::Column(column) => {
                write!(f, "`{column}` is not a plain SQL column name")
            }
            ConfigErrorKind::DuplicateColumn(column) => {
                write!(f, "column `{column}` appears twice in the keyset")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why the layer refused a request's paging parameters.
///
/// Put into the extensions of the rejection response, so outer layers and metrics can see it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CursorRejection {
    /// The `cursor` parameter did not decode: 400 `invalid-cursor`.
    InvalidCursor(CursorError),
    /// The `limit` parameter is not an integer in `1..=max`: 400 `invalid-page-size`.
    InvalidPageSize {
        /// The largest page size accepted.
        max: u32,
    },
}

impl fmt::Display for CursorRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CursorRejection::InvalidCursor(error) => error.fmt(f),
            CursorRejection::InvalidPageSize { max } => {
                write!(f, "the page size must be an integer from 1 to {max}")
            }
        }
    }
}

impl std::error::Error for CursorRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CursorRejection::InvalidCursor(error) => Some(error),
            CursorRejection::InvalidPageSize { .. } => None,
        }
    }
}
