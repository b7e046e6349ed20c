//! `Idempotency-Key` as a [`tower`](https://docs.rs/tower) layer: two identical requests
//! with one key run the handler once, however they race.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_idempotency::{IdempotencyLayer, MemoryStore, RequestBody, Scope};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Keys are kept per caller: here the tenant an auth layer put into the extensions.
//! #[derive(Clone)]
//! struct Tenant(String);
//! let scope = Scope::from_fn(|parts| parts.extensions.get::<Tenant>().map(|t| t.0.clone()));
//!
//! let service = ServiceBuilder::new()
//!     .layer(IdempotencyLayer::new(MemoryStore::new(), scope).require_key())
//!     // The handler reads a `RequestBody`: the bytes the layer read to fingerprint the request.
//!     .service(service_fn(|_request: Request<RequestBody<Full<Bytes>>>| async {
//!         let mut response = Response::new(Full::<Bytes>::from("order created"));
//!         *response.status_mut() = StatusCode::CREATED;
//!         Ok::<_, Infallible>(response)
//!     }));
//!
//! let request = || {
//!     let mut request = Request::post("/orders")
//!         .header("idempotency-key", "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")
//!         .body(Full::<Bytes>::from(r#"{"sku":"A1"}"#))
//!         .unwrap();
//!     request.extensions_mut().insert(Tenant("acme".into()));
//!     request
//! };
//! let first = service.clone().oneshot(request()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::CREATED);
//!
//! // The retry is answered from the store: same status and body, marked as a replay.
//! let retry = service.clone().oneshot(request()).await.unwrap();
//! assert_eq!(retry.status(), StatusCode::CREATED);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! let body = retry.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "order created");
//! # }
//! ```
//!
//! # What it does
//!
//! For POST and PATCH requests (configurable) carrying an `Idempotency-Key`:
//!
//! 1. The key is parsed as an RFC 9651 String, or taken as it stands when it is unquoted
//!    visible ASCII without `"`, `,` or `;` (what most clients send); at most 255
//!    characters; one header line.
//! 2. The body is read (at most 1 MiB) and the request fingerprinted: SHA-256 over method,
//!    path and query, content type and body.
//! 3. The key, scoped to the caller ([`Scope`]), is **claimed** in the store in one atomic
//!    step. Exactly one of any number of concurrent requests wins and runs the handler.
//! 4. Others get the stored result replayed (original status, allow-listed headers, body,
//!    `Idempotent-Replayed: true`), 409 while the original is running, or 422 when the same
//!    key comes with a different request.
//! 5. The result is kept for 24 hours ([`OutcomePolicy`] decides which statuses); 5xx, an inner
//!    error, a panic or a dropped future release the claim so a retry runs again. A crashed
//!    holder blocks its key for at most its lease (60 s), never for the record lifetime.
//!
//! Every claim carries a [`FencingToken`]: completing and releasing are compare-and-set on it,
//! so a request whose lease ran out can never overwrite the result of the retry that took
//! over.
//!
//! # Every status the layer answers itself
//!
//! | status | problem `type` slug | when |
//! |---|---|---|
//! | 400 | `idempotency-key-missing` | the layer requires a key ([`IdempotencyLayer::require_key`]) and there is none |
//! | 400 | `idempotency-key-invalid` | several header lines, empty, too long, or malformed |
//! | 400 | (`about:blank`) | the request body could not be read |
//! | 401 | `unauthorized` | the [`Scope`] extractor found no caller |
//! | 409 | `idempotency-key-in-use` | the original is still running (with `Retry-After`) |
//! | 409 | `idempotency-result-unavailable` | the original completed but its response was streaming or too large to keep |
//! | 413 | `payload-too-large` | the request body exceeds the limit |
//! | 422 | `idempotency-key-reused` | the key was used for a different request |
//! | 500 | `internal` | the handler's response body failed while it was being kept |
//! | 503 | `idempotency-store-unavailable` | the store failed (with `Retry-After`); the handler did not run |
//!
//! Every other response is the handler's, or its replay. Each carries an
//! [`IdempotencyOutcome`] in its extensions, and each rejection an [`IdempotencyRejection`].
//!
//! # gRPC (tonic)
//!
//! The layer runs on a tonic 0.14 server (`Server::builder().layer(layer)`): gRPC calls are
//! POSTs, the key comes from `idempotency-key` metadata, and the handler reads a
//! [`RequestBody`], which tonic's router takes as it is. A unary reply is kept with its
//! trailers and replayed whole; a server stream goes through unbuffered and is never replayed.
//! The fingerprint covers the method path and the message bytes, and protobuf encoding is not
//! canonical: clients must resend the same bytes. With the `grpc` feature, rejections are
//! gRPC statuses (in flight `ABORTED`, reuse `INVALID_ARGUMENT`, store down `UNAVAILABLE`).
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::header::InvalidHeaderValue;
//! use http::{HeaderMap, HeaderName, Request, Response};
//! use http_body_util::{BodyExt, Empty, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_idempotency::{IdempotencyLayer, MemoryStore, RequestBody, Scope};
//! use tower_problem_details::ResponseBody;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let layer = IdempotencyLayer::new(MemoryStore::new(), Scope::header(HeaderName::from_static("x-tenant")))
//!     // A retry that arrives while the original's result is being kept waits for it.
//!     .wait_for_in_flight(Duration::from_secs(1));
//! // A unary gRPC handler's answer: one length-prefixed message, then `grpc-status` in the
//! // trailers. (On tonic the handler is `OrderServiceServer::new(…)`.)
//! let handler = service_fn(|_: Request<RequestBody<Full<Bytes>>>| async {
//!     let mut trailers = HeaderMap::new();
//!     trailers.insert("grpc-status", "0".parse()?);
//!     let message = Bytes::from_static(b"\0\0\0\0\x02\x08\x01");
//!     let mut response = Response::new(ResponseBody::<Empty<Bytes>>::with_trailers(message, Some(trailers)));
//!     response.headers_mut().insert("content-type", "application/grpc".parse()?);
//!     Ok::<_, InvalidHeaderValue>(response)
//! });
//! let service = ServiceBuilder::new().layer(layer).service(handler);
//! let call = || {
//!     Request::post("/orders.v1.OrderService/CreateOrder")
//!         .header("content-type", "application/grpc")
//!         .header("x-tenant", "acme")
//!         .header("idempotency-key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
//!         .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02\x0a\x00")))
//! };
//! let original = service.clone().oneshot(call()?).await?.into_body().collect().await?;
//! let retry = service.oneshot(call()?).await?;
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! let retry = retry.into_body().collect().await?;
//! assert_eq!(retry.trailers().map(|t| &t["grpc-status"]), Some(&"0".parse()?));
//! assert_eq!(retry.to_bytes(), original.to_bytes());
//! # Ok(())
//! # }
//! ```
//!
//! # Stores
//!
//! [`MemoryStore`] keeps claims in this process; [`RedisStore`] (feature `redis`) shares them
//! between instances, and so does `SqlStore` (features `postgres`, `sqlite`) in a table of the
//! service's own database, where a handler can also mark its key done inside its own
//! transaction (`SqlStore::commit_in_postgres`). Your own store implements [`IdempotencyStore`]; the `conformance`
//! feature's [`conformance`] suite checks that it keeps the contract.

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod body;
#[cfg(feature = "conformance")]
pub mod conformance;
mod guard;
mod key;
mod layer;
mod log;
mod policy;
mod rejection;
mod replay;
mod scope;
mod service;
mod store;

pub use body::{RequestBody, ResponseBody};
#[cfg(feature = "redis")]
pub use guardrail_store::redis::RedisBackend;
pub use guardrail_store::{StoreError, StoreErrorKind, StoreFuture};
pub use key::{
    DEFAULT_MAX_KEY_LEN, IDEMPOTENCY_KEY, KeyError, ScopedKey, parse_idempotency_key,
    parse_idempotency_key_value,
};
pub use layer::{
    DEFAULT_LEASE, DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_TTL,
    IdempotencyLayer, MAX_DURATION,
};
pub use policy::OutcomePolicy;
pub use rejection::IdempotencyRejection;
pub use replay::{DEFAULT_REPLAYED_HEADERS, IDEMPOTENT_REPLAYED};
pub use scope::Scope;
pub use service::{Idempotency, ResponseFuture};
pub use store::memory::{
    DEFAULT_MAX_BYTES, DEFAULT_SCOPE_SHARE_DIVISOR, ENTRY_OVERHEAD, MemoryStore, MemoryUsage,
};
#[cfg(feature = "redis")]
pub use store::redis::RedisStore;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use store::sql::{
    DEFAULT_SQL_TIMEOUT, DEFAULT_TABLE, POSTGRES_MIGRATION, SQLITE_MIGRATION, SWEEP_BATCH,
    SWEEP_MAX_BATCHES, SqlStore, Sweeper, is_outage,
};
pub use store::{
    Claim, Completion, Fenced, FencingToken, Fingerprint, IdempotencyStore, ScopeId, StoreKey,
    StoredResponse,
};

/// How the layer handled a request, put into the response extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyOutcome {
    /// The handler ran (the first request for its key, or a retry after a release).
    Executed,
    /// Answered from the store.
    Replayed,
    /// Refused by the layer; the [`IdempotencyRejection`] says why.
    Rejected,
    /// Not covered: another method, or no key on a layer that does not require one.
    NotApplicable,
}
