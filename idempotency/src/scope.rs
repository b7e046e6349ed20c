//! Whose key it is: the scope that keeps one caller's keys apart from another's.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use sha2::{Digest, Sha256};

use crate::store::{Fingerprint, ScopeId, StoreKey};

// Borrowed where it can be: a header's value is the scope as it stands, with no copy.
type ScopeFn = dyn for<'a> Fn(&'a Parts) -> Option<Cow<'a, [u8]>> + Send + Sync;

/// Takes the scope (the tenant, account or API key) from a request.
///
/// The stored key is SHA-256 of the scope and the idempotency key, so two callers using the
/// same key never see each other's responses. A request for which the extractor finds no
/// scope is refused with 401 `unauthorized`: running it without idempotency would be unsafe.
/// A service with a single caller says so explicitly with [`Scope::unscoped`].
#[derive(Clone)]
pub struct Scope(Option<Arc<ScopeFn>>);

impl Scope {
    /// The scope a closure finds, typically an identity an authentication layer put into the
    /// request extensions.
    pub fn from_fn<F>(extract: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        Scope(Some(Arc::new(move |parts: &Parts| {
            extract(parts).map(|scope| Cow::Owned(scope.into_bytes()))
        })))
    }

    /// The value of a header (for example `Authorization`), byte for byte, as the scope. Only
    /// its hash is stored.
    pub fn header(name: HeaderName) -> Self {
        Scope(Some(Arc::new(move |parts: &Parts| {
            parts
                .headers
                .get(&name)
                .map(|value| Cow::Borrowed(value.as_bytes()))
        })))
    }

    /// No scope: every caller shares one key space. Only for services with one caller, or
    /// whose keys are unguessable and never shared.
    pub fn unscoped() -> Self {
        Scope(None)
    }

    /// The scope of a request: `None` when the extractor finds none.
    pub(crate) fn extract<'a>(&self, parts: &'a Parts) -> Option<Cow<'a, [u8]>> {
        match &self.0 {
            None => Some(Cow::Borrowed(&[])),
            Some(extract) => extract(parts),
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Scope(fn)"
        } else {
            "Scope::unscoped"
        })
    }
}

/// A 256-bit hash that fields are fed to.
trait Absorb: Default {
    fn absorb(&mut self, bytes: &[u8]);
    fn digest(self) -> [u8; 32];
}

impl Absorb for Sha256 {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
    fn digest(self) -> [u8; 32] {
        self.finalize().into()
    }
}

impl Absorb for blake3::Hasher {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
    fn digest(self) -> [u8; 32] {
        self.finalize().into()
    }
}

/// Feeds length-prefixed fields, after a domain that keeps each use's hashes apart, so that
/// no two field lists hash alike.
struct Framed<H>(H);

impl<H: Absorb> Framed<H> {
    fn new(domain: &str) -> Self {
        let mut framed = Framed(H::default());
        framed.field(domain.as_bytes());
        framed
    }

    fn finish(self) -> [u8; 32] {
        self.0.digest()
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0
            .absorb(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
        self.0.absorb(bytes);
        self
    }

    /// Method, path and query, content type and body: what makes two requests the same.
    fn request(&mut self, parts: &Parts, body: &[u8]) {
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map_or(&b""[..], http::HeaderValue::as_bytes);
        self.field(parts.method.as_str().as_bytes())
            .field(target.as_bytes())
            .field(content_type)
            .field(body);
    }
}

/// SHA-256 over the scope and the key, tagged with the scope's id.
pub(crate) fn store_key(scope: &[u8], key: &str) -> StoreKey {
    let mut framed = Framed::<Sha256>::new("tower-idempotency/key/v1");
    framed.field(scope).field(key.as_bytes());
    StoreKey::from_bytes(framed.finish()).with_scope(scope_id(scope))
}

/// 64 bits of SHA-256 over the scope; the empty scope (an unscoped layer) is
/// [`ScopeId::UNSCOPED`].
fn scope_id(scope: &[u8]) -> ScopeId {
    if scope.is_empty() {
        return ScopeId::UNSCOPED;
    }
    let mut framed = Framed::<Sha256>::new("tower-idempotency/scope/v1");
    framed.field(scope);
    let digest = framed.finish();
    ScopeId::from_u64(u64::from_be_bytes(
        digest[..8].try_into().expect("8 of 32 bytes"),
    ))
}

/// The first byte of a fingerprint of a body of [`SMALL_BODY`] bytes or more: BLAKE3. Version
/// 1 (releases before it) was a bare SHA-256, with no tag byte.
pub(crate) const TAG_BLAKE3: u8 = 2;
/// The first byte of a fingerprint of a body shorter than [`SMALL_BODY`]: SHA-256.
pub(crate) const TAG_SHA256: u8 = 3;
/// The shortest body fingerprinted with BLAKE3 rather than SHA-256: four 1 KiB chunks.
///
/// BLAKE3 gains from SIMD only across its 1 KiB chunks, four at a time or more; on fewer its
/// rounds run in series, and SHA-256 with the SHA extensions (every AMD Zen, Intel since Ice
/// Lake, 64-bit Arm with the crypto extensions) is more than twice as fast. Measured on an
/// AMD EPYC (`idempotency/memory_body_size` bench, one run): at 1 KiB SHA-256 0.60 µs, BLAKE3
/// 1.51 µs; at 4 KiB 2.32 µs against 1.75 µs; at 64 KiB 34.7 µs against 7.4 µs. The choice
/// depends on the body alone, never on the CPU, so every instance of a fleet computes the
/// same fingerprint, and two requests with different tags have different bodies.
pub(crate) const SMALL_BODY: usize = 4 * 1024;

/// The fingerprint of a request: a tag byte naming the hash, then 31 bytes of it, over method,
/// path and query, content type and body (248 bits leave collisions out of reach).
pub(crate) fn fingerprint(parts: &Parts, body: &[u8]) -> Fingerprint {
    if body.len() < SMALL_BODY {
        let mut framed = Framed::<Sha256>::new("tower-idempotency/request/v3");
        framed.request(parts, body);
        tagged(TAG_SHA256, &framed.finish())
    } else {
        // The body is hashed on its own, from its first byte: chunk-aligned, so BLAKE3 hashes
        // its chunks side by side. Behind the framing fields every chunk would straddle two
        // of its own, and the tree be built one chunk at a time.
        let body = blake3::hash(body);
        let mut framed = Framed::<blake3::Hasher>::new("tower-idempotency/request/blake3");
        framed.request(parts, body.as_bytes());
        tagged(TAG_BLAKE3, &framed.finish())
    }
}

fn tagged(tag: u8, digest: &[u8; 32]) -> Fingerprint {
    let mut bytes = [0; 32];
    bytes[0] = tag;
    bytes[1..].copy_from_slice(&digest[..31]);
    Fingerprint(bytes)
}

/// Version 1: SHA-256 over method, path and query, content type and body, as records written
/// by earlier releases hold it.
fn fingerprint_v1(parts: &Parts, body: &[u8]) -> Fingerprint {
    let mut framed = Framed::<Sha256>::new("tower-idempotency/request/v1");
    framed.request(parts, body);
    Fingerprint(framed.finish())
}

/// Whether `stored`, read from a record, is the fingerprint of this request, whose current
/// fingerprint is `fresh`: equal to it, or to the version 1 fingerprint of the same request
/// (a record written by an earlier release, or by an instance not yet upgraded). Version 1 is
/// computed only on a mismatch, and never ruled out by the first byte (a SHA-256 begins with
/// a tag's value once in 256), so a retry of a request first seen by an older release still
/// replays.
pub(crate) fn same_request(
    stored: Fingerprint,
    fresh: Fingerprint,
    parts: &Parts,
    body: &[u8],
) -> bool {
    stored == fresh || stored == fingerprint_v1(parts, body)
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::{SMALL_BODY, TAG_BLAKE3, TAG_SHA256, fingerprint, fingerprint_v1, same_request};

    fn parts(uri: &str) -> http::request::Parts {
        Request::post(uri)
            .header("content-type", "application/json")
            .body(())
            .expect("valid")
            .into_parts()
            .0
    }

    #[test]
    fn the_tag_names_the_hash_the_body_size_chose() {
        let parts = parts("/v1/orders");
        let small = fingerprint(&parts, b"{}");
        assert_eq!(small.as_bytes()[0], TAG_SHA256);
        assert_ne!(small, fingerprint_v1(&parts, b"{}"));
        assert_eq!(small, fingerprint(&parts, b"{}"), "deterministic");
        let below = vec![b'x'; SMALL_BODY - 1];
        assert_eq!(fingerprint(&parts, &below).as_bytes()[0], TAG_SHA256);
        let at_the_bound = vec![b'x'; SMALL_BODY];
        let large = fingerprint(&parts, &at_the_bound);
        assert_eq!(large.as_bytes()[0], TAG_BLAKE3);
        assert_eq!(large, fingerprint(&parts, &at_the_bound), "deterministic");
        let mut other = at_the_bound.clone();
        other[SMALL_BODY - 1] = b'y';
        assert_ne!(large, fingerprint(&parts, &other), "the whole body counts");
        let elsewhere = fingerprint(&self::parts("/v1/refunds"), &at_the_bound);
        assert_ne!(large, elsewhere, "so does the path");
    }

    #[test]
    fn a_record_of_either_version_matches_its_own_request_only() {
        let parts = parts("/v1/orders");
        let fresh = fingerprint(&parts, b"{\"sku\":1}");
        assert!(same_request(fresh, fresh, &parts, b"{\"sku\":1}"));
        let written_by_v1 = fingerprint_v1(&parts, b"{\"sku\":1}");
        assert!(same_request(written_by_v1, fresh, &parts, b"{\"sku\":1}"));
        // Another body, under either version, is another request.
        let other = fingerprint_v1(&parts, b"{\"sku\":2}");
        assert!(!same_request(other, fresh, &parts, b"{\"sku\":1}"));
        let other = fingerprint(&parts, b"{\"sku\":2}");
        assert!(!same_request(other, fresh, &parts, b"{\"sku\":1}"));
        let elsewhere = fingerprint(&self::parts("/v1/refunds"), b"{\"sku\":1}");
        assert!(!same_request(elsewhere, fresh, &parts, b"{\"sku\":1}"));
    }
}
