//! Where claims and results live: the [`IdempotencyStore`] trait, its vocabulary, and the
//! stores: memory, and with features Redis, PostgreSQL and SQLite.

pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod sql;
#[cfg(any(feature = "redis", feature = "postgres", feature = "sqlite"))]
mod wire;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use guardrail_store::StoreFuture;

/// The stored identity of one idempotency key: SHA-256 of the scope and the key, so raw keys
/// (which may be guessable or sensitive) are never stored, plus the [`ScopeId`] of its scope,
/// so that a store can share its capacity fairly between callers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey {
    hash: [u8; 32],
    scope: ScopeId,
}

impl StoreKey {
    /// A key from its 32 bytes, in [`ScopeId::UNSCOPED`] (for stores of your own, and tests).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        StoreKey {
            hash: bytes,
            scope: ScopeId::UNSCOPED,
        }
    }

    /// The same key, belonging to `scope`.
    #[must_use]
    pub const fn with_scope(self, scope: ScopeId) -> Self {
        StoreKey {
            hash: self.hash,
            scope,
        }
    }

    /// The 32 bytes (they already depend on the scope: equal bytes mean the same key).
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The scope the key belongs to.
    pub const fn scope(&self) -> ScopeId {
        self.scope
    }

    /// Lower-case hex of the 32 bytes, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({}, {:?})", &self.to_hex()[..16], self.scope)
    }
}

/// Which caller (tenant, API key) a [`StoreKey`] belongs to: 64 bits of a SHA-256 of the
/// scope, never the scope itself. The memory store gives each scope a share of its byte
/// budget with it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(u64);

impl ScopeId {
    /// The scope of an unscoped layer, and of keys made with [`StoreKey::from_bytes`].
    pub const UNSCOPED: ScopeId = ScopeId(0);

    /// A scope id from its value (for stores of your own, and tests).
    pub const fn from_u64(value: u64) -> Self {
        ScopeId(value)
    }

    /// The value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeId({:016x})", self.0)
    }
}

/// A hash of what makes two requests "the same request": method, path and query, content
/// type and body. A key reused with another fingerprint is refused (422). Opaque to stores,
/// which keep its 32 bytes as they are: the layer writes a tag byte naming the hash and 31
/// bytes of it (SHA-256 below 4 KiB of body, BLAKE3 from there), and still recognizes the
/// bare SHA-256 of earlier releases.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub(crate) [u8; 32]);

impl Fingerprint {
    /// A fingerprint from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &hex::encode(self.0)[..16])
    }
}

/// Proof of holding a claim: a random 128-bit value issued by [`IdempotencyStore::claim`].
/// `complete`, `release` and `renew` act only when the stored token is still this one, so a
/// holder whose lease ran out and was taken over can never overwrite the new holder's work.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FencingToken(pub(crate) u128);

impl FencingToken {
    /// A fresh random token, from the thread's CSPRNG (`rand`'s `ThreadRng`: `ChaCha12`, seeded
    /// and periodically reseeded from the operating system), so tokens are unpredictable and
    /// unique across instances without a system call per claim.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails while seeding, which leaves no safe
    /// way to go on.
    pub fn random() -> Self {
        use rand::Rng;
        FencingToken(rand::rng().random())
    }

    /// A token from its value (for stores of your own).
    pub const fn from_u128(value: u128) -> Self {
        FencingToken(value)
    }

    /// The value.
    pub const fn as_u128(&self) -> u128 {
        self.0
    }
}

impl fmt::Debug for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FencingToken({:08x}…)", self.0 >> 96)
    }
}

/// A response kept for replay: status, the allow-listed header lines (raw, in order, never
/// split on commas), the body and its trailers (a gRPC call's `grpc-status` and friends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// The original status.
    pub status: StatusCode,
    /// The allow-listed header lines.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The whole body.
    pub body: Bytes,
    /// The trailer lines, in order (empty for most HTTP responses).
    pub trailers: Vec<(HeaderName, HeaderValue)>,
}

/// The result of a completed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// A response to replay.
    Response(StoredResponse),
    /// Completed, but the response was streaming or too large to keep: retries get 409
    /// `idempotency-result-unavailable` and the handler never runs twice.
    NotReplayable,
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nothing (or only an expired lease) was there: the caller now holds the key and must
    /// `complete` or `release` it with this token.
    Claimed(FencingToken),
    /// Another request holds the key and its lease is still running.
    InFlight {
        /// The holder's request fingerprint.
        fingerprint: Fingerprint,
        /// How long its lease still runs.
        lease_remaining: Duration,
    },
    /// The key's request completed.
    Completed {
        /// The original request's fingerprint.
        fingerprint: Fingerprint,
        /// Its result.
        outcome: Completion,
    },
}

/// Whether a fenced operation (`complete`, `release`, `renew`) applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fenced {
    /// The token still held the key; the operation applied.
    Applied,
    /// The token no longer holds the key (its lease ran out, and perhaps another request took
    /// it over): nothing changed.
    Stale,
}

/// Storage for claims and results.
///
/// Semantics every store must have (the `conformance` feature's suite checks them):
///
/// - [`claim`](Self::claim) is one atomic step: of many concurrent claims on a vacant key,
///   exactly one gets [`Claim::Claimed`]. A lease that ran out counts as vacant.
/// - [`complete`](Self::complete), [`release`](Self::release) and [`renew`](Self::renew) are
///   compare-and-set on the token, and only while its lease runs: otherwise they return
///   [`Fenced::Stale`] and change nothing.
/// - A completed record lives for the `ttl` given to `complete`, a lease for the `lease` given
///   to `claim` or `renew`; the two are separate, so a crashed holder blocks its key for at
///   most one lease, never for the record lifetime.
pub trait IdempotencyStore: Clone + Send + Sync + 'static {
    /// Claims `key` for a request with `fingerprint`, for `lease`.
    fn claim(&self, key: StoreKey, fingerprint: Fingerprint, lease: Duration)
    -> StoreFuture<Claim>;

    /// Records the result of the claim held by `token`, kept for `ttl`.
    fn complete(
        &self,
        key: StoreKey,
        token: FencingToken,
        fingerprint: Fingerprint,
        outcome: Completion,
        ttl: Duration,
    ) -> StoreFuture<Fenced>;

    /// Gives the key up so that a retry runs again.
    fn release(&self, key: StoreKey, token: FencingToken) -> StoreFuture<Fenced>;

    /// Extends the lease of the claim held by `token` to `lease` from now.
    fn renew(&self, key: StoreKey, token: FencingToken, lease: Duration) -> StoreFuture<Fenced>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores name records by this hex: a change would orphan every stored record.
    #[test]
    fn a_store_key_s_hex_is_its_bytes_in_lower_case_order() {
        let bytes: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 8).expect("below 256"));
        let hex = StoreKey::from_bytes(bytes).to_hex();
        assert_eq!(
            hex,
            "0008101820283038404850586068707880889098a0a8b0b8c0c8d0d8e0e8f0f8"
        );
    }
}
