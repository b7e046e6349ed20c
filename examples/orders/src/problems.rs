//! The service's problems: the shared catalog's types, plus the few this API adds, all under
//! the catalog's base URI so that a client reads every `type` the same way.

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use tower_problem_details::{Problem, ProblemCatalog, ProblemKind, UriRef, ValidationErrors};

/// The problem types this service adds to the shared catalog: `(slug, status, title)`.
pub const SERVICE_PROBLEMS: &[(&str, StatusCode, &str)] = &[
    (
        MALFORMED_REQUEST,
        StatusCode::BAD_REQUEST,
        "Request body is not valid JSON",
    ),
    (
        UNSUPPORTED_MEDIA_TYPE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Request body must be application/json",
    ),
    (
        ORDER_NOT_CANCELLABLE,
        StatusCode::CONFLICT,
        "Order can no longer be cancelled",
    ),
    (
        NOT_READY,
        StatusCode::SERVICE_UNAVAILABLE,
        "Service not ready",
    ),
];

/// 400: the body could not be parsed as JSON.
pub const MALFORMED_REQUEST: &str = "malformed-request";
/// 415: the body was not declared as `application/json`.
pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported-media-type";
/// 409: the order is not pending any more.
pub const ORDER_NOT_CANCELLABLE: &str = "order-not-cancellable";
/// 503: a dependency (database, Redis) does not answer.
pub const NOT_READY: &str = "not-ready";

/// Builds every problem response of the service.
#[derive(Clone, Debug, Default)]
pub struct Problems {
    catalog: ProblemCatalog,
}

impl Problems {
    /// Problems typed under `catalog`'s base URI.
    pub fn new(catalog: ProblemCatalog) -> Self {
        Problems { catalog }
    }

    /// The shared catalog, for the guardrail layers.
    pub fn catalog(&self) -> &ProblemCatalog {
        &self.catalog
    }

    /// A problem of the shared catalog.
    pub fn kind(&self, kind: ProblemKind) -> Problem {
        self.catalog.problem(kind)
    }

    /// A problem of the service's own types (one of [`SERVICE_PROBLEMS`]).
    pub fn service(&self, slug: &'static str) -> Problem {
        let (slug, status, title) = SERVICE_PROBLEMS
            .iter()
            .copied()
            .find(|(s, _, _)| *s == slug)
            .unwrap_or((slug, StatusCode::BAD_REQUEST, "Bad request"));
        let type_uri = UriRef::try_from(format!("{}{slug}", self.catalog.base()))
            .unwrap_or_else(|_| self.catalog.type_uri(ProblemKind::Internal));
        Problem::new(status).with_type(type_uri).with_title(title)
    }

    /// 422 `validation-failed` with the JSON Pointers of what is wrong.
    pub fn validation(&self, errors: ValidationErrors) -> Response {
        self.catalog
            .validation_failed(errors)
            .with_detail("The request body does not describe a valid order.")
            .into_response::<Body>()
    }

    /// 404 `not-found` for an order id.
    pub fn order_not_found(&self, id: &str) -> Response {
        self.kind(ProblemKind::NotFound)
            .with_detail(format!("No order {id:?} exists for this API key."))
            .into_response::<Body>()
    }

    /// 500 `internal`, saying nothing of the cause (which is logged with the request id).
    pub fn internal(&self) -> Response {
        self.kind(ProblemKind::Internal).into_response::<Body>()
    }
}
