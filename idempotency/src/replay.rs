//! Keeping a response for replay, and replaying it.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Response};

use tower_problem_details::{GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS, Protocol};

use crate::body::ResponseBody;
use crate::store::StoredResponse;

/// Added to every replayed response (Stripe's name).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The headers a replay carries by default: what describes the result, never what
/// authenticates a caller or sets state (`Set-Cookie`, `WWW-Authenticate`, …), and nothing
/// recomputed per response (`Date`, `Content-Length`).
pub const DEFAULT_REPLAYED_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
    header::LOCATION,
    header::ETAG,
    header::LAST_MODIFIED,
    header::LINK,
    header::CACHE_CONTROL,
    header::VARY,
];

/// Kept from a gRPC answer whatever the allow-list says, because it means nothing without
/// them: the encoding its message is compressed with, and, in a Trailers-Only answer (a
/// handler's `Err(Status)`), its status in the header block.
const GRPC_REPLAYED: [HeaderName; 4] = [
    HeaderName::from_static("grpc-encoding"),
    GRPC_STATUS,
    GRPC_MESSAGE,
    GRPC_STATUS_DETAILS,
];

/// Headers never replayed, even when added to the allow-list by mistake: credentials and
/// state, hop-by-hop fields, and what is recomputed per response.
const NEVER_REPLAYED: &[&str] = &[
    "set-cookie",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "authentication-info",
    "proxy-authentication-info",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "date",
];

/// Whether the allow-list may hold `name`.
pub(crate) fn replayable(name: &HeaderName) -> bool {
    !NEVER_REPLAYED.contains(&name.as_str())
}

/// The allow-listed header lines of `headers`, raw and in the response's order, and for a
/// gRPC answer the lines it cannot do without.
pub(crate) fn keep_headers(
    headers: &HeaderMap,
    allowed: &[HeaderName],
    protocol: Protocol,
) -> Vec<(HeaderName, HeaderValue)> {
    // One pass over the response's lines, each looked up in the allow-list: a response has
    // fewer lines than the list has names (ten by default), and a list scan is a few
    // comparisons where `get_all` per listed name hashes each name.
    let grpc = protocol == Protocol::Grpc;
    headers
        .iter()
        .filter(|(name, _)| allowed.contains(name) || (grpc && GRPC_REPLAYED.contains(name)))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The replayed response: the original status, kept header lines, body and trailers, and
/// `Idempotent-Replayed: true`.
pub(crate) fn replay<B>(stored: StoredResponse) -> Response<ResponseBody<B>> {
    let trailers =
        (!stored.trailers.is_empty()).then(|| stored.trailers.into_iter().collect::<HeaderMap>());
    let mut response = Response::new(ResponseBody::full(stored.body, trailers));
    *response.status_mut() = stored.status;
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        headers.append(name, value);
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}
