//! The handlers: one set for every API version, which the [`ApiVersion`] in the request
//! extensions turns into `/v1` or `/v2` JSON.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use tower_cursor::PageRequest;
use tower_idempotency::ScopedKey;
use tower_problem_details::{JsonPointer, ProblemKind, ValidationErrors};

use crate::AppState;
use crate::auth::Tenant;
use crate::db::{Cancelled, Inserted, OrderPosition};
use crate::json::parse_strict;
use crate::order::{Order, is_order_id};
use crate::problems::{ApiError, MALFORMED_REQUEST, ORDER_NOT_CANCELLABLE, UNSUPPORTED_MEDIA_TYPE};
use crate::representation::ApiVersion;

/// `POST /vN/orders`: places an order. The idempotency layer has already made sure this runs
/// once per key; the database's unique `(tenant, idempotency key)` covers a crash between the
/// commit and the layer's record.
///
/// # Errors
///
/// The request's problem ([`ApiError`]): a client mistake, or the database failing.
pub async fn create_order(
    State(app): State<Arc<AppState>>,
    Extension(version): Extension<ApiVersion>,
    Extension(tenant): Extension<Tenant>,
    key: Option<Extension<ScopedKey>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(app
            .problems
            .service(UNSUPPORTED_MEDIA_TYPE)
            .with_detail("Send the order as `Content-Type: application/json`.")
            .into_response::<Body>()
            .into());
    }
    let json = parse_strict(&body).map_err(|error| {
        let mut errors = ValidationErrors::new();
        errors.push(JsonPointer::root(), error.to_string());
        app.problems
            .service(MALFORMED_REQUEST)
            .with_validation_errors(errors)
            .into_response::<Body>()
    })?;
    let new = version
        .parse_new_order(&json)
        .map_err(|errors| app.problems.validation(errors))?;
    // With the guardrails off (demo only) the key is not recorded, so nothing dedupes.
    let key = key.as_ref().map(|Extension(key)| key.key());
    match app
        .db
        .insert(tenant.as_str(), key, &new, now_micros())
        .await?
    {
        Inserted::Created(order) | Inserted::Existing(order) => {
            let location = format!("{}/orders/{}", version.prefix(), order.id);
            let mut response = (StatusCode::CREATED, Json(version.render(&order))).into_response();
            if let Ok(location) = HeaderValue::try_from(location) {
                response.headers_mut().insert(LOCATION, location);
            }
            Ok(response)
        }
        Inserted::KeyReused => Err(app
            .problems
            .kind(ProblemKind::IdempotencyKeyReused)
            .with_detail("This Idempotency-Key was already used for a different order.")
            .into_response::<Body>()
            .into()),
    }
}

/// `GET /vN/orders`: one page of the caller's orders, newest first.
///
/// # Errors
///
/// The request's problem ([`ApiError`]): a client mistake, or the database failing.
pub async fn list_orders(
    State(app): State<Arc<AppState>>,
    Extension(version): Extension<ApiVersion>,
    Extension(tenant): Extension<Tenant>,
    Extension(page): Extension<PageRequest<OrderPosition>>,
) -> Result<Response, ApiError> {
    let rows = app.db.page(tenant.as_str(), &page).await?;
    match page.paginate(rows, |order: &Order| (order.created_at, order.id.clone())) {
        Ok(page) => Ok(page.map(|order| version.render(&order)).into_response()),
        Err(error) => {
            tracing::error!(%error, "encoding a cursor failed");
            Err(app.problems.internal().into())
        }
    }
}

/// `GET /vN/orders/{id}`.
///
/// # Errors
///
/// The request's problem ([`ApiError`]): a client mistake, or the database failing.
pub async fn get_order(
    State(app): State<Arc<AppState>>,
    Extension(version): Extension<ApiVersion>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !is_order_id(&id) {
        return Err(app.problems.order_not_found(&id).into());
    }
    match app.db.get(tenant.as_str(), &id).await? {
        Some(order) => Ok(Json(version.render(&order)).into_response()),
        None => Err(app.problems.order_not_found(&id).into()),
    }
}

/// `POST /vN/orders/{id}/cancel`: a custom method (a state transition, not an update), so it
/// is a POST, and takes an Idempotency-Key like every POST.
///
/// # Errors
///
/// The request's problem ([`ApiError`]): a client mistake, or the database failing.
pub async fn cancel_order(
    State(app): State<Arc<AppState>>,
    Extension(version): Extension<ApiVersion>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !is_order_id(&id) {
        return Err(app.problems.order_not_found(&id).into());
    }
    match app.db.cancel(tenant.as_str(), &id, now_micros()).await? {
        Cancelled::Done(order) => Ok(Json(version.render(&order)).into_response()),
        Cancelled::NotCancellable(order) => Err(app
            .problems
            .service(ORDER_NOT_CANCELLABLE)
            .with_detail(format!(
                "Order {} is {}; only pending orders can be cancelled.",
                order.id, order.status
            ))
            .into_response::<Body>()
            .into()),
        Cancelled::NotFound => Err(app.problems.order_not_found(&id).into()),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Microseconds since the Unix epoch, by the wall clock.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
