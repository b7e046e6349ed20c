//! [`Rejection`]: a guardrail's refusal of a request, as data, and the protocol it is
//! rendered for.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use smallvec::SmallVec;

use crate::catalog::{ProblemCatalog, ProblemKind};
use crate::grpc::GrpcCode;
use crate::problem::Problem;
use crate::response::retry_after_seconds;

/// The protocol a request speaks, and so the form its rejection takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// Plain HTTP: rejections are `application/problem+json` documents.
    #[default]
    Http,
    /// gRPC (a `content-type` starting with `application/grpc`): rejections are
    /// Trailers-Only answers with a `grpc-status`.
    Grpc,
}

impl Protocol {
    /// The protocol of a request with these headers.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use tower_problem_details::Protocol;
    ///
    /// let mut headers = HeaderMap::new();
    /// assert_eq!(Protocol::of(&headers), Protocol::Http);
    /// headers.insert("content-type", "application/grpc+proto".parse()?);
    /// assert_eq!(Protocol::of(&headers), Protocol::Grpc);
    /// # Ok::<(), http::header::InvalidHeaderValue>(())
    /// ```
    pub fn of(headers: &HeaderMap) -> Self {
        let grpc = headers.get(CONTENT_TYPE).is_some_and(|value| {
            let value = value.as_bytes();
            value.len() >= GRPC.len() && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        });
        if grpc { Protocol::Grpc } else { Protocol::Http }
    }

    /// The protocol of a request: the `Protocol` a server put in its extensions (one that
    /// knows what each listener speaks, so that a client cannot choose by its `content-type`),
    /// else [`Protocol::of`] its headers. Every guardrail layer of the workspace asks this.
    ///
    /// ```
    /// use http::{Extensions, HeaderMap};
    /// use tower_problem_details::Protocol;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("content-type", "application/grpc".parse()?);
    /// let mut extensions = Extensions::new();
    /// assert_eq!(Protocol::detect(&extensions, &headers), Protocol::Grpc);
    /// // An HTTP listener's requests are HTTP, whatever they declare.
    /// extensions.insert(Protocol::Http);
    /// assert_eq!(Protocol::detect(&extensions, &headers), Protocol::Http);
    /// # Ok::<(), http::header::InvalidHeaderValue>(())
    /// ```
    pub fn detect(extensions: &http::Extensions, headers: &HeaderMap) -> Self {
        extensions
            .get::<Protocol>()
            .copied()
            .unwrap_or_else(|| Protocol::of(headers))
    }
}

const GRPC: &[u8] = b"application/grpc";

/// A quota a request went over, for gRPC's `google.rpc.QuotaFailure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaViolation {
    /// What the quota applies to (for the rate limiter, the policy's name).
    pub subject: Cow<'static, str>,
    /// How it was violated, for people.
    pub description: Cow<'static, str>,
}

/// A guardrail's refusal of a request, described as data: the problem (type, status, title,
/// detail, extension members), the headers to send with it, the delay after which a retry
/// may succeed, and the quotas it went over.
///
/// A [`Responder`](crate::Responder) renders it: as `application/problem+json` for HTTP and as
/// a Trailers-Only gRPC answer for gRPC requests (feature `grpc`). Every guardrail of the
/// workspace builds its refusals as a `Rejection`, so one responder shapes them all.
///
/// ```
/// use std::time::Duration;
/// use tower_problem_details::{Problem, ProblemCatalog, ProblemKind, Rejection};
///
/// let rejection = ProblemCatalog::default()
///     .rejection(ProblemKind::QuotaExceeded)
///     .with_detail("The quota of per-tenant is used up; retry in 2 s.")
///     .with_retry_after(Duration::from_millis(1500));
/// let response = rejection.into_http_response();
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "2");
/// let problem = Problem::from_json(response.body())?;
/// assert_eq!(problem.detail(), Some("The quota of per-tenant is used up; retry in 2 s."));
/// # Ok::<(), tower_problem_details::ParseError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    problem: Problem,
    kind: Option<ProblemKind>,
    grpc_code: Option<GrpcCode>,
    pub(crate) headers: HeaderMap,
    retry_after: Option<Duration>,
    // Inline: a rejection usually names at most one quota, and most name none.
    violations: SmallVec<[QuotaViolation; 1]>,
}

impl Rejection {
    /// A rejection with `problem`, outside the catalog: its gRPC code comes from the status.
    #[inline]
    pub fn new(problem: Problem) -> Self {
        Rejection {
            problem,
            kind: None,
            grpc_code: None,
            headers: HeaderMap::new(),
            retry_after: None,
            violations: SmallVec::new(),
        }
    }

    /// A rejection of the catalog's `kind`, with the problem `catalog` makes for it.
    #[inline]
    pub fn of_kind(catalog: &ProblemCatalog, kind: ProblemKind) -> Self {
        Rejection {
            kind: Some(kind),
            ..Rejection::new(catalog.problem(kind))
        }
    }

    /// Sets the gRPC code, for a rejection whose status maps to a less precise one (a 503
    /// that means the request's deadline passed is `DEADLINE_EXCEEDED`, not `UNAVAILABLE`).
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_problem_details::{GrpcCode, Problem, Rejection};
    ///
    /// let rejection = Rejection::new(Problem::new(StatusCode::SERVICE_UNAVAILABLE));
    /// assert_eq!(rejection.grpc_code(), GrpcCode::Unavailable);
    /// let rejection = rejection.with_grpc_code(GrpcCode::DeadlineExceeded);
    /// assert_eq!(rejection.grpc_code(), GrpcCode::DeadlineExceeded);
    /// ```
    #[must_use]
    #[inline]
    pub fn with_grpc_code(mut self, code: GrpcCode) -> Self {
        self.grpc_code = Some(code);
        self
    }

    /// Sets the problem's `detail`: what went wrong this time, for the client.
    #[must_use]
    #[inline]
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.problem = self.problem.with_detail(detail);
        self
    }

    /// Sets when a retry may succeed: `Retry-After` on HTTP (whole seconds, rounded up), and
    /// `RetryInfo` plus `grpc-retry-pushback-ms` on gRPC.
    #[must_use]
    #[inline]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Adds a header line to send with the rejection (as metadata on gRPC).
    #[must_use]
    #[inline]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Adds a quota the request went over (`QuotaFailure` on gRPC).
    #[must_use]
    #[inline]
    pub fn with_quota_violation(
        mut self,
        subject: impl Into<Cow<'static, str>>,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.violations.push(QuotaViolation {
            subject: subject.into(),
            description: description.into(),
        });
        self
    }

    /// The problem.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The problem, to change it (add an extension member, a translated title, …).
    #[inline]
    pub fn problem_mut(&mut self) -> &mut Problem {
        &mut self.problem
    }

    /// The catalog kind, for rejections made with [`of_kind`](Self::of_kind).
    pub fn kind(&self) -> Option<ProblemKind> {
        self.kind
    }

    /// The headers to send with the rejection.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// When a retry may succeed, if it may.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The quotas the request went over.
    pub fn quota_violations(&self) -> &[QuotaViolation] {
        &self.violations
    }

    /// The gRPC code: the one [set](Self::with_grpc_code), else the kind's, else the one for
    /// the status.
    pub fn grpc_code(&self) -> GrpcCode {
        match (self.grpc_code, self.kind) {
            (Some(code), _) => code,
            (None, Some(kind)) => kind.grpc_code(),
            (None, None) => GrpcCode::from_http_status(self.problem.status),
        }
    }

    /// The HTTP rendering: the problem as `application/problem+json` with `Cache-Control:
    /// no-store`, then `Retry-After` and the rejection's headers.
    #[inline]
    pub fn into_http_response(self) -> Response<Bytes> {
        let mut response = self.problem.into_response::<Bytes>();
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(wait)));
        }
        append(headers, self.headers);
        response
    }

    /// The response for `protocol` with the built-in renderings: [`into_http_response`]
    /// for HTTP, and for gRPC [`into_grpc_response`] with `grpc_domain` (without the `grpc`
    /// feature, gRPC requests get the HTTP rendering too).
    ///
    /// [`into_http_response`]: Self::into_http_response
    /// [`into_grpc_response`]: Self::into_grpc_response
    #[inline]
    pub fn into_response(self, protocol: Protocol, grpc_domain: &str) -> Response<Bytes> {
        match protocol {
            #[cfg(feature = "grpc")]
            Protocol::Grpc => self.into_grpc_response(grpc_domain),
            _ => {
                let _ = grpc_domain;
                self.into_http_response()
            }
        }
    }
}

/// Appends every line of `from` to `to`, keeping repeated lines.
pub(crate) fn append(to: &mut HeaderMap, from: HeaderMap) {
    if from.is_empty() {
        return;
    }
    let mut last = None;
    for (name, value) in from {
        if let Some(name) = name {
            last = Some(name);
        }
        if let Some(name) = &last {
            to.append(name.clone(), value);
        }
    }
}

impl ProblemCatalog {
    /// A rejection of `kind`: [`Rejection::of_kind`] with this catalog.
    #[inline]
    pub fn rejection(&self, kind: ProblemKind) -> Rejection {
        Rejection::of_kind(self, kind)
    }

    /// A rejection with `problem`, of the kind its type URI names in this catalog (if any),
    /// for problems that users configure.
    pub fn rejection_of(&self, problem: Problem) -> Rejection {
        Rejection {
            kind: self.kind_of(&problem),
            ..Rejection::new(problem)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_is_read_from_the_content_type() {
        let of = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            Protocol::of(&headers)
        };
        assert_eq!(of("application/grpc"), Protocol::Grpc);
        assert_eq!(of("Application/GRPC+proto"), Protocol::Grpc);
        assert_eq!(of("application/grpc-web"), Protocol::Grpc);
        assert_eq!(of("application/json"), Protocol::Http);
        assert_eq!(of("application/grp"), Protocol::Http);
        assert_eq!(Protocol::of(&HeaderMap::new()), Protocol::Http);
    }

    #[test]
    fn the_http_rendering_keeps_the_order_of_headers() {
        let rejection = ProblemCatalog::default()
            .rejection(ProblemKind::ApiVersionSunset)
            .with_retry_after(Duration::from_secs(30))
            .with_header(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("1"),
            )
            .with_header(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("2"),
            );
        let response = rejection.into_http_response();
        let names: Vec<_> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("")))
            .collect();
        assert_eq!(
            names,
            [
                ("content-type", "application/problem+json"),
                ("cache-control", "no-store"),
                ("retry-after", "30"),
                ("x-a", "1"),
                ("x-a", "2"),
            ]
        );
        assert_eq!(response.status(), 410);
    }

    #[test]
    fn codes_come_from_the_kind_or_else_the_status() {
        let catalog = ProblemCatalog::default();
        assert_eq!(
            catalog
                .rejection(ProblemKind::IdempotencyKeyInUse)
                .grpc_code(),
            GrpcCode::Aborted
        );
        let bare = Rejection::new(Problem::new(http::StatusCode::BAD_REQUEST));
        assert_eq!(bare.grpc_code(), GrpcCode::InvalidArgument);
    }
}
