//! Test support shared by the API guardrail crates. Not published.
//!
//! SQLite: [`SqliteFile`] is a database path of the test's own, removed afterwards.
//!
//! PostgreSQL: [`postgres_database`] creates a database of the test's own on the server
//! `ORDERS_TEST_POSTGRES_URL` names (else `postgres://postgres@127.0.0.1:5432/postgres`), and
//! fails with what to install when none answers.
//!
//! Every integration test that talks to Redis gets its server and its key prefix from
//! [`redis()`]:
//!
//! ```no_run
//! let redis = guardrail_test_support::redis("claim_is_atomic");
//! // Connect to `redis.url()`; put every key under `redis.prefix()`.
//! assert!(redis.url().starts_with("redis://"));
//! ```
//!
//! The server is found in this order, once per test binary:
//!
//! 1. `REDIS_URL`, when it is set (it must answer `PING` if it is a plain `redis://host:port` URL);
//! 2. a Redis already answering on `127.0.0.1:6379`;
//! 3. a `redis-server` spawned on a free port, with its data in a temporary directory; it is
//!    stopped and its directory removed when the test binary exits (normally, by a panic, or
//!    by SIGINT, SIGTERM or SIGHUP; a SIGKILL of the whole process group leaves the directory).
//!
//! When none of these works the call panics with a message naming what to install: a test that
//! needs Redis fails, it is never skipped.
//!
//! Tests in one binary run in parallel against the same server, so every test uses its own key
//! prefix ([`TestRedis::prefix`]), unique across tests, runs and processes.

#[cfg(feature = "grpc")]
pub mod grpc;
mod postgres;
#[cfg(feature = "redis")]
mod redis_cluster;
#[cfg(feature = "redis")]
mod redis_fake;
mod sqlite;

pub use postgres::{TestDatabase, postgres_database};
#[cfg(feature = "redis")]
pub use redis_cluster::{ClusterNodes, TestRedisCluster, redis_cluster};
#[cfg(feature = "redis")]
pub use redis_fake::{FakeRedis, Reply};
pub use sqlite::SqliteFile;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_ADDR: &str = "127.0.0.1:6379";
const INSTALL_HINT: &str = "install Redis (Debian/Ubuntu: `apt-get install redis-server`, \
     macOS: `brew install redis`) so that `redis-server` is on PATH, or set REDIS_URL to a running server";

/// A Redis server for one test, with a key prefix of its own.
#[derive(Debug, Clone)]
pub struct TestRedis {
    url: String,
    prefix: String,
}

impl TestRedis {
    /// The connection URL, e.g. `redis://127.0.0.1:6379`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A key prefix no other test shares, ending in `:`.
    ///
    /// It contains no `{` or `}`, so crates can wrap their own hash tags around it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Returns the shared test Redis server and a fresh key prefix for the test `test_name`.
///
/// # Panics
///
/// Panics with an explanation when no Redis server can be found or started.
pub fn redis(test_name: &str) -> TestRedis {
    let url = match shared_server() {
        Ok(url) => url.clone(),
        Err(message) => panic!("{message}"),
    };
    TestRedis {
        url,
        prefix: unique_prefix(test_name),
    }
}

/// A key prefix unique to this call: the sanitized test name, the process id, a per-process
/// counter and the start time of the process.
pub fn unique_prefix(test_name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static STARTED: OnceLock<u128> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    });
    let name: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("test:{name}:{}:{started:x}:{n}:", std::process::id())
}

/// The server every test of this binary shares.
struct Shared {
    url: String,
    /// Held so the spawned server lives as long as the process.
    _spawned: Option<RedisServer>,
}

fn shared_server() -> Result<&'static String, &'static String> {
    static SERVER: OnceLock<Result<Shared, String>> = OnceLock::new();
    SERVER
        .get_or_init(find_or_start)
        .as_ref()
        .map(|shared| &shared.url)
}

fn find_or_start() -> Result<Shared, String> {
    if let Some(url) = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        if let Some(addr) = plain_tcp_addr(&url)
            && !answers_ping(&addr)
        {
            return Err(format!(
                "REDIS_URL is set to {url}, but nothing there answers PING; start that server or unset REDIS_URL"
            ));
        }
        return Ok(Shared {
            url,
            _spawned: None,
        });
    }
    if answers_ping(DEFAULT_ADDR) {
        let url = format!("redis://{DEFAULT_ADDR}");
        return Ok(Shared {
            url,
            _spawned: None,
        });
    }
    let server = RedisServer::spawn().map_err(|e| {
        format!("no Redis for the tests: REDIS_URL is unset, nothing answers on {DEFAULT_ADDR}, and {e}; {INSTALL_HINT}")
    })?;
    Ok(Shared {
        url: server.url(),
        _spawned: Some(server),
    })
}

/// The `host:port` of a `redis://` URL without credentials or options, if it is one.
fn plain_tcp_addr(url: &str) -> Option<String> {
    let rest = url.strip_prefix("redis://")?;
    let authority = rest.split(['/', '?']).next()?;
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    // `[::1]:6380` has a port; `[::1]` and `localhost` do not.
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        Some(authority.to_owned())
    } else {
        Some(format!("{authority}:6379"))
    }
}

/// Whether a Redis server that accepts commands without credentials answers at `addr`.
pub fn answers_ping(addr: &str) -> bool {
    let Ok(mut addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs.any(|addr| ping(addr).is_ok())
}

fn ping(addr: SocketAddr) -> std::io::Result<()> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other(
            "not a Redis server that answers PING",
        ))
    }
}

/// A `redis-server` child process on a free port, with its files in a temporary directory.
///
/// Dropping it stops the server and removes the directory. A server that is never dropped
/// (one kept in a `static`) is stopped when the process that spawned it exits, because the
/// supervising shell waits for its standard input to close.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    supervisor: Child,
    stdin: Option<ChildStdin>,
}

impl RedisServer {
    /// Spawns `redis-server` on a free local port and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// Fails when `redis-server` is not on `PATH` or does not come up within 10 seconds
    /// (after three attempts on different ports).
    pub fn spawn() -> Result<Self, String> {
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(|e| format!("no free local port: {e}"))?;
            match Self::spawn_on(port) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Spawns `redis-server` on `port`, for example to bring a stopped server back at the
    /// address its clients know, and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// Fails when `redis-server` is not on `PATH` or does not come up on that port within
    /// 10 seconds.
    pub fn spawn_on(port: u16) -> Result<Self, String> {
        Self::spawn_with(port, &[])
    }

    /// Spawns `redis-server` on `port` with `args` besides (a cluster node's settings), and
    /// waits until it answers `PING`.
    pub(crate) fn spawn_with(port: u16, args: &[&str]) -> Result<Self, String> {
        let version = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(version, Ok(status) if status.success()) {
            return Err("`redis-server` is not on PATH".to_owned());
        }
        let dir = std::env::temp_dir().join(unique_prefix("redis").replace(':', "-"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // The shell starts the server, then blocks on its standard input; that pipe closes when
        // this process exits (normally, by panic or by a signal), and the shell then stops the
        // server and removes its directory. Rust never runs destructors of statics, so this is
        // how a server shared by a whole test binary is cleaned up. The trap covers a signal
        // sent to the whole process group (Ctrl-C), which reaches the shell too.
        let script = r#"port="$1"; dir="$2"; shift 2
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" "$@" &
pid=$!
echo "$pid" > "$dir/pid"
cleanup() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap 'cleanup; exit 0' INT TERM HUP
cat >/dev/null
cleanup"#;
        let mut supervisor = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(port.to_string())
            .arg(&dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                format!("cannot run `sh` to start redis-server: {e}")
            })?;
        let stdin = supervisor.stdin.take();
        let server = Self {
            port,
            dir,
            supervisor,
            stdin,
        };
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Only a PING answered while our own server runs proves the port is ours; if it
            // has exited (it lost the port to another process), give up on this port at once.
            let alive = server.redis_alive();
            if alive == Some(false) {
                break;
            }
            if alive == Some(true) && answers_ping(&addr) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(server.dir.join("redis.log")).unwrap_or_default();
        Err(format!(
            "redis-server did not answer on {addr} within 10 s; its log: {}",
            log.trim()
        ))
    }

    /// Whether the `redis-server` process runs: `None` until its pid is known.
    fn redis_alive(&self) -> Option<bool> {
        let pid = std::fs::read_to_string(self.dir.join("pid")).ok()?;
        let pid = pid.trim();
        if pid.is_empty() {
            return None;
        }
        // A zombie (exited, not yet reaped by the shell) counts as gone.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        Some(!stat.is_empty() && !stat.contains(") Z "))
    }

    /// Freezes the server (`SIGSTOP`): connections stay open and nothing answers, as when
    /// Redis hangs. [`resume`](Self::resume) thaws it.
    ///
    /// # Panics
    ///
    /// When the server's process is unknown or `kill` fails.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a server that [`pause`](Self::pause) froze (`SIGCONT`).
    ///
    /// # Panics
    ///
    /// When the server's process is unknown or `kill` fails.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server at once (`SIGKILL`): no shutdown, no goodbye to replicas or cluster
    /// peers, as when a machine dies.
    ///
    /// # Panics
    ///
    /// When the server's process is unknown or `kill` fails.
    pub fn kill(&self) {
        self.signal("-KILL");
        // Until the kernel has reaped it into a zombie, it still looks alive (and a later
        // `resume` would signal a process that is gone): wait for that, two seconds at most.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.redis_alive() == Some(true) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).expect("redis-server's pid file");
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.trim())
            .status()
            .expect("`kill` runs");
        assert!(status.success(), "kill {signal} {} failed", pid.trim());
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A frozen server cannot act on the shell's SIGTERM.
        if self.redis_alive() == Some(true) {
            let _ = std::panic::catch_unwind(|| self.resume());
        }
        // Closing the pipe tells the supervising shell to stop the server and clean up.
        drop(self.stdin.take());
        let _ = self.supervisor.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_free_of_hash_tags() {
        let a = unique_prefix("a test{with}braces");
        let b = unique_prefix("a test{with}braces");
        assert_ne!(a, b);
        assert!(!a.contains(['{', '}', ' ']), "{a}");
        assert!(a.ends_with(':'));
    }

    #[test]
    fn plain_tcp_addr_reads_host_and_port() {
        assert_eq!(
            plain_tcp_addr("redis://127.0.0.1:6380/0").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            plain_tcp_addr("redis://localhost").as_deref(),
            Some("localhost:6379")
        );
        assert_eq!(
            plain_tcp_addr("redis://[::1]").as_deref(),
            Some("[::1]:6379")
        );
        assert_eq!(
            plain_tcp_addr("redis://[::1]:6380").as_deref(),
            Some("[::1]:6380")
        );
        assert_eq!(plain_tcp_addr("redis://user:pw@host:1"), None);
        assert_eq!(plain_tcp_addr("rediss://host:1"), None);
    }

    #[test]
    fn shared_server_answers() {
        let redis = redis("shared_server_answers");
        let addr = plain_tcp_addr(redis.url()).expect("a plain redis:// URL");
        assert!(answers_ping(&addr), "{} does not answer", redis.url());
    }

    #[test]
    fn spawned_server_answers_and_stops_when_dropped() {
        let server = RedisServer::spawn().unwrap_or_else(|e| panic!("{e}; {INSTALL_HINT}"));
        let addr = format!("127.0.0.1:{}", server.port());
        assert!(answers_ping(&addr));
        let dir = server.dir.clone();
        assert!(dir.exists());
        drop(server);
        assert!(!answers_ping(&addr), "the server outlived its handle");
        assert!(!dir.exists(), "the data directory was left behind");
    }
}
