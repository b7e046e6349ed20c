//! The problem details object.

use std::borrow::Cow;

use http::StatusCode;
use serde_json::Value;

use crate::error::ExtensionError;
use crate::uri_ref::UriRef;

/// The names of the members RFC 9457 defines; extensions may not use them.
pub(crate) const STANDARD_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "instance"];

/// An RFC 9457 problem details object.
///
/// The HTTP status is required and is the single source of truth: it is written as the
/// `status` member and used as the response status, so the two can never disagree. `type`
/// defaults to `about:blank` (omitted on the wire) and `title` to the status's reason phrase.
/// Extension members keep the order in which they were added (or parsed).
///
/// ```
/// use http::StatusCode;
/// use serde_json::json;
/// use tower_problem_details::{Problem, UriRef};
///
/// let problem = Problem::new(StatusCode::FORBIDDEN)
///     .with_type(UriRef::from_static("https://example.com/probs/out-of-credit"))
///     .with_title("You do not have enough credit.")
///     .with_detail("Your current balance is 30, but that costs 50.")
///     .with_instance(UriRef::from_static("/account/12345/msgs/abc"))
///     .with_extension("balance", 30)?
///     .with_extension("accounts", json!(["/account/12345", "/account/67890"]))?;
///
/// assert_eq!(
///     problem.to_json_string(),
///     r#"{"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.","status":403,"detail":"Your current balance is 30, but that costs 50.","instance":"/account/12345/msgs/abc","balance":30,"accounts":["/account/12345","/account/67890"]}"#
/// );
/// # Ok::<(), tower_problem_details::ExtensionError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) problem_type: UriRef,
    pub(crate) title: Option<Cow<'static, str>>,
    pub(crate) detail: Option<Cow<'static, str>>,
    pub(crate) instance: Option<UriRef>,
    pub(crate) extensions: Vec<(Cow<'static, str>, Value)>,
}

impl Problem {
    /// A problem of type `about:blank` for `status`, titled with its reason phrase
    /// (`"Not Found"` for 404; no title for codes without one).
    ///
    /// Problems are for error statuses (4xx and 5xx). Readers, this crate's included, ignore
    /// a `status` member outside 100..=599, the range of RFC 9457's schema.
    pub fn new(status: StatusCode) -> Self {
        Problem {
            status,
            problem_type: UriRef::ABOUT_BLANK,
            title: status.canonical_reason().map(Cow::Borrowed),
            detail: None,
            instance: None,
            extensions: Vec::new(),
        }
    }

    /// Sets the problem type, the primary identifier of the kind of problem.
    ///
    /// A type other than `about:blank` should come with a title of its own
    /// ([`with_title`](Self::with_title)); the catalog in [`ProblemCatalog`](crate::ProblemCatalog)
    /// does both.
    #[must_use]
    pub fn with_type(mut self, problem_type: UriRef) -> Self {
        self.problem_type = problem_type;
        self
    }

    /// Sets the short, human-readable summary of the problem type.
    #[must_use]
    pub fn with_title(mut self, title: impl Into<Cow<'static, str>>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Removes the title.
    #[must_use]
    pub fn without_title(mut self) -> Self {
        self.title = None;
        self
    }

    /// Sets the explanation specific to this occurrence. It should help the client correct the
    /// problem; it is not a place for debugging information.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the URI reference that identifies this occurrence.
    #[must_use]
    pub fn with_instance(mut self, instance: UriRef) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Adds the extension member `name`, or replaces its value in place if it is already set.
    ///
    /// RFC 9457 recommends names that start with a letter and hold only letters, digits and
    /// `_`, at least three characters long; that is a recommendation (the IETF's own
    /// `violated-policies` does not follow it), so it is not enforced.
    ///
    /// # Errors
    ///
    /// Refuses the names of the standard members (`type`, `title`, `status`, `detail`,
    /// `instance`) and the empty name.
    pub fn with_extension(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Value>,
    ) -> Result<Self, ExtensionError> {
        self.insert_extension(name, value)?;
        Ok(self)
    }

    /// Adds or replaces the extension member `name` and returns its previous value.
    ///
    /// # Errors
    ///
    /// As [`with_extension`](Self::with_extension).
    pub fn insert_extension(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Value>,
    ) -> Result<Option<Value>, ExtensionError> {
        let name = name.into();
        if name.is_empty() || STANDARD_MEMBERS.contains(&&*name) {
            return Err(ExtensionError::reserved(name));
        }
        Ok(self.insert_extension_unchecked(name, value.into()))
    }

    pub(crate) fn insert_extension_unchecked(
        &mut self,
        name: Cow<'static, str>,
        value: Value,
    ) -> Option<Value> {
        match self.extensions.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => Some(std::mem::replace(slot, value)),
            None => {
                self.extensions.push((name, value));
                None
            }
        }
    }

    /// Removes the extension member `name` and returns its value.
    pub fn remove_extension(&mut self, name: &str) -> Option<Value> {
        let index = self.extensions.iter().position(|(n, _)| n == name)?;
        Some(self.extensions.remove(index).1)
    }

    /// The HTTP status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem type; `about:blank` when none was set.
    pub fn problem_type(&self) -> &UriRef {
        &self.problem_type
    }

    /// The title, if any.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// The occurrence-specific explanation, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The occurrence identifier, if any.
    pub fn instance(&self) -> Option<&UriRef> {
        self.instance.as_ref()
    }

    /// The value of the extension member `name`.
    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.extensions
            .iter()
            .find_map(|(n, v)| (n == name).then_some(v))
    }

    /// The extension members, in order.
    pub fn extensions(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.extensions.iter().map(|(n, v)| (&**n, v))
    }
}

impl From<StatusCode> for Problem {
    fn from(status: StatusCode) -> Self {
        Problem::new(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_defaults_to_about_blank_and_the_reason_phrase() {
        let p = Problem::new(StatusCode::NOT_FOUND);
        assert!(p.problem_type().is_about_blank());
        assert_eq!(p.title(), Some("Not Found"));
        assert_eq!(p.detail(), None);
        let unknown = Problem::new(StatusCode::from_u16(599).expect("valid"));
        assert_eq!(unknown.title(), None);
    }

    #[test]
    fn standard_member_names_are_refused_as_extensions() {
        for name in STANDARD_MEMBERS.into_iter().chain([""]) {
            let err = Problem::new(StatusCode::BAD_REQUEST)
                .with_extension(name, 1)
                .expect_err(name);
            assert_eq!(err.name(), name);
        }
    }

    #[test]
    fn extensions_keep_insertion_order_and_replace_in_place() -> Result<(), ExtensionError> {
        let mut p = Problem::new(StatusCode::BAD_REQUEST)
            .with_extension("zeta", 1)?
            .with_extension("alpha", 2)?
            .with_extension("mid", 3)?;
        assert_eq!(p.insert_extension("alpha", 20)?, Some(Value::from(2)));
        let names: Vec<_> = p.extensions().map(|(n, _)| n).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        assert_eq!(p.extension("alpha"), Some(&Value::from(20)));
        assert_eq!(p.remove_extension("zeta"), Some(Value::from(1)));
        assert_eq!(p.extensions().len(), 2);
        Ok(())
    }
}
