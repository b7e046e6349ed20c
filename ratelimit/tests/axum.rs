//! One layer under `axum::Router::layer` on two routes, over real TCP connections: the limit is
//! shared by every route and every connection, keyed by the peer address from `ConnectInfo`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_ratelimit::{KeyExtractor, MemoryStore, Policy, Quota, RateLimitLayer, TrustedProxies};

/// Sends one request on a fresh connection and returns the status line and headers.
async fn get_on_new_connection(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn one_limit_is_shared_by_every_route_and_connection() {
    let layer = RateLimitLayer::new(
        MemoryStore::new(),
        [Policy::gcra("burst", Quota::per_minute(3).unwrap()).unwrap()],
        KeyExtractor::peer_ip(TrustedProxies::none()),
    )
    .unwrap();
    let app = Router::new()
        .route("/orders", get(|| async { "orders" }))
        .route("/customers", get(|| async { "customers" }))
        .layer(layer.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let mut statuses = Vec::new();
    for path in ["/orders", "/customers", "/orders", "/customers"] {
        let response = get_on_new_connection(addr, path).await;
        statuses.push(response.lines().next().unwrap().to_owned());
        if response.starts_with("HTTP/1.1 429") {
            let lower = response.to_ascii_lowercase();
            assert!(lower.contains("\r\nretry-after: 20\r\n"), "{response}");
            assert!(
                lower.contains("content-type: application/problem+json"),
                "{response}"
            );
        }
    }
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 429 Too Many Requests"
        ]
    );
    assert_eq!(layer.counters().allowed, 3);
    assert_eq!(layer.counters().rejected, 1);
}
