//! The token format: sign (or encrypt), encode, verify, decode.
//!
//! A token is base64url (no padding) of:
//!
//! ```text
//! format (1 byte) | key id (1) | key check (2) | query hint (4) | body
//! format 1, signed:    body = payload | HMAC-SHA256(header | payload | fingerprint)[..16]
//! format 2, encrypted: body = AES-256-SIV(ad = [header, fingerprint], payload)  (tag | ciphertext)
//! payload = postcard(direction: u8, expires: Option<u64 unix seconds>, position: P)
//! ```
//!
//! The full 32-byte query fingerprint is authenticated but never sent: it is supplied again
//! by the request that presents the token. The two small header fields only let a refusal say
//! why, and are covered by the signature like everything else:
//!
//! - the key check, `HMAC(key, "key check")[..2]`, tells a token signed with another secret
//!   under the same key id (a misconfigured instance) from a tampered one;
//! - the query hint, `HMAC(key, "hint" | fingerprint)[..4]`, tells "another query" from
//!   "forged". It is keyed so that a token holder cannot test guesses of the filters against
//!   it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{
    ConfigError, ConfigErrorKind, CursorError, CursorErrorKind, EncodeError, EncodeErrorKind,
};
use crate::fingerprint::QueryFingerprint;
use crate::position::{Direction, Position};
use crate::secret::{KeyId, KeyRing, SigningKey};

/// The longest token accepted or issued, in characters. Bounds the work an attacker can make
/// the decoder do; keyset positions (ids, timestamps) need well under 100.
pub const MAX_TOKEN_LEN: usize = 1024;

/// The longest expiry [`CursorCodec::expire_after`] accepts.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);
const FORMAT_SIGNED: u8 = 1;
#[cfg(feature = "encrypt")]
const FORMAT_ENCRYPTED: u8 = 2;
const HEADER_LEN: usize = 8;
/// 128 bits of HMAC-SHA256: forging one token takes 2^128 guesses.
const TAG_LEN: usize = 16;

/// Signs positions into opaque tokens and verifies them back.
///
/// Cheap to clone: clones share the key ring.
///
/// ```
/// use tower_cursor::{CursorCodec, CursorSecret, KeyId, KeyRing, Position, QueryFingerprint};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let secret = CursorSecret::new([7u8; 32])?;
/// let codec = CursorCodec::new(KeyRing::new(KeyId::new(1), &secret));
/// let query = QueryFingerprint::builder().path("/orders").param("status", "open").finish();
///
/// let token = codec.encode(&Position::after((1_714_564_800_000_i64, 4711_u64)), &query)?;
/// let position: Position<(i64, u64)> = codec.decode(&token, &query)?;
/// assert_eq!(position.keys(), &(1_714_564_800_000, 4711));
///
/// // The same token on another query is refused.
/// let other = QueryFingerprint::builder().path("/orders").param("status", "closed").finish();
/// assert!(codec.decode::<(i64, u64)>(&token, &other).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CursorCodec {
    inner: Arc<Inner>,
}

#[derive(Clone, Debug)]
struct Inner {
    keys: KeyRing,
    ttl: Option<Duration>,
    encrypt: bool,
}

impl CursorCodec {
    /// A codec that signs with the ring's current key and verifies with all of its keys.
    /// Tokens do not expire unless [`expire_after`](Self::expire_after) is set.
    pub fn new(keys: KeyRing) -> Self {
        CursorCodec {
            inner: Arc::new(Inner {
                keys,
                ttl: None,
                encrypt: false,
            }),
        }
    }

    /// Tokens issued from now on are refused once `ttl` has passed (whole seconds, rounded up).
    ///
    /// # Errors
    ///
    /// Fails when `ttl` is zero or longer than 100 years.
    pub fn expire_after(mut self, ttl: Duration) -> Result<Self, ConfigError> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(ConfigError::new(ConfigErrorKind::Expiry));
        }
        Arc::make_mut(&mut self.inner).ttl = Some(ttl);
        Ok(self)
    }

    /// Issues encrypted tokens (AES-256-SIV, RFC 5297): the position values are hidden as well
    /// as authenticated, as Google AIP-158 asks of page tokens. Same length as signed tokens.
    ///
    /// Signed tokens issued before the switch keep verifying.
    #[cfg(feature = "encrypt")]
    #[must_use]
    pub fn encrypted(mut self) -> Self {
        Arc::make_mut(&mut self.inner).encrypt = true;
        self
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// Issues a token for `position` on the query `query`.
    ///
    /// # Errors
    ///
    /// Fails when the position does not serialize or the token would exceed
    /// [`MAX_TOKEN_LEN`].
    pub fn encode<P: Serialize>(
        &self,
        position: &Position<P>,
        query: &QueryFingerprint,
    ) -> Result<String, EncodeError> {
        self.encode_at(position, query, SystemTime::now())
    }

    /// [`encode`](Self::encode) as if the time were `now`.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encode_at<P: Serialize>(
        &self,
        position: &Position<P>,
        query: &QueryFingerprint,
        now: SystemTime,
    ) -> Result<String, EncodeError> {
        let expires = match self.inner.ttl {
            None => None,
            Some(ttl) => Some(unix_seconds_ceil(
                now.checked_add(ttl)
                    .ok_or_else(|| EncodeError::new(EncodeErrorKind::Expiry))?,
            )),
        };
        let claims = (position.direction().to_byte(), expires, position.keys());
        let payload = postcard::to_allocvec(&claims)
            .map_err(|_| EncodeError::new(EncodeErrorKind::Serialize))?;
        // base64 grows 4/3: refuse before doing the crypto.
        if (HEADER_LEN + payload.len() + TAG_LEN).div_ceil(3) * 4 > MAX_TOKEN_LEN + 3 {
            return Err(EncodeError::new(EncodeErrorKind::TooLong));
        }
        let key = self.inner.keys.current();
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
        bytes.push(FORMAT_SIGNED);
        bytes.push(key.id.get());
        bytes.extend_from_slice(&key.check);
        bytes.extend_from_slice(&hint(key, query));
        if self.inner.encrypt {
            #[cfg(feature = "encrypt")]
            {
                bytes[0] = FORMAT_ENCRYPTED;
                let sealed = aead(key)
                    .encrypt([&bytes[..], &query.as_bytes()[..]], &payload)
                    .map_err(|_| EncodeError::new(EncodeErrorKind::Encrypt))?;
                bytes.extend_from_slice(&sealed);
            }
        } else {
            bytes.extend_from_slice(&payload);
            let tag = mac(key, &bytes, query).finalize().into_bytes();
            bytes.extend_from_slice(&tag[..TAG_LEN]);
        }
        let token = URL_SAFE_NO_PAD.encode(&bytes);
        if token.len() > MAX_TOKEN_LEN {
            return Err(EncodeError::new(EncodeErrorKind::TooLong));
        }
        Ok(token)
    }

    /// Verifies `token` for the query `query` and decodes its position.
    ///
    /// The signature is checked, in constant time, before any of the payload is decoded.
    ///
    /// # Errors
    ///
    /// See [`CursorErrorKind`]: malformed, bad signature, unknown key id, expired, or issued
    /// for another query.
    pub fn decode<P: DeserializeOwned>(
        &self,
        token: &str,
        query: &QueryFingerprint,
    ) -> Result<Position<P>, CursorError> {
        self.decode_at(token, query, SystemTime::now())
    }

    /// [`decode`](Self::decode) as if the time were `now`.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode).
    pub fn decode_at<P: DeserializeOwned>(
        &self,
        token: &str,
        query: &QueryFingerprint,
        now: SystemTime,
    ) -> Result<Position<P>, CursorError> {
        let malformed = || CursorError::new(CursorErrorKind::Malformed);
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(malformed());
        }
        let key = self
            .inner
            .keys
            .key(KeyId::new(bytes[1]))
            .ok_or_else(|| CursorError::new(CursorErrorKind::UnknownKey));
        let header = &bytes[..HEADER_LEN];
        let verified = match bytes[0] {
            FORMAT_SIGNED => {
                let key = key.clone()?;
                let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
                mac(key, signed, query)
                    .verify_truncated_left(tag)
                    .map(|()| signed[HEADER_LEN..].to_vec())
                    .map_err(|_| ())
            }
            #[cfg(feature = "encrypt")]
            FORMAT_ENCRYPTED => aead(key.clone()?)
                .decrypt([header, &query.as_bytes()[..]], &bytes[HEADER_LEN..])
                .map_err(|_| ()),
            _ => return Err(malformed()),
        };
        let Ok(payload) = verified else {
            let key = key?;
            let kind = if header[2..4] == key.check && header[4..] != hint(key, query) {
                CursorErrorKind::QueryMismatch
            } else {
                CursorErrorKind::BadSignature
            };
            return Err(CursorError::new(kind));
        };
        let ((direction, expires, keys), rest): ((u8, Option<u64>, P), _) =
            postcard::take_from_bytes(&payload).map_err(|_| malformed())?;
        let direction = Direction::from_byte(direction).ok_or_else(malformed)?;
        if !rest.is_empty() {
            return Err(malformed());
        }
        if let Some(expires) = expires
            && unix_seconds_floor(now) >= expires
        {
            return Err(CursorError::new(CursorErrorKind::Expired));
        }
        let expires_at = expires.map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        Ok(Position::decoded(direction, keys, expires_at))
    }
}

fn hint(key: &SigningKey, query: &QueryFingerprint) -> [u8; 4] {
    let mut mac = key.mac.clone();
    mac.update(b"hint");
    mac.update(query.as_bytes());
    let tag = mac.finalize().into_bytes();
    [tag[0], tag[1], tag[2], tag[3]]
}

fn mac(key: &SigningKey, signed: &[u8], query: &QueryFingerprint) -> crate::secret::HmacSha256 {
    let mut mac = key.mac.clone();
    mac.update(signed);
    mac.update(query.as_bytes());
    mac
}

#[cfg(feature = "encrypt")]
fn aead(key: &SigningKey) -> aes_siv::siv::Aes256Siv {
    use aes_siv::KeyInit as _;
    aes_siv::siv::Aes256Siv::new_from_slice(&key.aead_key).expect("the derived key is 64 bytes")
}

fn unix_seconds_floor(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_seconds_ceil(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}
