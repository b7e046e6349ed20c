//! The internal gRPC API over real sockets, beside REST in the same process: a tonic client
//! for every method, the guardrails it shares with REST (one rate-limit budget, exactly-once
//! creates across protocols, signed page tokens, authentication), health and reflection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use orders::grpc::pb;
use orders::grpc::pb::order_service_client::OrderServiceClient;
use orders::{App, Config};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

const KEY: &str = "test_key_alice";
const OTHER_KEY: &str = "test_key_bob";

fn config(name: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("orders-grpc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut config = Config::with_database(format!("sqlite://{}", dir.join("orders.db").display()));
    config.cursor_secret = Some("a test secret of at least thirty-two bytes".into());
    config.rate_limit_per_second = 1_000;
    config.rate_limit_burst = 1_000;
    config
}

/// A running service: REST and gRPC on their own sockets, both served by the service's own
/// accept loop, until the test ends.
struct Running {
    app: App,
    rest: String,
    grpc: Channel,
    grpc_uri: String,
}

async fn start(config: &Config) -> Running {
    let app = App::build(config).await.expect("the app builds");
    let rest = serve(app.router(), config, false).await;
    let grpc = serve(app.grpc_router(), config, true).await;
    let grpc_uri = format!("http://{grpc}");
    let grpc = Channel::from_shared(grpc_uri.clone())
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gRPC listener");
    Running {
        app,
        rest: format!("http://{rest}"),
        grpc,
        grpc_uri,
    }
}

async fn serve(router: axum::Router, config: &Config, grpc: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let address = listener.local_addr().expect("a local address");
    let limits = config.limits.clone();
    let grace = Duration::from_secs(1);
    tokio::spawn(async move {
        if grpc {
            orders::serve::serve_grpc(listener, router, &limits, std::future::pending(), grace)
                .await
        } else {
            orders::serve::serve(listener, router, &limits, std::future::pending(), grace).await
        }
    });
    address
}

impl Running {
    fn client(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.grpc.clone())
    }

    fn grpc_uri(&self) -> &str {
        &self.grpc_uri
    }

    /// `GET /metrics`, as text.
    async fn metrics(&self) -> String {
        let request = http::Request::get(format!("{}/metrics", self.rest));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let response = client
            .request(request.body(Full::default()).expect("a request"))
            .await
            .expect("metrics");
        let text = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8_lossy(&text).into_owned()
    }

    async fn rest(&self, request: http::request::Builder, body: &str) -> (http::StatusCode, Value) {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("a request");
        let response = client.request(request).await.expect("REST answers");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn rest_create(&self, api_key: &str, idempotency_key: &str, body: &Value) -> Value {
        let request = http::Request::post(format!("{}/v2/orders", self.rest))
            .header("authorization", format!("Bearer {api_key}"))
            .header("idempotency-key", idempotency_key)
            .header("content-type", "application/json");
        let (status, body) = self.rest(request, &body.to_string()).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn rest_get(&self, api_key: &str, path: &str) -> (http::StatusCode, Value) {
        let request = http::Request::get(format!("{}{path}", self.rest))
            .header("authorization", format!("Bearer {api_key}"));
        self.rest(request, "").await
    }

    async fn orders_of(&self, api_key: &str) -> i64 {
        let tenant = orders::auth::Tenant::of_key(api_key);
        self.app
            .database()
            .count(tenant.as_str())
            .await
            .expect("count")
    }
}

/// A request with the tenant's bearer key (none when `api_key` is `None`).
fn call<T>(message: T, api_key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = api_key {
        let value = format!("Bearer {key}").parse().expect("ASCII");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn new_order(sku: &str, quantity: u64) -> pb::Order {
    pb::Order {
        customer_id: "cus_42".into(),
        items: vec![pb::LineItem {
            sku: sku.into(),
            quantity,
            unit_price: Some(pb::Money {
                amount: 1250,
                currency: "usd".into(),
            }),
        }],
        ..pb::Order::default()
    }
}

fn v2_body(sku: &str, quantity: u64) -> Value {
    json!({"customer_id": "cus_42",
        "items": [{"sku": sku, "quantity": quantity, "unit_price": {"amount": 1250, "currency": "usd"}}]})
}

fn create(order: pb::Order, request_id: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        order: Some(order),
        request_id: request_id.into(),
    }
}

/// The status's `ErrorInfo` reason and domain.
fn reason(status: &Status) -> (String, String) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("an ErrorInfo in {status:?}"));
    (info.reason, info.domain)
}

fn assert_refused(
    result: Result<tonic::Response<impl std::fmt::Debug>, Status>,
    code: Code,
    why: &str,
) -> Status {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(&status).0, why, "{status:?}");
    assert_eq!(reason(&status).1, orders::problems::GRPC_DOMAIN);
    status
}

#[tokio::test]
async fn every_method_over_a_real_socket() {
    let running = start(&config("methods")).await;
    let mut client = running.client();

    let created = client
        .create_order(call(create(new_order("tea-1", 2), "req-1"), Some(KEY)))
        .await
        .expect("created")
        .into_inner();
    assert!(created.name.starts_with("orders/ord_"), "{created:?}");
    assert_eq!(created.state, i32::from(pb::order::State::Pending));
    assert_eq!(created.total.as_ref().map(|m| m.amount), Some(2500));
    assert!(created.create_time.is_some() && created.cancel_time.is_none());

    let read = client
        .get_order(call(
            pb::GetOrderRequest {
                name: created.name.clone(),
            },
            Some(KEY),
        ))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(read, created);

    // The same order through REST: one model behind both protocols.
    let id = created.name.trim_start_matches("orders/");
    let (status, body) = running.rest_get(KEY, &format!("/v2/orders/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], json!({"amount": 2500, "currency": "usd"}));

    // Another tenant does not see it.
    let hidden = client
        .get_order(call(
            pb::GetOrderRequest {
                name: created.name.clone(),
            },
            Some(OTHER_KEY),
        ))
        .await;
    assert_refused(hidden, Code::NotFound, "NOT_FOUND");
    let malformed = client
        .get_order(call(
            pb::GetOrderRequest {
                name: id.to_owned(),
            },
            Some(KEY),
        ))
        .await;
    assert_refused(malformed, Code::InvalidArgument, "VALIDATION_FAILED");

    let second = client
        .create_order(call(create(new_order("tea-2", 1), "req-2"), Some(KEY)))
        .await
        .expect("created")
        .into_inner();
    let batch = client
        .batch_get_orders(call(
            pb::BatchGetOrdersRequest {
                names: vec![second.name.clone(), created.name.clone()],
            },
            Some(KEY),
        ))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(
        batch.orders,
        [second.clone(), created.clone()],
        "in the order asked"
    );

    // All or nothing; bounded; no repeats.
    let missing = "orders/ord_00000000000000000000000000000000".to_owned();
    let partial = client
        .batch_get_orders(call(
            pb::BatchGetOrdersRequest {
                names: vec![created.name.clone(), missing],
            },
            Some(KEY),
        ))
        .await;
    assert_refused(partial, Code::NotFound, "NOT_FOUND");
    let too_many = (0..=100)
        .map(|n| format!("orders/ord_{n:032x}"))
        .collect::<Vec<_>>();
    let too_many = client
        .batch_get_orders(call(
            pb::BatchGetOrdersRequest { names: too_many },
            Some(KEY),
        ))
        .await;
    assert_refused(too_many, Code::InvalidArgument, "VALIDATION_FAILED");
    let repeated = client
        .batch_get_orders(call(
            pb::BatchGetOrdersRequest {
                names: vec![created.name.clone(), created.name.clone()],
            },
            Some(KEY),
        ))
        .await;
    assert_refused(repeated, Code::InvalidArgument, "VALIDATION_FAILED");

    // Pages of one, newest first, following next_page_token to the end.
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = client
            .list_orders(call(
                pb::ListOrdersRequest {
                    page_size: 1,
                    page_token: token.clone(),
                },
                Some(KEY),
            ))
            .await
            .expect("a page")
            .into_inner();
        seen.extend(page.orders.into_iter().map(|o| o.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(seen.len() <= 2, "the listing ends");
    }
    assert_eq!(seen, [second.name.clone(), created.name.clone()]);

    // The REST API's validation, its pointers into `order`.
    let invalid = client
        .create_order(call(create(new_order("", 0), "req-3"), Some(KEY)))
        .await;
    let status = assert_refused(invalid, Code::InvalidArgument, "VALIDATION_FAILED");
    let errors = status
        .get_details_error_info()
        .and_then(|info| info.metadata.get("errors").cloned())
        .expect("the errors member");
    assert!(
        errors.contains("/items/0/sku") && errors.contains("/items/0/quantity"),
        "{errors}"
    );
    assert_eq!(running.orders_of(KEY).await, 2);

    // The same metrics as REST, with a `protocol` label, a method's path for `route`, and the
    // code's HTTP equivalent for `status` (NOT_FOUND: 404; OK, read from the trailers: 200).
    let text = running.metrics().await;
    let series = |status: &str| {
        text.lines().any(|line| {
            line.starts_with("orders_http_requests_total{")
                && line.contains("protocol=\"grpc\"")
                && line.contains("route=\"/orders.v1.OrderService/GetOrder\"")
                && line.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(series("404") && series("200"), "{text}");
}

#[tokio::test]
async fn no_credentials_is_unauthenticated() {
    let running = start(&config("auth")).await;
    let mut client = running.client();
    let list = pb::ListOrdersRequest::default();
    let none = client.list_orders(call(list.clone(), None)).await;
    let status = assert_refused(none, Code::Unauthenticated, "UNAUTHORIZED");
    assert!(status.message().contains("Bearer"), "{status:?}");
    let bad = client.list_orders(call(list.clone(), Some("no"))).await;
    assert_refused(bad, Code::Unauthenticated, "UNAUTHORIZED");
    let mut twice = call(list, Some(KEY));
    let value = format!("Bearer {OTHER_KEY}").parse().expect("ASCII");
    twice.metadata_mut().append("authorization", value);
    let twice = client.list_orders(twice).await.expect_err("refused");
    assert_eq!(twice.code(), Code::InvalidArgument, "{twice:?}");
}

#[tokio::test]
async fn a_bad_page_token_is_invalid_argument() {
    let running = start(&config("tokens")).await;
    let mut client = running.client();
    for n in 0..3 {
        client
            .create_order(call(
                create(new_order("tea", n + 1), &format!("p-{n}")),
                Some(KEY),
            ))
            .await
            .expect("created");
    }
    let list = |token: &str, size| pb::ListOrdersRequest {
        page_size: size,
        page_token: token.to_owned(),
    };
    let garbage = client
        .list_orders(call(list("garbage", 1), Some(KEY)))
        .await;
    assert_refused(garbage, Code::InvalidArgument, "INVALID_CURSOR");
    let negative = client.list_orders(call(list("", -1), Some(KEY))).await;
    assert_refused(negative, Code::InvalidArgument, "INVALID_PAGE_SIZE");

    let page = client
        .list_orders(call(list("", 1), Some(KEY)))
        .await
        .expect("a page")
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    // A token is bound to its tenant: another one cannot read on with it.
    let stolen = client
        .list_orders(call(list(&page.next_page_token, 1), Some(OTHER_KEY)))
        .await;
    assert_refused(stolen, Code::InvalidArgument, "INVALID_CURSOR");
    // And to the method: a REST cursor of the same tenant is no page token.
    let (status, body) = running.rest_get(KEY, "/v2/orders?limit=1").await;
    assert_eq!(status, 200);
    let cursor = body["next_cursor"]
        .as_str()
        .expect("a REST cursor")
        .to_owned();
    let crossed = client.list_orders(call(list(&cursor, 1), Some(KEY))).await;
    assert_refused(crossed, Code::InvalidArgument, "INVALID_CURSOR");
}

#[tokio::test]
async fn creates_are_exactly_once_across_rest_and_grpc() {
    let running = start(&config("exactly-once")).await;
    let mut client = running.client();

    // REST first, then gRPC retries with the same key: by request_id and by metadata.
    let rest = running
        .rest_create(KEY, "shared-key-1", &v2_body("tea", 2))
        .await;
    let name = format!("orders/{}", rest["id"].as_str().expect("an id"));
    let by_id = client
        .create_order(call(create(new_order("tea", 2), "shared-key-1"), Some(KEY)))
        .await
        .expect("the same order")
        .into_inner();
    assert_eq!(by_id.name, name);
    let mut by_metadata = call(create(new_order("tea", 2), ""), Some(KEY));
    by_metadata
        .metadata_mut()
        .insert("idempotency-key", "shared-key-1".parse().expect("ASCII"));
    let by_metadata = client
        .create_order(by_metadata)
        .await
        .expect("the same")
        .into_inner();
    assert_eq!(by_metadata.name, name);

    // The key describing another order is refused, over gRPC as over REST.
    let other = client
        .create_order(call(
            create(new_order("coffee", 1), "shared-key-1"),
            Some(KEY),
        ))
        .await;
    assert_refused(other, Code::InvalidArgument, "IDEMPOTENCY_KEY_REUSED");

    // gRPC first, then REST.
    let grpc = client
        .create_order(call(create(new_order("tea", 3), "shared-key-2"), Some(KEY)))
        .await
        .expect("created")
        .into_inner();
    let rest = running
        .rest_create(KEY, "shared-key-2", &v2_body("tea", 3))
        .await;
    assert_eq!(
        format!("orders/{}", rest["id"].as_str().expect("an id")),
        grpc.name
    );

    // Metadata and request_id that disagree, or neither, are refused before anything runs.
    let mut both = call(create(new_order("tea", 4), "key-a"), Some(KEY));
    both.metadata_mut()
        .insert("idempotency-key", "key-b".parse().expect("ASCII"));
    assert_refused(
        client.create_order(both).await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    let neither = client
        .create_order(call(create(new_order("tea", 4), ""), Some(KEY)))
        .await;
    assert_refused(neither, Code::InvalidArgument, "IDEMPOTENCY_KEY_MISSING");
    let bad_id = client
        .create_order(call(create(new_order("tea", 4), "has space"), Some(KEY)))
        .await;
    assert_refused(bad_id, Code::InvalidArgument, "IDEMPOTENCY_KEY_INVALID");

    assert_eq!(running.orders_of(KEY).await, 2);
}

#[tokio::test]
async fn concurrent_grpc_retries_place_one_order() {
    let running = start(&config("concurrent")).await;
    let calls = (0..16).map(|n| {
        let mut client = running.client();
        async move {
            // Half by metadata (the idempotency layer), half by request_id (the table).
            let mut request = if n % 2 == 0 {
                call(create(new_order("tea", 1), ""), Some(KEY))
            } else {
                call(create(new_order("tea", 1), "storm-key"), Some(KEY))
            };
            if n % 2 == 0 {
                request
                    .metadata_mut()
                    .insert("idempotency-key", "storm-key".parse().expect("ASCII"));
            }
            client.create_order(request).await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut names = Vec::new();
    for result in results {
        match result {
            Ok(order) => names.push(order.into_inner().name),
            // The layer refuses a retry while the first call with its key runs.
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted, "{status:?}");
                assert_eq!(reason(&status).0, "IDEMPOTENCY_KEY_IN_USE");
            }
        }
    }
    names.dedup();
    assert_eq!(names.len(), 1, "every success is the same order: {names:?}");
    assert_eq!(running.orders_of(KEY).await, 1);
}

#[tokio::test]
async fn rest_and_grpc_spend_one_rate_limit_budget() {
    let mut config = config("ratelimit");
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 6;
    let running = start(&config).await;
    let mut client = running.client();
    let list = || call(pb::ListOrdersRequest::default(), Some(KEY));

    // Alternate the protocols until one is refused: the other is refused at once too, and the
    // two together got one budget (separate budgets would allow twice as many).
    let mut allowed = 0;
    let refused_by_grpc = loop {
        let (status, _) = running.rest_get(KEY, "/v2/orders").await;
        if status == 429 {
            break false;
        }
        assert_eq!(status, 200);
        allowed += 1;
        match client.list_orders(list()).await {
            Ok(_) => allowed += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                break true;
            }
        }
        assert!(allowed <= 20, "the budget ran out");
    };
    assert!(
        (6..=8).contains(&allowed),
        "one budget of 6 (and a token refilled meanwhile at most): {allowed}"
    );
    let status = if refused_by_grpc {
        running.rest_get(KEY, "/v2/orders").await.0
    } else {
        http::StatusCode::TOO_MANY_REQUESTS
    };
    assert_eq!(status, 429, "REST is refused once gRPC spent the budget");
    let refused = client.list_orders(list()).await;
    let status = assert_refused(refused, Code::ResourceExhausted, "QUOTA_EXCEEDED");
    let retry = status.get_details_retry_info().expect("a RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());

    // Another tenant has its own budget.
    client
        .list_orders(call(pb::ListOrdersRequest::default(), Some(OTHER_KEY)))
        .await
        .expect("another tenant");
}

#[tokio::test]
async fn health_answers_without_credentials_and_reflection_with_them() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let running = start(&config("health")).await;
    let mut health = HealthClient::new(running.grpc.clone());
    // The probe runs at once when the app is built; give it its first round.
    let mut status = ServingStatus::Unknown;
    for _ in 0..50 {
        let check = health
            .check(HealthCheckRequest {
                service: "orders.v1.OrderService".into(),
            })
            .await;
        if let Ok(response) = check {
            status = response.into_inner().status();
            if status == ServingStatus::Serving {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::Serving);

    let mut reflection = ServerReflectionClient::new(running.grpc.clone());
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let anonymous = reflection
        .server_reflection_info(tokio_stream::iter([list()]))
        .await;
    assert_refused(anonymous, Code::Unauthenticated, "UNAUTHORIZED");
    let mut replies = reflection
        .server_reflection_info(call(tokio_stream::iter([list()]), Some(KEY)))
        .await
        .expect("reflection answers")
        .into_inner();
    let reply = replies
        .next()
        .await
        .expect("a reply")
        .expect("a good reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("a service list: {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"orders.v1.OrderService".to_owned()),
        "{names:?}"
    );

    // The file that defines the service, as a client in another language would fetch it.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "orders.v1.OrderService".into(),
        )),
    };
    let mut replies = reflection
        .server_reflection_info(call(tokio_stream::iter([request]), Some(KEY)))
        .await
        .expect("reflection answers")
        .into_inner();
    let reply = replies
        .next()
        .await
        .expect("a reply")
        .expect("a good reply");
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("a file descriptor: {reply:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    // An unknown service: UNIMPLEMENTED, not a REST 404.
    let mut grpc = tonic::client::Grpc::new(running.grpc.clone());
    grpc.ready().await.expect("ready");
    let unknown: Result<tonic::Response<pb::Order>, Status> = grpc
        .unary(
            tonic::Request::new(pb::GetOrderRequest::default()),
            http::uri::PathAndQuery::from_static("/no.such.v1.Service/Get"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_refused(unknown, Code::Unimplemented, "NOT_FOUND");

    // A message over the 64 KiB bound is refused before any handler decodes it.
    let huge = pb::GetOrderRequest {
        name: "x".repeat(orders::grpc::MAX_MESSAGE_BYTES + 1),
    };
    let mut client = running.client();
    let refused = client.get_order(call(huge, Some(KEY))).await;
    assert_eq!(refused.expect_err("too large").code(), Code::OutOfRange);
}

/// What the listeners accept: the gRPC one gRPC alone over HTTP/2 (415 for anything else,
/// nothing over HTTP/1.1); the REST one treats a gRPC `content-type` as plain HTTP, so a
/// `grpc-timeout` there is no deadline. A gRPC client's own deadline is honoured, and counted
/// as the client's (499), not as a server error.
#[tokio::test]
async fn each_listener_speaks_its_own_protocol() {
    let running = start(&config("listeners")).await;
    let grpc_uri = running.grpc_uri();
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let json = http::Request::post(format!("{grpc_uri}/orders.v1.OrderService/GetOrder"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("a request");
    let response = h2.request(json).await.expect("an answer");
    assert_eq!(response.status(), 415);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    let h1: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let over_h1 = http::Request::get(format!("{grpc_uri}/grpc.health.v1.Health/Check"))
        .body(Full::default())
        .expect("a request");
    assert!(h1.request(over_h1).await.is_err(), "HTTP/1.1 is refused");

    let rest = http::Request::get(format!("{}/ready", running.rest))
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "1n")
        .body(Full::default())
        .expect("a request");
    let response = h1.request(rest).await.expect("REST answers");
    assert_eq!(
        response.status(),
        200,
        "no gRPC deadline or rendering on REST"
    );
    assert!(!response.headers().contains_key("grpc-status"));
    // The library guardrails ask the same question: the idempotency layer's refusal of a
    // REST create without a key is a problem document, not a gRPC status.
    let create = http::Request::post(format!("{}/v2/orders", running.rest))
        .header("content-type", "application/grpc")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("a request");
    let response = h1.request(create).await.expect("REST answers");
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(!response.headers().contains_key("grpc-status"));

    // A deadline of a nanosecond passes before the database answers.
    let mut message = vec![0, 0, 0, 0, 0];
    let name = format!("orders/ord_{:032x}", 7);
    let encoded = prost::Message::encode_to_vec(&pb::GetOrderRequest { name });
    message[1..5].copy_from_slice(&u32::try_from(encoded.len()).expect("small").to_be_bytes());
    message.extend(encoded);
    let late = http::Request::post(format!("{grpc_uri}/orders.v1.OrderService/GetOrder"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "1n")
        .header("authorization", format!("Bearer {OTHER_KEY}"))
        .body(Full::new(Bytes::from(message)))
        .expect("a request");
    let response = h2.request(late).await.expect("an answer");
    assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
    let text = running.metrics().await;
    assert!(
        text.lines()
            .any(|line| line.starts_with("orders_http_requests_total{")
                && line.contains("protocol=\"grpc\"")
                && line.contains("route=\"/orders.v1.OrderService/GetOrder\"")
                && line.contains("status=\"499\"")),
        "{text}"
    );
}
