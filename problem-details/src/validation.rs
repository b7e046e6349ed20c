//! Validation errors: the `errors` extension of `{detail, pointer}` items (RFC 9457 §3).

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::catalog::{ProblemCatalog, ProblemKind};
use crate::problem::Problem;

/// The name of the extension member that carries validation errors.
pub const ERRORS_MEMBER: &str = "errors";

/// A JSON Pointer (RFC 6901) to the offending part of a request document.
///
/// Built token by token, so `~` and `/` in member names are escaped correctly:
///
/// ```
/// use tower_problem_details::JsonPointer;
///
/// let p = JsonPointer::root().push("items").push(0).push("unit/price");
/// assert_eq!(p.as_str(), "/items/0/unit~1price");
/// assert_eq!(p.to_uri_fragment(), "#/items/0/unit~1price");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct JsonPointer(String);

impl JsonPointer {
    /// The pointer to the whole document (the empty string).
    pub fn root() -> Self {
        JsonPointer(String::new())
    }

    /// This pointer extended by one reference token (a member name or an array index).
    #[must_use]
    pub fn push(mut self, token: impl fmt::Display) -> Self {
        self.0.push('/');
        let start = self.0.len();
        let _ = write!(self.0, "{token}");
        if self.0[start..].contains(['~', '/']) {
            let escaped = self.0[start..].replace('~', "~0").replace('/', "~1");
            self.0.truncate(start);
            self.0.push_str(&escaped);
        }
        self
    }

    /// Reads a pointer in its string form (`/a/0`) or its URI fragment form (`#/a/0`).
    ///
    /// # Errors
    ///
    /// Fails when the string is neither: it must be empty or start with `/` (after the `#`),
    /// and `~` must be followed by `0` or `1`; in the fragment form, percent escapes must be
    /// well-formed UTF-8.
    pub fn parse(s: &str) -> Result<Self, InvalidJsonPointer> {
        let plain = match s.strip_prefix('#') {
            Some(fragment) => percent_decode(fragment).ok_or(InvalidJsonPointer { _priv: () })?,
            None => Cow::Borrowed(s),
        };
        if !(plain.is_empty() || plain.starts_with('/')) {
            return Err(InvalidJsonPointer { _priv: () });
        }
        let mut chars = plain.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(InvalidJsonPointer { _priv: () });
            }
        }
        Ok(JsonPointer(plain.into_owned()))
    }

    /// The string form, e.g. `/items/0/quantity`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URI fragment form, e.g. `#/items/0/quantity`, with characters that may not appear
    /// in a fragment percent-encoded (RFC 6901 §6). This is the form RFC 9457's examples use
    /// and the one written in `errors` items.
    pub fn to_uri_fragment(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 1);
        out.push('#');
        for byte in self.0.bytes() {
            if is_fragment_char(byte) {
                out.push(char::from(byte));
            } else {
                let _ = write!(out, "%{byte:02X}");
            }
        }
        out
    }
}

/// RFC 3986 `fragment` characters, less `%` (always escaped here).
fn is_fragment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&b)
}

fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The error returned when a string is not a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidJsonPointer {
    _priv: (),
}

impl fmt::Display for InvalidJsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid JSON pointer")
    }
}

impl std::error::Error for InvalidJsonPointer {}

/// One validation error: what is wrong (`detail`) and where (`pointer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    pointer: JsonPointer,
    detail: Cow<'static, str>,
}

impl ValidationError {
    /// An error at `pointer`.
    pub fn new(pointer: JsonPointer, detail: impl Into<Cow<'static, str>>) -> Self {
        ValidationError {
            pointer,
            detail: detail.into(),
        }
    }

    /// Where the error is.
    pub fn pointer(&self) -> &JsonPointer {
        &self.pointer
    }

    /// What is wrong, for the client's developer.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    fn into_value(self) -> Value {
        let mut item = Map::with_capacity(2);
        item.insert("detail".to_owned(), Value::from(self.detail.into_owned()));
        item.insert(
            "pointer".to_owned(),
            Value::from(self.pointer.to_uri_fragment()),
        );
        Value::Object(item)
    }

    fn from_value(value: &Value) -> Option<Self> {
        let detail = value.get("detail")?.as_str()?;
        let pointer = JsonPointer::parse(value.get("pointer")?.as_str()?).ok()?;
        Some(ValidationError::new(pointer, detail.to_owned()))
    }
}

/// A list of validation errors, to be sent as one problem.
///
/// ```
/// use tower_problem_details::{JsonPointer, ProblemCatalog, ValidationErrors};
///
/// let mut errors = ValidationErrors::new();
/// errors.push(JsonPointer::root().push("age"), "must be a positive integer");
/// errors.push(JsonPointer::root().push("profile").push("color"), "must be 'green', 'red' or 'blue'");
///
/// let problem = ProblemCatalog::default().validation_failed(errors);
/// assert_eq!(problem.status(), 422);
/// assert_eq!(
///     problem.to_json_string(),
///     r##"{"type":"/problems/validation-failed","title":"Request validation failed","status":422,"errors":[{"detail":"must be a positive integer","pointer":"#/age"},{"detail":"must be 'green', 'red' or 'blue'","pointer":"#/profile/color"}]}"##
/// );
/// assert_eq!(problem.validation_errors().len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ValidationErrors(Vec<ValidationError>);

impl ValidationErrors {
    /// An empty list.
    pub fn new() -> Self {
        ValidationErrors(Vec::new())
    }

    /// Adds an error at `pointer`.
    pub fn push(&mut self, pointer: JsonPointer, detail: impl Into<Cow<'static, str>>) {
        self.0.push(ValidationError::new(pointer, detail));
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ValidationError> {
        self.0.iter()
    }

    fn into_value(self) -> Value {
        Value::Array(
            self.0
                .into_iter()
                .map(ValidationError::into_value)
                .collect(),
        )
    }
}

impl FromIterator<ValidationError> for ValidationErrors {
    fn from_iter<I: IntoIterator<Item = ValidationError>>(iter: I) -> Self {
        ValidationErrors(iter.into_iter().collect())
    }
}

impl Extend<ValidationError> for ValidationErrors {
    fn extend<I: IntoIterator<Item = ValidationError>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl IntoIterator for ValidationErrors {
    type Item = ValidationError;
    type IntoIter = std::vec::IntoIter<ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationError;
    type IntoIter = std::slice::Iter<'a, ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Problem {
    /// Sets the `errors` extension member to `errors`.
    #[must_use]
    pub fn with_validation_errors(mut self, errors: ValidationErrors) -> Self {
        self.insert_extension_unchecked(Cow::Borrowed(ERRORS_MEMBER), errors.into_value());
        self
    }

    /// The items of the `errors` extension member that are well-formed `{detail, pointer}`
    /// objects; others are skipped, as RFC 9457 asks of members a client does not understand.
    pub fn validation_errors(&self) -> ValidationErrors {
        match self.extension(ERRORS_MEMBER) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(ValidationError::from_value)
                .collect(),
            _ => ValidationErrors::new(),
        }
    }
}

impl ProblemCatalog {
    /// A `validation-failed` problem (422) carrying `errors`.
    pub fn validation_failed(&self, errors: ValidationErrors) -> Problem {
        self.problem(ProblemKind::ValidationFailed)
            .with_validation_errors(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_escaped_per_rfc_6901() {
        let p = JsonPointer::root().push("a/b").push("m~n").push("");
        assert_eq!(p.as_str(), "/a~1b/m~0n/");
        assert_eq!(JsonPointer::parse(p.as_str()), Ok(p));
    }

    #[test]
    fn fragment_form_percent_encodes_and_parses_back() {
        let p = JsonPointer::root()
            .push("c%d")
            .push("e^f")
            .push("ü")
            .push(" ");
        let fragment = p.to_uri_fragment();
        assert_eq!(fragment, "#/c%25d/e%5Ef/%C3%BC/%20");
        assert_eq!(JsonPointer::parse(&fragment), Ok(p));
    }

    #[test]
    fn invalid_pointers_are_refused() {
        for s in ["a", "/~2", "/~", "#/%zz", "#/%C3", "#/%+1", "#a"] {
            assert!(JsonPointer::parse(s).is_err(), "{s:?}");
        }
        assert_eq!(JsonPointer::parse(""), Ok(JsonPointer::root()));
        assert_eq!(JsonPointer::parse("#"), Ok(JsonPointer::root()));
    }

    #[test]
    fn malformed_error_items_are_skipped_when_reading() -> Result<(), crate::ParseError> {
        let p = Problem::from_json(
            br##"{"status":422,"errors":[{"detail":"ok","pointer":"#/a"},{"detail":1,"pointer":"/b"},"x",{"detail":"plain","pointer":"/c"}]}"##,
        )?;
        let pointers: Vec<_> = p
            .validation_errors()
            .iter()
            .map(|e| e.pointer().as_str().to_owned())
            .collect();
        assert_eq!(pointers, ["/a", "/c"]);
        Ok(())
    }
}
