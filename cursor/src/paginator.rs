//! Paging settings and the parsing of `cursor` / `limit` from a request.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use serde::de::DeserializeOwned;
use tower_problem_details::{ProblemCatalog, ProblemKind, Rejection, Responder};

use crate::codec::CursorCodec;
use crate::error::{ConfigError, ConfigErrorKind, CursorError, CursorErrorKind, CursorRejection};
use crate::fingerprint::{QueryFingerprint, QueryFingerprintBuilder};
use crate::page::PageRequest;
use crate::position::Position;

/// The problem member that names why a cursor was refused (see [`CursorErrorKind::as_str`]).
pub const REASON_MEMBER: &str = "reason";

type FingerprintFn = dyn Fn(&Parts) -> QueryFingerprint + Send + Sync;

/// How a listing pages: the codec, the page-size limits, the parameter names, the links.
///
/// Used by [`CursorLayer`](crate::CursorLayer); also usable on its own (for example in a
/// GraphQL resolver) through [`page_request`](Self::page_request). Cheap to clone: clones
/// share the settings.
#[derive(Clone)]
pub struct Paginator {
    inner: Arc<Settings>,
}

#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) codec: CursorCodec,
    pub(crate) default_limit: u32,
    pub(crate) max_limit: u32,
    pub(crate) cursor_param: String,
    pub(crate) limit_param: String,
    pub(crate) link_base: String,
    pub(crate) prev_cursor: bool,
    pub(crate) catalog: ProblemCatalog,
    pub(crate) responder: Responder,
    fingerprint: Option<Arc<FingerprintFn>>,
}

impl Paginator {
    /// Pages with `codec`: `limit` defaults to 20 and may be at most 100; the parameters are
    /// named `cursor` and `limit`; links are relative; `prev_cursor` is left out of bodies.
    pub fn new(codec: CursorCodec) -> Self {
        Paginator {
            inner: Arc::new(Settings {
                codec,
                default_limit: 20,
                max_limit: 100,
                cursor_param: "cursor".to_owned(),
                limit_param: "limit".to_owned(),
                link_base: String::new(),
                prev_cursor: false,
                catalog: ProblemCatalog::default(),
                responder: Responder::default(),
                fingerprint: None,
            }),
        }
    }

    /// The page size used when the request names none, and the largest one accepted.
    ///
    /// # Errors
    ///
    /// Fails unless `1 <= default <= max < u32::MAX`.
    pub fn page_size(mut self, default: u32, max: u32) -> Result<Self, ConfigError> {
        if default == 0 || default > max || max == u32::MAX {
            return Err(ConfigError::new(ConfigErrorKind::PageSizeLimits));
        }
        let settings = Arc::make_mut(&mut self.inner);
        settings.default_limit = default;
        settings.max_limit = max;
        Ok(self)
    }

    /// Renames the cursor parameter (for example `page_token`, or `page[after]`).
    ///
    /// # Errors
    ///
    /// Fails for an empty name, a name with control characters, or the limit's name.
    pub fn cursor_param(mut self, name: &str) -> Result<Self, ConfigError> {
        check_param_name(name, &self.inner.limit_param)?;
        Arc::make_mut(&mut self.inner).cursor_param = name.to_owned();
        Ok(self)
    }

    /// Renames the page-size parameter (for example `page_size`).
    ///
    /// # Errors
    ///
    /// Fails for an empty name, a name with control characters, or the cursor's name.
    pub fn limit_param(mut self, name: &str) -> Result<Self, ConfigError> {
        check_param_name(name, &self.inner.cursor_param)?;
        Arc::make_mut(&mut self.inner).limit_param = name.to_owned();
        Ok(self)
    }

    /// Makes `Link` URLs absolute by prefixing `base` (for example
    /// `https://api.example.com`) to the request's path. Without it they are relative
    /// references, which RFC 8288 resolves against the request URI.
    ///
    /// # Errors
    ///
    /// Fails unless `base` is an absolute `http`/`https` URI without query or fragment.
    pub fn link_base(mut self, base: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::new(ConfigErrorKind::LinkBase(base.to_owned()));
        let uri: http::Uri = base.parse().map_err(|_| invalid())?;
        let http = matches!(uri.scheme_str(), Some("http" | "https"));
        if !http || uri.authority().is_none() || uri.query().is_some() || base.contains('#') {
            return Err(invalid());
        }
        Arc::make_mut(&mut self.inner).link_base = base.trim_end_matches('/').to_owned();
        Ok(self)
    }

    /// Also writes `prev_cursor` into page bodies (`null` when there is none). The `Link`
    /// header carries `rel="prev"` either way.
    #[must_use]
    pub fn prev_cursor(mut self, enabled: bool) -> Self {
        Arc::make_mut(&mut self.inner).prev_cursor = enabled;
        self
    }

    /// The catalog whose base URI the rejection problems' `type` uses.
    #[must_use]
    pub fn catalog(mut self, catalog: ProblemCatalog) -> Self {
        Arc::make_mut(&mut self.inner).catalog = catalog;
        self
    }

    /// The responder that renders the layer's rejections (by default `application/problem+json`,
    /// and Trailers-Only gRPC answers with `tower-problem-details`' `grpc` feature). The
    /// [`CursorRejection`] is put into the response extensions whatever it does.
    #[must_use]
    pub fn responder(mut self, responder: Responder) -> Self {
        Arc::make_mut(&mut self.inner).responder = responder;
        self
    }

    /// Replaces how a request's [`QueryFingerprint`] is computed.
    ///
    /// The default binds cursors to the path and every query parameter except the cursor and
    /// the limit. Replace it to add what the query string does not show (a tenant from the
    /// request extensions, a filter sent in a header) or to ignore parameters that do not
    /// change the listing.
    #[must_use]
    pub fn query_fingerprint<F>(mut self, fingerprint: F) -> Self
    where
        F: Fn(&Parts) -> QueryFingerprint + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.inner).fingerprint = Some(Arc::new(fingerprint));
        self
    }

    /// The codec.
    pub fn codec(&self) -> &CursorCodec {
        &self.inner.codec
    }

    /// Reads the page size and the cursor from a request.
    ///
    /// An absent or empty cursor starts from the first page. Only the request's query string
    /// is read, and its path (axum's `OriginalUri` when present, with the `axum` feature).
    ///
    /// # Errors
    ///
    /// [`CursorRejection::InvalidPageSize`] when the limit is not an integer in `1..=max` or
    /// is given twice; [`CursorRejection::InvalidCursor`] when the cursor is given twice or
    /// does not decode for this query.
    pub fn page_request<P: DeserializeOwned>(
        &self,
        parts: &Parts,
    ) -> Result<PageRequest<P>, CursorRejection> {
        let settings = &*self.inner;
        let path = original_path(parts);
        let params = QueryParams::parse(parts.uri.query().unwrap_or(""), settings)?;
        let limit = match params.limit.as_deref() {
            None => settings.default_limit,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=settings.max_limit).contains(limit))
                .ok_or(CursorRejection::InvalidPageSize {
                    max: settings.max_limit,
                })?,
        };
        let fingerprint = match &settings.fingerprint {
            Some(fingerprint) => fingerprint(parts),
            None => params.fingerprint.path(path).finish(),
        };
        let position = self.position(params.cursor.as_deref(), &fingerprint)?;
        Ok(PageRequest::new(
            limit,
            position,
            fingerprint,
            self.clone(),
            path.to_owned(),
            params.kept,
        ))
    }

    /// The rejection of a refused request: 400 `invalid-cursor` (with a `reason` member) or
    /// 400 `invalid-page-size` (with the accepted range), naming the REST parameters. The
    /// layer renders it with its responder and puts `error` into the response extensions.
    pub fn rejection(&self, error: &CursorRejection) -> Rejection {
        let settings = &*self.inner;
        self.rejection_naming(error, &settings.cursor_param, &settings.limit_param)
    }

    /// The rejection of a refused gRPC page request ([`grpc_page_request`]), naming the AIP-158
    /// fields: `INVALID_ARGUMENT` on gRPC. Turn it into the handler's `tonic::Status` with
    /// [`Rejection::grpc_code`], [`Rejection::grpc_message`] and
    /// [`Rejection::grpc_status_details`] (feature `grpc`).
    ///
    /// [`grpc_page_request`]: Self::grpc_page_request
    pub fn grpc_rejection(&self, error: &CursorRejection) -> Rejection {
        self.rejection_naming(error, "page_token", "page_size")
    }

    fn rejection_naming(&self, error: &CursorRejection, cursor: &str, limit: &str) -> Rejection {
        let catalog = &self.inner.catalog;
        let mut rejection;
        // The member names below are not standard members, so inserting them cannot fail.
        match error {
            CursorRejection::InvalidCursor(error) => {
                rejection = catalog
                    .rejection(ProblemKind::InvalidCursor)
                    .with_detail(format!(
                        "{error}; restart pagination without the `{cursor}` parameter"
                    ));
                let _ = rejection
                    .problem_mut()
                    .insert_extension(REASON_MEMBER, error.kind().as_str());
            }
            CursorRejection::InvalidPageSize { max } => {
                rejection = catalog
                    .rejection(ProblemKind::InvalidPageSize)
                    .with_detail(format!("`{limit}` must be an integer from 1 to {max}"));
                let problem = rejection.problem_mut();
                let _ = problem.insert_extension("parameter", limit.to_owned());
                let _ = problem.insert_extension("minimum", 1);
                let _ = problem.insert_extension("maximum", *max);
            }
        }
        rejection
    }

    /// Reads an AIP-158 page request of a gRPC list method: `page_size` (0 asks for the
    /// default, above the maximum is lowered to it, below 0 is refused) and `page_token` (empty
    /// for the first page; otherwise a token of this paginator's
    /// [`Page::next_cursor`](crate::Page::next_cursor), sent back as the response's
    /// `next_page_token`).
    ///
    /// Tokens are bound to `method` (the full gRPC path, such as
    /// `/orders.v1.OrderService/ListOrders`) and to the filters in `query` (give it every
    /// request field that changes the result, as for REST), so a token of one query is refused by
    /// another. Tokens are the same signed cursors as REST's.
    ///
    /// # Errors
    ///
    /// [`CursorRejection::InvalidPageSize`] for a negative `page_size`,
    /// [`CursorRejection::InvalidCursor`] when the token does not decode for this query; give it
    /// to [`grpc_rejection`](Self::grpc_rejection).
    pub fn grpc_page_request<P: DeserializeOwned>(
        &self,
        method: &str,
        page_size: i32,
        page_token: &str,
        query: QueryFingerprintBuilder,
    ) -> Result<PageRequest<P>, CursorRejection> {
        let settings = &*self.inner;
        let limit = match u32::try_from(page_size) {
            Err(_) => {
                return Err(CursorRejection::InvalidPageSize {
                    max: settings.max_limit,
                });
            }
            Ok(0) => settings.default_limit,
            Ok(size) => size.min(settings.max_limit),
        };
        let fingerprint = query.path(method).finish();
        let position = self.position(Some(page_token), &fingerprint)?;
        Ok(PageRequest::new(
            limit,
            position,
            fingerprint,
            self.clone(),
            method.to_owned(),
            String::new(),
        ))
    }

    /// The position a token carries: none for an absent or empty token (the first page).
    fn position<P: DeserializeOwned>(
        &self,
        token: Option<&str>,
        fingerprint: &QueryFingerprint,
    ) -> Result<Option<Position<P>>, CursorRejection> {
        match token {
            None | Some("") => Ok(None),
            Some(token) => self
                .inner
                .codec
                .decode(token, fingerprint)
                .map(Some)
                .map_err(CursorRejection::InvalidCursor),
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner
    }
}

impl fmt::Debug for Paginator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &*self.inner;
        f.debug_struct("Paginator")
            .field("codec", &s.codec)
            .field("default_limit", &s.default_limit)
            .field("max_limit", &s.max_limit)
            .field("cursor_param", &s.cursor_param)
            .field("limit_param", &s.limit_param)
            .field("link_base", &s.link_base)
            .field("prev_cursor", &s.prev_cursor)
            .field("catalog", &s.catalog)
            .field(
                "query_fingerprint",
                &format_args!(
                    "{}",
                    if s.fingerprint.is_some() {
                        "<fn>"
                    } else {
                        "path and query"
                    }
                ),
            )
            .finish()
    }
}

/// The path the client asked for: under axum's `Router::nest` the request URI has lost the
/// nest prefix, which links must keep and fingerprints must tell apart.
fn original_path(parts: &Parts) -> &str {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get() {
        return uri.path();
    }
    parts.uri.path()
}

fn check_param_name(name: &str, other: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name == other || name.chars().any(char::is_control) {
        return Err(ConfigError::new(ConfigErrorKind::ParameterName(
            name.to_owned(),
        )));
    }
    Ok(())
}

/// The paging parameters of one query string, and what the rest of it binds the cursor to.
struct QueryParams {
    cursor: Option<String>,
    limit: Option<String>,
    /// The raw query without the cursor parameter, kept verbatim for links.
    kept: String,
    fingerprint: QueryFingerprintBuilder,
}

impl QueryParams {
    fn parse(query: &str, settings: &Settings) -> Result<Self, CursorRejection> {
        let mut params = QueryParams {
            cursor: None,
            limit: None,
            kept: String::with_capacity(query.len()),
            fingerprint: QueryFingerprint::builder(),
        };
        for segment in query.split('&').filter(|segment| !segment.is_empty()) {
            let (name, value) = form_urlencoded::parse(segment.as_bytes())
                .next()
                .expect("a non-empty segment yields one pair");
            if name == settings.cursor_param {
                if params.cursor.replace(value.into_owned()).is_some() {
                    return Err(CursorRejection::InvalidCursor(CursorError::new(
                        CursorErrorKind::Malformed,
                    )));
                }
                continue;
            }
            if name == settings.limit_param {
                if params.limit.replace(value.into_owned()).is_some() {
                    return Err(CursorRejection::InvalidPageSize {
                        max: settings.max_limit,
                    });
                }
            } else {
                params.fingerprint = params.fingerprint.param(name, value);
            }
            if !params.kept.is_empty() {
                params.kept.push('&');
            }
            params.kept.push_str(segment);
        }
        Ok(params)
    }
}
