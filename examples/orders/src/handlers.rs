//! The handlers: one set for every API version, which the [`ApiVersion`] in the request
//! extensions turns into `/v1` or `/v2` JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use tower_cursor::PageRequest;
use tower_idempotency::ScopedKey;
use tower_problem_details::{JsonPointer, ProblemKind, ValidationErrors};

use crate::AppState;
use crate::auth::Tenant;
use crate::db::{Cancelled, Inserted, OrderPosition};
use crate::order::{Order, is_order_id};
use crate::problems::{MALFORMED_REQUEST, ORDER_NOT_CANCELLABLE, UNSUPPORTED_MEDIA_TYPE};
use crate::representation::ApiVersion;

/// `POST /vN/orders`: places an order. The idempotency layer has already made sure this runs
/// once per key; the database's unique `(tenant, idempotency key)` covers a crash between the
/// commit and the layer's record.
pub async fn create_order(
    State(app): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Extension(tenant): Extension<Tenant>,
    key: Option<Extension<ScopedKey>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_json(&headers) {
        return app
            .problems
            .service(UNSUPPORTED_MEDIA_TYPE)
            .with_detail("Send the order as `Content-Type: application/json`.")
            .into_response::<Body>();
    }
    let json: Value = match serde_json::from_slice(&body) {
        Ok(json) => json,
        Err(error) => {
            let mut errors = ValidationErrors::new();
            errors.push(JsonPointer::root(), error.to_string());
            return app
                .problems
                .service(MALFORMED_REQUEST)
                .with_validation_errors(errors)
                .into_response::<Body>();
        }
    };
    let new = match version.parse_new_order(&json) {
        Ok(new) => new,
        Err(errors) => return app.problems.validation(errors),
    };
    // With the guardrails off (demo only) the key is not recorded, so nothing dedupes.
    let key = key.as_ref().map(|Extension(key)| key.key());
    match app
        .db
        .insert(tenant.as_str(), key, &new, now_micros())
        .await
    {
        Ok(Inserted::Created(order) | Inserted::Existing(order)) => {
            let location = format!("{}/orders/{}", version.prefix(), order.id);
            let mut response = (StatusCode::CREATED, Json(version.render(&order))).into_response();
            if let Ok(location) = HeaderValue::try_from(location) {
                response.headers_mut().insert(LOCATION, location);
            }
            response
        }
        Ok(Inserted::KeyReused) => app
            .problems
            .kind(ProblemKind::IdempotencyKeyReused)
            .with_detail("This Idempotency-Key was already used for a different order.")
            .into_response::<Body>(),
        Err(error) => internal(&app, &error),
    }
}

/// `GET /vN/orders`: one page of the caller's orders, newest first.
pub async fn list_orders(
    State(app): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Extension(tenant): Extension<Tenant>,
    Extension(page): Extension<PageRequest<OrderPosition>>,
) -> Response {
    let rows = match app.db.page(tenant.as_str(), &page).await {
        Ok(rows) => rows,
        Err(error) => return internal(&app, &error),
    };
    match page.paginate(rows, |order: &Order| (order.created_at, order.id.clone())) {
        Ok(page) => page.map(|order| version.render(&order)).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding a cursor failed");
            app.problems.internal()
        }
    }
}

/// `GET /vN/orders/{id}`.
pub async fn get_order(
    State(app): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> Response {
    if !is_order_id(&id) {
        return app.problems.order_not_found(&id);
    }
    match app.db.get(tenant.as_str(), &id).await {
        Ok(Some(order)) => Json(version.render(&order)).into_response(),
        Ok(None) => app.problems.order_not_found(&id),
        Err(error) => internal(&app, &error),
    }
}

/// `POST /vN/orders/{id}/cancel`: a custom method (a state transition, not an update), so it
/// is a POST, and takes an Idempotency-Key like every POST.
pub async fn cancel_order(
    State(app): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> Response {
    if !is_order_id(&id) {
        return app.problems.order_not_found(&id);
    }
    match app.db.cancel(tenant.as_str(), &id, now_micros()).await {
        Ok(Cancelled::Done(order)) => Json(version.render(&order)).into_response(),
        Ok(Cancelled::NotCancellable(order)) => app
            .problems
            .service(ORDER_NOT_CANCELLABLE)
            .with_detail(format!(
                "Order {} is {}; only pending orders can be cancelled.",
                order.id, order.status
            ))
            .into_response::<Body>(),
        Ok(Cancelled::NotFound) => app.problems.order_not_found(&id),
        Err(error) => internal(&app, &error),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

fn internal(app: &AppState, error: &sqlx::Error) -> Response {
    // The request id ties this line to the 500's `request_id` member.
    tracing::error!(%error, "database error");
    app.problems.internal()
}

/// Microseconds since the Unix epoch, by the wall clock.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
