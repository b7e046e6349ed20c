//! Under `axum::Router::layer` over real TCP: one store shared by every route's copy of the
//! layer, problem bodies, and replays.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_idempotency::{IdempotencyLayer, MemoryStore, Scope};

async fn send(addr: std::net::SocketAddr, path: &str, key: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = "{\"sku\":\"A1\"}";
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\nx-tenant: acme\r\nidempotency-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    (status, response)
}

#[tokio::test]
async fn routes_share_one_store_under_router_layer() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = |runs: Arc<AtomicUsize>| {
        move || {
            let runs = Arc::clone(&runs);
            async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                (StatusCode::CREATED, format!("run {run}"))
            }
        }
    };
    let app = Router::new()
        .route("/orders", post(handler(Arc::clone(&runs))))
        .route("/payments", post(handler(Arc::clone(&runs))))
        .layer(IdempotencyLayer::new(
            MemoryStore::new(),
            Scope::header(http::HeaderName::from_static("x-tenant")),
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (status, first) = send(addr, "/orders", "k1").await;
    assert_eq!(status, 201);
    assert!(first.ends_with("run 1"));
    let (status, replay) = send(addr, "/orders", "k1").await;
    assert_eq!(status, 201);
    assert!(
        replay
            .to_ascii_lowercase()
            .contains("idempotent-replayed: true")
    );
    assert!(replay.ends_with("run 1"));
    // The other route's copy of the layer sees the same store: the key is taken.
    let (status, reused) = send(addr, "/payments", "k1").await;
    assert_eq!(status, 422);
    assert!(reused.contains("application/problem+json"));
    assert!(reused.contains("idempotency-key-reused"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
