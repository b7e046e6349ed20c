//! The rejections the layer answers itself, and the typed reasons it records.

use std::time::Duration;

use http::StatusCode;
use tower_problem_details::{Problem, ProblemCatalog, ProblemKind, Rejection};

use crate::key::KeyError;

/// Why the layer answered a request itself, put into the response extensions (with
/// [`IdempotencyOutcome::Rejected`](crate::IdempotencyOutcome::Rejected)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyRejection {
    /// 400 `idempotency-key-missing`: the layer requires a key and the request has none.
    KeyMissing,
    /// 400 `idempotency-key-invalid`.
    KeyInvalid(KeyError),
    /// 401 `unauthorized`: the scope extractor found no caller to scope the key to.
    ScopeMissing,
    /// 409 `idempotency-key-in-use`: the original request is still running.
    InFlight,
    /// 422 `idempotency-key-reused`: the key was used for a different request.
    Reused,
    /// 409 `idempotency-result-unavailable`: the original completed, but its response was
    /// streaming or too large to keep.
    ResultUnavailable,
    /// 413 `payload-too-large`.
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// 400: the request body could not be read.
    BodyUnreadable,
    /// 503 `idempotency-store-unavailable`: the store failed; the request was not run.
    StoreUnavailable,
    /// 500 `internal`: the handler's response body failed while it was being kept.
    ResponseBodyFailed,
}

/// The rejection for `reason`, with a retry delay when the client may come back.
pub(crate) fn rejection(
    catalog: &ProblemCatalog,
    reason: &IdempotencyRejection,
    retry_after: Option<Duration>,
) -> Rejection {
    let mut rejection = match reason {
        IdempotencyRejection::KeyMissing => catalog
            .rejection(ProblemKind::IdempotencyKeyMissing)
            .with_detail("This operation requires an Idempotency-Key header."),
        IdempotencyRejection::KeyInvalid(error) => catalog
            .rejection(ProblemKind::IdempotencyKeyInvalid)
            .with_detail(error.detail()),
        IdempotencyRejection::ScopeMissing => catalog
            .rejection(ProblemKind::Unauthorized)
            .with_detail("Idempotency keys are kept per caller, and this request has none."),
        IdempotencyRejection::InFlight => catalog
            .rejection(ProblemKind::IdempotencyKeyInUse)
            .with_detail("A request with this Idempotency-Key is still being processed; retry later to get its result."),
        IdempotencyRejection::Reused => catalog
            .rejection(ProblemKind::IdempotencyKeyReused)
            .with_detail("This Idempotency-Key was used for a different request (method, path, content type or body); use a new key."),
        IdempotencyRejection::ResultUnavailable => catalog
            .rejection(ProblemKind::IdempotencyResultUnavailable)
            .with_detail("The request with this Idempotency-Key completed, but its response cannot be replayed; it was not run again."),
        IdempotencyRejection::PayloadTooLarge { limit } => catalog
            .rejection(ProblemKind::PayloadTooLarge)
            .with_detail(format!("Request bodies of idempotent requests are limited to {limit} bytes.")),
        IdempotencyRejection::BodyUnreadable => Rejection::new(Problem::new(StatusCode::BAD_REQUEST))
            .with_detail("The request body could not be read."),
        IdempotencyRejection::StoreUnavailable => catalog
            .rejection(ProblemKind::IdempotencyStoreUnavailable)
            .with_detail("The idempotency store cannot be reached; the request was not processed."),
        IdempotencyRejection::ResponseBodyFailed => catalog.rejection(ProblemKind::Internal),
    };
    if let Some(wait) = retry_after {
        rejection = rejection.with_retry_after(wait);
    }
    rejection
}
