//! The internal gRPC service (`--grpc-listen`): `orders.v1.OrderService` from
//! `proto/orders/v1/orders.proto`, on the same database, tenants and guardrail stores as the
//! REST API.
//!
//! The guardrails are the REST API's own layers, which answer gRPC requests in gRPC: the
//! tenant's one rate-limit budget (`RESOURCE_EXHAUSTED` with `RetryInfo`), idempotency on
//! `CreateOrder` (the `idempotency-key` metadata; `ABORTED` while a call with the same key is
//! in flight), the signed cursors as AIP-158 page tokens (`INVALID_ARGUMENT` for a bad one),
//! and every refusal a `google.rpc.Status` with an `ErrorInfo` whose reason is the REST
//! problem's slug.
//!
//! # Exactly once across REST and gRPC
//!
//! A create is deduplicated twice. The idempotency layer replays a finished call's exact
//! answer, per protocol (its records are scoped to the tenant *and* the protocol: a stored
//! HTTP answer is no answer to a gRPC call). Below it, the orders table's unique
//! `(tenant, idempotency key)`, with the order's fingerprint beside it, turns a second
//! insert under a key into the order the first one placed, whichever protocol placed it, or
//! into `INVALID_ARGUMENT` `idempotency-key-reused` when it describes another order. An
//! AIP-155 `request_id` is that same key, so it dedupes against REST's `Idempotency-Key` too.
//! The layer's fingerprint is of the request message's bytes, which a client's retry repeats
//! exactly; protobuf encoding is not canonical, so another client encoding the same order
//! differently is deduplicated by the table (same order), not refused.

use std::collections::HashMap;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use tonic::{Request, Response, Status};
use tower_cursor::{Paginator, QueryFingerprint};
use tower_idempotency::{DEFAULT_MAX_KEY_LEN, ScopedKey, parse_idempotency_key_value};
use tower_problem_details::{JsonPointer, ProblemKind, Protocol, Rejection, ValidationErrors};

use crate::auth::Tenant;
use crate::db::{Database, Inserted, OrderPosition};
use crate::handlers::now_micros;
use crate::order::{Order, Status as OrderStatus, is_order_id};
use crate::problems::Problems;
use crate::representation::ApiVersion;

/// The code generated from `proto/orders/v1/orders.proto` by protox and tonic-prost-build
/// (messages, the server and a transport-free client).
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::doc_markdown,
    clippy::missing_errors_doc,
    clippy::must_use_candidate
)]
// Generated code: its items carry the proto's comments, not ours, and follow the generator's
// conventions, not the workspace lints.
pub mod pb {
    tonic::include_proto!("orders.v1");
}

/// The encoded file descriptor set of `orders.proto` (and the well-known types it imports),
/// served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orders_descriptor.bin"));

/// The service's full name, as health checking and reflection know it.
pub const SERVICE_NAME: &str = "orders.v1.OrderService";

/// The gRPC path of `CreateOrder`, the one method behind the idempotency layer.
pub const CREATE_ORDER_PATH: &str = "/orders.v1.OrderService/CreateOrder";

/// The gRPC path of `ListOrders`, to which its page tokens are bound.
pub const LIST_ORDERS_PATH: &str = "/orders.v1.OrderService/ListOrders";

/// The route of every `OrderService` method (`CreateOrder` has one of its own).
pub const METHODS_PATH: &str = "/orders.v1.OrderService/{method}";

/// Every gRPC method the server has, as it is labelled in metrics and logs.
const METHODS: &[&str] = &[
    "/orders.v1.OrderService/GetOrder",
    "/orders.v1.OrderService/BatchGetOrders",
    LIST_ORDERS_PATH,
    CREATE_ORDER_PATH,
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The label of a gRPC request path: one of the server's methods, or `unmatched` (a fixed set,
/// whatever path a client sends).
pub fn method_label(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|method| **method == path)
        .copied()
        .unwrap_or("unmatched")
}

/// The largest request message any method decodes (capped by `--max-body-bytes`): a
/// `CreateOrder` of 100 lines with the longest SKUs is about 10 KiB, a batch of 100 names
/// under 5 KiB. A larger one is tonic's `OUT_OF_RANGE`, before any handler runs.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The most request bytes one reflection stream may send (a reflection request is tens of
/// bytes): past it the stream fails, so one stream cannot carry requests without end.
pub const MAX_REFLECTION_STREAM_BYTES: usize = 256 * 1024;

/// The most names one `BatchGetOrders` call may ask for.
pub const MAX_BATCH: usize = 100;

/// `orders.v1.OrderService`, on the service's database.
#[derive(Clone, Debug)]
pub struct OrderService {
    db: Database,
    problems: Problems,
    paginator: Paginator,
    /// Whether creates are deduplicated (off only in the demo without guardrails, as on REST).
    dedupe: bool,
}

impl OrderService {
    /// The service on `db`, with `paginator`'s page tokens.
    pub fn new(db: Database, problems: Problems, paginator: Paginator, dedupe: bool) -> Self {
        OrderService {
            db,
            problems,
            paginator,
            dedupe,
        }
    }

    /// The tonic server, decoding messages of at most `max_message` bytes.
    pub fn server(self, max_message: usize) -> pb::order_service_server::OrderServiceServer<Self> {
        pb::order_service_server::OrderServiceServer::new(self)
            .max_decoding_message_size(max_message)
    }

    /// `rejection` as the handler's status, rendered by the service's responder.
    fn status(&self, rejection: Rejection) -> Status {
        let mut headers = self
            .problems
            .responder()
            .respond(rejection, Protocol::Grpc)
            .into_parts()
            .0
            .headers;
        // The header block's own fields, which tonic writes itself.
        headers.remove(CONTENT_TYPE);
        headers.remove(CACHE_CONTROL);
        Status::from_header_map(&headers).unwrap_or_else(|| Status::internal(""))
    }

    fn database(&self, error: &sqlx::Error) -> Status {
        self.status(self.problems.database(error))
    }

    fn invalid(&self, pointer: JsonPointer, detail: &str, errors_for: &'static str) -> Status {
        let mut errors = ValidationErrors::new();
        errors.push(pointer, detail.to_owned());
        self.status(self.problems.invalid(errors, errors_for))
    }

    fn not_found(&self, id: &str) -> Status {
        self.status(self.problems.order_missing(id))
    }

    /// The order id in a resource name `orders/{order_id}`.
    fn order_id<'a>(&self, name: &'a str, pointer: JsonPointer) -> Result<&'a str, Status> {
        name.strip_prefix("orders/")
            .filter(|id| is_order_id(id))
            .ok_or_else(|| {
                self.invalid(
                    pointer,
                    "must be `orders/` and an order id (`ord_` and 32 lower-case hex digits)",
                    "The resource name is not an order's.",
                )
            })
    }

    /// The idempotency key of a create: the `idempotency-key` metadata the layer claimed, or
    /// the AIP-155 `request_id`, or both when they agree.
    fn create_key(
        &self,
        claimed: Option<&ScopedKey>,
        request_id: &str,
    ) -> Result<Option<String>, Status> {
        if !self.dedupe {
            return Ok(None);
        }
        let request_id = if request_id.is_empty() {
            None
        } else {
            Some(self.parse_request_id(request_id)?)
        };
        match (claimed.map(ScopedKey::key), request_id) {
            (Some(key), None) => Ok(Some(key.to_owned())),
            (None, Some(id)) => Ok(Some(id)),
            (Some(key), Some(id)) if key == id => Ok(Some(id)),
            (Some(_), Some(_)) => Err(self.invalid(
                JsonPointer::root().push("request_id"),
                "differs from the `idempotency-key` metadata: send one, or the same in both",
                "The request names two different idempotency keys.",
            )),
            (None, None) => Err(self.status(
                self.problems
                    .rejection(ProblemKind::IdempotencyKeyMissing)
                    .with_detail(
                        "Send a `request_id` (a random UUID, say) or `idempotency-key` metadata, \
                         so that a retry cannot place the order twice.",
                    ),
            )),
        }
    }

    /// A `request_id`, read exactly as the `Idempotency-Key` header is.
    fn parse_request_id(&self, request_id: &str) -> Result<String, Status> {
        let refuse = |detail: String| {
            self.status(
                self.problems
                    .rejection(ProblemKind::IdempotencyKeyInvalid)
                    .with_detail(format!("`request_id`: {detail}")),
            )
        };
        parse_idempotency_key_value(request_id.as_bytes(), DEFAULT_MAX_KEY_LEN)
            .map_err(|error| refuse(error.detail()))
    }
}

/// The answer to a gRPC service the server does not have: `UNIMPLEMENTED` (as tonic answers an
/// unknown method of a service it has), with the `ErrorInfo` of the catalog's `not-found`.
pub fn unimplemented(problems: &Problems) -> axum::response::Response {
    let rejection = problems
        .rejection(ProblemKind::NotFound)
        .with_detail("No such gRPC service here: see server reflection.")
        .with_grpc_code(tower_problem_details::GrpcCode::Unimplemented);
    problems.reject(rejection, Protocol::Grpc)
}

/// Middleware on the gRPC listener: a request that is not gRPC (`content-type` other than
/// `application/grpc…`) is 415 `unsupported-media-type` before anything else runs, as the
/// gRPC protocol asks, so no guardrail ever sees it as HTTP there.
pub async fn only_grpc(
    axum::extract::State(problems): axum::extract::State<Problems>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if Protocol::of(request.headers()) == Protocol::Grpc {
        return next.run(request).await;
    }
    let problem = problems
        .service(crate::problems::UNSUPPORTED_MEDIA_TYPE)
        .with_detail("This listener serves gRPC only: send `content-type: application/grpc`.");
    problems.reject(Rejection::new(problem), Protocol::Http)
}

/// Server reflection, v1 and v1alpha (older tools), each request stream bounded by
/// [`MAX_REFLECTION_STREAM_BYTES`].
///
/// # Errors
///
/// When the descriptor set does not decode (a build bug).
pub fn reflection_routes() -> Result<axum::Router, tonic_reflection::server::Error> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()?
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let v1alpha = builder()
        .build_v1alpha()?
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    // Routed by path as `OrderService` is (tonic's `Routes` brings a fallback of its own,
    // and a router has one fallback: the listener's).
    Ok(axum::Router::new()
        .route_service(&named_route(&v1), v1)
        .route_service(&named_route(&v1alpha), v1alpha)
        .layer(axum::middleware::map_request(bounded_stream)))
}

/// The route of every method of a generated service: `/{package.Service}/{method}`.
fn named_route<S: tonic::server::NamedService>(_: &S) -> String {
    format!("/{}/{{method}}", S::NAME)
}

async fn bounded_stream(request: axum::extract::Request) -> axum::extract::Request {
    request.map(|body| {
        axum::body::Body::new(http_body_util::Limited::new(
            body,
            MAX_REFLECTION_STREAM_BYTES,
        ))
    })
}

/// `grpc.health.v1`, and the reporter that sets its statuses.
pub fn health_routes() -> (tonic_health::server::HealthReporter, axum::Router) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let service = service.max_decoding_message_size(MAX_MESSAGE_BYTES);
    let routes = axum::Router::new().route_service(&named_route(&service), service);
    (reporter, routes)
}

fn tenant<T>(request: &Request<T>) -> Result<Tenant, Status> {
    // The authentication layer runs before every method; without it this is a wiring bug.
    request
        .extensions()
        .get::<Tenant>()
        .cloned()
        .ok_or_else(|| Status::internal("no tenant"))
}

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderService {
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let tenant = tenant(&request)?;
        let id = self.order_id(&request.get_ref().name, JsonPointer::root().push("name"))?;
        match self.db.get(tenant.as_str(), id).await {
            Ok(Some(order)) => Ok(Response::new(to_proto(&order))),
            Ok(None) => Err(self.not_found(id)),
            Err(error) => Err(self.database(&error)),
        }
    }

    async fn batch_get_orders(
        &self,
        request: Request<pb::BatchGetOrdersRequest>,
    ) -> Result<Response<pb::BatchGetOrdersResponse>, Status> {
        let tenant = tenant(&request)?;
        let names = &request.get_ref().names;
        let names_pointer = JsonPointer::root().push("names");
        if names.is_empty() || names.len() > MAX_BATCH {
            return Err(self.invalid(
                names_pointer,
                &format!("must hold 1 to {MAX_BATCH} names"),
                "The batch is empty or too large.",
            ));
        }
        let mut ids = Vec::with_capacity(names.len());
        for (index, name) in names.iter().enumerate() {
            let id = self.order_id(name, names_pointer.clone().push(index))?;
            if ids.contains(&id) {
                return Err(self.invalid(
                    names_pointer.clone().push(index),
                    "repeats an earlier name",
                    "The batch names an order twice.",
                ));
            }
            ids.push(id);
        }
        let found = self
            .db
            .get_many(tenant.as_str(), &ids)
            .await
            .map_err(|error| self.database(&error))?;
        let mut found: HashMap<String, Order> =
            found.into_iter().map(|o| (o.id.clone(), o)).collect();
        // All or nothing (AIP-231), in the order asked for.
        let orders = ids
            .iter()
            .map(|id| found.remove(*id).map(|o| to_proto(&o)).ok_or(*id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|missing| self.not_found(missing))?;
        Ok(Response::new(pb::BatchGetOrdersResponse { orders }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let tenant = tenant(&request)?;
        let pb::ListOrdersRequest {
            page_size,
            page_token,
        } = request.get_ref();
        // Bound to this method and tenant, like the REST cursors to their listing and tenant.
        let query = QueryFingerprint::builder().param("tenant", tenant.as_str());
        let page = self
            .paginator
            .grpc_page_request::<OrderPosition>(LIST_ORDERS_PATH, *page_size, page_token, query)
            .map_err(|error| self.status(self.paginator.grpc_rejection(&error)))?;
        let rows = self
            .db
            .page(tenant.as_str(), &page)
            .await
            .map_err(|error| self.database(&error))?;
        let page = page
            .paginate(rows, |order: &Order| (order.created_at, order.id.clone()))
            .map_err(|error| {
                tracing::error!(%error, "encoding a page token failed");
                self.status(self.problems.rejection(ProblemKind::Internal))
            })?;
        let next_page_token = page.next_cursor().unwrap_or_default().to_owned();
        let orders = page.data().iter().map(to_proto).collect();
        Ok(Response::new(pb::ListOrdersResponse {
            orders,
            next_page_token,
        }))
    }

    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let tenant = tenant(&request)?;
        let claimed = request.extensions().get::<ScopedKey>().cloned();
        let pb::CreateOrderRequest { order, request_id } = request.into_inner();
        let key = self.create_key(claimed.as_ref(), &request_id)?;
        let order = order.unwrap_or_default();
        // The REST API's own validation, on the order as `/v2` JSON: the same rules, and
        // the mistakes named by JSON Pointers into `order`.
        let new = ApiVersion::V2
            .parse_new_order(&to_v2_json(&order))
            .map_err(|errors| {
                self.status(self.problems.invalid(
                    errors,
                    "The order is not valid; `errors` points into `order`.",
                ))
            })?;
        let inserted = self
            .db
            .insert(tenant.as_str(), key.as_deref(), &new, now_micros())
            .await
            .map_err(|error| self.database(&error))?;
        match inserted {
            Inserted::Created(order) | Inserted::Existing(order) => {
                Ok(Response::new(to_proto(&order)))
            }
            Inserted::KeyReused => Err(self.status(
                self.problems
                    .rejection(ProblemKind::IdempotencyKeyReused)
                    .with_detail("This request id was already used for a different order."),
            )),
        }
    }
}

/// An order as the gRPC API sends it.
pub fn to_proto(order: &Order) -> pb::Order {
    let money = |amount| pb::Money {
        amount,
        currency: order.currency.clone(),
    };
    let state = match order.status {
        OrderStatus::Pending => pb::order::State::Pending,
        OrderStatus::Cancelled => pb::order::State::Cancelled,
    };
    pb::Order {
        name: format!("orders/{}", order.id),
        state: state.into(),
        customer_id: order.customer_id.clone(),
        items: order
            .items
            .iter()
            .map(|item| pb::LineItem {
                sku: item.sku.clone(),
                quantity: item.quantity,
                unit_price: Some(money(item.unit_price)),
            })
            .collect(),
        total: Some(money(order.total)),
        create_time: Some(timestamp(order.created_at)),
        cancel_time: order.cancelled_at.map(timestamp),
    }
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    let nanos = micros.rem_euclid(1_000_000) * 1_000;
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        // Below 10⁹: fits.
        nanos: i32::try_from(nanos).unwrap_or(0),
    }
}

/// The input fields of a gRPC order as the `/v2` JSON the REST API validates (an unset
/// message is a missing member, so it is reported as required).
fn to_v2_json(order: &pb::Order) -> serde_json::Value {
    use serde_json::{Value, json};
    let items = order
        .items
        .iter()
        .map(|item| {
            let mut line = json!({ "sku": item.sku, "quantity": item.quantity });
            if let Some(price) = &item.unit_price {
                line["unit_price"] = json!({ "amount": price.amount, "currency": price.currency });
            }
            line
        })
        .collect::<Vec<Value>>();
    json!({ "customer_id": order.customer_id, "items": items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::Item;

    fn order() -> Order {
        Order {
            id: "ord_0192f3a4b5c67d8e9fa0b1c2d3e4f506".into(),
            status: OrderStatus::Cancelled,
            customer_id: "cus_42".into(),
            items: vec![Item {
                sku: "tea-1".into(),
                quantity: 2,
                unit_price: 1250,
            }],
            currency: "usd".into(),
            total: 2500,
            created_at: 1_767_225_600_123_456,
            cancelled_at: Some(1_767_225_601_000_000),
        }
    }

    #[test]
    fn an_order_reads_back_as_the_same_new_order_over_grpc_and_v2() {
        let proto = to_proto(&order());
        assert_eq!(proto.name, "orders/ord_0192f3a4b5c67d8e9fa0b1c2d3e4f506");
        assert_eq!(proto.state, i32::from(pb::order::State::Cancelled));
        let created = proto.create_time.expect("set");
        assert_eq!(
            (created.seconds, created.nanos),
            (1_767_225_600, 123_456_000)
        );
        let from_grpc = ApiVersion::V2
            .parse_new_order(&to_v2_json(&proto))
            .expect("valid");
        let v2 = serde_json::to_value(ApiVersion::V2.render(&order())).expect("serializable");
        let from_rest = ApiVersion::V2.parse_new_order(&v2).expect("valid");
        assert_eq!(from_grpc, from_rest);
        assert_eq!(from_grpc.fingerprint(), from_rest.fingerprint());
    }

    #[test]
    fn an_unset_unit_price_is_reported_as_required() {
        let mut proto = to_proto(&order());
        proto.items[0].unit_price = None;
        let errors = ApiVersion::V2
            .parse_new_order(&to_v2_json(&proto))
            .expect_err("invalid");
        let first = errors.iter().next().expect("one error");
        assert_eq!(first.pointer().as_str(), "/items/0/unit_price");
        assert_eq!(first.detail(), "is required");
    }

    #[test]
    fn timestamps_before_the_epoch_keep_positive_nanos() {
        let t = timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
    }
}
