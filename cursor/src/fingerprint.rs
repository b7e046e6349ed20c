//! The fingerprint that binds a cursor to the query it was issued for.

use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 digest of a query's canonical filters, sort and path.
///
/// A token is only accepted for the fingerprint it was issued with, so a cursor from
/// `?status=open` cannot be replayed on `?status=closed` (where its position would silently
/// skip rows). The page size is never part of it: clients may change `limit` between pages.
///
/// Build one with [`QueryFingerprint::builder`]; the [`CursorLayer`](crate::CursorLayer) does
/// it from the path and every query parameter except the cursor and the limit.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryFingerprint([u8; 32]);

impl QueryFingerprint {
    /// Starts a fingerprint.
    pub fn builder() -> QueryFingerprintBuilder {
        QueryFingerprintBuilder::default()
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for QueryFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueryFingerprint(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…)")
    }
}

/// Collects the parts of a query that a cursor is bound to. See [`QueryFingerprint`].
///
/// Canonical by meaning, not by spelling: parameters are ordered by name before hashing, so
/// `?a=1&b=2` and `?b=2&a=1` agree, while the values of one repeated name keep their order
/// (`?sort=a&sort=b` is a different sort from `?sort=b&sort=a`).
#[derive(Clone, Debug, Default)]
pub struct QueryFingerprintBuilder {
    path: Option<String>,
    params: Vec<(String, String)>,
}

impl QueryFingerprintBuilder {
    /// Binds the cursor to a path (or any other scope name).
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Binds the cursor to one filter or sort parameter.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// Hashes what was collected.
    pub fn finish(mut self) -> QueryFingerprint {
        // A stable sort: reorders names, keeps the order of one name's values.
        self.params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = Sha256::new();
        hasher.update(b"tower-cursor query v1");
        match &self.path {
            Some(path) => {
                hasher.update([1]);
                update_framed(&mut hasher, path);
            }
            None => hasher.update([0]),
        }
        for (name, value) in &self.params {
            update_framed(&mut hasher, name);
            update_framed(&mut hasher, value);
        }
        QueryFingerprint(hasher.finalize().into())
    }
}

/// Length-prefixes every field so that no two different queries hash the same bytes
/// (`a=bc` must not collide with `ab=c`).
fn update_framed(hasher: &mut Sha256, field: &str) {
    hasher.update((field.len() as u64).to_le_bytes());
    hasher.update(field.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reordered_but_repeated_values_keep_their_order() {
        let a = QueryFingerprint::builder()
            .param("status", "open")
            .param("sort", "a")
            .param("sort", "b")
            .finish();
        let b = QueryFingerprint::builder()
            .param("sort", "a")
            .param("status", "open")
            .param("sort", "b")
            .finish();
        let c = QueryFingerprint::builder()
            .param("sort", "b")
            .param("status", "open")
            .param("sort", "a")
            .finish();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn fields_are_framed() {
        let a = QueryFingerprint::builder().param("a", "bc").finish();
        let b = QueryFingerprint::builder().param("ab", "c").finish();
        assert_ne!(a, b);
        let with_path = QueryFingerprint::builder().path("").finish();
        assert_ne!(with_path, QueryFingerprint::builder().finish());
    }
}
