//! `Link` header values (RFC 8288) for the deprecation, sunset and successor documents.

use std::fmt::Write as _;

use http::HeaderValue;
use tower_problem_details::UriRef;

use crate::error::{ConfigError, ConfigErrorKind};

/// A link target with optional media type and title, rendered as one `Link` field value.
///
/// ```
/// use tower_sunset::{Link, UriRef};
///
/// let link = Link::new(UriRef::from_static("https://developer.example.com/deprecation"))
///     .media_type("text/html")?;
/// assert_eq!(link.href().as_str(), "https://developer.example.com/deprecation");
/// # Ok::<(), tower_sunset::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    href: UriRef,
    media_type: Option<String>,
    title: Option<String>,
}

impl Link {
    /// A link to `href`.
    pub fn new(href: UriRef) -> Self {
        Link {
            href,
            media_type: None,
            title: None,
        }
    }

    /// The media type of the target (the `type` parameter), e.g. `text/html`.
    ///
    /// # Errors
    ///
    /// Fails unless `media_type` is `type/subtype` made of RFC 9110 token characters.
    pub fn media_type(mut self, media_type: &str) -> Result<Self, ConfigError> {
        let valid = media_type
            .split_once('/')
            .is_some_and(|(t, s)| is_token(t) && is_token(s));
        if !valid {
            return Err(ConfigError::new(ConfigErrorKind::InvalidMediaType));
        }
        self.media_type = Some(media_type.to_owned());
        Ok(self)
    }

    /// A human-readable title of the target (the `title` parameter).
    ///
    /// # Errors
    ///
    /// Fails unless `title` is printable ASCII (non-ASCII titles need RFC 8187 encoding, which
    /// this crate does not write).
    pub fn title(mut self, title: &str) -> Result<Self, ConfigError> {
        if !title.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(ConfigError::new(ConfigErrorKind::InvalidTitle));
        }
        self.title = Some(title.to_owned());
        Ok(self)
    }

    /// The target.
    pub fn href(&self) -> &UriRef {
        &self.href
    }

    /// `<href>; rel="…"; type="…"; title="…"`.
    pub(crate) fn render(&self, rel: &str) -> HeaderValue {
        let mut out = format!("<{}>; rel=\"{rel}\"", self.href);
        if let Some(media_type) = &self.media_type {
            let _ = write!(out, "; type=\"{media_type}\"");
        }
        if let Some(title) = &self.title {
            out.push_str("; title=\"");
            for c in title.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        // Every part was checked to be visible ASCII (a URI reference, a rel of our own, a
        // token pair, a printable title), which is always a valid header value.
        HeaderValue::try_from(out).unwrap_or(HeaderValue::from_static(""))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_rfc_examples() -> Result<(), ConfigError> {
        let link = Link::new(UriRef::from_static(
            "https://developer.example.com/deprecation",
        ))
        .media_type("text/html")?;
        assert_eq!(
            link.render("deprecation"),
            r#"<https://developer.example.com/deprecation>; rel="deprecation"; type="text/html""#
        );
        let titled = Link::new(UriRef::from_static("/v2")).title(r#"The "v2" API \ new"#)?;
        assert_eq!(
            titled.render("successor-version"),
            r#"</v2>; rel="successor-version"; title="The \"v2\" API \\ new""#
        );
        Ok(())
    }

    #[test]
    fn bad_parameters_are_refused() {
        let link = Link::new(UriRef::from_static("/x"));
        for bad in ["text", "text/", "/html", "text/ht ml", "text/html; q=1"] {
            assert!(link.clone().media_type(bad).is_err(), "{bad}");
        }
        assert!(link.clone().title("héllo").is_err());
        assert!(link.title("tab\there").is_err());
    }
}
