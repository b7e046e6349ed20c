//! The sunset layer in front of a real tonic server, called by a real tonic client.
#![cfg(feature = "grpc")]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use guardrail_test_support::grpc::{self, EchoHandler, SayRequest};
use tonic::Code;
use tonic::transport::Server;
use tonic_types::StatusExt;
use tower_sunset::{Link, SunsetLayer, UriRef};

const DAY: Duration = Duration::from_secs(86_400);

async fn serve(layer: SunsetLayer, echo: &EchoHandler) -> SocketAddr {
    let (incoming, addr) = grpc::listener().await;
    let router = Server::builder().layer(layer).add_service(echo.server());
    tokio::spawn(router.serve_with_incoming(incoming));
    addr
}

fn hi() -> SayRequest {
    SayRequest {
        text: "hi".into(),
        messages: 0,
    }
}

#[tokio::test]
async fn grpc_deprecated_calls_carry_deprecation_sunset_and_link_metadata() {
    let now = SystemTime::now();
    let layer = SunsetLayer::new(now - DAY)
        .expect("valid")
        .sunset_at(now + 30 * DAY)
        .expect("valid")
        .successor_version(Link::new(UriRef::from_static("/guardrail.test.v2.Echo")));
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(layer, &echo).await).await;

    let reply = client.say(hi()).await.expect("still served");
    let metadata = reply.metadata();
    assert!(
        metadata
            .get("deprecation")
            .expect("deprecation")
            .to_str()
            .expect("ASCII")
            .starts_with('@')
    );
    assert!(
        metadata
            .get("sunset")
            .expect("sunset")
            .to_str()
            .expect("ASCII")
            .ends_with(" GMT")
    );
    assert_eq!(
        metadata.get("link").expect("link"),
        r#"</guardrail.test.v2.Echo>; rel="successor-version""#
    );

    // A streaming call is stamped too, and streams unbuffered.
    let mut request = hi();
    request.messages = 2;
    let response = client.count(request).await.expect("served");
    assert!(response.metadata().get("deprecation").is_some());
    let mut stream = response.into_inner();
    assert_eq!(
        stream
            .message()
            .await
            .expect("a message")
            .expect("one")
            .text,
        "hi 0"
    );
    echo.release_streams();
    assert_eq!(
        stream
            .message()
            .await
            .expect("a message")
            .expect("two")
            .text,
        "hi 1"
    );
    assert!(stream.message().await.expect("the end").is_none());
}

#[tokio::test]
async fn grpc_calls_after_the_sunset_are_unimplemented_with_the_headers_as_metadata() {
    let now = SystemTime::now();
    let layer = SunsetLayer::new(now - 60 * DAY)
        .expect("valid")
        .sunset_at(now - DAY)
        .expect("valid")
        .successor_version(Link::new(UriRef::from_static("/guardrail.test.v2.Echo")))
        .gone_after_sunset(true);
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(layer, &echo).await).await;

    let status = client.say(hi()).await.expect_err("retired");
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status
            .message()
            .starts_with("This API version was retired on "),
        "{}",
        status.message()
    );
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "API_VERSION_SUNSET");
    assert_eq!(
        info.metadata["successor_version"],
        "/guardrail.test.v2.Echo"
    );
    assert!(details.retry_info().is_none(), "nothing to come back to");
    assert!(status.metadata().get("sunset").is_some());
    assert!(status.metadata().get("deprecation").is_some());
    assert_eq!(echo.executions(), 0);
}

#[tokio::test]
async fn grpc_calls_in_a_brownout_say_when_to_come_back() {
    let now = SystemTime::now();
    let layer = SunsetLayer::new(now - DAY)
        .expect("valid")
        .brownout(
            now - Duration::from_secs(60),
            now + Duration::from_secs(600),
        )
        .expect("valid");
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(layer, &echo).await).await;

    let status = client.say(hi()).await.expect_err("browned out");
    assert_eq!(status.code(), Code::Unimplemented);
    let delay = status
        .get_error_details()
        .retry_info()
        .expect("RetryInfo")
        .retry_delay
        .expect("a delay");
    assert!(
        delay > Duration::from_secs(590) && delay <= Duration::from_secs(600),
        "{delay:?}"
    );
}
