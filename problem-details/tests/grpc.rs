//! `ProblemLayer` in front of a real tonic server, called by a real tonic client.
#![cfg(feature = "grpc")]

use std::net::SocketAddr;

use guardrail_test_support::grpc::{self, EchoHandler, ListRequest, SayRequest};
use tonic::Code;
use tonic::transport::Server;
use tonic_types::StatusExt;
use tower_problem_details::ProblemLayer;

async fn serve(echo: &EchoHandler) -> SocketAddr {
    let (incoming, addr) = grpc::listener().await;
    let router = Server::builder()
        .layer(ProblemLayer::new())
        .add_service(echo.server());
    tokio::spawn(router.serve_with_incoming(incoming));
    addr
}

fn say(text: &str) -> SayRequest {
    SayRequest {
        text: text.to_owned(),
        messages: 0,
    }
}

#[tokio::test]
async fn grpc_panics_become_internal_with_a_request_id_and_the_server_keeps_serving() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(&echo).await).await;

    let status = client
        .say(say("panic"))
        .await
        .expect_err("the handler panicked");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "Internal server error");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "INTERNAL");
    let request_id = status.metadata().get("x-request-id").expect("a request id");
    assert_eq!(
        info.metadata["request_id"],
        request_id.to_str().expect("ASCII")
    );

    // The connection and the server survived.
    let reply = client.say(say("hi")).await.expect("served");
    assert!(reply.metadata().get("x-request-id").is_some());
    assert_eq!(reply.into_inner().text, "hi");
}

#[tokio::test]
async fn grpc_internal_errors_lose_their_message_and_details_on_the_way_out() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(&echo).await).await;

    let status = client.say(say("fail")).await.expect_err("INTERNAL");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "Internal server error");
    assert!(!format!("{status:?}").contains("db-7"), "{status:?}");
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .expect("ErrorInfo")
            .reason,
        "INTERNAL"
    );

    // Client errors keep their message: the handler's UNIMPLEMENTED for `List`.
    let request = ListRequest::default();
    let status = client.list(request).await.expect_err("no lister");
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(status.message(), "this test installed no lister");
}

#[tokio::test]
async fn grpc_streams_that_fail_midway_lose_the_message_of_their_trailers() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(&echo).await).await;
    let request = SayRequest {
        text: "fail".to_owned(),
        messages: 0,
    };
    let mut stream = client.count(request).await.expect("a stream").into_inner();
    let first = stream.message().await.expect("a message").expect("one");
    assert_eq!(first.text, "fail 0");
    let status = stream.message().await.expect_err("the stream failed");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "Internal server error");
    assert!(!format!("{status:?}").contains("db-7"), "{status:?}");
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .expect("ErrorInfo")
            .reason,
        "INTERNAL"
    );
}
