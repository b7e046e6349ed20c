//! The fuzz targets of the API guardrail crates: one function per parser that sees client
//! input, each checking a property beyond "does not panic" where one exists.
//!
//! libFuzzer runs them from `fuzz/libfuzzer` (a cargo-fuzz project of thin `fuzz_target!`
//! wrappers, on the stable toolchain with `-s none`); `tests/corpus.rs` replays every file of
//! `fuzz/libfuzzer/corpus/<target>/` and `fuzz/libfuzzer/artifacts/<target>/` through the same
//! function under plain `cargo test`, so a finding, once committed, stays fixed. A property
//! that fails panics, which libFuzzer records as a crash.
//!
//! ```sh
//! cargo install cargo-fuzz --locked
//! fuzz/run.sh 600                  # every target for 10 minutes each
//! fuzz/run.sh 60 cursor_token      # one target
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Request};
use tower_cursor::{CursorCodec, CursorErrorKind, KeyId, KeyRing, Position, QueryFingerprint};
use tower_idempotency::{IDEMPOTENCY_KEY, KeyError, parse_idempotency_key};
use tower_problem_details::Problem;
use tower_ratelimit::{ForwardedHeader, TrustedProxies};
use tower_sunset::{parse_deprecation, parse_sunset};

/// A fuzz target: panics when its input breaks its property.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and its libFuzzer binary carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("idempotency_key", idempotency_key),
    ("cursor_token", cursor_token),
    ("cursor_roundtrip", cursor_roundtrip),
    ("problem_json", problem_json),
    ("sunset_headers", sunset_headers),
    ("forwarded", forwarded),
];

/// `Idempotency-Key`: one or two header lines (split at the first `\n`). An accepted key is
/// non-empty, within the length bound, and the same key when sent again as an RFC 9651 String
/// (the quoted and unquoted forms are one key); two lines are always refused.
///
/// # Panics
///
/// When the input breaks the property: that is the finding.
pub fn idempotency_key(data: &[u8]) {
    let mut headers = HeaderMap::new();
    let lines: Vec<&[u8]> = data.splitn(2, |&b| b == b'\n').collect();
    for line in &lines {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            return;
        };
        headers.append(IDEMPOTENCY_KEY, value);
    }
    let max = 64;
    let parsed = parse_idempotency_key(&headers, max);
    if lines.len() == 2 {
        assert_eq!(parsed, Err(KeyError::Repeated));
        return;
    }
    let Ok(Some(key)) = parsed else { return };
    assert!(!key.is_empty() && key.chars().count() <= max);
    // Keys with characters an sfv String cannot hold came in unquoted and stay as they are.
    let Ok(string) = sfv::String::from_string(key.clone()) else {
        return;
    };
    let quoted = sfv::FieldType::serialize(&sfv::Item::new(string));
    let mut again = HeaderMap::new();
    again.insert(
        IDEMPOTENCY_KEY,
        HeaderValue::from_str(&quoted).expect("an sfv String is a valid header value"),
    );
    assert_eq!(parse_idempotency_key(&again, max), Ok(Some(key)));
}

/// The keyset position the cursor targets encode: a timestamp and a 128-bit id, as orders'.
type Keys = (i64, u128);

fn codec(encrypted: bool) -> CursorCodec {
    let secret = tower_cursor::CursorSecret::new([7u8; 32]).expect("a 32-byte secret");
    let codec = CursorCodec::new(KeyRing::new(KeyId::new(1), &secret));
    if encrypted { codec.encrypted() } else { codec }
}

fn query() -> QueryFingerprint {
    QueryFingerprint::builder()
        .path("/v1/orders")
        .param("status", "open")
        .finish()
}

/// Cursor tokens as a client may send them, to a signed and to an encrypted codec (the first
/// byte chooses). Decoding never panics; a token that decodes re-encodes to itself.
///
/// # Panics
///
/// When the input breaks the property: that is the finding.
pub fn cursor_token(data: &[u8]) {
    let Some((&mode, token)) = data.split_first() else {
        return;
    };
    let Ok(token) = std::str::from_utf8(token) else {
        return;
    };
    let codec = codec(mode & 1 == 1);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok(position) = codec.decode_at::<Keys>(token, &query(), now) {
        let again = codec
            .encode_at(&position, &query(), now)
            .expect("a decoded position encodes");
        assert_eq!(
            again, token,
            "a decoded cursor re-encodes to the same token"
        );
    }
}

/// A position chosen by the input is encoded (signed or encrypted, either direction) and
/// decodes to itself; any one byte of the token changed, it is refused (never another
/// position), and it is refused for another query.
///
/// # Panics
///
/// When the input breaks the property: that is the finding.
pub fn cursor_roundtrip(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = [0u8; 24];
    let n = rest.len().min(24);
    bytes[..n].copy_from_slice(&rest[..n]);
    let timestamp = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let id = u128::from_le_bytes(bytes[8..].try_into().expect("16 bytes"));
    let position = if mode & 2 == 0 {
        Position::after((timestamp, id))
    } else {
        Position::before((timestamp, id))
    };
    let codec = codec(mode & 1 == 1);
    // A fixed time, so that a replayed input behaves as it did when it was found.
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let token = codec.encode_at(&position, &query(), now).expect("encodes");
    let decoded = codec
        .decode_at::<Keys>(&token, &query(), now)
        .expect("its own token decodes");
    assert_eq!(decoded, position);

    let other = QueryFingerprint::builder()
        .path("/v1/orders")
        .param("status", "closed")
        .finish();
    let refused = codec.decode_at::<Keys>(&token, &other, now);
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(CursorErrorKind::QueryMismatch)
    );

    let Some(&at) = rest.get(24) else { return };
    let mut tampered = token.into_bytes();
    let index = usize::from(at) % tampered.len();
    let replacement = if tampered[index] == b'A' { b'B' } else { b'A' };
    tampered[index] = replacement;
    let tampered = String::from_utf8(tampered).expect("base64url is ASCII");
    assert!(
        codec.decode_at::<Keys>(&tampered, &query(), now).is_err(),
        "a token with byte {index} changed must be refused"
    );
}

/// RFC 9457 documents as a client receives them. Parsing never panics; a parsed problem
/// written out and read back is the same problem.
///
/// # Panics
///
/// When the input breaks the property: that is the finding.
pub fn problem_json(data: &[u8]) {
    let Ok(problem) = Problem::from_json(data) else {
        return;
    };
    let written = problem.to_json_vec();
    let again = Problem::from_json(&written).expect("a written problem reads back");
    assert_eq!(again, problem);
}

/// `Deprecation` and `Sunset` values as a client receives them. A conformant value, written
/// again in its one conformant form, reads back as the same time.
///
/// # Panics
///
/// When the input breaks the property: that is the finding.
pub fn sunset_headers(data: &[u8]) {
    if let Ok(deprecation) = parse_deprecation(data)
        && deprecation.is_conformant()
    {
        let time = deprecation
            .time()
            .expect("a conformant Deprecation is a date");
        if let Ok(since) = time.duration_since(UNIX_EPOCH) {
            let written = format!("@{}", since.as_secs());
            let again = parse_deprecation(written.as_bytes()).expect("reads back");
            assert_eq!(again.time(), Some(time));
        }
    }
    if let Ok(sunset) = parse_sunset(data)
        && sunset.is_conformant()
    {
        let written = httpdate::fmt_http_date(sunset.time());
        let again = parse_sunset(written.as_bytes()).expect("reads back");
        assert_eq!(again.time(), sunset.time());
        assert!(again.is_conformant());
    }
}

/// `X-Forwarded-For` or `Forwarded` (the first byte chooses) from a peer that is trusted or
/// not (the second). An untrusted peer is always the client, whatever it sends; otherwise the
/// client is the peer or an address written in the header, never one made up.
///
/// # Panics
///
/// When the input breaks the property: that is the finding.
pub fn forwarded(data: &[u8]) {
    let [which, peer_byte, value @ ..] = data else {
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let (header, name) = if which & 1 == 0 {
        (ForwardedHeader::XForwardedFor, "x-forwarded-for")
    } else {
        (ForwardedHeader::Forwarded, "forwarded")
    };
    let proxies = TrustedProxies::none()
        .header(header)
        .trust("10.0.0.0/8")
        .and_then(|p| p.trust("2001:db8::/32"))
        .expect("valid networks");
    let peer: IpAddr = if peer_byte & 1 == 0 {
        [10, 0, 0, 1].into()
    } else {
        [192, 0, 2, 1].into()
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.headers.insert(name, value.clone());
    let client = proxies.client_ip(peer, &parts);
    if peer_byte & 1 == 1 {
        assert_eq!(client, peer, "an untrusted peer cannot name another client");
    } else if client != peer {
        let text = String::from_utf8_lossy(value.as_bytes());
        let written = text
            // `%` ends an IPv6 zone id, which the reader accepts and drops.
            .split([',', ';', '=', '"', ' ', '\t', '[', ']', '%'])
            .filter_map(|token| {
                token
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| token.parse::<SocketAddr>().ok().map(|a| a.ip()))
            })
            .any(|ip| ip == client);
        assert!(written, "{client} is not written in {text:?}");
    }
}
