//! `SunsetLayer` through real `ServiceBuilder` stacks, with tokio's paused clock for time.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_problem_details::Problem;
use tower_sunset::{
    ConfigErrorKind, EXPOSED_HEADERS, Link, Phase, ResponseFuture, Sunset, SunsetLayer, UriRef,
};

type Req = Request<Full<Bytes>>;
type Res = Response<Full<Bytes>>;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn get() -> Req {
    Request::new(Full::default())
}

/// A handler that counts its calls and answers `status`.
fn handler(
    calls: &Arc<AtomicUsize>,
    status: StatusCode,
) -> impl tower::Service<Req, Response = Res, Error = Infallible, Future: Send> + Clone {
    let calls = Arc::clone(calls);
    tower::service_fn(move |_req: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(Full::new(Bytes::from_static(b"served")));
        *response.status_mut() = status;
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn rfc_layer() -> SunsetLayer {
    SunsetLayer::new(at(1_500_000_000))
        .and_then(|l| l.sunset_at(at(1_546_300_799)))
        .expect("valid")
        .deprecation_link(
            Link::new(UriRef::from_static(
                "https://developer.example.com/deprecation",
            ))
            .media_type("text/html")
            .expect("valid"),
        )
        .sunset_link(
            Link::new(UriRef::from_static("http://example.net/sunset"))
                .media_type("text/html")
                .expect("valid"),
        )
        .successor_version(Link::new(UriRef::from_static(
            "https://api.example.com/v2/customers",
        )))
}

#[tokio::test]
async fn headers_match_the_rfc_examples_byte_for_byte() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(SunsetLayer::new(at(1_688_169_599)).expect("valid"))
        .service(handler(&calls, StatusCode::OK));
    let response = service.oneshot(get()).await.expect("infallible");
    assert_eq!(response.headers()["deprecation"], "@1688169599");
    assert!(response.headers().get("sunset").is_none());
    assert!(response.headers().get("link").is_none());

    // The sunset is in the past (2018) but not enforced: served, with every header.
    let service = ServiceBuilder::new()
        .layer(rfc_layer())
        .service(handler(&calls, StatusCode::OK));
    let response = service.oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["deprecation"], "@1500000000");
    assert_eq!(
        response.headers()["sunset"],
        "Mon, 31 Dec 2018 23:59:59 GMT"
    );
    let links: Vec<_> = response.headers().get_all("link").iter().collect();
    assert_eq!(
        links,
        [
            r#"<https://developer.example.com/deprecation>; rel="deprecation"; type="text/html""#,
            r#"<http://example.net/sunset>; rel="sunset"; type="text/html""#,
            r#"<https://api.example.com/v2/customers>; rel="successor-version""#,
        ]
    );
    assert_eq!(response.extensions().get::<Phase>(), Some(&Phase::Retired));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn invalid_configurations_are_refused_when_set() {
    let deprecated = SunsetLayer::new(at(2_000_000_000)).expect("valid");
    let err = deprecated
        .clone()
        .sunset_at(at(1_999_999_999))
        .expect_err("sunset before deprecation");
    assert_eq!(err.kind(), ConfigErrorKind::SunsetBeforeDeprecation);
    assert!(
        deprecated.clone().sunset_at(at(2_000_000_000)).is_ok(),
        "same instant is fine"
    );

    let err = SunsetLayer::new(UNIX_EPOCH - Duration::from_secs(1)).expect_err("pre-1970");
    assert_eq!(err.kind(), ConfigErrorKind::TimeOutOfRange);
    let err = deprecated
        .clone()
        .sunset_at(at(300_000_000_000))
        .expect_err("after 9999");
    assert_eq!(err.kind(), ConfigErrorKind::TimeOutOfRange);

    let with_sunset = deprecated
        .clone()
        .sunset_at(at(2_100_000_000))
        .expect("valid");
    for (start, end) in [
        (2_050_000_000, 2_050_000_000),
        (2_060_000_000, 2_050_000_000),
        (1_990_000_000, 2_050_000_000),
        (2_050_000_000, 2_100_000_001),
    ] {
        let err = with_sunset
            .clone()
            .brownout(at(start), at(end))
            .expect_err("bad window");
        assert_eq!(
            err.kind(),
            ConfigErrorKind::InvalidBrownout,
            "{start}..{end}"
        );
    }
    let err = deprecated
        .clone()
        .brownout(at(2_050_000_000), at(300_000_000_000))
        .expect_err("a brownout ending after 9999");
    assert_eq!(err.kind(), ConfigErrorKind::TimeOutOfRange);
    let with_brownout = deprecated
        .brownout(at(2_050_000_000), at(2_060_000_000))
        .expect("valid");
    let err = with_brownout
        .sunset_at(at(2_055_000_000))
        .expect_err("sunset inside a brownout");
    assert_eq!(err.kind(), ConfigErrorKind::InvalidBrownout);
}

#[tokio::test(start_paused = true)]
async fn after_the_sunset_it_answers_410_without_calling_the_handler() {
    let now = SystemTime::now();
    let layer = SunsetLayer::new(now - Duration::from_secs(86_400))
        .and_then(|l| l.sunset_at(now + Duration::from_secs(3_600)))
        .expect("valid")
        .successor_version(Link::new(UriRef::from_static("/v2/orders")))
        .gone_after_sunset(true);
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(handler(&calls, StatusCode::OK));

    let response = service.clone().oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.extensions().get::<Phase>(),
        Some(&Phase::Deprecated)
    );

    tokio::time::advance(Duration::from_secs(3_601)).await;
    let response = service.clone().oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler was not called"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers().contains_key("deprecation"));
    assert!(response.headers().contains_key("sunset"));
    assert_eq!(
        response.headers()["link"],
        r#"</v2/orders>; rel="successor-version""#
    );
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(response.extensions().get::<Phase>(), Some(&Phase::Retired));
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let problem = Problem::from_json(&body).expect("problem");
    assert_eq!(
        problem.problem_type().as_str(),
        "/problems/api-version-sunset"
    );
    assert_eq!(
        problem.extension("successor_version"),
        Some(&"/v2/orders".into())
    );
    assert!(problem.detail().is_some_and(|d| d.contains("retired on")));
}

#[tokio::test(start_paused = true)]
async fn a_brownout_serves_410_only_inside_its_window() {
    let now = SystemTime::now();
    let start = now + Duration::from_secs(600);
    let end = start + Duration::from_secs(600);
    let layer = SunsetLayer::new(now - Duration::from_secs(60))
        .and_then(|l| l.sunset_at(now + Duration::from_secs(86_400)))
        .and_then(|l| l.brownout(start, end))
        .expect("valid");
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(handler(&calls, StatusCode::OK));

    let status = |r: &Response<tower_problem_details::ResponseBody<Full<Bytes>>>| r.status();
    let response = service.clone().oneshot(get()).await.expect("infallible");
    assert_eq!(status(&response), StatusCode::OK);

    tokio::time::advance(Duration::from_secs(600)).await;
    let response = service.clone().oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(response.headers()["retry-after"], "600");
    assert_eq!(response.extensions().get::<Phase>(), Some(&Phase::Brownout));
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let problem = Problem::from_json(&body).expect("problem");
    assert!(problem.detail().is_some_and(|d| d.contains("brownout")));

    tokio::time::advance(Duration::from_millis(599_500)).await;
    let response = service.clone().oneshot(get()).await.expect("infallible");
    assert_eq!(
        response.headers()["retry-after"],
        "1",
        "rounded up, never 0"
    );

    tokio::time::advance(Duration::from_millis(500)).await;
    let response = service.clone().oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn error_responses_carry_the_headers_too() {
    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::UNPROCESSABLE_ENTITY,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = ServiceBuilder::new()
            .layer(rfc_layer())
            .service(handler(&calls, status));
        let response = service.oneshot(get()).await.expect("infallible");
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["deprecation"], "@1500000000", "{status}");
        assert_eq!(
            response.headers()["sunset"],
            "Mon, 31 Dec 2018 23:59:59 GMT",
            "{status}"
        );
        assert_eq!(
            response.headers().get_all("link").iter().count(),
            3,
            "{status}"
        );
    }
}

#[tokio::test]
async fn the_hook_fires_once_per_call_with_the_request() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let layer = SunsetLayer::new(at(1_500_000_000))
        .expect("valid")
        .on_deprecated_call(move |request: &Req, phase: Phase| {
            let key = request
                .headers()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            log.lock().expect("not poisoned").push((key, phase));
        });
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(handler(&calls, StatusCode::OK));
    for key in ["alice", "bob", "alice"] {
        let request = Request::builder()
            .header("x-api-key", key)
            .body(Full::default())
            .expect("valid");
        service.clone().oneshot(request).await.expect("infallible");
    }
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        [
            ("alice".to_owned(), Phase::Deprecated),
            ("bob".to_owned(), Phase::Deprecated),
            ("alice".to_owned(), Phase::Deprecated)
        ]
    );
}

#[tokio::test]
async fn an_inner_layers_headers_are_kept_as_one_set() {
    let service = ServiceBuilder::new()
        .layer(rfc_layer())
        .layer(SunsetLayer::new(at(1_400_000_000)).expect("valid"))
        .service_fn(|_req: Req| async { Ok::<_, Infallible>(Res::new(Full::default())) });
    let response = service.oneshot(get()).await.expect("infallible");
    assert_eq!(response.headers()["deprecation"], "@1400000000");
    assert_eq!(response.headers().get_all("deprecation").iter().count(), 1);
    assert!(
        response.headers().get("sunset").is_none(),
        "no sunset mixed in from outside"
    );
    assert!(
        response.headers().get("link").is_none(),
        "no links mixed in from outside"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_spans_back_to_back_windows_and_is_left_out_before_an_enforced_sunset() {
    let now = SystemTime::now();
    let mins = |m: u64| now + Duration::from_secs(60 * m);
    let layer = SunsetLayer::new(now)
        .and_then(|l| l.sunset_at(mins(60)))
        .and_then(|l| l.brownout(mins(10), mins(20)))
        .and_then(|l| l.brownout(mins(20), mins(30)))
        .and_then(|l| l.brownout(mins(50), mins(60)))
        .expect("valid")
        .gone_after_sunset(true);
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(handler(&calls, StatusCode::OK));

    tokio::time::advance(Duration::from_secs(60 * 10)).await;
    let response = service.clone().oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(
        response.headers()["retry-after"],
        "1200",
        "until the end of both windows"
    );

    tokio::time::advance(Duration::from_secs(60 * 40)).await;
    let response = service.clone().oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::GONE);
    assert!(
        response.headers().get("retry-after").is_none(),
        "the window ends at the enforced sunset"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn cors_preflights_pass_during_a_brownout() {
    let now = SystemTime::now();
    let layer = SunsetLayer::new(now)
        .and_then(|l| l.brownout(now, now + Duration::from_secs(60)))
        .expect("valid");
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(handler(&calls, StatusCode::NO_CONTENT));
    let preflight = Request::options("/v1/orders")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .body(Full::default())
        .expect("valid");
    let response = service
        .clone()
        .oneshot(preflight)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = service.oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cors_responses_expose_the_headers() {
    use tower_http::cors::{Any, CorsLayer};

    let calls = Arc::new(AtomicUsize::new(0));
    let cross_origin = || {
        Request::builder()
            .header("origin", "https://app.example.com")
            .body(Full::default())
            .expect("valid")
    };
    let exposed = |r: &Response<tower_problem_details::ResponseBody<Full<Bytes>>>| -> Vec<String> {
        r.headers()
            .get_all("access-control-expose-headers")
            .iter()
            .flat_map(|v| {
                v.to_str()
                    .expect("ascii")
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .collect()
    };

    // CORS handled inside this layer: the names are appended to what it exposes.
    let inside = ServiceBuilder::new()
        .layer(rfc_layer())
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .expose_headers([http::header::ETAG]),
        )
        .service(handler(&calls, StatusCode::OK));
    let names = exposed(&inside.oneshot(cross_origin()).await.expect("infallible"));
    for name in ["etag", "deprecation", "sunset", "link"] {
        assert!(names.contains(&name.to_owned()), "{name} not in {names:?}");
    }

    // CORS outside, told about EXPOSED_HEADERS.
    let outside = ServiceBuilder::new()
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .expose_headers(EXPOSED_HEADERS),
        )
        .layer(rfc_layer())
        .service(handler(&calls, StatusCode::OK));
    let names = exposed(&outside.oneshot(cross_origin()).await.expect("infallible"));
    for name in ["deprecation", "sunset", "link"] {
        assert!(names.contains(&name.to_owned()), "{name} not in {names:?}");
    }

    // Same-origin requests without CORS get no expose header.
    let plain = ServiceBuilder::new()
        .layer(rfc_layer())
        .service(handler(&calls, StatusCode::OK));
    assert!(exposed(&plain.oneshot(get()).await.expect("infallible")).is_empty());
}

#[tokio::test]
async fn readiness_is_delegated_and_a_rejection_leaves_the_inner_service_alone() {
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<Req, Res, _>(
        SunsetLayer::new(at(1_500_000_000)).expect("valid"),
    );
    handle.allow(0);
    assert!(service.poll_ready().is_pending());
    handle.allow(1);
    assert!(service.poll_ready().is_ready());
    let call = service.call(get());
    let (_request, send) = handle
        .next_request()
        .await
        .expect("request reached the mock");
    send.send_response(Res::new(Full::default()));
    let response = call.await.expect("ok");
    assert_eq!(response.headers()["deprecation"], "@1500000000");

    let retired = SunsetLayer::new(at(1_500_000_000))
        .and_then(|l| l.sunset_at(at(1_500_000_001)))
        .expect("valid")
        .gone_after_sunset(true);
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<Req, Res, _>(retired);
    handle.allow(1);
    assert!(service.poll_ready().is_ready());
    let response = service.call(get()).await.expect("ok");
    assert_eq!(response.status(), StatusCode::GONE);
    drop(service);
    assert!(
        handle.next_request().await.is_none(),
        "no request reached the inner service"
    );
}

#[test]
fn layer_service_and_future_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    type Inner = tower::util::ServiceFn<fn(Req) -> std::future::Ready<Result<Res, Infallible>>>;
    assert_send_sync::<SunsetLayer>();
    assert_send_sync::<Sunset<Inner>>();
    assert_send_sync::<ResponseFuture<std::future::Ready<Result<Res, Infallible>>>>();
}

#[tokio::test(start_paused = true)]
async fn a_replaced_responder_shapes_the_410_and_the_layer_still_stamps_it() {
    // A responder that answers in the style of an older API: 404 with a text body.
    let responder = tower_problem_details::Responder::new(|rejection, _protocol| {
        let mut response = Response::new(Bytes::from(
            rejection.problem().detail().unwrap_or_default().to_owned(),
        ));
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
    });
    let now = SystemTime::now();
    let layer = SunsetLayer::new(now - Duration::from_secs(86_400))
        .and_then(|l| l.sunset_at(now - Duration::from_secs(60)))
        .expect("valid")
        .gone_after_sunset(true)
        .responder(responder);
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(handler(&calls, StatusCode::OK));

    let response = service.oneshot(get()).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(response.headers().contains_key("deprecation"));
    assert!(response.headers().contains_key("sunset"));
    assert_eq!(response.extensions().get::<Phase>(), Some(&Phase::Retired));
    assert_eq!(
        response.extensions().get::<tower_sunset::SunsetRejection>(),
        Some(&tower_sunset::SunsetRejection::Retired)
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("infallible")
        .to_bytes();
    assert!(
        body.starts_with(b"This API version was retired on "),
        "{body:?}"
    );
}
