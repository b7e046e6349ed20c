//! URI references for the `type` and `instance` members.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use iri_string::spec::UriSpec;

/// A URI reference (RFC 3986 §4.1): an absolute URI such as `https://example.com/probs/x` or
/// `urn:uuid:…`, or a relative reference such as `/problems/connection-error#read-timeout`.
///
/// `type` and `instance` are URI references in RFC 9457. This type keeps the string exactly as
/// given (fragments, `urn:` and `tag:` schemes included), unlike `http::Uri`, which rejects
/// URNs and drops fragments.
///
/// ```
/// use tower_problem_details::UriRef;
///
/// let ty: UriRef = "/problems/connection-error#read-timeout".parse()?;
/// assert_eq!(ty.as_str(), "/problems/connection-error#read-timeout");
/// assert!(UriRef::try_from("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").is_ok());
/// assert!(UriRef::try_from("not a uri").is_err());
/// # Ok::<(), tower_problem_details::InvalidUriRef>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UriRef(Cow<'static, str>);

impl UriRef {
    /// `about:blank`, the problem type that adds nothing to the status code (RFC 9457 §4.2.1).
    pub const ABOUT_BLANK: UriRef = UriRef(Cow::Borrowed("about:blank"));

    /// Builds a `UriRef` from a string literal.
    ///
    /// # Panics
    ///
    /// Panics when `s` is not a URI reference; use [`UriRef::try_from`] for input that is not a
    /// literal of your program.
    pub fn from_static(s: &'static str) -> Self {
        match validate(s) {
            Ok(()) => UriRef(Cow::Borrowed(s)),
            Err(e) => panic!("{e}"),
        }
    }

    /// A literal known to be a URI reference (the catalog's default type URIs, checked by a
    /// test), without validating it again.
    pub(crate) const fn from_checked_static(s: &'static str) -> Self {
        UriRef(Cow::Borrowed(s))
    }

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `about:blank` (compared case-insensitively in the scheme, as RFC 3986
    /// asks).
    pub fn is_about_blank(&self) -> bool {
        let bytes = self.0.as_bytes();
        bytes.len() == 11 && bytes[..6].eq_ignore_ascii_case(b"about:") && &bytes[6..] == b"blank"
    }
}

fn validate(s: &str) -> Result<(), InvalidUriRef> {
    iri_string::validate::iri_reference::<UriSpec>(s).map_err(|_| InvalidUriRef { _priv: () })
}

impl TryFrom<&str> for UriRef {
    type Error = InvalidUriRef;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        validate(s)?;
        Ok(UriRef(Cow::Owned(s.to_owned())))
    }
}

impl TryFrom<String> for UriRef {
    type Error = InvalidUriRef;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate(&s)?;
        Ok(UriRef(Cow::Owned(s)))
    }
}

impl FromStr for UriRef {
    type Err = InvalidUriRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UriRef::try_from(s)
    }
}

impl AsRef<str> for UriRef {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for UriRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UriRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The error returned when a string is not a URI reference (RFC 3986 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUriRef {
    _priv: (),
}

impl fmt::Display for InvalidUriRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid URI reference")
    }
}

impl std::error::Error for InvalidUriRef {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_fragments_and_urns() {
        for s in [
            "/problems/connection-error#read-timeout",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "tag:example@example.org,2021-09-17:OutOfLuck",
            "https://example.com/probs/out-of-credit",
            "about:blank",
            "relative/path?q=1",
            "",
        ] {
            assert_eq!(UriRef::try_from(s).map(|u| u.to_string()), Ok(s.to_owned()));
        }
    }

    #[test]
    fn rejects_what_is_not_a_uri_reference() {
        for s in ["has space", "bad%zz", "a#b#c", "<x>", "ünïcode"] {
            assert!(UriRef::try_from(s).is_err(), "{s:?} was accepted");
        }
    }

    #[test]
    fn about_blank_is_recognised_case_insensitively_in_the_scheme() {
        assert!(UriRef::ABOUT_BLANK.is_about_blank());
        assert!(UriRef::from_static("ABOUT:blank").is_about_blank());
        assert!(!UriRef::from_static("about:blanket").is_about_blank());
        assert!(!UriRef::from_static("/about:blank").is_about_blank());
    }

    #[test]
    #[should_panic(expected = "invalid URI reference")]
    fn from_static_panics_on_invalid_literals() {
        let _ = UriRef::from_static("not a uri");
    }
}
