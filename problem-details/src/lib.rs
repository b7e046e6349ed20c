//! RFC 9457 problem details (`application/problem+json`) for tower, hyper and axum services.
//!
//! - [`Problem`]: the document, with a builder, a required status that is also the response
//!   status, `type`/`instance` as [`UriRef`]s (fragments and URNs kept), and extension members
//!   in insertion order.
//! - Writing with standard members first; reading as RFC 9457 §3.1 asks: a member of the wrong
//!   type is ignored, unknown members are kept, and no input makes it panic.
//! - [`ValidationErrors`]: the `errors` member of `{detail, pointer}` items with
//!   [`JsonPointer`]s.
//! - [`ProblemCatalog`] and [`ProblemKind`]: the workspace's stable problem types under a base
//!   URI of your choice, each documented in `docs/problems.md`.
//! - [`ProblemLayer`]: a tower middleware that turns bare 4xx/5xx responses and panics into
//!   problems and gives every request an id.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_problem_details::{Problem, ProblemCatalog, ProblemKind, ProblemLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let catalog = ProblemCatalog::new("https://api.example.com/problems/")?;
//! let handler_catalog = catalog.clone();
//!
//! let service = ServiceBuilder::new()
//!     .layer(ProblemLayer::new().catalog(catalog))
//!     .service_fn(move |request: Request<Full<Bytes>>| {
//!         let catalog = handler_catalog.clone();
//!         async move {
//!             let response: Response<Full<Bytes>> = match request.uri().path() {
//!                 // A handler answers with a problem of the catalog ...
//!                 "/orders/42" => catalog
//!                     .problem(ProblemKind::NotFound)
//!                     .with_detail("There is no order 42.")
//!                     .into_response(),
//!                 // ... or with a bare status, which the layer turns into a problem.
//!                 _ => Response::builder()
//!                     .status(StatusCode::METHOD_NOT_ALLOWED)
//!                     .header("allow", "GET")
//!                     .body(Full::default())?,
//!             };
//!             Ok::<_, http::Error>(response)
//!         }
//!     });
//!
//! let response = service.clone().oneshot(Request::new(Full::default())).await?;
//! assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! assert_eq!(response.headers()["allow"], "GET");
//! let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
//! let body = response.into_body().collect().await?.to_bytes();
//! let problem = Problem::from_json(&body)?;
//! assert_eq!(problem.title(), Some("Method Not Allowed"));
//! assert_eq!(problem.extension("request_id"), Some(&request_id.into()));
//!
//! let request = Request::get("/orders/42").body(Full::default())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(
//!     body,
//!     r#"{"type":"https://api.example.com/problems/not-found","title":"Resource not found","status":404,"detail":"There is no order 42."}"#
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `axum`: `axum::response::IntoResponse` for [`Problem`].
//! - `tracing`: [`ProblemLayer`] logs the panics it hides from clients.
//!
//! # Minimum supported Rust version
//!
//! 1.89.

mod catalog;
mod error;
mod json;
pub mod middleware;
mod problem;
mod response;
mod uri_ref;
mod validation;

pub use self::catalog::{ProblemCatalog, ProblemKind};
pub use self::error::{ExtensionError, ParseError, ParseErrorKind};
pub use self::json::APPLICATION_PROBLEM_JSON;
pub use self::middleware::{ProblemLayer, REQUEST_ID_MEMBER, RequestId};
pub use self::problem::Problem;
pub use self::uri_ref::{InvalidUriRef, UriRef};
pub use self::validation::{
    ERRORS_MEMBER, InvalidJsonPointer, JsonPointer, ValidationError, ValidationErrors,
};
