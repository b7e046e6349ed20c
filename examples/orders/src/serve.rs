//! The HTTP server: hyper's HTTP/1.1 and HTTP/2 behind an accept loop that bounds what each
//! connection may hold.
//!
//! | bound | what happens at it |
//! |---|---|
//! | open connections ([`Limits::max_connections`], and the open-file limit less 64) | the longest-idle connection is closed to make room (one reading away a refused body counts as idle); with none idle the new one is refused |
//! | request head ([`Limits::header_read_timeout_ms`], from its first byte) | a first request is answered 408 `request-timeout`; a later one on a keep-alive connection (where a response may be half-written) is closed. A partial head pipelined behind a request (already in hyper's buffer) is bounded by the idle timeout instead |
//! | idle connection ([`Limits::idle_timeout_ms`]: no request in flight and no request head arriving; HTTP/2 PINGs do not count) | closed (HTTP/2: a GOAWAY, then a second to finish) |
//! | a busy connection (a request being answered, or output hyper could not write yet) whose socket moves no byte for the idle timeout (or the request deadline, if longer) plus a second: a client that never reads its answer | the connection is closed; until then it is never shed or idled |
//! | a refused body being read away ([`Draining`], see the edge) | no head is timed meanwhile; the connection can still be shed, and is closed at shutdown |
//! | head size ([`Limits::max_header_bytes`]) | HTTP/1: 431 from hyper; HTTP/2: the stream is refused |
//! | HTTP/2 streams per connection ([`Limits::http2_max_concurrent_streams`]) | advertised in SETTINGS; more are refused |
//! | accept errors (out of descriptors) | the loop backs off 100 ms instead of spinning, and logs once a second at most |
//! | shutdown (the grace period) | no new connections; open ones are asked to finish (GOAWAY, `Connection: close`); those with nothing in flight are closed within half a second; at the deadline the rest are dropped |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_problem_details::APPLICATION_PROBLEM_JSON;

use crate::config::Limits;
use crate::observe;
use crate::problems::{Problems, REQUEST_TIMEOUT};

/// Descriptors kept free for the database pool, Redis, SQLite's files and the runtime.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The connection cap in force: the configured one, lowered to fit the open-file limit.
pub fn connection_cap(limits: &Limits) -> usize {
    let by_descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |soft| {
            usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS).max(1)).unwrap_or(usize::MAX)
        });
    limits.max_connections.min(by_descriptors).max(1)
}

/// Serves `router` on `listener` until `shutdown` resolves, then for at most `grace`.
///
/// # Errors
///
/// None in practice: accept errors are retried, connection errors end their connection only.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    serve_with(listener, router, builder(limits), limits, shutdown, grace).await
}

/// [`serve`] for the gRPC listener: HTTP/2 only (prior knowledge), since gRPC's trailers do
/// not survive HTTP/1.1; every other bound is the same.
///
/// # Errors
///
/// As [`serve`].
pub async fn serve_grpc(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let builder = builder(limits).http2_only();
    serve_with(listener, router, builder, limits, shutdown, grace).await
}

async fn serve_with(
    listener: TcpListener,
    router: Router,
    builder: Builder<TokioExecutor>,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let cap = connection_cap(limits);
    tracing::info!(max_connections = cap, "connection cap");
    let builder = Arc::new(builder);
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let timeouts = Timeouts {
        header: limits.header_read_timeout(),
        idle: limits.idle_timeout(),
        // A request in flight is bounded by its deadline; the socket making no progress at
        // all (a client that never reads its response) by this.
        stall: limits.idle_timeout().max(limits.request_timeout()) + Duration::from_secs(1),
    };
    let mut accept_errors = ErrorLog::default();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_errors.log(&error);
                    // Out of descriptors (or a transient error): let connections close first.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(conn) = registry.admit(cap) else {
            observe::count_connection("refused");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(run_connection(
            stream,
            router.clone(),
            Arc::clone(&builder),
            Arc::clone(&registry),
            conn,
            timeouts,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + grace;
    tracing::info!(
        open = registry.len(),
        ?grace,
        "shutting down: draining connections"
    );
    while Instant::now() < deadline {
        // Registered before the count is read, so the last close cannot slip between them.
        let emptied = registry.emptied.notified();
        tokio::pin!(emptied);
        emptied.as_mut().enable();
        if registry.len() == 0 {
            break;
        }
        let _ = tokio::time::timeout_at(deadline, emptied).await;
    }
    if registry.len() > 0 {
        tracing::warn!(
            open = registry.len(),
            "grace period over; dropping open connections"
        );
    }
    Ok(())
}

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    let head = usize::try_from(limits.max_header_bytes)
        .unwrap_or(usize::MAX)
        .max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog times heads from their first byte; hyper's timer would start at idle.
        .header_read_timeout(None)
        .max_buf_size(head);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        .max_pending_accept_reset_streams(Some(20));
    builder
}

#[derive(Clone, Copy, Debug)]
struct Timeouts {
    header: Duration,
    idle: Duration,
    stall: Duration,
}

impl Timeouts {
    /// Once stopping, a connection with nothing in flight is closed within half a second,
    /// whatever it is doing (a stalled head, an HTTP/2 client that ignores the GOAWAY).
    fn stopping(self) -> Self {
        let quick = Duration::from_millis(500);
        Timeouts {
            header: self.header.min(quick),
            idle: self.idle.min(quick),
            stall: self.stall,
        }
    }
}

/// How long an HTTP/2 connection gets to finish after its GOAWAY (idle expiry, shutdown).
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

async fn run_connection(
    stream: TcpStream,
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    registry: Arc<Registry>,
    conn: Arc<Conn>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let socket = Arc::new(stream);
    let io = TokioIo::new(Tracked {
        inner: Arc::clone(&socket),
        conn: Arc::clone(&conn),
        room: MIN_ROOM,
    });
    let service = {
        let conn = Arc::clone(&conn);
        hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            let guard = InFlight::begin(Arc::clone(&conn));
            request.extensions_mut().insert(Draining(Arc::clone(&conn)));
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await?;
                // In flight until the response body is written (or dropped), so a connection
                // still sending its answer is never taken for idle.
                Ok::<_, Infallible>(response.map(|body| Answer {
                    body,
                    _guard: guard,
                }))
            }
        })
    };
    let expired = {
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut stopping = *stop.borrow();
        if stopping {
            connection.as_mut().graceful_shutdown();
        }
        let mut goaway_sent: Option<Instant> = None;
        loop {
            let bounds = if stopping {
                timeouts.stopping()
            } else {
                timeouts
            };
            let after_goaway = goaway_sent.map_or_else(Instant::now, |at| at + GOAWAY_GRACE);
            tokio::select! {
                _ = connection.as_mut() => break None,
                () = conn.shed.notified() => break None,
                () = tokio::time::sleep_until(after_goaway), if goaway_sent.is_some() => break None,
                expired = watchdog(&conn, bounds), if goaway_sent.is_none() => {
                    // Stopping, the GOAWAY went out already: nothing more to wait for.
                    if conn.http2.load(Ordering::Acquire) && !stopping {
                        // A GOAWAY first, so the client knows not to retry on this connection.
                        connection.as_mut().graceful_shutdown();
                        goaway_sent = Some(Instant::now());
                    } else {
                        break Some(expired);
                    }
                }
                changed = stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        // hyper's connection is dropped here: it writes nothing more.
    };
    // HTTP still allows an answer to a first request whose head stalled (on a keep-alive
    // connection a response may be half-written, so there it is only closed). Never on what
    // may be the start of an HTTP/2 preface.
    if expired == Some(Expired::Head)
        && conn.served.load(Ordering::Acquire) == 0
        && !conn.preface_so_far.load(Ordering::Acquire)
    {
        answer_stalled_head(&socket).await;
    }
    registry.remove(conn.id);
}

/// A response body that keeps its request counted in flight until it is written.
struct Answer {
    body: Body,
    _guard: InFlight,
}

impl http_body::Body for Answer {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    /// A request head took longer than the header-read timeout.
    Head,
    /// Nothing happened for the idle timeout (or, in flight, the stall bound).
    Idle,
}

/// Resolves when the connection has been idle, in its request head, or (with a request in
/// flight) without any progress on the socket, for too long.
async fn watchdog(conn: &Conn, timeouts: Timeouts) -> Expired {
    // State changes (a request ends, a head starts) are noticed within a quarter of the
    // shorter timeout, so each bound holds to within 25 %.
    let tick = (millis(timeouts.header.min(timeouts.idle)) / 4).max(10);
    loop {
        let now = millis_now();
        let busy = conn.is_busy();
        let (deadline, reason) = if busy || conn.is_draining() {
            let progress = conn.last_progress.load(Ordering::Acquire);
            (progress + millis(timeouts.stall), Expired::Idle)
        } else {
            let first_byte = conn.first_byte_at.load(Ordering::Acquire);
            if first_byte != 0 && !conn.http2.load(Ordering::Acquire) {
                (first_byte + millis(timeouts.header), Expired::Head)
            } else {
                let idle_since = conn.idle_since.load(Ordering::Acquire);
                (idle_since + millis(timeouts.idle), Expired::Idle)
            }
        };
        // Re-read: a request that started (or ended) meanwhile makes this deadline moot.
        if now >= deadline && conn.is_busy() == busy {
            return reason;
        }
        let wait = deadline.saturating_sub(now).clamp(1, tick);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 2)
}

/// Milliseconds since the first call, never 0 (0 means "none").
fn millis_now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_millis(1)).unwrap_or(now)
    });
    millis(start.elapsed())
}

/// One open connection, as the registry and the watchdog see it.
#[derive(Debug)]
struct Conn {
    id: u64,
    in_flight: AtomicUsize,
    /// When it last became idle.
    idle_since: AtomicU64,
    /// The first byte received since it became idle (a request head in progress), or 0.
    first_byte_at: AtomicU64,
    /// It speaks HTTP/2 (its heads are frames; only the idle timeout applies).
    http2: AtomicBool,
    /// Bytes received so far.
    bytes_read: AtomicU64,
    /// Every byte received so far matches the HTTP/2 connection preface.
    preface_so_far: AtomicBool,
    /// When a byte last moved either way.
    last_progress: AtomicU64,
    /// hyper holds output the socket has not taken yet (a client reading slowly).
    output_pending: AtomicBool,
    /// Refused bodies being read away beside their answers ([`Draining`]).
    draining: AtomicUsize,
    /// Requests started on it.
    served: AtomicU64,
    /// Closes it, to make room for a new connection.
    shed: Notify,
}

impl Conn {
    /// A request is being answered, or its answer is still being written: never shed, and
    /// bounded by the stall bound only.
    fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0 || self.output_pending.load(Ordering::Acquire)
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) > 0
    }

    /// Called whenever some activity ends: once nothing is left, the idle clock starts and
    /// the next byte starts a request head.
    fn settle(&self) {
        if !self.is_busy() && !self.is_draining() {
            self.first_byte_at.store(0, Ordering::Release);
            self.idle_since.store(millis_now(), Ordering::Release);
        }
    }
}

/// Marks its connection as reading away a refused body while a [`DrainGuard`] from it lives:
/// no request head is timed meanwhile, but the connection may still be shed or closed at
/// shutdown. The edge finds it in the request extensions.
#[derive(Clone, Debug)]
pub struct Draining(Arc<Conn>);

impl Draining {
    /// Holds the mark until the guard is dropped.
    pub fn hold(&self) -> DrainGuard {
        self.0.draining.fetch_add(1, Ordering::AcqRel);
        DrainGuard(Arc::clone(&self.0))
    }
}

/// See [`Draining`].
#[derive(Debug)]
pub struct DrainGuard(Arc<Conn>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.0.draining.fetch_sub(1, Ordering::AcqRel);
        self.0.settle();
    }
}

/// Counts a request in flight on its connection, until dropped (answered or cancelled).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn begin(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.served.fetch_add(1, Ordering::AcqRel);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.settle();
    }
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Registry {
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Signalled when the last connection closes.
    emptied: Notify,
}

impl Registry {
    /// Registers a new connection, closing the oldest idle one when at `cap`; `None` when
    /// at the cap with none idle.
    fn admit(&self, cap: usize) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().ok()?;
        if open.len() >= cap {
            // The connection idle the longest (a scan, only when at the cap).
            let oldest_idle = open
                .values()
                .filter(|conn| !conn.is_busy())
                .min_by_key(|conn| conn.idle_since.load(Ordering::Acquire))
                .map(|conn| conn.id)?;
            if let Some(conn) = open.remove(&oldest_idle) {
                conn.shed.notify_one();
                observe::count_connection("shed_idle");
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(millis_now()),
            first_byte_at: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            preface_so_far: AtomicBool::new(true),
            last_progress: AtomicU64::new(millis_now()),
            output_pending: AtomicBool::new(false),
            draining: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            shed: Notify::new(),
        });
        open.insert(id, Arc::clone(&conn));
        observe::set_open_connections(open.len());
        Some(conn)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
            observe::set_open_connections(open.len());
            if open.is_empty() {
                self.emptied.notify_waiters();
            }
        }
    }

    fn len(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }
}

/// Logs accept errors at most once a second, with how many were not logged.
#[derive(Debug, Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn log(&mut self, error: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(%error, suppressed = self.suppressed, "accept failed; backing off");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The socket, noting when a request head starts arriving. Shared (`Arc`), so that the
/// connection task can still answer 408 on it after hyper's connection is dropped.
struct Tracked {
    inner: Arc<TcpStream>,
    conn: Arc<Conn>,
    /// How much of hyper's buffer the next read zeroes: see [`next_room`].
    room: usize,
}

/// The least and the most a read zeroes of the space hyper hands over.
const MIN_ROOM: usize = 1024;
const MAX_ROOM: usize = 16 * 1024;

/// How much the read after one that brought `read` bytes into `room` zeroes: twice as much
/// after a read that filled it (a body streaming in), half after one that used under a
/// quarter (a request head), within `MIN_ROOM..=MAX_ROOM`. The space is zeroed because
/// hyper's is uninitialised (and the workspace has no `unsafe`); zeroing 8 KiB for every
/// 200-byte GET, twice (the read that brings it, then the one that finds nothing), was a
/// tenth of a GET's instructions.
fn next_room(room: usize, read: usize) -> usize {
    if read >= room {
        (room * 2).min(MAX_ROOM)
    } else if read < room / 4 {
        (room / 2).max(MIN_ROOM)
    } else {
        room
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Tracked {
    fn note_read(&self, fresh: &[u8], before: u64) {
        if fresh.is_empty() {
            return;
        }
        let conn = &self.conn;
        let now = millis_now();
        conn.last_progress.store(now, Ordering::Release);
        // The preface may arrive in pieces: compare each piece with its part of it.
        let offset = usize::try_from(before).unwrap_or(usize::MAX);
        if offset < H2_PREFACE.len() && conn.preface_so_far.load(Ordering::Acquire) {
            let expected = &H2_PREFACE[offset..];
            let n = fresh.len().min(expected.len());
            if fresh[..n] != expected[..n] {
                conn.preface_so_far.store(false, Ordering::Release);
            } else if offset + n == H2_PREFACE.len() {
                conn.http2.store(true, Ordering::Release);
            }
        }
        if !conn.is_busy() && !conn.is_draining() && conn.first_byte_at.load(Ordering::Acquire) == 0
        {
            conn.first_byte_at.store(now, Ordering::Release);
        }
    }
}

impl Tracked {
    /// Notes a write of `offered` bytes: progress, and whether hyper is left holding output.
    fn wrote(&self, result: io::Result<usize>, offered: usize) -> io::Result<usize> {
        let conn = &self.conn;
        if let Ok(n) = result {
            if n > 0 {
                conn.last_progress.store(millis_now(), Ordering::Release);
            }
            if n < offered {
                conn.output_pending.store(true, Ordering::Release);
            } else if conn.output_pending.swap(false, Ordering::AcqRel) {
                conn.settle();
            }
        }
        result
    }

    fn blocked<T>(&self) -> Poll<T> {
        self.conn.output_pending.store(true, Ordering::Release);
        Poll::Pending
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // tokio's readiness pattern: a `WouldBlock` clears the readiness, so the next poll
        // registers the waker.
        loop {
            ready!(self.inner.poll_read_ready(cx))?;
            let before = buf.filled().len();
            let read_so_far = self.conn.bytes_read.load(Ordering::Acquire);
            // Zeroed per read, since hyper hands over uninitialised space each time: as much
            // as reads have been bringing, not the whole buffer.
            let room = buf.remaining().min(self.room);
            match self.inner.try_read(buf.initialize_unfilled_to(room)) {
                Ok(n) => {
                    self.room = next_room(self.room, n);
                    buf.advance(n);
                    self.conn.bytes_read.fetch_add(n as u64, Ordering::AcqRel);
                    self.note_read(&buf.filled()[before..], read_so_far);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.inner.poll_write_ready(cx)?.is_pending() {
                return self.blocked();
            }
            match self.inner.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(self.wrote(result, buf.len())),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let offered = bufs.iter().map(|b| b.len()).sum();
        loop {
            if self.inner.poll_write_ready(cx)?.is_pending() {
                return self.blocked();
            }
            match self.inner.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(self.wrote(result, offered)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(shutdown_write(&self.inner))
    }
}

fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match rustix::net::shutdown(stream, rustix::net::Shutdown::Write) {
        Ok(()) | Err(rustix::io::Errno::NOTCONN) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// The 408 a client gets when its first request head stalls: written once, without waiting,
/// then a lingering close (the rest read away for at most a second) so that the close does
/// not turn into a reset that destroys the answer.
async fn answer_stalled_head(stream: &TcpStream) {
    let body = Problems::default()
        .service(REQUEST_TIMEOUT)
        .with_detail("The request head did not arrive in time.")
        .to_json_string();
    let answer = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: {APPLICATION_PROBLEM_JSON}\r\n\
         cache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.try_write(answer.as_bytes()).is_err() || shutdown_write(stream).is_err() {
        return;
    }
    let linger = async {
        let mut sink = [0_u8; 4096];
        let mut left = 64 * 1024_usize;
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                // The client closed, or read away enough.
                Ok(0) => return,
                Ok(n) => {
                    left = left.saturating_sub(n);
                    if left == 0 {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{MAX_ROOM, MIN_ROOM, next_room};

    #[test]
    fn reads_that_fill_the_room_grow_it_and_request_heads_shrink_it() {
        let mut room = MIN_ROOM;
        for expected in [2048, 4096, 8192, MAX_ROOM, MAX_ROOM] {
            room = next_room(room, room);
            assert_eq!(room, expected);
        }
        for expected in [8192, 4096, 2048, MIN_ROOM, MIN_ROOM] {
            room = next_room(room, 200);
            assert_eq!(room, expected);
        }
        assert_eq!(
            next_room(4096, 2000),
            4096,
            "a read of half the room keeps it"
        );
    }

    proptest! {
        #[test]
        fn prop_the_room_stays_within_its_bounds(reads in prop::collection::vec(0..64 * 1024_usize, 0..64)) {
            let mut room = MIN_ROOM;
            for read in reads {
                room = next_room(room, read.min(room));
                prop_assert!((MIN_ROOM..=MAX_ROOM).contains(&room));
            }
        }
    }
}
