//! AIP-158 pagination in a real tonic handler, called by a real tonic client.
#![cfg(feature = "grpc")]

use std::net::SocketAddr;

use guardrail_test_support::grpc::{self, EchoHandler, ListReply, ListRequest};
use tonic::transport::Server;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower_cursor::{CursorCodec, CursorSecret, KeyId, KeyRing, Paginator, QueryFingerprint};
use tower_problem_details::Rejection;

const METHOD: &str = "/guardrail.test.v1.Echo/List";
const ITEMS: u64 = 45;

fn paginator() -> Paginator {
    let secret = CursorSecret::new([7u8; 32]).expect("a secret");
    Paginator::new(CursorCodec::new(KeyRing::new(KeyId::new(1), &secret)))
        .page_size(10, 20)
        .expect("valid sizes")
}

/// What a handler does with a guardrail's rejection.
fn status(rejection: &Rejection) -> Status {
    Status::with_details(
        Code::from(rejection.grpc_code().value()),
        rejection.grpc_message(),
        rejection.grpc_status_details("cursor.test"),
    )
}

/// Lists 1..=ITEMS, optionally only the even ones, by keyset on the item.
fn list(paginator: &Paginator, request: &ListRequest) -> Result<ListReply, Status> {
    let query = QueryFingerprint::builder().param("filter", request.filter.clone());
    let page = paginator
        .grpc_page_request::<u64>(METHOD, request.page_size, &request.page_token, query)
        .map_err(|error| status(&paginator.grpc_rejection(&error)))?;
    let after = page.position().map_or(0, |position| *position.keys());
    let rows: Vec<u64> = (after + 1..=ITEMS)
        .filter(|item| request.filter != "even" || item % 2 == 0)
        .take(usize::try_from(page.fetch_limit()).expect("small"))
        .collect();
    let page = page
        .paginate(rows, |item| *item)
        .map_err(|_| Status::internal("encode"))?;
    Ok(ListReply {
        next_page_token: page.next_cursor().unwrap_or_default().to_owned(),
        items: page.into_data(),
    })
}

async fn serve() -> SocketAddr {
    let paginator = paginator();
    let echo = EchoHandler::new().with_lister(move |request| list(&paginator, &request));
    let (incoming, addr) = grpc::listener().await;
    let router = Server::builder().add_service(echo.server());
    tokio::spawn(router.serve_with_incoming(incoming));
    addr
}

fn request(page_size: i32, page_token: &str, filter: &str) -> ListRequest {
    ListRequest {
        page_size,
        page_token: page_token.to_owned(),
        filter: filter.to_owned(),
    }
}

#[tokio::test]
async fn grpc_page_tokens_walk_the_whole_list_without_skips_or_repeats() {
    let mut client = grpc::client(serve().await).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut sizes = Vec::new();
    loop {
        // 0 asks for the default (10); 500 is lowered to the maximum (20), as AIP-158 says.
        let size = if sizes.is_empty() { 0 } else { 500 };
        let reply = client
            .list(request(size, &token, ""))
            .await
            .expect("a page")
            .into_inner();
        sizes.push(reply.items.len());
        seen.extend(reply.items);
        if reply.next_page_token.is_empty() {
            break;
        }
        token = reply.next_page_token;
        assert!(sizes.len() < 10, "the list ends");
    }
    assert_eq!(seen, (1..=ITEMS).collect::<Vec<_>>());
    assert_eq!(sizes, [10, 20, 15]);
}

#[tokio::test]
async fn grpc_bad_page_tokens_are_invalid_argument_with_error_info() {
    let mut client = grpc::client(serve().await).await;

    let forged = client
        .list(request(5, "not-a-token", ""))
        .await
        .expect_err("refused");
    assert_eq!(forged.code(), Code::InvalidArgument);
    assert!(
        forged.message().contains("`page_token`"),
        "{}",
        forged.message()
    );
    let info = forged
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.reason, "INVALID_CURSOR");
    assert_eq!(info.domain, "cursor.test");
    assert_eq!(info.metadata["reason"], "malformed");

    // A token of the unfiltered list is refused by the filtered one.
    let first = client
        .list(request(5, "", ""))
        .await
        .expect("a page")
        .into_inner();
    let other = client
        .list(request(5, &first.next_page_token, "even"))
        .await
        .expect_err("another query");
    assert_eq!(other.code(), Code::InvalidArgument);
    let info = other
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.metadata["reason"], "query_mismatch");

    let negative = client.list(request(-1, "", "")).await.expect_err("refused");
    assert_eq!(negative.code(), Code::InvalidArgument);
    let info = negative
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.reason, "INVALID_PAGE_SIZE");
    assert_eq!(info.metadata["parameter"], "page_size");
}
