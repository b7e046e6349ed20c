//! The edge against hostile clients and failing dependencies: each test starts the real
//! `orders` binary (short timeouts configured, so the suite stays fast) and attacks it over
//! real sockets.
//!
//! The PostgreSQL tests use `ORDERS_TEST_POSTGRES_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`, create a database of their own, and put a
//! TCP proxy the test controls between the service and the server, so that "PostgreSQL
//! stopped" is the proxy cutting every connection; the shared server is never stopped.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guardrail_test_support::{TestDatabase, postgres_database};
use sqlx::Connection;

const KEY: &str = "edge_test_key";
const AUTH: &str = "Authorization: Bearer edge_test_key";
const ORDER: &str = r#"{"customer_id":"cus_1","items":[{"sku":"a","quantity":1,"unit_price":{"amount":100,"currency":"usd"}}]}"#;

/// A running `orders` process, killed on drop.
struct Service {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "orders-edge-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    TempDir(dir)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Service {
    /// Starts `orders` with `args` on a SQLite file of its own (unless `args` names a
    /// database), `ulimit -n` set when `nofile` is given.
    fn start(name: &str, args: &[&str], nofile: Option<u32>) -> Service {
        let dir = temp_dir(name);
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let log = dir.0.join("orders.log");
        let database = format!("sqlite://{}", dir.0.join("orders.db").display());
        let mut full: Vec<String> = vec!["--listen".into(), addr.to_string()];
        if !args.contains(&"--database") {
            full.extend(["--database".into(), database]);
        }
        full.extend(args.iter().map(|a| (*a).to_owned()));
        let binary = env!("CARGO_BIN_EXE_orders");
        let mut command = match nofile {
            // The limit is set by the shell, then `exec` keeps the same process.
            Some(limit) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                c
            }
            None => Command::new(binary),
        };
        // The test's own environment must not configure the service.
        for (key, _) in std::env::vars() {
            if key.starts_with("ORDERS_") {
                command.env_remove(key);
            }
        }
        let log_file = std::fs::File::create(&log).expect("a log file");
        let child = command
            .args(&full)
            .env("ORDERS_LOG", "info")
            .stdout(log_file.try_clone().expect("a log file"))
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("the orders binary starts");
        let mut service = Service {
            child,
            addr,
            log,
            _dir: dir,
        };
        service.wait_healthy();
        service
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("orders exited ({status}):\n{}", self.log_text());
            }
            let probe = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            if self
                .try_request(probe)
                .is_ok_and(|response| response.starts_with("HTTP/1.1 200"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("orders did not become healthy:\n{}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connects");
        stream.set_nodelay(true).expect("no delay");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        stream
    }

    fn try_request(&self, raw: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(raw.as_bytes())?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// One request on its own connection (`Connection: close` is added), the whole answer.
    fn request(&self, method: &str, path: &str, headers: &[&str], body: &str) -> String {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for header in headers {
            raw.push_str(header);
            raw.push_str("\r\n");
        }
        if !body.is_empty() {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        raw.push_str(body);
        self.try_request(&raw).expect("an answer")
    }

    fn metrics(&self) -> String {
        self.request("GET", "/metrics", &[], "")
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits at most `limit` for the process to exit; how long it took, or `None`.
    fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn problem_type(response: &str) -> String {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("a problem body: {response:?}"));
    json["type"].as_str().unwrap_or_default().to_owned()
}

/// Reads until the peer closes; how long that took, or `None` if it did not within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("a read timeout");
    let mut out = Vec::new();
    let mut buf = [0_u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (Some(started.elapsed()), out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (Some(started.elapsed()), out),
        }
    }
    (None, out)
}

#[test]
fn a_method_flood_adds_no_series_and_no_memory() {
    let service = Service::start("methods", &[], None);
    let rss_before = service.rss_kib();
    let mut stream = service.connect();
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("a clone"));
    for i in 0..2_400 {
        // 1,000-byte methods: short enough for the head limit, so each reaches the edge.
        let method = format!("M{i:04}{}", "X".repeat(995));
        let head = format!("{method} /health HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(head.as_bytes()).expect("writes");
        let (status, body) = read_answer(&mut reader);
        assert_eq!(status, 405, "request {i}");
        assert!(String::from_utf8_lossy(&body).contains("/problems/method-not-allowed"));
    }
    // 100 KB methods exceed the head limit: refused by the protocol layer.
    let huge = format!(
        "{} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "Y".repeat(100_000)
    );
    let answer = service.try_request(&huge).unwrap_or_default();
    assert!(
        answer.is_empty() || status_of(&answer) == 431,
        "{answer:.200}"
    );

    let metrics = service.metrics();
    assert!(
        metrics.len() < 64 * 1024,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(
        !metrics.contains("XXXX"),
        "a client's method became a label"
    );
    assert!(metrics.contains(r#"method="other""#));
    let grown = service.rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    assert!(
        !service.log_text().contains("XXXX"),
        "a client's method was logged"
    );
}

/// One whole response from `reader`: its status and body.
fn read_answer(reader: &mut impl std::io::BufRead) -> (u16, Vec<u8>) {
    let (status, length) = read_head(reader);
    let mut body = vec![0_u8; length];
    reader.read_exact(&mut body).expect("a body");
    (status, body)
}

fn read_head(reader: &mut impl std::io::BufRead) -> (u16, usize) {
    let mut status = 0;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a head line");
        let line = line.trim_end();
        if line.is_empty() {
            return (status, length);
        }
        if line.starts_with("HTTP/1.1 ") {
            status = status_of(line);
        } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("a length");
        }
    }
}

#[test]
fn every_metric_has_help_and_type() {
    let service = Service::start("help", &["--api-keys", KEY], None);
    let _ = service.request("GET", "/v2/orders", &[AUTH], "");
    let metrics = service.metrics();
    let body = metrics.split("\r\n\r\n").nth(1).expect("a body");
    let mut families = 0;
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).expect("a name");
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        families += 1;
    }
    assert!(families >= 4, "{body}");
}

#[test]
fn a_request_head_that_never_finishes_gets_a_408_and_is_closed() {
    let service = Service::start("head", &["--header-read-timeout-ms", "300"], None);
    let mut stream = service.connect();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .expect("writes");
    let (closed, answer) = closed_within(&mut stream, Duration::from_secs(5));
    let closed = closed.expect("the stalled head is closed");
    assert!(
        closed >= Duration::from_millis(250),
        "closed after {closed:?}"
    );
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert_eq!(problem_type(&answer), "/problems/request-timeout");

    // The second head of a keep-alive connection stalls: closed, with nothing after the
    // first (complete) response. (A partial head pipelined behind a request, already in
    // hyper's buffer, is bounded by the idle timeout instead.)
    let mut stream = service.connect();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("writes");
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("a clone"));
    let (status, _) = read_answer(&mut reader);
    assert_eq!(status, 200);
    stream
        .write_all(b"GET /health HTTP/1.1\r\n")
        .expect("writes");
    let (closed, answer) = closed_within(&mut stream, Duration::from_secs(5));
    assert!(closed.is_some(), "the stalled second head is closed");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let service = Service::start("idle", &["--idle-timeout-ms", "300"], None);
    let mut stream = service.connect();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("writes");
    let (closed, answer) = closed_within(&mut stream, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(closed.is_some(), "the idle connection is closed");
}

#[test]
fn a_stalled_body_gets_a_408_problem() {
    let service = Service::start(
        "body",
        &["--body-timeout-ms", "300", "--api-keys", KEY],
        None,
    );
    let mut stream = service.connect();
    write!(
        stream,
        "POST /v2/orders HTTP/1.1\r\nHost: x\r\n{AUTH}\r\nIdempotency-Key: \"k-408\"\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .expect("writes");
    let (closed, answer) = closed_within(&mut stream, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert_eq!(problem_type(&answer), "/problems/request-timeout");
    assert!(closed.is_some(), "the connection is closed after the 408");
}

#[test]
fn a_write_first_client_always_sees_its_413() {
    let service = Service::start("413", &["--api-keys", KEY], None);
    let body = vec![b'x'; 2 * 1024 * 1024];
    for attempt in 0..10 {
        // Like Python's http.client: the whole body is written before anything is read.
        let auth = if attempt % 2 == 0 {
            AUTH
        } else {
            "X-No-Auth: 1"
        };
        let mut stream = service.connect();
        write!(
            stream,
            "POST /v2/orders HTTP/1.1\r\nHost: x\r\n{auth}\r\nIdempotency-Key: \"big-{attempt}\"\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .expect("writes the head");
        stream
            .write_all(&body)
            .unwrap_or_else(|e| panic!("attempt {attempt}: the body was refused mid-write: {e}"));
        let mut reader = std::io::BufReader::new(stream);
        let (status, _) = read_head(&mut reader);
        let expected = if attempt % 2 == 0 { 413 } else { 401 };
        assert_eq!(status, expected, "attempt {attempt}");
    }
}

#[test]
fn the_connection_cap_sheds_idle_connections_before_descriptors_run_out() {
    let service = Service::start("cap", &[], Some(256));
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(service.addr).ok())
        .collect();
    assert!(idle.len() >= 250, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_millis(300));
    // A newcomer is served: the oldest idle connections made room.
    let answer = service.request("GET", "/health", &[], "");
    assert_eq!(status_of(&answer), 200);
    let metrics = service.metrics();
    assert!(
        metrics.contains(r#"orders_connections_closed_total{reason="shed_idle"}"#),
        "{metrics}"
    );
    assert!(
        service.log_text().contains("\"max_connections\":192"),
        "{}",
        service.log_text()
    );
    drop(idle);
}

#[test]
fn v1_answers_carry_deprecation_and_sunset_and_a_retired_v1_spends_no_quota() {
    let live = Service::start(
        "v1",
        &[
            "--api-keys",
            KEY,
            "--rate-limit-per-second",
            "1",
            "--rate-limit-burst",
            "1",
        ],
        None,
    );
    let unauthenticated = live.request("GET", "/v1/orders", &[], "");
    assert_eq!(status_of(&unauthenticated), 401);
    assert!(header(&unauthenticated, "deprecation").is_some());
    assert!(header(&unauthenticated, "sunset").is_some());
    let _ = live.request("GET", "/v1/orders", &[AUTH], "");
    let limited = live.request("GET", "/v1/orders", &[AUTH], "");
    assert_eq!(status_of(&limited), 429);
    assert!(header(&limited, "deprecation").is_some());
    assert!(header(&limited, "sunset").is_some());

    let retired = Service::start(
        "v1-retired",
        &[
            "--api-keys",
            KEY,
            "--rate-limit-per-second",
            "1",
            "--rate-limit-burst",
            "2",
            "--v1-deprecated-at",
            "2020-01-01T00:00:00Z",
            "--v1-sunset-at",
            "2021-01-01T00:00:00Z",
        ],
        None,
    );
    for _ in 0..5 {
        let gone = retired.request("GET", "/v1/orders", &[AUTH], "");
        assert_eq!(status_of(&gone), 410);
        assert!(header(&gone, "sunset").is_some());
        assert!(
            header(&gone, "ratelimit").is_none(),
            "the 410 touched the quota"
        );
    }
    let v2 = retired.request("GET", "/v2/orders", &[AUTH], "");
    assert_eq!(status_of(&v2), 200);
    assert_eq!(header(&v2, "ratelimit"), Some(r#""per-key";r=1;t=1"#));
}

#[test]
fn ambiguous_input_is_refused() {
    let service = Service::start(
        "ambiguous",
        &["--api-keys", " other_key_1 , edge_test_key"],
        None,
    );
    let twice = service.request("GET", "/v2/orders", &[AUTH, AUTH], "");
    assert_eq!(status_of(&twice), 400);
    assert_eq!(problem_type(&twice), "/problems/ambiguous-request");
    let duplicate = r#"{"customer_id":"cus_a","customer_id":"cus_b","items":[{"sku":"a","quantity":1,"unit_price":{"amount":1,"currency":"usd"}}]}"#;
    let answer = service.request(
        "POST",
        "/v2/orders",
        &[
            AUTH,
            "Idempotency-Key: \"dup\"",
            "Content-Type: application/json",
        ],
        duplicate,
    );
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(problem_type(&answer), "/problems/malformed-request");
    // `--api-keys " other_key_1 , edge_test_key"`: both keys, trimmed.
    let trimmed = service.request(
        "GET",
        "/v2/orders",
        &["Authorization: Bearer other_key_1"],
        "",
    );
    assert_eq!(status_of(&trimmed), 200);
    assert!(!service.log_text().contains("DEMO MODE"));

    let demo = Service::start("demo", &[], None);
    assert!(demo.log_text().contains("DEMO MODE"), "{}", demo.log_text());
}

#[test]
fn rate_limit_policy_never_understates_the_admitted_rate() {
    let service = Service::start(
        "policy",
        &[
            "--api-keys",
            KEY,
            "--rate-limit-per-second",
            "10",
            "--rate-limit-burst",
            "1",
        ],
        None,
    );
    let answer = service.request("GET", "/v2/orders", &[AUTH], "");
    assert_eq!(
        header(&answer, "ratelimit-policy"),
        Some(r#""per-key";q=11;w=1"#)
    );
}

#[test]
fn every_problem_type_resolves_to_a_page() {
    let service = Service::start("pages", &[], None);
    for slug in orders::problems::slugs() {
        let page = service.request("GET", &format!("/problems/{slug}"), &[], "");
        assert_eq!(status_of(&page), 200, "{slug}");
        assert!(header(&page, "content-type").is_some_and(|v| v.starts_with("text/html")));
    }
    let missing = service.request("GET", "/problems/no-such-type", &[], "");
    assert_eq!(status_of(&missing), 404);
}

/// A TCP proxy to PostgreSQL that the test can cut.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let port = listener.local_addr().expect("an address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let hang = Arc::new(AtomicBool::new(false));
        let (cut2, hang2) = (Arc::clone(&cut), Arc::clone(&hang));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if cut2.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let (cut, hang) = (Arc::clone(&cut2), Arc::clone(&hang2));
                tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(upstream).await {
                        pump(client, server, cut, hang).await;
                    }
                });
            }
        });
        Proxy { port, cut, hang }
    }
}

async fn pump(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    cut: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(forward(cr, sw, Arc::clone(&cut), Arc::clone(&hang)));
    let down = tokio::spawn(forward(sr, cw, cut, hang));
    let _ = tokio::join!(up, down);
}

/// Copies bytes until either side closes or the proxy is cut; holds them while it hangs.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await;
        if cut.load(Ordering::Acquire) {
            return;
        }
        let n = match read {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        while hang.load(Ordering::Acquire) {
            if cut.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The proxy's listening `host:port`.
impl Proxy {
    fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn upstream(db: &TestDatabase) -> SocketAddr {
    tokio::net::lookup_host(db.host_port())
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("the PostgreSQL host resolves")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the blocking part ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_is_a_quick_503_and_ready_answers_within_a_second() {
    let db = postgres_database("orders_edge_cut").await;
    let proxy = Proxy::start(upstream(&db).await).await;
    let url = db.url_via(&proxy.host_port());
    let service =
        blocking(move || Service::start("pg-cut", &["--api-keys", KEY, "--database", &url], None))
            .await;
    let service = Arc::new(service);
    let s = Arc::clone(&service);
    let created = blocking(move || {
        s.request(
            "POST",
            "/v2/orders",
            &[
                AUTH,
                "Idempotency-Key: \"pg-1\"",
                "Content-Type: application/json",
            ],
            ORDER,
        )
    })
    .await;
    assert_eq!(status_of(&created), 201, "{created}");

    proxy.cut.store(true, Ordering::Release);
    let s = Arc::clone(&service);
    let (answer, took) = blocking(move || {
        let started = Instant::now();
        (
            s.request("GET", "/v2/orders", &[AUTH], ""),
            started.elapsed(),
        )
    })
    .await;
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert_eq!(problem_type(&answer), "/problems/database-unavailable");
    assert_eq!(header(&answer, "retry-after"), Some("1"));
    // The pool's acquire timeout is 1 s; allow for a loaded machine.
    assert!(took < Duration::from_secs(3), "took {took:?}");

    let s = Arc::clone(&service);
    let (ready, took) = blocking(move || {
        let started = Instant::now();
        (s.request("GET", "/ready", &[], ""), started.elapsed())
    })
    .await;
    assert_eq!(status_of(&ready), 503, "{ready}");
    assert!(took < Duration::from_secs(3), "/ready took {took:?}");

    // Back: the next request succeeds.
    proxy.cut.store(false, Ordering::Release);
    let s = Arc::clone(&service);
    let again = blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = s.request("GET", "/v2/orders", &[AUTH], "");
            if status_of(&answer) == 200 || Instant::now() > deadline {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await;
    assert_eq!(status_of(&again), 200, "{again}");
    drop(service);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_meets_the_deadline_and_the_database_stops_too() {
    let db = postgres_database("orders_edge_lock").await;
    let url = db.url().to_owned();
    let service = blocking(move || {
        Service::start(
            "pg-lock",
            &[
                "--api-keys",
                KEY,
                "--database",
                &url,
                "--request-timeout-ms",
                "1000",
            ],
            None,
        )
    })
    .await;
    let mut locker = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connects");
    sqlx::raw_sql("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("locks");
    let service = Arc::new(service);
    let s = Arc::clone(&service);
    let answer = blocking(move || s.request("GET", "/v2/orders", &[AUTH], "")).await;
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert_eq!(problem_type(&answer), "/problems/deadline-exceeded");
    assert_eq!(header(&answer, "retry-after"), Some("1"));
    // statement_timeout cancels the statement in PostgreSQL too: nobody waits on the lock.
    let mut observer = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connects");
    let deadline = Instant::now() + Duration::from_secs(5);
    let waiting = loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut observer)
        .await
        .expect("pg_stat_activity");
        if waiting == 0 || Instant::now() > deadline {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        waiting, 0,
        "a cancelled request's statement still waits on the lock"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlocks");
    drop(service);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_period_with_a_hung_database() {
    let db = postgres_database("orders_edge_shutdown").await;
    let proxy = Proxy::start(upstream(&db).await).await;
    let url = db.url_via(&proxy.host_port());
    let service = blocking(move || {
        Service::start(
            "pg-shutdown",
            &[
                "--api-keys",
                KEY,
                "--database",
                &url,
                "--shutdown-grace-seconds",
                "2",
                "--request-timeout-ms",
                "60000",
            ],
            None,
        )
    })
    .await;
    proxy.hang.store(true, Ordering::Release);
    let addr = service.addr;
    // A request stuck on the hung database, in flight when the signal comes.
    let stuck = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).expect("connects");
        let _ = write!(
            stream,
            "GET /v2/orders HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n\r\n"
        );
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut service = service;
    let exited = blocking(move || {
        service.terminate();
        service.wait_exit(Duration::from_secs(10))
    })
    .await;
    let exited = exited.expect("orders exits despite the hung database");
    assert!(
        exited < Duration::from_secs(4),
        "exit took {exited:?} with a 2 s grace"
    );
    proxy.cut.store(true, Ordering::Release);
    let _ = stuck.join();
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_serves_and_refuses_a_header_list_over_the_limit() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let service = blocking(|| Service::start("h2", &["--max-header-bytes", "16384"], None)).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<bytes::Bytes>>();
    let base = format!("http://{}", service.addr);
    let ok = client
        .request(
            http::Request::get(format!("{base}/health"))
                .body(Empty::new())
                .expect("a request"),
        )
        .await
        .expect("an HTTP/2 answer");
    assert_eq!(ok.status(), http::StatusCode::OK);
    assert_eq!(ok.version(), http::Version::HTTP_2);
    let _ = ok.into_body().collect().await;

    let huge = "h".repeat(32 * 1024);
    let refused = client
        .request(
            http::Request::get(format!("{base}/health"))
                .header("x-huge", huge)
                .body(Empty::new())
                .expect("a request"),
        )
        .await;
    match refused {
        Err(_) => {}
        Ok(response) => assert_eq!(
            response.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "a 32 KiB header list passed a 16 KiB limit"
        ),
    }
    drop(service);
}

#[test]
fn a_refused_body_is_read_away_only_within_its_bounds() {
    let service = Service::start(
        "discard",
        &[
            "--api-keys",
            KEY,
            "--max-discard-bytes",
            "1048576",
            "--request-timeout-ms",
            "1000",
            "--body-timeout-ms",
            "500",
        ],
        None,
    );
    // Declared longer than the discard bound: answered at once, and the connection closed.
    let mut stream = service.connect();
    stream
        .write_all(b"POST /v2/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n")
        .expect("writes");
    let (closed, answer) = closed_within(&mut stream, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_of(&answer), 401);
    assert_eq!(header(&answer, "connection"), Some("close"));
    assert!(closed.is_some());

    // Trickled a byte at a time: answered at once, the rest read away beside the answer for at
    // most the request deadline, then the connection is closed.
    let mut stream = service.connect();
    stream
        .write_all(b"POST /v2/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .expect("writes");
    let trickle = {
        let mut writer = stream.try_clone().expect("a clone");
        std::thread::spawn(move || {
            for _ in 0..100 {
                if writer.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("a clone"));
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 401);
    let (closed, _) = closed_within(&mut stream, Duration::from_secs(10));
    let closed = closed.expect("closed after the discard deadline");
    assert!(closed < Duration::from_secs(5), "{closed:?}");
    let _ = trickle.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_advertises_the_stream_limit() {
    let service =
        blocking(|| Service::start("h2-streams", &["--http2-max-concurrent-streams", "3"], None))
            .await;
    let tcp = tokio::net::TcpStream::connect(service.addr)
        .await
        .expect("connects");
    let (client, mut connection) = h2::client::handshake(tcp)
        .await
        .expect("an HTTP/2 handshake");
    let request = async {
        let mut client = client.ready().await.expect("ready");
        let get = http::Request::get(format!("http://{}/health", service.addr))
            .body(())
            .expect("a request");
        let (response, _) = client.send_request(get, true).expect("sent");
        response.await.expect("an answer").status()
    };
    let status = tokio::select! {
        status = request => status,
        result = &mut connection => panic!("the connection ended first: {result:?}"),
    };
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(connection.max_concurrent_send_streams(), 3);
    drop(service);
}

#[test]
fn the_connection_cap_refuses_newcomers_when_no_connection_is_idle() {
    let service = Service::start(
        "cap-busy",
        &[
            "--max-connections",
            "2",
            "--api-keys",
            KEY,
            "--body-timeout-ms",
            "5000",
        ],
        None,
    );
    // Two connections, each with a request in flight (its body still arriving).
    let busy: Vec<TcpStream> = (0..2)
        .map(|i| {
            let mut stream = service.connect();
            let head = format!(
                "POST /v2/orders HTTP/1.1\r\nHost: x\r\n{AUTH}\r\nIdempotency-Key: \"busy-{i}\"\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).expect("writes");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // No idle connection to shed: the newcomer is closed without an answer.
    let mut newcomer = service.connect();
    let _ = newcomer.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let (closed, answer) = closed_within(&mut newcomer, Duration::from_secs(5));
    assert!(closed.is_some(), "the newcomer is refused");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    drop(busy);
    // The busy ones gone, there is room again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        match service.try_request("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") {
            Ok(answer) if !answer.is_empty() => break answer,
            _ if Instant::now() > deadline => panic!("no room after the busy connections closed"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(
        metrics.contains(r#"orders_connections_closed_total{reason="refused"}"#),
        "{metrics}"
    );
}

#[test]
fn unauthenticated_trickled_bodies_cannot_fill_the_connection_cap() {
    let service = Service::start(
        "cap-unauth",
        &["--max-connections", "2", "--api-keys", KEY],
        None,
    );
    let mut writers = Vec::new();
    for _ in 0..2 {
        let mut stream = service.connect();
        stream
            .write_all(b"POST /v2/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .expect("writes");
        let mut writer = stream.try_clone().expect("a clone");
        writers.push(std::thread::spawn(move || {
            for _ in 0..50 {
                if writer.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
        // The 401 comes while the body is still trickling in (it would take 200 s).
        let mut reader = std::io::BufReader::new(stream);
        let (status, _) = read_head(&mut reader);
        assert_eq!(status, 401);
    }
    // Neither refused client holds its slot: a newcomer is served.
    let answer = service.request("GET", "/health", &[], "");
    assert_eq!(status_of(&answer), 200);
    for writer in writers {
        let _ = writer.join();
    }
}

#[test]
fn a_client_that_never_reads_its_answers_is_closed() {
    let service = Service::start(
        "no-read",
        &["--idle-timeout-ms", "500", "--request-timeout-ms", "500"],
        None,
    );
    let mut stream = service.connect();
    // 200 pipelined requests for the 50 KB contract: far more than the socket buffers hold.
    let request = b"GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n";
    let pipeline: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * 200)
        .collect();
    let _ = stream.write_all(&pipeline);
    std::thread::sleep(Duration::from_secs(4));
    // By now the stall bound (idle timeout + 1 s) has closed it: reading ends.
    let (closed, received) = closed_within(&mut stream, Duration::from_secs(20));
    assert!(
        closed.is_some(),
        "still open after {} bytes",
        received.len()
    );
    let whole = 200 * 50_000;
    assert!(
        received.len() < whole,
        "it read everything: nothing was bounded"
    );
}

#[test]
fn shutdown_does_not_wait_for_connections_with_nothing_in_flight() {
    let mut service = Service::start("shutdown-idle", &["--shutdown-grace-seconds", "10"], None);
    // A stalled first head, and an idle keep-alive connection.
    let mut stalled = service.connect();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\n")
        .expect("writes");
    let mut idle = service.connect();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("writes");
    std::thread::sleep(Duration::from_millis(200));
    service.terminate();
    let exited = service
        .wait_exit(Duration::from_secs(15))
        .expect("orders exits");
    assert!(
        exited < Duration::from_secs(5),
        "exit took {exited:?} with nothing in flight"
    );
    let log = service.log_text();
    assert!(log.contains("\"stopped\""), "{log}");
    assert!(!log.contains("did not close"), "{log}");
}

/// A socket whose first write sends at most 10 bytes: the HTTP/2 preface arrives in pieces.
struct SplitFirstWrite {
    inner: tokio::net::TcpStream,
    first: bool,
}

impl tokio::io::AsyncRead for SplitFirstWrite {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SplitFirstWrite {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n = if self.first {
            buf.len().min(10)
        } else {
            buf.len()
        };
        let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, &buf[..n]);
        if matches!(result, std::task::Poll::Ready(Ok(_))) {
            self.first = false;
        }
        result
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_in_pieces_is_still_http2() {
    let service = blocking(|| {
        Service::start(
            "h2-split",
            &[
                "--header-read-timeout-ms",
                "300",
                "--idle-timeout-ms",
                "5000",
            ],
            None,
        )
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(service.addr)
        .await
        .expect("connects");
    let io = SplitFirstWrite {
        inner: tcp,
        first: true,
    };
    let (client, connection) = h2::client::handshake(io)
        .await
        .expect("an HTTP/2 handshake");
    let driver = tokio::spawn(connection);
    let get = |client: h2::client::SendRequest<bytes::Bytes>| async move {
        let mut client = client.ready().await.expect("ready");
        let request = http::Request::get("http://x/health")
            .body(())
            .expect("a request");
        let (response, _) = client.send_request(request, true).expect("sent");
        response.await.expect("an answer").status()
    };
    assert_eq!(get(client.clone()).await, http::StatusCode::OK);
    // Past the HTTP/1 head timeout, well within the idle one: still open, still HTTP/2.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(get(client).await, http::StatusCode::OK);
    driver.abort();
    drop(service);
}

#[test]
fn a_connection_still_writing_its_answers_is_neither_idled_nor_shed() {
    let service = Service::start(
        "slow-reader",
        &[
            "--max-connections",
            "1",
            "--idle-timeout-ms",
            "1000",
            "--request-timeout-ms",
            "1000",
        ],
        None,
    );
    const COUNT: usize = 150;
    let mut stream = service.connect();
    // 150 pipelined requests for the 50 KB contract: more than loopback's buffers hold, so
    // hyper is left holding output while the client reads slowly.
    let request = b"GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n";
    let pipeline: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * COUNT)
        .collect();
    stream.write_all(&pipeline).expect("writes");
    let newcomer = {
        let addr = service.addr;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            let mut stream = TcpStream::connect(addr).expect("connects");
            let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            closed_within(&mut stream, Duration::from_secs(10)).1
        })
    };
    let mut reader = std::io::BufReader::with_capacity(16 * 1024, stream);
    for i in 0..COUNT {
        let (status, length) = read_head(&mut reader);
        assert_eq!(status, 200, "response {i}");
        let mut body = vec![0_u8; length];
        for chunk in body.chunks_mut(16 * 1024) {
            reader
                .read_exact(chunk)
                .unwrap_or_else(|e| panic!("response {i} cut short: {e}"));
            // About 1.6 MB/s: the whole takes several idle timeouts.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The busy connection kept its slot: the newcomer was refused, not served.
    let answer = newcomer.join().expect("the newcomer ran");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
}

#[test]
fn reading_away_a_refused_body_is_not_timed_as_a_request_head() {
    let service = Service::start(
        "drain-head",
        &[
            "--api-keys",
            KEY,
            "--header-read-timeout-ms",
            "300",
            "--body-timeout-ms",
            "2000",
            "--request-timeout-ms",
            "5000",
        ],
        None,
    );
    let mut stream = service.connect();
    stream
        .write_all(b"POST /v2/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n")
        .expect("writes");
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("a clone"));
    let (status, _) = read_answer(&mut reader);
    assert_eq!(status, 401);
    // The refused body arrives slowly (2 s, longer than the head timeout), then the next
    // request on the same connection.
    for _ in 0..20 {
        stream.write_all(b"x").expect("the body is still read");
        std::thread::sleep(Duration::from_millis(100));
    }
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("writes");
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 200, "the connection survived reading the body away");
}

#[test]
fn a_hung_redis_opens_the_breaker_and_the_service_recovers_when_it_thaws() {
    let redis = guardrail_test_support::RedisServer::spawn().expect("a private redis-server");
    let url = redis.url();
    let service = Service::start(
        "redis_breaker",
        &["--redis", &url, "--api-keys", "breaker_key_1"],
        None,
    );
    let order = r#"{"customer_id":"cus_1","items":[{"sku":"a","quantity":1,"unit_price":{"amount":1,"currency":"usd"}}]}"#;
    let create = |key: &str| {
        let idempotency = format!("Idempotency-Key: \"{key}\"");
        service.request(
            "POST",
            "/v2/orders",
            &[
                "Authorization: Bearer breaker_key_1",
                "Content-Type: application/json",
                &idempotency,
            ],
            order,
        )
    };
    assert_eq!(status_of(&create("before")), 201);

    redis.pause();
    // Requests wait out store timeouts until the breaker opens (five failed calls, and each
    // request makes two: its rate-limit decision, then its claim), then the answers come
    // without one; either way they are 503 problems with Retry-After.
    let deadline = Instant::now() + Duration::from_secs(20);
    // The series starts at zero (registered at start-up), so "not 0" means it opened.
    while service
        .metrics()
        .contains(r#"orders_redis_breaker_transitions_total{to="open"} 0"#)
    {
        assert!(Instant::now() < deadline, "the breaker never opened");
        let response = create(&format!("during-{}", free_port()));
        assert_eq!(status_of(&response), 503, "{response}");
        assert!(problem_type(&response).ends_with("/idempotency-store-unavailable"));
        assert!(header(&response, "retry-after").is_some());
    }
    assert!(service.metrics().contains("orders_redis_breaker_open 1"));
    let response = create("open");
    assert_eq!(status_of(&response), 503, "fail closed while open");

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = create(&format!("after-{}", free_port()));
        if status_of(&response) == 201 {
            break;
        }
        assert_eq!(status_of(&response), 503, "{response}");
        assert!(Instant::now() < deadline, "no order after Redis thawed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = service.metrics();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} is not exported:\n{metrics}"))
    };
    assert!(value(r#"orders_redis_breaker_transitions_total{to="open"}"#) >= 1.0);
    assert!(value(r#"orders_redis_breaker_transitions_total{to="closed"}"#) >= 1.0);
    assert!(
        value("orders_redis_breaker_open").abs() < f64::EPSILON,
        "closed again"
    );
}
