//! [`ProblemLayer`]: the safety net that makes every error response a problem.
//!
//! Put it outermost (or just inside request-id and tracing layers). It
//!
//! - turns a bare 4xx/5xx response of the inner service (an empty body, or any content type
//!   other than `application/problem+json` / `+xml`) into a problem of the same status,
//!   keeping its other headers (`Allow`, `WWW-Authenticate`, `Retry-After`, …);
//! - keeps a short `text/plain` body of a 4xx response as the problem's `detail` (axum's
//!   extractor rejections are such bodies), and never copies anything from a 5xx body;
//! - turns a panic in the inner service (in `call` or while its future is polled) into a 500
//!   `internal` problem, without the panic message;
//! - gives every request an id: the `x-request-id` header when the client or an outer layer
//!   sent a usable one, else a generated UUID. The id is put in the request extensions as
//!   [`RequestId`] (and the request header), echoed in the response header, and written into
//!   every problem this layer produces (a `request_id` member, or `instance`).
//!
//! Responses that already are problems pass through untouched, so guardrails' own problems
//! (with their catalog types and extra members) reach the client as written.

mod future;
mod layer;
mod request_id;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::ProblemLayer;
pub use self::request_id::{REQUEST_ID_MEMBER, RequestId};
pub use self::service::ProblemService;
