//! Bearer API keys, and the tenant each one stands for.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, request::Parts};
use sha2::{Digest, Sha256};
use tower_problem_details::{ProblemKind, Protocol, Rejection};

use crate::problems::{AMBIGUOUS_REQUEST, Problems};

/// The caller, as found by [`authenticate`]: `ten_` and a hash of its API key. The key itself
/// is never stored or logged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// The tenant of an API key.
    ///
    /// # Panics
    ///
    /// Never: 16 bytes always make 32 hex digits, all ASCII.
    pub fn of_key(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        // Written in place, one allocation (the `Arc`): `format!` and a digit at a time
        // through the formatter were half of authenticating a request.
        let mut id = [0u8; 36];
        id[..4].copy_from_slice(b"ten_");
        hex::encode_to_slice(&digest[..16], &mut id[4..]).expect("32 digits for 16 bytes");
        Tenant(Arc::from(
            std::str::from_utf8(&id).expect("`ten_` and hex digits are ASCII"),
        ))
    }

    /// The tenant id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant id, shared rather than copied: for a key that keeps it, such as the rate
    /// limit's (a copy was an allocation per request).
    ///
    /// ```
    /// use orders::auth::Tenant;
    ///
    /// let tenant = Tenant::of_key("live_key_1");
    /// assert_eq!(&*tenant.to_shared(), tenant.as_str());
    /// ```
    pub fn to_shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// The tenant of a request that went through [`authenticate`].
    pub fn of_request(parts: &Parts) -> Option<&Tenant> {
        parts.extensions.get::<Tenant>()
    }
}

/// Which API keys are accepted.
#[derive(Clone, Debug)]
pub enum ApiKeys {
    /// DEMO: any key of 8 to 200 characters from `[A-Za-z0-9_-]`, each its own tenant.
    AnyWellFormed,
    /// Only these keys.
    Only(Arc<HashSet<String>>),
}

impl ApiKeys {
    /// The configured list, or demo mode when it is empty. Keys are taken as they are (the
    /// `--api-keys` parser trims them).
    pub fn from_list(keys: &[String]) -> Self {
        if keys.is_empty() {
            ApiKeys::AnyWellFormed
        } else {
            ApiKeys::Only(Arc::new(keys.iter().cloned().collect()))
        }
    }

    /// Whether any well-formed key is accepted (no list was configured).
    pub fn is_demo(&self) -> bool {
        matches!(self, ApiKeys::AnyWellFormed)
    }

    fn accepts(&self, key: &str) -> bool {
        let well_formed = (8..=200).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        well_formed
            && match self {
                ApiKeys::AnyWellFormed => true,
                ApiKeys::Only(keys) => keys.contains(key),
            }
    }
}

/// What [`authenticate`] needs.
#[derive(Clone, Debug)]
pub struct AuthState {
    /// The accepted keys.
    pub keys: ApiKeys,
    /// The problem builder.
    pub problems: Problems,
}

/// Middleware: finds the caller's [`Tenant`] from `Authorization: Bearer <key>` (on gRPC, the
/// `authorization` metadata) and puts it in the request extensions, or answers 401
/// `unauthorized` with `WWW-Authenticate: Bearer` (RFC 6750 §3: `error="invalid_token"` when a
/// key was sent but is not accepted); `UNAUTHENTICATED` on gRPC.
pub async fn authenticate(
    State(state): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let protocol = Protocol::detect(request.extensions(), request.headers());
    if request
        .headers()
        .get_all(AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        // Two credentials: refuse rather than guess which one the client meant.
        let problem = state
            .problems
            .service(AMBIGUOUS_REQUEST)
            .with_detail("Send one `Authorization` header, not several.");
        return state.problems.reject(Rejection::new(problem), protocol);
    }
    let header = request.headers().get(AUTHORIZATION);
    let key = header
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, key) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    match key {
        Some(key) if state.keys.accepts(key) => {
            let tenant = Tenant::of_key(key);
            request.extensions_mut().insert(tenant.clone());
            let mut response = next.run(request).await;
            // For the access log, which runs outside this layer.
            response.extensions_mut().insert(tenant);
            response
        }
        _ => {
            let (detail, challenge) = if header.is_none() {
                (
                    "Send an API key as `Authorization: Bearer <key>`.",
                    HeaderValue::from_static("Bearer realm=\"orders\""),
                )
            } else {
                (
                    "The API key is not accepted. Keys are 8 to 200 characters from [A-Za-z0-9_-].",
                    HeaderValue::from_static("Bearer realm=\"orders\", error=\"invalid_token\""),
                )
            };
            let rejection = state
                .problems
                .rejection(ProblemKind::Unauthorized)
                .with_detail(detail)
                .with_header(WWW_AUTHENTICATE, challenge);
            state.problems.reject(rejection, protocol)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_mode_accepts_well_formed_keys_only() {
        let keys = ApiKeys::AnyWellFormed;
        assert!(keys.accepts("demo_key-1"));
        assert!(!keys.accepts("short"));
        assert!(!keys.accepts("has space in it"));
        assert!(!keys.accepts(&"k".repeat(201)));
        assert!(keys.accepts(&"k".repeat(200)));
    }

    #[test]
    fn a_list_restricts_keys() {
        let keys = ApiKeys::from_list(&["live_key_1".to_owned()]);
        assert!(keys.accepts("live_key_1"));
        assert!(!keys.accepts("live_key_2"));
    }

    #[test]
    fn tenants_are_hashes_of_keys() {
        let a = Tenant::of_key("live_key_1");
        assert_eq!(a, Tenant::of_key("live_key_1"));
        assert_ne!(a, Tenant::of_key("live_key_2"));
        assert!(!a.as_str().contains("live_key"));
        assert_eq!(a.as_str().len(), 4 + 32);
    }
}
