//! The rate limiter in front of a real tonic server, called by a real tonic client.
#![cfg(feature = "grpc")]

use std::time::Duration;

use guardrail_test_support::grpc::{self, EchoHandler, SayRequest};
use http::{HeaderName, HeaderValue};
use tonic::Code;
use tonic::transport::Server;
use tonic_types::StatusExt;
use tower_problem_details::{Protocol, Responder};
use tower_ratelimit::{KeyExtractor, MemoryStore, Policy, Quota, RateLimitLayer};

fn layer() -> RateLimitLayer<MemoryStore> {
    RateLimitLayer::new(
        MemoryStore::new(),
        [Policy::gcra("per-tenant", Quota::per_minute(2).expect("a quota")).expect("a policy")],
        KeyExtractor::header(HeaderName::from_static("x-tenant")),
    )
    .expect("a valid layer")
}

fn say(tenant: &str) -> tonic::Request<SayRequest> {
    let mut request = tonic::Request::new(SayRequest {
        text: "hi".into(),
        messages: 0,
    });
    request
        .metadata_mut()
        .insert("x-tenant", tenant.parse().expect("ASCII metadata"));
    request
}

async fn serve(layer: RateLimitLayer<MemoryStore>, echo: &EchoHandler) -> std::net::SocketAddr {
    let (incoming, addr) = grpc::listener().await;
    let router = Server::builder().layer(layer).add_service(echo.server());
    tokio::spawn(router.serve_with_incoming(incoming));
    addr
}

#[tokio::test]
async fn grpc_quota_exceeded_is_resource_exhausted_with_retry_info_the_client_reads() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(layer(), &echo).await).await;

    for _ in 0..2 {
        let reply = client.say(say("acme")).await.expect("admitted");
        // The RateLimit headers go out as response metadata.
        assert!(reply.metadata().get("ratelimit").is_some());
        assert!(reply.metadata().get("ratelimit-policy").is_some());
    }
    let status = client.say(say("acme")).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .starts_with("The quota of per-tenant is used up"),
        "{}",
        status.message()
    );
    let details = status.get_error_details();
    let retry = details.retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    // Two per minute: the next one is admitted after 30 s (give or take the test's own time).
    assert!(
        delay > Duration::from_secs(25) && delay <= Duration::from_secs(30),
        "{delay:?}"
    );
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "QUOTA_EXCEEDED");
    assert_eq!(info.metadata["violated-policies"], r#"["per-tenant"]"#);
    let quota = details.quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "per-tenant");
    let pushback: u128 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("a pushback")
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("milliseconds");
    assert_eq!(
        pushback,
        delay.as_nanos().div_ceil(1_000_000),
        "the same delay, in ms"
    );
    assert!(status.metadata().get("ratelimit").is_some());
    assert_eq!(
        echo.executions(),
        2,
        "the refused call never reached the handler"
    );

    // Keys come from metadata: another tenant has its own budget.
    client
        .say(say("globex"))
        .await
        .expect("another tenant is admitted");
}

#[tokio::test]
async fn grpc_calls_without_a_key_are_unauthenticated() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(layer(), &echo).await).await;
    let request = tonic::Request::new(SayRequest::default());
    let status = client.say(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .expect("ErrorInfo")
            .reason,
        "UNAUTHORIZED"
    );
    assert_eq!(echo.executions(), 0);
}

#[tokio::test]
async fn grpc_streams_pass_through_and_spend_one_unit() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(layer(), &echo).await).await;
    let mut request = say("acme");
    request.get_mut().messages = 3;
    let mut stream = client.count(request).await.expect("admitted").into_inner();
    let first = stream
        .message()
        .await
        .expect("a message")
        .expect("not the end");
    assert_eq!(first.text, "hi 0");
    echo.release_streams();
    let mut texts = vec![first.text];
    while let Some(reply) = stream.message().await.expect("a message") {
        texts.push(reply.text);
    }
    assert_eq!(texts, ["hi 0", "hi 1", "hi 2"]);
}

#[tokio::test]
async fn grpc_rejections_follow_a_replaced_responder() {
    // Every rejection also carries a support link, on both protocols.
    let responder = Responder::new(|rejection, protocol| {
        let mut response = rejection.into_response(protocol, "ratelimit.test");
        response.headers_mut().insert(
            "x-support",
            HeaderValue::from_static(if protocol == Protocol::Grpc {
                "grpc"
            } else {
                "http"
            }),
        );
        response
    });
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(layer().responder(responder), &echo).await).await;
    client.say(say("acme")).await.expect("admitted");
    client.say(say("acme")).await.expect("admitted");
    let status = client.say(say("acme")).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.metadata().get("x-support").expect("the header"),
        "grpc"
    );
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .expect("ErrorInfo")
            .domain,
        "ratelimit.test"
    );
}
