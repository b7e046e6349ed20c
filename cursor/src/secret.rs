//! Signing secrets and the key ring that rotates them.

use std::fmt;
use std::sync::Arc;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit};
use sha2::Sha256;

use crate::error::{ConfigError, ConfigErrorKind};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The fewest bytes a [`CursorSecret`] may have: 256 bits, SHA-256's output length, which
/// RFC 2104 gives as the least key length for full HMAC strength.
pub const MIN_SECRET_LEN: usize = 32;

/// Salt for deriving per-purpose keys, so one secret never keys two algorithms directly.
const KDF_SALT: &[u8] = b"tower-cursor";
const MAC_KEY_INFO: &[u8] = b"tower-cursor v1 hmac-sha256";
#[cfg(feature = "encrypt")]
const AEAD_KEY_INFO: &[u8] = b"tower-cursor v1 aes-256-siv";

/// A secret that signs (and, with the `encrypt` feature, encrypts) cursors.
///
/// At least [`MIN_SECRET_LEN`] bytes. Every instance that must accept another's cursors needs
/// the same secret under the same [`KeyId`]. `Debug` never prints the bytes.
#[derive(Clone)]
pub struct CursorSecret(Arc<[u8]>);

impl CursorSecret {
    /// Wraps secret bytes, for example 32 random bytes from a secret store.
    ///
    /// # Errors
    ///
    /// Fails when `bytes` is shorter than [`MIN_SECRET_LEN`].
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let bytes = bytes.as_ref();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(ConfigErrorKind::SecretTooShort));
        }
        Ok(CursorSecret(Arc::from(bytes)))
    }

    /// Makes a fresh random secret from the operating system's generator.
    ///
    /// Cursors signed with it die with the process: use it only for a single instance, or for
    /// tests.
    ///
    /// # Errors
    ///
    /// Fails when the operating system's random generator is unavailable.
    pub fn generate() -> Result<Self, ConfigError> {
        let mut bytes = [0u8; MIN_SECRET_LEN];
        getrandom::fill(&mut bytes)
            .map_err(|_| ConfigError::new(ConfigErrorKind::RandomUnavailable))?;
        Ok(CursorSecret(Arc::from(&bytes[..])))
    }

    fn derive(&self, info: &[u8], out: &mut [u8]) {
        Hkdf::<Sha256>::new(Some(KDF_SALT), &self.0)
            .expand(info, out)
            .expect("the derived keys are far below HKDF-SHA256's 8160-byte limit");
    }
}

impl fmt::Debug for CursorSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorSecret(<redacted>)")
    }
}

/// The id a token carries to name the key that signed it, so keys can rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u8);

impl KeyId {
    /// A key id. One byte keeps tokens short; 256 ids are plenty for a rotation schedule.
    pub const fn new(id: u8) -> Self {
        KeyId(id)
    }

    /// The id as a number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The keys derived from one secret.
#[derive(Clone)]
pub(crate) struct SigningKey {
    pub(crate) id: KeyId,
    /// Keyed once: cloning this state skips re-hashing the key pads on every token.
    pub(crate) mac: HmacSha256,
    /// `HMAC(key, "key check")[..2]`, written into tokens to tell another secret from tampering.
    pub(crate) check: [u8; 2],
    #[cfg(feature = "encrypt")]
    pub(crate) aead_key: [u8; 64],
}

impl SigningKey {
    fn derive(id: KeyId, secret: &CursorSecret) -> Self {
        let mut mac_key = [0u8; 32];
        secret.derive(MAC_KEY_INFO, &mut mac_key);
        #[cfg(feature = "encrypt")]
        let aead_key = {
            let mut key = [0u8; 64];
            secret.derive(AEAD_KEY_INFO, &mut key);
            key
        };
        let mac = HmacSha256::new_from_slice(&mac_key).expect("HMAC accepts keys of any length");
        let check = {
            use hmac::Mac as _;
            let tag = mac
                .clone()
                .chain_update(b"key check")
                .finalize()
                .into_bytes();
            [tag[0], tag[1]]
        };
        SigningKey {
            id,
            mac,
            check,
            #[cfg(feature = "encrypt")]
            aead_key,
        }
    }
}

/// The keys a [`CursorCodec`](crate::CursorCodec) knows: one current key that signs new
/// tokens, and older keys that still verify tokens issued before a rotation.
///
/// To rotate: deploy the new secret as a retained key everywhere, then make it current, then
/// drop the old key once the longest-lived token it signed has expired (or pages are fine
/// restarting).
#[derive(Clone)]
pub struct KeyRing {
    current: SigningKey,
    retained: Vec<SigningKey>,
}

impl KeyRing {
    /// A ring whose `secret` signs every new token under `id`.
    pub fn new(id: KeyId, secret: &CursorSecret) -> Self {
        KeyRing {
            current: SigningKey::derive(id, secret),
            retained: Vec::new(),
        }
    }

    /// Keeps accepting tokens signed under `id` with `secret`, without signing new ones.
    ///
    /// # Errors
    ///
    /// Fails when `id` is already in the ring.
    pub fn retain(mut self, id: KeyId, secret: &CursorSecret) -> Result<Self, ConfigError> {
        if self.key(id).is_some() {
            return Err(ConfigError::new(ConfigErrorKind::DuplicateKeyId(id)));
        }
        self.retained.push(SigningKey::derive(id, secret));
        Ok(self)
    }

    /// The id of the key that signs new tokens.
    pub fn current_id(&self) -> KeyId {
        self.current.id
    }

    /// The ids of every key that verifies tokens, current first.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        std::iter::once(&self.current)
            .chain(&self.retained)
            .map(|key| key.id)
    }

    pub(crate) fn current(&self) -> &SigningKey {
        &self.current
    }

    pub(crate) fn key(&self, id: KeyId) -> Option<&SigningKey> {
        std::iter::once(&self.current)
            .chain(&self.retained)
            .find(|key| key.id == id)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current.id)
            .field(
                "retained",
                &self.retained.iter().map(|key| key.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}
