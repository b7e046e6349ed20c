//! The benchmark's connections and requests: one TCP socket per connection, counted in bytes,
//! HTTP/1.1 or HTTP/2 (cleartext, prior knowledge) on hyper's client connections, and the
//! three kinds of request with the check that counts an answer as a success.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{Operation, Transport, json, pb};

/// Bytes a cell's connections read and wrote: TCP payload, so HTTP framing and (HPACK
/// compressed) headers count, TCP/IP headers do not.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) read: AtomicU64,
    pub(crate) written: AtomicU64,
}

impl Traffic {
    pub(crate) fn total(&self) -> u64 {
        self.read.load(Ordering::Relaxed) + self.written.load(Ordering::Relaxed)
    }
}

/// A socket that counts what crosses it.
struct Counted {
    inner: TcpStream,
    traffic: Arc<Traffic>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.traffic.read.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = polled {
            self.traffic
                .written
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One client connection.
pub(crate) enum Connection {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    /// Opens a connection to `address` speaking `transport`'s HTTP version.
    pub(crate) async fn open(
        address: std::net::SocketAddr,
        transport: Transport,
        traffic: &Arc<Traffic>,
    ) -> Result<Self, String> {
        let socket = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        socket.set_nodelay(true).map_err(|e| e.to_string())?;
        let io = TokioIo::new(Counted {
            inner: socket,
            traffic: Arc::clone(traffic),
        });
        match transport {
            Transport::Http1 => {
                let (sender, connection) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
                tokio::spawn(connection);
                Ok(Connection::Http1(sender))
            }
            Transport::H2c | Transport::Grpc => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
                tokio::spawn(connection);
                Ok(Connection::Http2(sender))
            }
        }
    }

    /// Another handle on an HTTP/2 connection (a stream of its own); `None` on HTTP/1.1.
    pub(crate) fn share(&self) -> Option<Self> {
        match self {
            Connection::Http1(_) => None,
            Connection::Http2(sender) => Some(Connection::Http2(sender.clone())),
        }
    }

    pub(crate) async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, String> {
        let sent = match self {
            Connection::Http1(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
            Connection::Http2(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await
            }
        };
        sent.map_err(|e| e.to_string())
    }
}

/// What one cell sends, built once: every request of a cell is the same.
#[derive(Clone)]
pub(crate) struct Call {
    pub(crate) transport: Transport,
    pub(crate) operation: Operation,
    path: String,
    authority: String,
    authorization: String,
    body: Bytes,
}

impl Call {
    /// The call of `operation` over `transport`; `ids` are the seeded orders.
    pub(crate) fn new(
        transport: Transport,
        operation: Operation,
        authority: String,
        api_key: &str,
        ids: &[String],
    ) -> Self {
        let (path, body) = match transport {
            Transport::Http1 | Transport::H2c => {
                let path = match operation {
                    Operation::Get => format!("/v2/orders/{}", ids[0]),
                    Operation::List100 => "/v2/orders?limit=100".to_owned(),
                    Operation::BatchGet100 => {
                        unreachable!("REST has no batch read (the matrix leaves it out)")
                    }
                };
                (path, Bytes::new())
            }
            Transport::Grpc => {
                let (method, message) = match operation {
                    Operation::Get => (
                        "GetOrder",
                        pb::GetOrderRequest {
                            name: format!("orders/{}", ids[0]),
                        }
                        .encode_to_vec(),
                    ),
                    Operation::List100 => (
                        "ListOrders",
                        pb::ListOrdersRequest {
                            page_size: 100,
                            page_token: String::new(),
                        }
                        .encode_to_vec(),
                    ),
                    Operation::BatchGet100 => (
                        "BatchGetOrders",
                        pb::BatchGetOrdersRequest {
                            names: ids.iter().map(|id| format!("orders/{id}")).collect(),
                        }
                        .encode_to_vec(),
                    ),
                };
                (format!("/orders.v1.OrderService/{method}"), frame(&message))
            }
        };
        Call {
            transport,
            operation,
            path,
            authority,
            authorization: format!("Bearer {api_key}"),
            body,
        }
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let builder = match self.transport {
            // Origin form and a Host header on HTTP/1.1; HTTP/2 needs the authority.
            Transport::Http1 => Request::get(&self.path).header("host", &self.authority),
            Transport::H2c => Request::get(format!("http://{}{}", self.authority, self.path)),
            Transport::Grpc => Request::post(format!("http://{}{}", self.authority, self.path))
                .header("content-type", "application/grpc")
                .header("te", "trailers"),
        };
        builder
            .header("authorization", &self.authorization)
            .body(Full::new(self.body.clone()))
            .expect("a valid request")
    }

    /// Sends the call on `connection` and checks the answer: a 200 whose JSON or message
    /// decodes and holds what was asked for; on gRPC also `grpc-status: 0` in the trailers.
    pub(crate) async fn run(&self, connection: &mut Connection) -> Result<(), String> {
        let response = connection.send(self.request()).await?;
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.map_err(|e| e.to_string())?;
        if parts.status != 200 {
            return Err(format!("status {}", parts.status));
        }
        match self.transport {
            Transport::Http1 | Transport::H2c => {
                let body = collected.to_bytes();
                let count = match self.operation {
                    Operation::Get => serde_json::from_slice::<json::Order>(&body)
                        .map(|o| usize::from(!o.id.is_empty())),
                    _ => serde_json::from_slice::<json::Page>(&body).map(|p| p.data.len()),
                }
                .map_err(|e| e.to_string())?;
                let expected = match self.operation {
                    Operation::Get => 1,
                    _ => 100,
                };
                (count == expected)
                    .then_some(())
                    .ok_or_else(|| format!("{count} orders, not {expected}"))
            }
            Transport::Grpc => {
                if let Some(status) = parts.headers.get("grpc-status") {
                    return Err(format!("grpc-status {status:?} (Trailers-Only)"));
                }
                let status = collected
                    .trailers()
                    .and_then(|t| t.get("grpc-status"))
                    .cloned();
                if status.as_ref().map(http::HeaderValue::as_bytes) != Some(b"0") {
                    return Err(format!("grpc-status {status:?}"));
                }
                let message = unframe(&collected.to_bytes())?;
                let count = match self.operation {
                    Operation::Get => {
                        pb::Order::decode(message).map(|o| usize::from(!o.name.is_empty()))
                    }
                    Operation::List100 => {
                        pb::ListOrdersResponse::decode(message).map(|r| r.orders.len())
                    }
                    Operation::BatchGet100 => {
                        pb::BatchGetOrdersResponse::decode(message).map(|r| r.orders.len())
                    }
                }
                .map_err(|e| e.to_string())?;
                let expected = match self.operation {
                    Operation::Get => 1,
                    _ => 100,
                };
                (count == expected)
                    .then_some(())
                    .ok_or_else(|| format!("{count} orders, not {expected}"))
            }
        }
    }
}

/// A gRPC length-prefixed message, uncompressed.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).expect("a small message"));
    framed.put_slice(message);
    framed.freeze()
}

/// The one message of a unary gRPC response body.
fn unframe(body: &Bytes) -> Result<Bytes, String> {
    if body.len() < 5 || body[0] != 0 {
        return Err("not one uncompressed gRPC message".to_owned());
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + length {
        return Err("a gRPC message of the wrong length".to_owned());
    }
    Ok(body.slice(5..))
}
