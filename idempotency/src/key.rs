//! The `Idempotency-Key` header: parsing, and the key the handler can read.

use std::borrow::Cow;
use std::convert::Infallible;

use http::HeaderMap;
#[cfg(test)]
use http::HeaderValue;
use sfv::visitor::{Ignored, parameter_visitor_with};

use crate::store::{FencingToken, StoreKey};

/// The header name.
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// The default and usual maximum key length, in characters (Stripe's).
pub const DEFAULT_MAX_KEY_LEN: usize = 255;

/// Why an `Idempotency-Key` header was refused (400 `idempotency-key-invalid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// More than one `Idempotency-Key` field line.
    Repeated,
    /// An empty key.
    Empty,
    /// Longer than the layer's maximum.
    TooLong {
        /// The maximum, in characters.
        max: usize,
    },
    /// Neither an RFC 9651 String nor a run of visible ASCII without `"`, `,` or `;`: control
    /// characters, spaces outside quotes, a broken quoted string, non-ASCII bytes.
    Malformed,
}

impl KeyError {
    /// A sentence for the problem's `detail`.
    pub fn detail(&self) -> String {
        match self {
            KeyError::Repeated => "Send exactly one Idempotency-Key header.".to_owned(),
            KeyError::Empty => "The Idempotency-Key header is empty.".to_owned(),
            KeyError::TooLong { max } => {
                format!("The Idempotency-Key is longer than {max} characters.")
            }
            KeyError::Malformed => "The Idempotency-Key must be a quoted string (RFC 9651) or \
                                    visible ASCII characters without quotes, commas or semicolons."
                .to_owned(),
        }
    }
}

/// Reads the key from `headers` as the layer does: `Ok(None)` when there is none.
///
/// For code that takes the key from somewhere the layer does not look (gRPC metadata is
/// carried in the same `HeaderMap`), and for fuzzing.
///
/// ```
/// use http::{HeaderMap, HeaderValue};
/// use tower_idempotency::{DEFAULT_MAX_KEY_LEN, IDEMPOTENCY_KEY, KeyError, parse_idempotency_key};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("\"order-1\""));
/// assert_eq!(parse_idempotency_key(&headers, DEFAULT_MAX_KEY_LEN), Ok(Some("order-1".into())));
/// headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("order-2"));
/// assert_eq!(parse_idempotency_key(&headers, DEFAULT_MAX_KEY_LEN), Err(KeyError::Repeated));
/// ```
///
/// The header is an RFC 9651 Item whose value must be a String (`"…"`, parameters ignored).
/// Many clients (Stripe's among them) send the key unquoted, so a value that is not a String
/// but is a run of visible ASCII without `"`, `,` or `;` is taken as it stands. The quoted and unquoted
/// forms of the same characters are the same key.
///
/// # Errors
///
/// The [`KeyError`] the layer answers 400 `idempotency-key-invalid` with.
pub fn parse_idempotency_key(
    headers: &HeaderMap,
    max_len: usize,
) -> Result<Option<String>, KeyError> {
    let mut lines = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = lines.next() else {
        return Ok(None);
    };
    if lines.next().is_some() {
        return Err(KeyError::Repeated);
    }
    parse_idempotency_key_value(value.as_bytes(), max_len).map(Some)
}

/// Reads one key value as [`parse_idempotency_key`] reads the header's: for a key that
/// arrives elsewhere (a gRPC message's AIP-155 `request_id`), so that it names the same key as
/// the header would.
///
/// ```
/// use tower_idempotency::{DEFAULT_MAX_KEY_LEN, KeyError, parse_idempotency_key_value};
///
/// let key = parse_idempotency_key_value(b"8c3e0d8e-7f4a", DEFAULT_MAX_KEY_LEN);
/// assert_eq!(key, Ok("8c3e0d8e-7f4a".into()));
/// assert_eq!(parse_idempotency_key_value(b"", DEFAULT_MAX_KEY_LEN), Err(KeyError::Empty));
/// assert_eq!(
///     parse_idempotency_key_value(b"two words", DEFAULT_MAX_KEY_LEN),
///     Err(KeyError::Malformed)
/// );
/// ```
///
/// # Errors
///
/// The [`KeyError`] the layer answers 400 `idempotency-key-invalid` with.
pub fn parse_idempotency_key_value(value: &[u8], max_len: usize) -> Result<String, KeyError> {
    let key = parse_value(value)?;
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.chars().count() > max_len {
        return Err(KeyError::TooLong { max: max_len });
    }
    Ok(key)
}

/// The bare item when it is a String, borrowed from the input unless it had escapes: through
/// `sfv`'s visitor, so that no `Item` and no parameter list is built (that was a quarter of
/// the layer's own instructions on a replay).
fn sf_string(bytes: &[u8]) -> Option<Cow<'_, sfv::StringRef>> {
    let visit = |bare_item| {
        let string = match bare_item {
            sfv::BareItemFromInput::String(string) => Some(string),
            _ => None,
        };
        Ok::<_, Infallible>(parameter_visitor_with(Ignored, move |_| Ok(string)))
    };
    sfv::Parser::new(bytes)
        .parse_item_with_visitor(visit)
        .ok()
        .flatten()
}

/// A key sent unquoted: visible ASCII without `"`, `,` or `;`.
fn is_bare_key(trimmed: &[u8]) -> bool {
    trimmed
        .iter()
        .all(|&b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';'))
}

fn parse_value(bytes: &[u8]) -> Result<String, KeyError> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(KeyError::Empty);
    }
    // The bare form first: without a `"` the value cannot be a String, so `sfv` would refuse
    // it or read a token, and the bare key is the answer either way. `,` would hide two
    // merged header lines, `;` parameters: neither belongs in a bare key.
    if is_bare_key(trimmed) {
        // Visible ASCII only, so this is valid UTF-8.
        return Ok(String::from_utf8_lossy(trimmed).into_owned());
    }
    match sf_string(bytes) {
        Some(string) => Ok(string.as_str().to_owned()),
        None => Err(KeyError::Malformed),
    }
}

/// The idempotency key of the request being executed and the claim the layer holds on it, put
/// into the request extensions for the handler: for a unique constraint that survives a crash
/// between the database commit and the store's completion, or for the SQL store's
/// `commit_in`, which marks the key done inside the handler's own transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedKey {
    key: String,
    scoped: StoreKey,
    token: FencingToken,
}

impl ScopedKey {
    /// The key `key`, stored as `scoped`, claimed with `token`. The layer makes these; make
    /// one yourself to test a store of your own.
    pub fn new(key: String, scoped: StoreKey, token: FencingToken) -> Self {
        ScopedKey { key, scoped, token }
    }

    /// The key as the client sent it (unquoted).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// SHA-256 of the scope and the key: the same for every retry by the same caller, distinct
    /// across callers. Safe to store.
    pub fn scoped(&self) -> StoreKey {
        self.scoped
    }

    /// The fencing token of the layer's claim on the key, for this execution.
    pub fn token(&self) -> FencingToken {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                IDEMPOTENCY_KEY,
                HeaderValue::from_bytes(value).expect("valid"),
            );
        }
        map
    }

    fn parsed(values: &[&[u8]]) -> Result<Option<String>, KeyError> {
        parse_idempotency_key(&headers(values), DEFAULT_MAX_KEY_LEN)
    }

    #[test]
    fn quoted_and_unquoted_forms_are_one_key() {
        assert_eq!(parsed(&[b"\"abc-123\""]), Ok(Some("abc-123".into())));
        assert_eq!(parsed(&[b"abc-123"]), Ok(Some("abc-123".into())));
        assert_eq!(parsed(&[b"\"abc-123\";v=1"]), Ok(Some("abc-123".into())));
        assert_eq!(
            parsed(&[b"8e03978e-40d5-43e8-bc93-6894a57f9324"]),
            Ok(Some("8e03978e-40d5-43e8-bc93-6894a57f9324".into()))
        );
        // Firefox's form: a quoted decimal.
        assert_eq!(
            parsed(&[b"\"12345678901234567890\""]),
            Ok(Some("12345678901234567890".into()))
        );
        assert_eq!(parsed(&[b"\"with space\""]), Ok(Some("with space".into())));
        assert_eq!(parsed(&[b"\"esc\\\"aped\""]), Ok(Some("esc\"aped".into())));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(parsed(&[]), Ok(None));
        assert_eq!(parsed(&[b"a", b"b"]), Err(KeyError::Repeated));
        assert_eq!(parsed(&[b"\"\""]), Err(KeyError::Empty));
        assert_eq!(parsed(&[b""]), Err(KeyError::Empty));
        assert_eq!(parsed(&[b"two words"]), Err(KeyError::Malformed));
        assert_eq!(parsed(&[b"\"unterminated"]), Err(KeyError::Malformed));
        assert_eq!(parsed(&[b"tab\there"]), Err(KeyError::Malformed));
        assert_eq!(parsed(&[b"caf\xc3\xa9"]), Err(KeyError::Malformed));
        assert_eq!(
            parsed(&[b"a,b"]),
            Err(KeyError::Malformed),
            "two merged lines"
        );
        assert_eq!(parsed(&[b"abc;v=1"]), Err(KeyError::Malformed));
        let long = "k".repeat(256);
        assert_eq!(
            parsed(&[long.as_bytes()]),
            Err(KeyError::TooLong { max: 255 })
        );
        let longest = "k".repeat(255);
        assert_eq!(parsed(&[longest.as_bytes()]), Ok(Some(longest)));
    }

    /// The order the value was read in before the bare form went first: `sfv` first, the bare
    /// form only when `sfv` found no String.
    fn sfv_first(bytes: &[u8]) -> Result<String, KeyError> {
        if let Ok(item) = sfv::Parser::new(bytes).parse_item::<sfv::Item>()
            && let sfv::BareItem::String(string) = item.bare_item
        {
            return Ok(string.as_str().to_owned());
        }
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(KeyError::Empty);
        }
        if is_bare_key(trimmed) {
            return Ok(String::from_utf8_lossy(trimmed).into_owned());
        }
        Err(KeyError::Malformed)
    }

    /// Header values near the edges of both forms: Strings with escapes, parameters and
    /// trailing bytes, tokens, bare keys with separators, padding, and any bytes at all.
    fn values() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let alphabet = b" \t\"\\,;=abAZ09-_.:*/".to_vec();
        let run =
            |max| proptest::collection::vec(proptest::sample::select(alphabet.clone()), 0..max);
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..24),
            (run(2), any::<bool>(), run(12), run(6)).prop_map(|(pad, quoted, body, tail)| {
                let mut value = pad;
                if quoted {
                    value.push(b'"');
                }
                value.extend(body);
                if quoted {
                    value.push(b'"');
                }
                value.extend(tail);
                value
            }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn prop_the_bare_form_first_reads_every_value_as_sfv_first(value in values()) {
            proptest::prop_assert_eq!(parse_value(&value), sfv_first(&value));
        }
    }
}
