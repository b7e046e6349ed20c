//! The workspace's problem-type catalog: stable type URIs, statuses and titles.

use std::fmt;
use std::sync::Arc;

use http::StatusCode;

use crate::problem::Problem;
use crate::uri_ref::{InvalidUriRef, UriRef};

macro_rules! catalog {
    ($( $(#[$doc:meta])* $variant:ident => $slug:literal, $status:ident, $title:literal; )*) => {
        /// A problem type of the catalog shared by every guardrail crate.
        ///
        /// Each kind has a stable slug, which [`ProblemCatalog`] turns into a type URI, a
        /// status and a default title. The catalog, as documented for clients:
        ///
        #[doc = include_str!("../docs/problems.md")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProblemKind {
            $( $(#[$doc])* $variant, )*
        }

        impl ProblemKind {
            /// Every kind of the catalog, in catalog order.
            pub const ALL: &'static [ProblemKind] = &[$(ProblemKind::$variant),*];

            /// The slug appended to the catalog's base URI, e.g. `quota-exceeded`.
            pub const fn slug(self) -> &'static str {
                match self { $(ProblemKind::$variant => $slug,)* }
            }

            /// The HTTP status a response of this kind carries.
            pub const fn status(self) -> StatusCode {
                match self { $(ProblemKind::$variant => StatusCode::$status,)* }
            }

            /// The type URI under [`ProblemCatalog::DEFAULT_BASE`].
            const fn default_type(self) -> &'static str {
                match self { $(ProblemKind::$variant => concat!("/problems/", $slug),)* }
            }

            /// The position of the kind in [`ALL`](Self::ALL).
            const fn index(self) -> usize {
                self as usize
            }

            /// The default title: a short summary of the problem type.
            pub const fn title(self) -> &'static str {
                match self { $(ProblemKind::$variant => $title,)* }
            }

            /// The kind with this slug.
            pub fn from_slug(slug: &str) -> Option<Self> {
                match slug {
                    $($slug => Some(ProblemKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

catalog! {
    /// The route requires an `Idempotency-Key` header and the request has none.
    IdempotencyKeyMissing => "idempotency-key-missing", BAD_REQUEST, "Idempotency-Key header required";
    /// The `Idempotency-Key` header is malformed, too long or repeated.
    IdempotencyKeyInvalid => "idempotency-key-invalid", BAD_REQUEST, "Invalid Idempotency-Key header";
    /// A request with the same key is still being processed.
    IdempotencyKeyInUse => "idempotency-key-in-use", CONFLICT, "Request with this Idempotency-Key is in progress";
    /// The key was used before for a different request.
    IdempotencyKeyReused => "idempotency-key-reused", UNPROCESSABLE_ENTITY, "Idempotency-Key reused for a different request";
    /// The original request completed but its response cannot be replayed.
    IdempotencyResultUnavailable => "idempotency-result-unavailable", CONFLICT, "Original response cannot be replayed";
    /// The request body is larger than the route accepts.
    PayloadTooLarge => "payload-too-large", PAYLOAD_TOO_LARGE, "Request body too large";
    /// The idempotency store cannot be reached; the request was not processed.
    IdempotencyStoreUnavailable => "idempotency-store-unavailable", SERVICE_UNAVAILABLE, "Idempotency store unavailable";
    /// A rate-limit quota is used up.
    QuotaExceeded => "quota-exceeded", TOO_MANY_REQUESTS, "Request quota exceeded";
    /// The rate-limit store cannot be reached and the route fails closed.
    RateLimitStoreUnavailable => "rate-limit-store-unavailable", SERVICE_UNAVAILABLE, "Rate-limit store unavailable";
    /// The pagination cursor is malformed, forged, expired or issued for another query.
    InvalidCursor => "invalid-cursor", BAD_REQUEST, "Invalid pagination cursor";
    /// The requested page size is out of range.
    InvalidPageSize => "invalid-page-size", BAD_REQUEST, "Invalid page size";
    /// The API version has been retired (or is in a brownout).
    ApiVersionSunset => "api-version-sunset", GONE, "API version retired";
    /// The request body or parameters are invalid; see the `errors` member.
    ValidationFailed => "validation-failed", UNPROCESSABLE_ENTITY, "Request validation failed";
    /// The request lacks valid credentials.
    Unauthorized => "unauthorized", UNAUTHORIZED, "Authentication required";
    /// The resource does not exist (or is not visible to the caller).
    NotFound => "not-found", NOT_FOUND, "Resource not found";
    /// The server failed; nothing about the cause is disclosed.
    Internal => "internal", INTERNAL_SERVER_ERROR, "Internal server error";
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// Builds the catalog's problems under one base URI.
///
/// The type URI of a kind is the base followed by the kind's slug: with the default base
/// `/problems/`, `quota-exceeded` becomes `/problems/quota-exceeded`, a relative reference
/// that resolves against the API's own origin (serve the docs there, or pick an absolute
/// base). Type URIs identify problems, so choose the base once and keep it.
///
/// Cloning is cheap: the base is shared.
///
/// ```
/// use tower_problem_details::{ProblemCatalog, ProblemKind};
///
/// let catalog = ProblemCatalog::new("https://api.example.com/problems/")?;
/// let problem = catalog.problem(ProblemKind::QuotaExceeded);
/// assert_eq!(problem.status(), 429);
/// assert_eq!(problem.problem_type().as_str(), "https://api.example.com/problems/quota-exceeded");
/// assert_eq!(problem.title(), Some("Request quota exceeded"));
/// assert_eq!(catalog.kind_of(&problem), Some(ProblemKind::QuotaExceeded));
/// # Ok::<(), tower_problem_details::InvalidUriRef>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProblemCatalog {
    base: Arc<str>,
    /// The type URIs of every kind, in [`ProblemKind::ALL`] order, made once: `None` under the
    /// default base, whose URIs are literals.
    types: Option<Arc<[UriRef]>>,
}

impl ProblemCatalog {
    /// The default base URI.
    pub const DEFAULT_BASE: &'static str = "/problems/";

    /// A catalog whose type URIs start with `base`.
    ///
    /// # Errors
    ///
    /// Fails when `base` followed by a slug is not a URI reference. (Slugs are lowercase
    /// letters and `-`, so one that works for a slug works for all.)
    pub fn new(base: &str) -> Result<Self, InvalidUriRef> {
        let types = ProblemKind::ALL
            .iter()
            .map(|kind| UriRef::try_from(format!("{base}{}", kind.slug())))
            .collect::<Result<Arc<[UriRef]>, _>>()?;
        let types = (base != Self::DEFAULT_BASE).then_some(types);
        Ok(ProblemCatalog {
            base: base.into(),
            types,
        })
    }

    /// The base URI.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The type URI of `kind`.
    pub fn type_uri(&self, kind: ProblemKind) -> UriRef {
        match &self.types {
            Some(types) => types[kind.index()].clone(),
            None => UriRef::from_checked_static(kind.default_type()),
        }
    }

    /// A problem of `kind`: its type URI, status and default title.
    pub fn problem(&self, kind: ProblemKind) -> Problem {
        Problem::new(kind.status())
            .with_type(self.type_uri(kind))
            .with_title(kind.title())
    }

    /// The kind of a problem whose type URI belongs to this catalog.
    pub fn kind_of(&self, problem: &Problem) -> Option<ProblemKind> {
        let slug = problem.problem_type().as_str().strip_prefix(&*self.base)?;
        ProblemKind::from_slug(slug)
    }
}

impl Default for ProblemCatalog {
    fn default() -> Self {
        ProblemCatalog {
            base: Self::DEFAULT_BASE.into(),
            types: None,
        }
    }
}

impl fmt::Debug for ProblemCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProblemCatalog")
            .field("base", &&*self.base)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_round_trip_and_titles_are_set() {
        assert_eq!(ProblemKind::ALL.len(), 16);
        for &kind in ProblemKind::ALL {
            assert_eq!(ProblemKind::from_slug(kind.slug()), Some(kind));
            assert!(!kind.title().is_empty());
            assert!(kind.status().is_client_error() || kind.status().is_server_error());
        }
    }

    #[test]
    fn the_catalog_matches_design_statuses() {
        let expected = [
            ("idempotency-key-missing", 400),
            ("idempotency-key-invalid", 400),
            ("idempotency-key-in-use", 409),
            ("idempotency-key-reused", 422),
            ("idempotency-result-unavailable", 409),
            ("payload-too-large", 413),
            ("idempotency-store-unavailable", 503),
            ("quota-exceeded", 429),
            ("rate-limit-store-unavailable", 503),
            ("invalid-cursor", 400),
            ("invalid-page-size", 400),
            ("api-version-sunset", 410),
            ("validation-failed", 422),
            ("unauthorized", 401),
            ("not-found", 404),
            ("internal", 500),
        ];
        let actual: Vec<_> = ProblemKind::ALL
            .iter()
            .map(|k| (k.slug(), k.status().as_u16()))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn every_slug_is_documented() {
        let docs = include_str!("../docs/problems.md");
        for &kind in ProblemKind::ALL {
            assert!(
                docs.contains(&format!("## `{}`", kind.slug())),
                "docs/problems.md has no section for {kind}"
            );
        }
    }

    #[test]
    fn the_default_type_uris_are_the_default_base_and_the_slug() {
        let default = ProblemCatalog::default();
        // Built like any other base, but from literals.
        let built = ProblemCatalog::new(ProblemCatalog::DEFAULT_BASE).expect("valid");
        let other = ProblemCatalog::new("https://example.com/p/").expect("valid");
        for &kind in ProblemKind::ALL {
            let uri = default.type_uri(kind);
            assert_eq!(uri.as_str(), format!("/problems/{}", kind.slug()));
            assert_eq!(UriRef::try_from(uri.as_str()), Ok(uri.clone()));
            assert_eq!(built.type_uri(kind), uri);
            assert_eq!(
                other.type_uri(kind).as_str(),
                format!("https://example.com/p/{kind}")
            );
        }
    }

    #[test]
    fn the_docs_give_every_slug_its_status_and_grpc_code() {
        let docs = include_str!("../docs/problems.md");
        for &kind in ProblemKind::ALL {
            let section = format!(
                "## `{}`\n**{} · gRPC `{}`.**",
                kind.slug(),
                kind.status().as_u16(),
                kind.grpc_code()
            );
            assert!(docs.contains(&section), "docs/problems.md: no {section:?}");
        }
    }

    #[test]
    fn bases_are_validated() {
        assert!(ProblemCatalog::new("https://example.com/problems/").is_ok());
        assert!(ProblemCatalog::new("https://example.com/problems#").is_ok());
        assert!(ProblemCatalog::new("urn:example:problem:").is_ok());
        assert!(ProblemCatalog::new("https://exa mple.com/").is_err());
        assert!(ProblemCatalog::new("https://example.com/#a#").is_err());
    }

    #[test]
    fn kind_of_only_recognises_its_own_base() {
        let a = ProblemCatalog::default();
        let b = ProblemCatalog::new("https://example.com/p/").expect("valid");
        let p = a.problem(ProblemKind::NotFound);
        assert_eq!(a.kind_of(&p), Some(ProblemKind::NotFound));
        assert_eq!(b.kind_of(&p), None);
    }
}
