//! The service's problems: the shared catalog's types, plus the few this API adds, all under
//! the catalog's base URI so that a client reads every `type` the same way; the one error
//! type handlers return; and the documentation page each type URI leads to (RFC 9457
//! §3.1.1), served at `GET /problems/{slug}`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::response::{Html, IntoResponse, Response};
use http::header::CONNECTION;
use http::{HeaderValue, StatusCode};
use tower_problem_details::{
    GrpcCode, Problem, ProblemCatalog, ProblemKind, Protocol, Rejection, Responder, UriRef,
    ValidationErrors,
};

use crate::db::{DbError, Failure, failure};

/// A problem type this service adds to the shared catalog.
#[derive(Clone, Copy, Debug)]
pub struct ServiceProblem {
    /// The slug after the catalog's base URI.
    pub slug: &'static str,
    /// Its one status.
    pub status: StatusCode,
    /// Its title.
    pub title: &'static str,
    /// What it means and what the client should do, for its documentation page.
    pub description: &'static str,
}

/// The problem types this service adds to the shared catalog.
pub const SERVICE_PROBLEMS: &[ServiceProblem] = &[
    ServiceProblem {
        slug: MALFORMED_REQUEST,
        status: StatusCode::BAD_REQUEST,
        title: "Request body is not valid JSON",
        description: "The body is not JSON, or is ambiguous JSON: an object repeats a key \
            (at any depth). The `errors` member says where. Send one value per key.",
    },
    ServiceProblem {
        slug: AMBIGUOUS_REQUEST,
        status: StatusCode::BAD_REQUEST,
        title: "Request header repeated",
        description: "A header that must appear once (`Authorization`) was sent on several \
            lines. The service does not guess which one was meant: send it once.",
    },
    ServiceProblem {
        slug: UNSUPPORTED_MEDIA_TYPE,
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        title: "Request body must be application/json",
        description: "The request has a body that is not declared as `application/json`. \
            Send `Content-Type: application/json`.",
    },
    ServiceProblem {
        slug: ORDER_NOT_CANCELLABLE,
        status: StatusCode::CONFLICT,
        title: "Order can no longer be cancelled",
        description: "Only pending orders can be cancelled; this one is not pending (any \
            more). Read the order to see its status.",
    },
    ServiceProblem {
        slug: REQUEST_TIMEOUT,
        status: StatusCode::REQUEST_TIMEOUT,
        title: "Request not received in time",
        description: "The client stopped sending its request body for longer than the \
            service waits, or was still sending it at the request deadline. The request \
            was not processed and the connection is closed. Retry (with the same \
            `Idempotency-Key`).",
    },
    ServiceProblem {
        slug: DEADLINE_EXCEEDED,
        status: StatusCode::SERVICE_UNAVAILABLE,
        title: "Request deadline exceeded",
        description: "The request did not finish within the service's deadline; its work \
            was cancelled, in the database too. Retry after `Retry-After` seconds, with the \
            same `Idempotency-Key`: an order that was committed before the deadline is \
            returned, not placed twice.",
    },
    ServiceProblem {
        slug: DATABASE_UNAVAILABLE,
        status: StatusCode::SERVICE_UNAVAILABLE,
        title: "Database unavailable",
        description: "The database does not answer, or every connection to it is busy. \
            Nothing was changed. Retry after `Retry-After` seconds.",
    },
    ServiceProblem {
        slug: METHOD_NOT_ALLOWED,
        status: StatusCode::METHOD_NOT_ALLOWED,
        title: "Request method not allowed here",
        description: "The path exists but does not support this method (any method \
            outside RFC 9110's set included). The `Allow` header names the methods it \
            supports.",
    },
    ServiceProblem {
        slug: NOT_READY,
        status: StatusCode::SERVICE_UNAVAILABLE,
        title: "Service not ready",
        description: "`GET /ready`: a dependency (the database, Redis) does not answer \
            within a second. The `detail` names it.",
    },
];

/// 400: the body could not be parsed as JSON, or repeats an object key.
pub const MALFORMED_REQUEST: &str = "malformed-request";
/// 400: a header that must appear once was repeated.
pub const AMBIGUOUS_REQUEST: &str = "ambiguous-request";
/// 415: the body was not declared as `application/json`.
pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported-media-type";
/// 409: the order is not pending any more.
pub const ORDER_NOT_CANCELLABLE: &str = "order-not-cancellable";
/// 408: the client stalled while sending its body.
pub const REQUEST_TIMEOUT: &str = "request-timeout";
/// 503: the request deadline passed.
pub const DEADLINE_EXCEEDED: &str = "deadline-exceeded";
/// 503: the database does not answer or its pool is exhausted.
pub const DATABASE_UNAVAILABLE: &str = "database-unavailable";
/// 405: a method the path does not support.
pub const METHOD_NOT_ALLOWED: &str = "method-not-allowed";
/// 503: a dependency (database, Redis) does not answer.
pub const NOT_READY: &str = "not-ready";

/// How soon the service's 503s ask to be retried (`Retry-After`, in whole seconds as
/// [`retry_after_seconds`](tower_problem_details::retry_after_seconds) rounds it).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The `ErrorInfo.domain` of every gRPC rejection the service sends (AIP-193: a globally
/// unique name the service owns).
pub const GRPC_DOMAIN: &str = "orders.api-guardrails.dev";

/// Builds every problem of the service, and renders it for the protocol of the request: as
/// `application/problem+json` on HTTP and as a `grpc-status` with `google.rpc.Status` details
/// on gRPC.
#[derive(Clone, Debug)]
pub struct Problems {
    catalog: ProblemCatalog,
    responder: Responder,
}

impl Default for Problems {
    fn default() -> Self {
        Problems {
            catalog: ProblemCatalog::default(),
            responder: Responder::standard(GRPC_DOMAIN),
        }
    }
}

impl Problems {
    /// The shared catalog, for the guardrail layers.
    pub fn catalog(&self) -> &ProblemCatalog {
        &self.catalog
    }

    /// The one responder every guardrail layer renders its rejections with.
    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// `rejection`, rendered for `protocol`.
    pub fn reject(&self, rejection: Rejection, protocol: Protocol) -> Response {
        self.responder.respond(rejection, protocol).map(Body::from)
    }

    /// A rejection of the catalog's `kind`.
    pub fn rejection(&self, kind: ProblemKind) -> Rejection {
        self.catalog.rejection(kind)
    }

    /// A problem of the shared catalog.
    pub fn kind(&self, kind: ProblemKind) -> Problem {
        self.catalog.problem(kind)
    }

    /// A problem of the service's own types (one of [`SERVICE_PROBLEMS`]).
    pub fn service(&self, slug: &'static str) -> Problem {
        let found = SERVICE_PROBLEMS.iter().find(|p| p.slug == slug);
        let (status, title) = found.map_or((StatusCode::BAD_REQUEST, "Bad request"), |p| {
            (p.status, p.title)
        });
        let type_uri = UriRef::try_from(format!("{}{slug}", self.catalog.base()))
            .unwrap_or_else(|_| self.catalog.type_uri(ProblemKind::Internal));
        Problem::new(status).with_type(type_uri).with_title(title)
    }

    /// A 503 of the service's own types, with `Retry-After` (`RetryInfo` on gRPC).
    pub fn unavailable(
        &self,
        slug: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Rejection {
        Rejection::new(self.service(slug).with_detail(detail)).with_retry_after(RETRY_AFTER)
    }

    /// 503 `deadline-exceeded` (`DEADLINE_EXCEEDED` on gRPC): the request's work was
    /// cancelled at its deadline.
    pub fn deadline_exceeded(&self, protocol: Protocol) -> Response {
        let rejection = self
            .unavailable(
                DEADLINE_EXCEEDED,
                "The request did not finish in time and was cancelled.",
            )
            .with_grpc_code(GrpcCode::DeadlineExceeded);
        self.reject(rejection, protocol)
    }

    /// 408 `request-timeout`, closing the connection (the rest of the body is not read); on
    /// gRPC `DEADLINE_EXCEEDED`, and the stream is reset with the rest of its body unread.
    pub fn request_timeout(&self, detail: &'static str, protocol: Protocol) -> Response {
        let rejection = Rejection::new(self.service(REQUEST_TIMEOUT).with_detail(detail));
        let mut response = self.reject(rejection, protocol);
        if protocol == Protocol::Http {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// What a database error means for the request that met it ([`failure`]), logged with
    /// the request id: 503 `database-unavailable` or `deadline-exceeded`, or 500 `internal`
    /// (which says nothing of the cause).
    pub fn database(&self, error: &DbError) -> Rejection {
        match failure(error) {
            Failure::Unavailable => {
                tracing::warn!(%error, "database unavailable");
                self.unavailable(
                    DATABASE_UNAVAILABLE,
                    "The database does not answer; nothing was changed.",
                )
            }
            Failure::Deadline => {
                tracing::warn!(%error, "database statement cancelled at the deadline");
                self.unavailable(
                    DEADLINE_EXCEEDED,
                    "The request did not finish in time and was cancelled.",
                )
                .with_grpc_code(GrpcCode::DeadlineExceeded)
            }
            Failure::Internal => {
                tracing::error!(%error, "database error");
                self.rejection(ProblemKind::Internal)
            }
        }
    }

    /// 422 `validation-failed` with the JSON Pointers of what is wrong.
    pub fn validation(&self, errors: ValidationErrors) -> Response {
        let rejection = self.invalid(errors, "The request body does not describe a valid order.");
        self.reject(rejection, Protocol::Http)
    }

    /// The rejection of [`validation`](Self::validation), for either protocol
    /// (`INVALID_ARGUMENT` on gRPC), with its own `detail`.
    pub fn invalid(&self, errors: ValidationErrors, detail: &'static str) -> Rejection {
        let problem = self.catalog.validation_failed(errors).with_detail(detail);
        self.catalog.rejection_of(problem)
    }

    /// 404 `not-found` for an order id (echoed only when it has an order id's shape, so a
    /// client cannot make the answer as large as its request).
    pub fn order_not_found(&self, id: &str) -> Response {
        self.reject(self.order_missing(id), Protocol::Http)
    }

    /// The rejection of [`order_not_found`](Self::order_not_found), for either protocol.
    pub fn order_missing(&self, id: &str) -> Rejection {
        let rejection = self.rejection(ProblemKind::NotFound);
        if crate::order::is_order_id(id) {
            rejection.with_detail(format!("No order {id:?} exists for this API key."))
        } else {
            rejection.with_detail("No such order: order ids are `ord_` and 32 hex digits.")
        }
    }

    /// 500 `internal`, saying nothing of the cause (which is logged with the request id).
    pub fn internal(&self) -> Response {
        self.kind(ProblemKind::Internal).into_response::<Body>()
    }
}

/// What a handler fails with: a problem, already built, or a database error, answered by what
/// it means ([`failure`]). Handlers return `Result<_, ApiError>` and use `?`.
#[derive(Debug)]
pub enum ApiError {
    /// A response to send as it is (a problem).
    Problem(Response),
    /// A database error.
    Database(DbError),
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        ApiError::Database(error)
    }
}

impl From<Response> for ApiError {
    fn from(response: Response) -> Self {
        ApiError::Problem(response)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self {
            ApiError::Problem(response) => return response,
            ApiError::Database(error) => error,
        };
        // The request id ties the log line to the problem's `request_id` member.
        let problems = Problems::default();
        problems.reject(problems.database(&error), Protocol::Http)
    }
}

/// The answer to a method a path does not support (axum adds `Allow`).
pub async fn method_not_allowed() -> Response {
    Problems::default()
        .service(METHOD_NOT_ALLOWED)
        .with_detail("This path does not support this method; see the Allow header.")
        .into_response::<Body>()
}

/// The answer to a path the service does not have.
pub async fn no_such_resource() -> Response {
    Problems::default()
        .kind(ProblemKind::NotFound)
        .with_detail("No such resource.")
        .into_response::<Body>()
}

/// The shared catalog's documentation: one section per type, headed by its slug.
const CATALOG_DOCS: &str = include_str!("../../../problem-details/docs/problems.md");

/// `GET /problems/{slug}`: the page a problem's type URI leads to.
pub async fn page(Path(slug): Path<String>) -> Response {
    match describe(&slug) {
        Some((status, title, description)) => {
            Html(render_page(&slug, status, title, &description)).into_response()
        }
        None => Problems::default()
            .kind(ProblemKind::NotFound)
            .with_detail("No such problem type.")
            .into_response::<Body>(),
    }
}

/// The status, title and description of every slug the service can answer.
pub fn describe(slug: &str) -> Option<(StatusCode, &'static str, String)> {
    if let Some(p) = SERVICE_PROBLEMS.iter().find(|p| p.slug == slug) {
        return Some((p.status, p.title, p.description.to_owned()));
    }
    let kind = ProblemKind::from_slug(slug)?;
    Some((kind.status(), kind.title(), catalog_section(kind.slug())))
}

/// Every slug the service can answer, shared catalog first.
pub fn slugs() -> impl Iterator<Item = &'static str> {
    ProblemKind::ALL
        .iter()
        .map(|kind| kind.slug())
        .chain(SERVICE_PROBLEMS.iter().map(|p| p.slug))
}

fn catalog_section(slug: &str) -> String {
    let heading = format!("## `{slug}`\n");
    CATALOG_DOCS
        .split_once(&heading)
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .map_or_else(String::new, |text| text.trim().to_owned())
}

fn render_page(slug: &str, status: StatusCode, title: &str, description: &str) -> String {
    let mut html = String::with_capacity(1024);
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title></head><body>\n<h1>{title}</h1>\n\
         <p>Problem type <code>/problems/{slug}</code>, status <strong>{status}</strong>.</p>\n<p>",
        title = escape(title),
        slug = escape(slug),
        status = status.as_u16(),
    );
    html.push_str(&inline_markdown(description));
    html.push_str("</p>\n</body></html>\n");
    html
}

/// The little markdown the descriptions use: `code` and **bold**; everything escaped.
fn inline_markdown(text: &str) -> String {
    let escaped = escape(text);
    let mut out = String::with_capacity(escaped.len());
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            for (j, piece) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<strong>{piece}</strong>");
                } else {
                    out.push_str(piece);
                }
            }
        }
    }
    out.replace("\n\n", "</p>\n<p>")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slug_has_a_page_with_a_description() {
        for slug in slugs() {
            let (_, title, description) = describe(slug).expect("described");
            assert!(!title.is_empty(), "{slug}");
            assert!(description.len() > 20, "{slug}: {description:?}");
        }
        assert!(describe("no-such-type").is_none());
    }

    #[test]
    fn pages_escape_their_text() {
        let html = render_page("x", StatusCode::BAD_REQUEST, "<t>", "a `<b>` **c** & d");
        assert!(html.contains("<h1>&lt;t&gt;</h1>"));
        assert!(html.contains("a <code>&lt;b&gt;</code> <strong>c</strong> &amp; d"));
    }
}
