//! The layer driven through `ServiceBuilder` stacks over an in-memory listing.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_cursor::{
    ConfigErrorKind, CursorCodec, CursorErrorKind, CursorLayer, CursorRejection, CursorSecret,
    Direction, KeyId, KeyRing, PageRequest, Paginator, QueryFingerprint,
};

/// Rows are `(score, id)`, listed by score descending, then id ascending (mixed directions).
type Row = (i64, i64);

fn paginator() -> Paginator {
    let secret = CursorSecret::new([3u8; 32]).unwrap();
    Paginator::new(CursorCodec::new(KeyRing::new(KeyId::new(1), &secret)))
        .page_size(2, 5)
        .unwrap()
}

fn listing_order(a: &Row, b: &Row) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

/// A reference keyset query over a vector: what the SQL helper generates, in Rust.
fn fetch(rows: &[Row], page: &PageRequest<Row>) -> Vec<Row> {
    let mut rows: Vec<Row> = rows.to_vec();
    rows.sort_by(listing_order);
    let limit = usize::try_from(page.fetch_limit()).unwrap();
    match page.position() {
        None => rows.into_iter().take(limit).collect(),
        Some(position) => {
            let boundary = *position.keys();
            match position.direction() {
                Direction::After => rows
                    .into_iter()
                    .filter(|row| listing_order(row, &boundary).is_gt())
                    .take(limit)
                    .collect(),
                Direction::Before => rows
                    .into_iter()
                    .rev()
                    .filter(|row| listing_order(row, &boundary).is_lt())
                    .take(limit)
                    .collect(),
            }
        }
    }
}

type Handler = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    Response<tower_problem_details::ResponseBody<Full<Bytes>>>,
    BoxError,
>;

fn service(paginator: Paginator, rows: Vec<Row>, calls: Arc<AtomicUsize>) -> Handler {
    let rows = Arc::new(rows);
    let handler = service_fn(move |request: Request<Full<Bytes>>| {
        let rows = Arc::clone(&rows);
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let Some(page) = request.extensions().get::<PageRequest<Row>>() else {
                return Ok::<_, BoxError>(Response::new(Full::from("no page request")));
            };
            let page = page.paginate(fetch(&rows, page), |row| *row)?;
            Ok(page.into_response())
        }
    });
    ServiceBuilder::new()
        .layer(CursorLayer::<Row>::new(paginator))
        .service(handler)
        .boxed_clone()
}

fn rows() -> Vec<Row> {
    vec![(9, 1), (9, 2), (7, 3), (7, 4), (5, 5), (3, 6), (3, 7)]
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    body: Value,
}

async fn get(service: &Handler, uri: &str) -> Answer {
    let response = service
        .clone()
        .oneshot(Request::get(uri).body(Full::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        extensions: parts.extensions,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn ids(body: &Value) -> Vec<i64> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[1].as_i64().unwrap())
        .collect()
}

fn next(body: &Value) -> String {
    body["next_cursor"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn pages_forward_with_the_default_and_a_requested_page_size() {
    let service = service(paginator(), rows(), Arc::default());
    let first = get(&service, "/items").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(ids(&first.body), [1, 2]);
    assert_eq!(first.body["has_more"], true);
    assert!(first.body.get("prev_cursor").is_none());

    let mut seen = ids(&first.body);
    let mut cursor = next(&first.body);
    loop {
        let page = get(&service, &format!("/items?limit=3&cursor={cursor}")).await;
        assert_eq!(page.status, StatusCode::OK);
        seen.extend(ids(&page.body));
        if page.body["has_more"] == false {
            assert_eq!(page.body["next_cursor"], Value::Null);
            break;
        }
        cursor = next(&page.body);
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn prev_cursors_page_backward_in_listing_order() {
    let service = service(paginator().prev_cursor(true), rows(), Arc::default());
    let first = get(&service, "/items?limit=3").await;
    assert_eq!(first.body["prev_cursor"], Value::Null);
    let second = get(
        &service,
        &format!("/items?limit=3&cursor={}", next(&first.body)),
    )
    .await;
    let third = get(
        &service,
        &format!("/items?limit=3&cursor={}", next(&second.body)),
    )
    .await;
    assert_eq!(ids(&third.body), [7]);
    assert_eq!(third.body["has_more"], false);

    let prev = third.body["prev_cursor"].as_str().unwrap();
    let back = get(&service, &format!("/items?limit=3&cursor={prev}")).await;
    assert_eq!(ids(&back.body), [4, 5, 6]);
    assert_eq!(back.body["has_more"], true, "rows follow a backward page");
    assert!(
        back.body["prev_cursor"].is_string(),
        "rows precede this page"
    );
    let prev = back.body["prev_cursor"].as_str().unwrap();
    let start = get(&service, &format!("/items?limit=3&cursor={prev}")).await;
    assert_eq!(ids(&start.body), [1, 2, 3]);
    assert_eq!(start.body["has_more"], true);
    assert_eq!(start.body["prev_cursor"], Value::Null);
    // And forward again from a backward page.
    let again = get(
        &service,
        &format!("/items?limit=3&cursor={}", next(&start.body)),
    )
    .await;
    assert_eq!(ids(&again.body), [4, 5, 6]);
}

#[tokio::test]
async fn link_header_keeps_the_other_parameters_verbatim() {
    let listing = service(paginator().prev_cursor(true), rows(), Arc::default());
    let first = get(&listing, "/items?q=a%20b&limit=2&tag=x&tag=y").await;
    let cursor = next(&first.body);
    assert_eq!(
        first.headers["link"],
        format!(
            "</items?q=a%20b&limit=2&tag=x&tag=y&cursor={cursor}>; rel=\"next\", \
             </items?q=a%20b&limit=2&tag=x&tag=y>; rel=\"first\""
        )
    );
    let second = get(
        &listing,
        &format!("/items?cursor={cursor}&q=a%20b&limit=2&tag=x&tag=y"),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK);
    let link = second.headers["link"].to_str().unwrap();
    assert!(link.contains("rel=\"prev\""), "{link}");
    assert!(
        link.contains("</items?q=a%20b&limit=2&tag=x&tag=y>; rel=\"first\""),
        "{link}"
    );

    let absolute = service(
        paginator().link_base("https://api.example.com/").unwrap(),
        rows(),
        Arc::default(),
    );
    let page = get(&absolute, "/items").await;
    let link = page.headers["link"].to_str().unwrap();
    assert!(
        link.starts_with("<https://api.example.com/items?cursor="),
        "{link}"
    );
}

#[tokio::test]
async fn cursors_survive_reordered_parameters_and_a_new_page_size() {
    let service = service(paginator(), rows(), Arc::default());
    let first = get(&service, "/items?a=1&b=2&limit=2").await;
    let cursor = next(&first.body);
    let page = get(&service, &format!("/items?limit=4&b=2&cursor={cursor}&a=1")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(ids(&page.body), [3, 4, 5, 6]);
}

#[tokio::test]
async fn a_cursor_presented_on_another_query_is_a_query_mismatch_problem() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = service(paginator(), rows(), Arc::clone(&calls));
    let first = get(&service, "/items?status=open").await;
    let cursor = next(&first.body);
    for uri in [
        format!("/items?status=closed&cursor={cursor}"),
        format!("/items?cursor={cursor}"),
        format!("/other?status=open&cursor={cursor}"),
    ] {
        let refused = get(&service, &uri).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(refused.headers["content-type"], "application/problem+json");
        assert_eq!(refused.headers["cache-control"], "no-store");
        assert_eq!(refused.body["type"], "/problems/invalid-cursor");
        assert_eq!(refused.body["reason"], "query_mismatch");
        let error = refused.extensions.get::<CursorRejection>().unwrap();
        assert!(matches!(
            error,
            CursorRejection::InvalidCursor(e) if e.kind() == CursorErrorKind::QueryMismatch
        ));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "refusals never reach the handler"
    );
}

#[tokio::test]
async fn garbage_and_repeated_cursors_are_malformed_problems() {
    let service = service(paginator(), rows(), Arc::default());
    let cursor = next(&get(&service, "/items").await.body);
    for uri in [
        "/items?cursor=not-a-token".to_owned(),
        "/items?cursor=%00%FF".to_owned(),
        format!("/items?cursor={cursor}&cursor={cursor}"),
    ] {
        let refused = get(&service, &uri).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(refused.body["reason"], "malformed", "{uri}");
        assert!(
            refused.body["detail"]
                .as_str()
                .unwrap()
                .contains("restart pagination")
        );
    }
    // A character in the middle of the tag: still canonical base64, so the signature decides.
    let middle = cursor.len() - 5;
    let swapped = if cursor.as_bytes()[middle] == b'A' {
        "B"
    } else {
        "A"
    };
    let forged = format!("{}{swapped}{}", &cursor[..middle], &cursor[middle + 1..]);
    let refused = get(&service, &format!("/items?cursor={forged}")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["reason"], "bad_signature");
}

#[tokio::test]
async fn an_expired_cursor_is_an_expired_problem() {
    let secret = CursorSecret::new([3u8; 32]).unwrap();
    let codec = CursorCodec::new(KeyRing::new(KeyId::new(1), &secret))
        .expire_after(std::time::Duration::from_secs(60))
        .unwrap();
    let paginator = Paginator::new(codec.clone()).page_size(2, 5).unwrap();
    let service = service(paginator, rows(), Arc::default());
    let query = QueryFingerprint::builder().path("/items").finish();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let stale = codec
        .encode_at(
            &tower_cursor::Position::after((9_i64, 1_i64)),
            &query,
            an_hour_ago,
        )
        .unwrap();
    let refused = get(&service, &format!("/items?cursor={stale}")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["reason"], "expired");
    let fresh = codec
        .encode(&tower_cursor::Position::after((9_i64, 1_i64)), &query)
        .unwrap();
    let page = get(&service, &format!("/items?cursor={fresh}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(ids(&page.body), [2, 3]);
}

#[tokio::test]
async fn an_empty_cursor_is_the_first_page() {
    let service = service(paginator(), rows(), Arc::default());
    let page = get(&service, "/items?cursor=").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(ids(&page.body), [1, 2]);
}

#[tokio::test]
async fn page_sizes_outside_the_range_are_invalid_page_size_problems() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = service(paginator(), rows(), Arc::clone(&calls));
    for limit in [
        "limit=0",
        "limit=6",
        "limit=-1",
        "limit=abc",
        "limit=",
        "limit=1&limit=2",
    ] {
        let refused = get(&service, &format!("/items?{limit}")).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{limit}");
        assert_eq!(refused.body["type"], "/problems/invalid-page-size");
        assert_eq!(refused.body["parameter"], "limit");
        assert_eq!(refused.body["minimum"], 1);
        assert_eq!(refused.body["maximum"], 5);
        assert_eq!(
            refused.extensions.get::<CursorRejection>(),
            Some(&CursorRejection::InvalidPageSize { max: 5 })
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let page = get(&service, "/items?limit=5").await;
    assert_eq!(ids(&page.body).len(), 5);
}

#[tokio::test]
async fn renamed_parameters_are_read_and_written() {
    let paginator = paginator()
        .cursor_param("page[after]")
        .unwrap()
        .limit_param("page[size]")
        .unwrap();
    let service = service(paginator, rows(), Arc::default());
    let first = get(&service, "/items?page%5Bsize%5D=3").await;
    assert_eq!(ids(&first.body), [1, 2, 3]);
    let link = first.headers["link"].to_str().unwrap().to_owned();
    let cursor = next(&first.body);
    assert!(
        link.contains(&format!("page%5Bsize%5D=3&page%5Bafter%5D={cursor}")),
        "{link}"
    );
    let second = get(
        &service,
        &format!("/items?page%5Bsize%5D=3&page%5Bafter%5D={cursor}"),
    )
    .await;
    assert_eq!(ids(&second.body), [4, 5, 6]);
    let refused = get(&service, "/items?page%5Bsize%5D=9").await;
    assert_eq!(refused.body["parameter"], "page[size]");
}

#[tokio::test]
async fn a_custom_fingerprint_binds_cursors_to_a_tenant_header() {
    let paginator = paginator().query_fingerprint(|parts| {
        let tenant = parts
            .headers
            .get("x-tenant")
            .map_or("", |v| v.to_str().unwrap_or(""));
        QueryFingerprint::builder()
            .path(parts.uri.path())
            .param("tenant", tenant)
            .finish()
    });
    let service = service(paginator, rows(), Arc::default());
    let request = |tenant: &str, uri: &str| {
        Request::get(uri)
            .header("x-tenant", tenant)
            .body(Full::default())
            .unwrap()
    };
    let response = service
        .clone()
        .oneshot(request("a", "/items"))
        .await
        .unwrap();
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let uri = format!("/items?cursor={}", next(&body));
    let same = service.clone().oneshot(request("a", &uri)).await.unwrap();
    assert_eq!(same.status(), StatusCode::OK);
    let other = service.oneshot(request("b", &uri)).await.unwrap();
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn other_methods_pass_through_without_a_page_request() {
    let service = service(paginator(), rows(), Arc::default());
    let response = service
        .oneshot(
            Request::post("/items?limit=abc&cursor=junk")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "no page request");
}

#[tokio::test]
async fn poll_ready_is_delegated_to_the_inner_service() {
    let (mock, mut handle) =
        tower_test::mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut service = ServiceBuilder::new()
        .layer(CursorLayer::<Row>::new(paginator()))
        .service(mock);
    handle.allow(0);
    assert!(tokio_test_task(&mut service).is_pending());
    handle.allow(1);
    assert!(tokio_test_task(&mut service).is_ready());
}

/// Polls `poll_ready` once with a no-op waker.
fn tokio_test_task<S: Service<Request<Full<Bytes>>>>(service: &mut S) -> std::task::Poll<()> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    service.poll_ready(&mut cx).map(|_| ())
}

#[test]
fn invalid_settings_are_refused_when_set() {
    assert!(matches!(
        paginator().page_size(0, 10).unwrap_err().kind(),
        ConfigErrorKind::PageSizeLimits
    ));
    assert!(paginator().page_size(20, 10).is_err());
    assert!(paginator().page_size(1, u32::MAX).is_err());
    assert!(paginator().cursor_param("limit").is_err());
    assert!(paginator().limit_param("").is_err());
    assert!(paginator().link_base("/relative").is_err());
    assert!(paginator().link_base("ftp://example.com").is_err());
    assert!(paginator().link_base("https://example.com/?a=1").is_err());
    assert!(CursorSecret::new([0u8; 31]).is_err());
    let secret = CursorSecret::generate().unwrap();
    assert_eq!(format!("{secret:?}"), "CursorSecret(<redacted>)");
    let ring = KeyRing::new(KeyId::new(1), &secret);
    assert!(ring.retain(KeyId::new(1), &secret).is_err());
}

#[test]
fn layer_service_and_future_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CursorLayer<Row>>();
    assert_send_sync::<
        tower_cursor::Cursor<
            tower::util::ServiceFn<
                fn(
                    Request<Full<Bytes>>,
                )
                    -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
            >,
            Row,
        >,
    >();
    assert_send_sync::<
        tower_cursor::ResponseFuture<
            std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
            Full<Bytes>,
        >,
    >();
    assert_send_sync::<PageRequest<Row>>();
    assert_send_sync::<tower_cursor::Page<Row>>();
    assert_send_sync::<Paginator>();
}

#[tokio::test]
async fn a_replaced_responder_shapes_the_refusal_and_the_typed_reason_stays() {
    // An API whose errors are `{"error": code}` documents.
    let responder = tower_problem_details::Responder::new(|rejection, _protocol| {
        let kind = rejection.kind().map_or("bad_request", |kind| kind.slug());
        let mut response = Response::new(Bytes::from(format!(r#"{{"error":"{kind}"}}"#)));
        *response.status_mut() = rejection.problem().status();
        response
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let service = service(paginator().responder(responder), rows(), Arc::clone(&calls));

    let refused = get(&service, "/items?cursor=forged").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body, serde_json::json!({"error": "invalid-cursor"}));
    assert!(matches!(
        refused.extensions.get::<CursorRejection>(),
        Some(CursorRejection::InvalidCursor(error)) if error.kind() == CursorErrorKind::Malformed
    ));
    let refused = get(&service, "/items?limit=0").await;
    assert_eq!(
        refused.body,
        serde_json::json!({"error": "invalid-page-size"})
    );
    assert_eq!(
        refused.extensions.get::<CursorRejection>(),
        Some(&CursorRejection::InvalidPageSize { max: 5 })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
