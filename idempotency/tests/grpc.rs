//! The idempotency layer in front of a real tonic server, called by a real tonic client.
#![cfg(feature = "grpc")]

use std::net::SocketAddr;
use std::time::Duration;

use guardrail_test_support::grpc::{self, EchoHandler, SayRequest};
use http::HeaderName;
use tonic::transport::Server;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower_idempotency::{
    Claim, Completion, Fenced, FencingToken, Fingerprint, IdempotencyLayer, IdempotencyStore,
    MemoryStore, Scope, StoreError, StoreErrorKind, StoreFuture, StoreKey,
};

fn layer<St: IdempotencyStore>(store: St) -> IdempotencyLayer<St> {
    IdempotencyLayer::new(store, Scope::header(HeaderName::from_static("x-tenant")))
}

async fn serve<St: IdempotencyStore>(store: St, echo: &EchoHandler) -> SocketAddr {
    let (incoming, addr) = grpc::listener().await;
    let router = Server::builder()
        .layer(layer(store))
        .add_service(echo.server());
    tokio::spawn(router.serve_with_incoming(incoming));
    addr
}

fn keyed(key: &str, text: &str, messages: u32) -> tonic::Request<SayRequest> {
    let mut request = tonic::Request::new(SayRequest {
        text: text.to_owned(),
        messages,
    });
    let metadata = request.metadata_mut();
    metadata.insert("x-tenant", "acme".parse().expect("ASCII"));
    metadata.insert("idempotency-key", key.parse().expect("ASCII"));
    request
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn grpc_retries_with_a_key_replay_the_original_reply_and_its_trailers() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(MemoryStore::new(), &echo).await).await;

    let first = client
        .say(keyed("k1", "hello", 0))
        .await
        .expect("the original");
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let first = first.into_inner();
    assert_eq!((first.text.as_str(), first.executions), ("hello", 1));

    // The replay is a whole gRPC answer: message, then `grpc-status: 0` in the trailers
    // (without them the client would report a protocol error).
    let retry = client
        .say(keyed("k1", "hello", 0))
        .await
        .expect("the replay");
    assert_eq!(
        retry.metadata().get("idempotent-replayed").expect("marked"),
        "true"
    );
    assert_eq!(retry.into_inner(), first);
    assert_eq!(echo.executions(), 1, "the handler ran once");

    // Another message under the same key: the fingerprint covers the message bytes.
    let reused = client
        .say(keyed("k1", "goodbye", 0))
        .await
        .expect_err("reused");
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");

    // Without a key the layer stays out of the way.
    let mut plain = tonic::Request::new(SayRequest::default());
    plain
        .metadata_mut()
        .insert("x-tenant", "acme".parse().expect("ASCII"));
    client.say(plain).await.expect("no key, no idempotency");
    assert_eq!(echo.executions(), 2);
}

#[tokio::test]
async fn grpc_definite_errors_are_replayed_with_their_status() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(MemoryStore::new(), &echo).await).await;
    // NOT_FOUND is a definite answer (404): kept, and replayed with its code and message,
    // which tonic sent in the header block (Trailers-Only).
    let original = client
        .say(keyed("k5", "missing", 0))
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(original.code(), Code::NotFound);
    let replay = client
        .say(keyed("k5", "missing", 0))
        .await
        .expect_err("NOT_FOUND again");
    assert_eq!(replay.code(), Code::NotFound);
    assert_eq!(replay.message(), "no order 42");
    assert_eq!(
        replay
            .metadata()
            .get("idempotent-replayed")
            .expect("a replay"),
        "true"
    );
    assert_eq!(echo.executions(), 1);
}

#[tokio::test]
async fn grpc_failures_a_retry_may_cure_give_the_key_back() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(MemoryStore::new(), &echo).await).await;
    for _ in 0..2 {
        let failed = client
            .say(keyed("k2", "fail", 0))
            .await
            .expect_err("INTERNAL");
        assert_eq!(failed.code(), Code::Internal);
    }
    // INTERNAL maps to 500, which the default outcome policy never stores.
    assert_eq!(echo.executions(), 2);
}

#[tokio::test]
async fn grpc_streams_pass_through_unbuffered_are_aborted_while_in_flight_and_never_replayed() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(MemoryStore::new(), &echo).await).await;

    let mut stream = client
        .count(keyed("k3", "tick", 3))
        .await
        .expect("the original")
        .into_inner();
    // The first message arrives while the handler holds the rest back: nothing is buffered.
    let first = stream.message().await.expect("a message").expect("one");
    assert_eq!(first.text, "tick 0");

    // The original still holds its claim.
    let in_flight = client
        .count(keyed("k3", "tick", 3))
        .await
        .expect_err("in flight");
    assert_eq!(in_flight.code(), Code::Aborted);
    assert_eq!(reason(&in_flight), "IDEMPOTENCY_KEY_IN_USE");
    let details = in_flight.get_error_details();
    let retry = details.retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));

    echo.release_streams();
    let mut rest = Vec::new();
    while let Some(reply) = stream.message().await.expect("a message") {
        rest.push(reply.text);
    }
    assert_eq!(rest, ["tick 1", "tick 2"]);

    // A stream is not replayed, and never runs twice. Its claim is settled by a write that
    // may still be on its way: retry for a bounded time while it says in flight.
    let mut answer = None;
    for _ in 0..100 {
        let status = client
            .count(keyed("k3", "tick", 3))
            .await
            .expect_err("not replayable");
        if status.code() != Code::Aborted {
            answer = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = answer.expect("the claim was settled");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_RESULT_UNAVAILABLE");
    assert_eq!(echo.executions(), 1);
}

/// A store that is always down.
#[derive(Clone, Debug)]
struct DownStore;

fn down<T>() -> StoreFuture<T> {
    Box::pin(async { Err(StoreError::new(StoreErrorKind::Unavailable, "down")) })
}

impl IdempotencyStore for DownStore {
    fn claim(&self, _: StoreKey, _: Fingerprint, _: Duration) -> StoreFuture<Claim> {
        down()
    }
    fn complete(
        &self,
        _: StoreKey,
        _: FencingToken,
        _: Fingerprint,
        _: Completion,
        _: Duration,
    ) -> StoreFuture<Fenced> {
        down()
    }
    fn release(&self, _: StoreKey, _: FencingToken) -> StoreFuture<Fenced> {
        down()
    }
    fn renew(&self, _: StoreKey, _: FencingToken, _: Duration) -> StoreFuture<Fenced> {
        down()
    }
}

#[tokio::test]
async fn grpc_calls_while_the_store_is_down_are_unavailable_and_never_run() {
    let echo = EchoHandler::new();
    let mut client = grpc::client(serve(DownStore, &echo).await).await;
    let status = client
        .say(keyed("k4", "hello", 0))
        .await
        .expect_err("store down");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "IDEMPOTENCY_STORE_UNAVAILABLE");
    assert!(status.get_error_details().retry_info().is_some());
    assert_eq!(echo.executions(), 0);

    // A bad key is the client's mistake.
    let mut bad = keyed("k4", "hello", 0);
    bad.metadata_mut()
        .insert("idempotency-key", "\"unterminated".parse().expect("ASCII"));
    let status = client.say(bad).await.expect_err("bad key");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_INVALID");
}
