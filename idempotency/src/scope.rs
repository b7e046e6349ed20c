//! Whose key it is: the scope that keeps one caller's keys apart from another's.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use sha2::{Digest, Sha256};

use crate::store::{Fingerprint, ScopeId, StoreKey};

type ScopeFn = dyn Fn(&Parts) -> Option<Vec<u8>> + Send + Sync;

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
            extract(parts).map(String::into_bytes)
        })))
    }

    /// The value of a header (for example `Authorization`), byte for byte, as the scope. Only
    /// its hash is stored.
    pub fn header(name: HeaderName) -> Self {
        Scope(Some(Arc::new(move |parts: &Parts| {
            parts
                .headers
                .get(&name)
                .map(|value| value.as_bytes().to_vec())
        })))
    }

    /// No scope: every caller shares one key space. Only for services with one caller, or
    /// whose keys are unguessable and never shared.
    pub fn unscoped() -> Self {
        Scope(None)
    }

    /// The scope of a request: `None` when the extractor finds none.
    pub(crate) fn extract(&self, parts: &Parts) -> Option<Vec<u8>> {
        match &self.0 {
            None => Some(Vec::new()),
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

/// Feeds length-prefixed fields, so that no two field lists hash alike.
struct Framed(Sha256);

impl Framed {
    fn new(domain: &str) -> Self {
        let mut framed = Framed(Sha256::new());
        framed.field(domain.as_bytes());
        framed
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0
            .update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
        self.0.update(bytes);
        self
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// SHA-256 over the scope and the key, tagged with the scope's id.
pub(crate) fn store_key(scope: &[u8], key: &str) -> StoreKey {
    let mut framed = Framed::new("tower-idempotency/key/v1");
    framed.field(scope).field(key.as_bytes());
    StoreKey::from_bytes(framed.finish()).with_scope(scope_id(scope))
}

/// 64 bits of SHA-256 over the scope; the empty scope (an unscoped layer) is
/// [`ScopeId::UNSCOPED`].
fn scope_id(scope: &[u8]) -> ScopeId {
    if scope.is_empty() {
        return ScopeId::UNSCOPED;
    }
    let mut framed = Framed::new("tower-idempotency/scope/v1");
    framed.field(scope);
    let digest = framed.finish();
    ScopeId::from_u64(u64::from_be_bytes(
        digest[..8].try_into().expect("8 of 32 bytes"),
    ))
}

/// SHA-256 over method, path and query, content type and body.
pub(crate) fn fingerprint(parts: &Parts, body: &[u8]) -> Fingerprint {
    let mut framed = Framed::new("tower-idempotency/request/v1");
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map_or(&b""[..], http::HeaderValue::as_bytes);
    framed
        .field(parts.method.as_str().as_bytes())
        .field(target.as_bytes())
        .field(content_type)
        .field(body);
    Fingerprint(framed.finish())
}
