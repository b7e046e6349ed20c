//! `ProblemLayer` driven through real `ServiceBuilder` stacks with `Full<Bytes>` bodies.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_problem_details::ResponseBody;
use tower_problem_details::middleware::{ProblemService, ResponseFuture};
use tower_problem_details::{
    Problem, ProblemCatalog, ProblemKind, ProblemLayer, REQUEST_ID_MEMBER, RequestId,
};

type Res = Response<Full<Bytes>>;

fn respond(status: u16, content_type: Option<&str>, body: &'static str) -> Res {
    let mut builder = Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder
        .header("content-length", body.len())
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid response")
}

/// Runs one request through `ProblemLayer` (configured by `layer`) around a handler that
/// answers `response`.
async fn through(
    layer: ProblemLayer,
    request: Request<Full<Bytes>>,
    response: fn() -> Res,
) -> Response<ResponseBody<Full<Bytes>>> {
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(
            move |_req: Request<Full<Bytes>>| async move { Ok::<_, Infallible>(response()) },
        )
        .oneshot(request)
        .await
        .expect("infallible")
}

async fn body_of(response: Response<ResponseBody<Full<Bytes>>>) -> (http::response::Parts, Bytes) {
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.expect("infallible").to_bytes())
}

fn get() -> Request<Full<Bytes>> {
    Request::new(Full::default())
}

#[tokio::test]
async fn a_bare_404_becomes_an_about_blank_problem_with_a_request_id() {
    let response = through(ProblemLayer::new(), get(), || respond(404, None, "")).await;
    let (parts, body) = body_of(response).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    assert_eq!(parts.headers["cache-control"], "no-store");
    assert!(parts.headers.get("content-length").is_none());
    let id = parts.headers["x-request-id"].to_str().expect("ascii");
    assert_eq!(
        body,
        format!(r#"{{"title":"Not Found","status":404,"request_id":"{id}"}}"#)
    );
    assert_eq!(
        parts.extensions.get::<RequestId>().map(RequestId::as_str),
        Some(id)
    );
    let problem = parts
        .extensions
        .get::<Problem>()
        .expect("problem in extensions");
    assert_eq!(problem.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn other_headers_of_the_bare_response_are_kept() {
    let response = through(ProblemLayer::new(), get(), || {
        let mut r = respond(405, Some("text/html"), "<h1>no</h1>");
        r.headers_mut()
            .insert("allow", "GET, HEAD".parse().expect("valid"));
        r
    })
    .await;
    let (parts, body) = body_of(response).await;
    assert_eq!(parts.headers["allow"], "GET, HEAD");
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    let problem = Problem::from_json(&body).expect("problem");
    assert_eq!(problem.title(), Some("Method Not Allowed"));
    assert_eq!(problem.detail(), None, "HTML bodies are not copied");
}

#[tokio::test]
async fn a_short_plain_text_4xx_body_becomes_the_detail() {
    let response = through(ProblemLayer::new(), get(), || {
        respond(
            422,
            Some("text/plain; charset=utf-8"),
            "Failed to deserialize the JSON body: missing field `items`\n",
        )
    })
    .await;
    let (parts, body) = body_of(response).await;
    assert_eq!(parts.status, StatusCode::UNPROCESSABLE_ENTITY);
    let problem = Problem::from_json(&body).expect("problem");
    assert_eq!(
        problem.detail(),
        Some("Failed to deserialize the JSON body: missing field `items`")
    );
}

#[tokio::test]
async fn a_plain_text_body_over_the_limit_is_dropped() {
    let layer = ProblemLayer::new().client_error_detail_limit(8);
    let response = through(layer, get(), || {
        respond(400, Some("text/plain"), "123456789")
    })
    .await;
    let problem = Problem::from_json(&body_of(response).await.1).expect("problem");
    assert_eq!(problem.detail(), None);

    let layer = ProblemLayer::new().client_error_detail_limit(0);
    let response = through(layer, get(), || respond(400, Some("text/plain"), "1")).await;
    let problem = Problem::from_json(&body_of(response).await.1).expect("problem");
    assert_eq!(problem.detail(), None);
}

#[tokio::test]
async fn a_5xx_body_never_reaches_the_client() {
    let response = through(ProblemLayer::new(), get(), || {
        respond(
            500,
            Some("text/plain"),
            "connection to postgres://admin:hunter2@db failed",
        )
    })
    .await;
    let (parts, body) = body_of(response).await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("hunter2"), "{text}");
    let problem = Problem::from_json(&body).expect("problem");
    assert_eq!(problem.detail(), None);
    assert_eq!(problem.title(), Some("Internal Server Error"));
}

#[tokio::test]
async fn problems_and_successes_pass_through_untouched() {
    const PROBLEM: &str = r#"{"type":"/problems/quota-exceeded","title":"Request quota exceeded","status":429,"violated-policies":["burst"]}"#;
    let response = through(ProblemLayer::new(), get(), || {
        let mut r = respond(429, Some("application/problem+json"), PROBLEM);
        r.headers_mut()
            .insert("retry-after", "3".parse().expect("valid"));
        r
    })
    .await;
    let (parts, body) = body_of(response).await;
    assert_eq!(body, PROBLEM);
    assert_eq!(parts.headers["retry-after"], "3");
    assert_eq!(parts.headers["content-length"], PROBLEM.len().to_string());
    assert!(parts.headers.contains_key("x-request-id"));

    let response = through(ProblemLayer::new(), get(), || {
        respond(201, Some("text/plain"), "made")
    })
    .await;
    let (parts, body) = body_of(response).await;
    assert_eq!(parts.status, StatusCode::CREATED);
    assert_eq!(body, "made");
    assert!(parts.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn the_callers_request_id_is_kept_and_seen_by_the_handler() {
    let service = ServiceBuilder::new().layer(ProblemLayer::new()).service_fn(
        |req: Request<Full<Bytes>>| async move {
            let id = req
                .extensions()
                .get::<RequestId>()
                .expect("request id")
                .to_string();
            assert_eq!(req.headers()["x-request-id"], id.as_str());
            Ok::<_, Infallible>(respond(403, None, ""))
        },
    );
    let request = Request::builder()
        .header("x-request-id", "req-7f3a")
        .body(Full::default())
        .expect("valid");
    let (parts, body) = body_of(service.oneshot(request).await.expect("infallible")).await;
    assert_eq!(parts.headers["x-request-id"], "req-7f3a");
    let problem = Problem::from_json(&body).expect("problem");
    assert_eq!(
        problem.extension(REQUEST_ID_MEMBER),
        Some(&"req-7f3a".into())
    );
}

#[tokio::test]
async fn the_request_id_can_be_the_instance() {
    let request = Request::builder()
        .header("x-request-id", "b1946ac9-2b5e-4d8f-9a54-5f1c4f1f0b0e")
        .body(Full::default())
        .expect("valid");
    let layer = ProblemLayer::new().request_id_as_instance(true);
    let response = through(layer, request, || respond(409, None, "")).await;
    let problem = Problem::from_json(&body_of(response).await.1).expect("problem");
    assert_eq!(
        problem.instance().map(|i| i.as_str()),
        Some("urn:uuid:b1946ac9-2b5e-4d8f-9a54-5f1c4f1f0b0e")
    );
    assert_eq!(problem.extension(REQUEST_ID_MEMBER), None);

    // A client-chosen id that is not a UUID never becomes the instance.
    let request = Request::builder()
        .header("x-request-id", "//evil.example/x")
        .body(Full::default())
        .expect("valid");
    let layer = ProblemLayer::new().request_id_as_instance(true);
    let response = through(layer, request, || respond(409, None, "")).await;
    let problem = Problem::from_json(&body_of(response).await.1).expect("problem");
    assert_eq!(problem.instance(), None);
    assert_eq!(
        problem.extension(REQUEST_ID_MEMBER),
        Some(&"//evil.example/x".into())
    );
}

#[tokio::test]
async fn an_empty_problem_body_is_still_converted_and_stale_headers_go() {
    let response = through(ProblemLayer::new(), get(), || {
        let mut r = respond(503, Some("application/problem+json"), "");
        r.headers_mut()
            .insert("etag", "\"v1\"".parse().expect("valid"));
        r.headers_mut()
            .insert("retry-after", "5".parse().expect("valid"));
        r
    })
    .await;
    let (parts, body) = body_of(response).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(parts.headers.get("etag").is_none());
    assert_eq!(parts.headers["retry-after"], "5");
    assert_eq!(Problem::from_json(&body).expect("problem").status(), 503);

    let response = through(ProblemLayer::new(), get(), || {
        let mut r = respond(416, None, "");
        r.headers_mut()
            .insert("content-range", "bytes */1000".parse().expect("valid"));
        r
    })
    .await;
    assert_eq!(response.headers()["content-range"], "bytes */1000");
}

/// A body that arrives in chunks, with no size known in advance.
struct Chunks(std::collections::VecDeque<&'static str>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|chunk| Ok(http_body::Frame::data(Bytes::from_static(chunk.as_bytes())))),
        )
    }
}

#[tokio::test]
async fn a_streamed_text_body_is_kept_up_to_the_limit_only() {
    async fn detail_for(limit: usize, chunks: &[&'static str]) -> Option<String> {
        let chunks: std::collections::VecDeque<&'static str> = chunks.iter().copied().collect();
        let service = ServiceBuilder::new()
            .layer(ProblemLayer::new().client_error_detail_limit(limit))
            .service_fn(move |_req: Request<Full<Bytes>>| {
                let body = Chunks(chunks.clone());
                async move {
                    let mut r = Response::new(body);
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    r.headers_mut()
                        .insert("content-type", "text/plain".parse().expect("valid"));
                    Ok::<_, Infallible>(r)
                }
            });
        let response = service.oneshot(get()).await.expect("infallible");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        Problem::from_json(&body)
            .expect("problem")
            .detail()
            .map(str::to_owned)
    }
    assert_eq!(
        detail_for(10, &["12345", "67890"]).await.as_deref(),
        Some("1234567890")
    );
    assert_eq!(detail_for(9, &["12345", "67890"]).await, None);
}

#[tokio::test]
async fn a_panic_in_call_becomes_an_internal_problem() {
    let catalog = ProblemCatalog::new("https://api.example.com/problems/").expect("valid");
    let service = ServiceBuilder::new()
        .layer(ProblemLayer::new().catalog(catalog))
        .service_fn(|_req: Request<Full<Bytes>>| {
            panic!("secret: the database is on fire");
            #[allow(unreachable_code)] // the type of the future still has to be named
            async {
                Ok::<Res, Infallible>(respond(200, None, ""))
            }
        });
    let (parts, body) = body_of(service.oneshot(get()).await.expect("infallible")).await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&body).contains("secret"));
    let problem = Problem::from_json(&body).expect("problem");
    assert_eq!(
        problem.problem_type().as_str(),
        "https://api.example.com/problems/internal"
    );
    assert_eq!(problem.title(), Some(ProblemKind::Internal.title()));
}

#[tokio::test]
async fn a_panic_in_the_future_becomes_an_internal_problem() {
    let service = ServiceBuilder::new().layer(ProblemLayer::new()).service_fn(
        |req: Request<Full<Bytes>>| async move {
            if req.uri().path() == "/" {
                panic!("secret: index out of bounds");
            }
            Ok::<Res, Infallible>(respond(200, None, ""))
        },
    );
    let (parts, body) = body_of(service.oneshot(get()).await.expect("infallible")).await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&body).contains("secret"));
    let problem = Problem::from_json(&body).expect("problem");
    assert_eq!(problem.problem_type().as_str(), "/problems/internal");
}

#[tokio::test]
async fn inner_errors_are_passed_on_unchanged() {
    let service = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .service_fn(|_req: Request<Full<Bytes>>| async { Err::<Res, BoxError>("boom".into()) });
    let error = service.oneshot(get()).await.expect_err("inner error");
    assert_eq!(error.to_string(), "boom");
}

#[tokio::test]
async fn readiness_is_delegated_to_the_inner_service() {
    let (mut service, mut handle) =
        tower_test::mock::spawn_layer::<Request<Full<Bytes>>, Res, _>(ProblemLayer::new());
    handle.allow(0);
    assert!(service.poll_ready().is_pending());
    handle.allow(1);
    assert!(service.poll_ready().is_ready());

    let call = service.call(get());
    let (request, send) = handle
        .next_request()
        .await
        .expect("request reached the mock");
    assert!(request.headers().contains_key("x-request-id"));
    send.send_response(respond(404, None, ""));
    let response = call.await.expect("ok");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[test]
fn layer_service_future_and_body_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    type Inner = tower::util::ServiceFn<
        fn(Request<Full<Bytes>>) -> std::future::Ready<Result<Res, Infallible>>,
    >;
    assert_send_sync::<ProblemLayer>();
    assert_send_sync::<ProblemService<Inner>>();
    assert_send_sync::<ResponseFuture<std::future::Ready<Result<Res, Infallible>>, Full<Bytes>>>();
    assert_send_sync::<ResponseBody<Full<Bytes>>>();
    assert_send_sync::<Problem>();
}

#[tokio::test]
async fn a_replaced_responder_renders_the_problems_the_layer_makes() {
    // Problems as `{"error": title}` for an older client base; the layer still sets the status,
    // keeps the handler's other headers and stamps the request id.
    let responder = tower_problem_details::Responder::new(|rejection, _protocol| {
        let title = rejection.problem().title().unwrap_or_default().to_owned();
        let mut response = Response::new(Bytes::from(format!(r#"{{"error":"{title}"}}"#)));
        *response.status_mut() = rejection.problem().status();
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("valid"));
        response
    });
    let response = through(
        ProblemLayer::new().responder(responder),
        Request::new(Full::default()),
        || {
            let mut response = respond(405, None, "");
            response
                .headers_mut()
                .insert("allow", "GET".parse().expect("valid"));
            response
        },
    )
    .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["allow"], "GET");
    assert!(response.headers().contains_key("x-request-id"));
    assert!(response.extensions().get::<Problem>().is_some());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("infallible")
        .to_bytes();
    assert_eq!(body, r#"{"error":"Method Not Allowed"}"#);
}
