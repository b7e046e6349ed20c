//! A tonic service for the guardrails' gRPC tests, and a server socket and client for it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The code generated from `proto/guardrail/test/v1/echo.proto` by protox and
/// tonic-prost-build.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::doc_markdown,
    clippy::missing_errors_doc
)]
// Generated code: its items carry the proto's comments, not ours, and follow the generator's
// conventions, not the workspace lints.
pub mod pb {
    tonic::include_proto!("guardrail.test.v1");
}

pub use pb::echo_client::EchoClient;
pub use pb::echo_server::EchoServer;
pub use pb::{ListReply, ListRequest, SayReply, SayRequest};

/// How long a streaming call waits for [`EchoHandler::release_streams`] before it goes on
/// anyway, so a test that forgets to release never hangs.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// What answers `List`.
type Lister = dyn Fn(ListRequest) -> Result<ListReply, Status> + Send + Sync;

/// The handler of the `Echo` service; clones share the execution counter, the release and
/// the lister.
#[derive(Clone)]
pub struct EchoHandler {
    executions: Arc<AtomicU64>,
    release: Arc<watch::Sender<bool>>,
    lister: Option<Arc<Lister>>,
}

impl Default for EchoHandler {
    fn default() -> Self {
        EchoHandler {
            executions: Arc::default(),
            release: Arc::new(watch::channel(false).0),
            lister: None,
        }
    }
}

impl std::fmt::Debug for EchoHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoHandler")
            .field("executions", &self.executions)
            .finish_non_exhaustive()
    }
}

impl EchoHandler {
    /// A handler that has run no call yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handler whose `List` calls `lister`.
    #[must_use]
    pub fn with_lister<F>(mut self, lister: F) -> Self
    where
        F: Fn(ListRequest) -> Result<ListReply, Status> + Send + Sync + 'static,
    {
        self.lister = Some(Arc::new(lister));
        self
    }

    /// How many calls the handler has run.
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::SeqCst)
    }

    /// Lets every `Count` stream send the rest of its messages.
    pub fn release_streams(&self) {
        self.release.send_replace(true);
    }

    /// The tonic service.
    pub fn server(&self) -> EchoServer<EchoHandler> {
        EchoServer::new(self.clone())
    }

    fn executed(&self) -> u64 {
        self.executions.fetch_add(1, Ordering::SeqCst) + 1
    }
}

type CountStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<SayReply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::echo_server::Echo for EchoHandler {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let executions = self.executed();
        let text = request.into_inner().text;
        match text.as_str() {
            "panic" => panic!("the handler panicked on purpose"),
            "missing" => Err(Status::not_found("no order 42")),
            "fail" => Err(Status::internal(
                "connection to db-7.internal:5432 refused (password for user orders)",
            )),
            _ => Ok(Response::new(SayReply { text, executions })),
        }
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        self.executed();
        match &self.lister {
            Some(lister) => lister(request.into_inner()).map(Response::new),
            None => Err(Status::unimplemented("this test installed no lister")),
        }
    }

    type CountStream = CountStream;

    async fn count(&self, request: Request<SayRequest>) -> Result<Response<CountStream>, Status> {
        let executions = self.executed();
        let SayRequest { text, messages } = request.into_inner();
        // Bounded: one message in flight at a time.
        let (sender, receiver) = mpsc::channel(1);
        let mut release = self.release.subscribe();
        tokio::spawn(async move {
            if text == "fail" {
                // One message, then a failure whose message must never reach a client.
                let first = SayReply {
                    text: "fail 0".to_owned(),
                    executions,
                };
                if sender.send(Ok(first)).await.is_ok() {
                    let failure = Status::internal("lost the connection to db-7.internal:5432");
                    let _ = sender.send(Err(failure)).await;
                }
                return;
            }
            for n in 0..messages {
                if n == 1 {
                    let _ = tokio::time::timeout(RELEASE_DEADLINE, release.wait_for(|r| *r)).await;
                }
                let reply = SayReply {
                    text: format!("{text} {n}"),
                    executions,
                };
                if sender.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// A listening socket on a free port of 127.0.0.1, for `Server::serve_with_incoming`.
///
/// # Panics
///
/// When no port can be bound.
pub async fn listener() -> (TcpListenerStream, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("a local address");
    (TcpListenerStream::new(listener), addr)
}

/// A client connected to `addr`.
///
/// # Panics
///
/// When the connection fails.
pub async fn client(addr: SocketAddr) -> EchoClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the test server");
    EchoClient::new(channel)
}
