use std::fmt;

use http::{HeaderName, HeaderValue, Request};

use crate::uri_ref::UriRef;

/// The extension member in which [`ProblemLayer`](super::ProblemLayer) writes the request id.
pub const REQUEST_ID_MEMBER: &str = "request_id";

/// The longest client-supplied request id that is kept; longer ones are replaced.
const MAX_LEN: usize = 200;

/// The id of a request, put in the request and response extensions by
/// [`ProblemLayer`](super::ProblemLayer).
///
/// It is the request's id header when that was 1 to 200 visible ASCII characters, otherwise a
/// generated UUID (v4).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id.
    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever stored, so this never falls back.
        self.0.to_str().unwrap_or_default()
    }

    /// `urn:uuid:<id>` when the id is a UUID, the only form safe to put in `instance` (a bare
    /// id would be a relative reference, resolved against the request URL, and a
    /// client-chosen one could be any URI).
    pub(crate) fn as_urn(&self) -> Option<UriRef> {
        let uuid = uuid::Uuid::try_parse(self.as_str()).ok()?;
        UriRef::try_from(uuid.urn().to_string()).ok()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// Takes the id from the request's `header`, or generates one and sets the header; either
    /// way, it is also put in the request extensions.
    pub(crate) fn ensure<B>(request: &mut Request<B>, header: &HeaderName) -> Self {
        let mut values = request.headers().get_all(header).iter();
        let usable = match (values.next(), values.next()) {
            (Some(value), None) if is_usable(value) => Some(value.clone()),
            _ => None,
        };
        let value = usable.unwrap_or_else(|| {
            let value = generate();
            request.headers_mut().insert(header.clone(), value.clone());
            value
        });
        let id = RequestId(value);
        request.extensions_mut().insert(id.clone());
        id
    }
}

fn is_usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

fn generate() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("unknown"))
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_for(values: &[&'static str]) -> (RequestId, Request<()>) {
        let mut request = Request::new(());
        for v in values {
            request
                .headers_mut()
                .append("x-request-id", HeaderValue::from_static(v));
        }
        let id = RequestId::ensure(&mut request, &HeaderName::from_static("x-request-id"));
        (id, request)
    }

    #[test]
    fn a_usable_id_is_kept() {
        let (id, request) = id_for(&["abc-123"]);
        assert_eq!(id.as_str(), "abc-123");
        assert_eq!(request.extensions().get::<RequestId>(), Some(&id));
    }

    #[test]
    fn missing_repeated_or_odd_ids_are_replaced_by_a_uuid() {
        for values in [&[][..], &["a", "b"], &["has space"], &[""]] {
            let (id, request) = id_for(values);
            assert_eq!(id.as_str().len(), 36, "{values:?}");
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok());
            assert_eq!(request.headers()["x-request-id"], id.as_str());
            assert_eq!(request.headers().get_all("x-request-id").iter().count(), 1);
        }
        let long = "x".repeat(MAX_LEN + 1);
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert("x-request-id", HeaderValue::from_str(&long).expect("ascii"));
        let id = RequestId::ensure(&mut request, &HeaderName::from_static("x-request-id"));
        assert_ne!(id.as_str(), long);
    }
}
