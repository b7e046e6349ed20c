//! A Redis Cluster for tests, from `redis-server` alone: three masters (and optionally one
//! replica each) on free ports, slots assigned with `CLUSTER ADDSLOTSRANGE`, joined with
//! `CLUSTER MEET`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{INSTALL_HINT, RedisServer, unique_prefix};

/// How long a node may take to join, a replica to sync, a cluster to report `ok`.
const FORM_TIMEOUT: Duration = Duration::from_secs(20);

/// The slot ranges of three masters (16384 slots).
const SLOTS: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// A Redis Cluster for one test, with a key prefix of its own.
#[derive(Debug, Clone)]
pub struct TestRedisCluster {
    urls: Vec<String>,
    prefix: String,
}

impl TestRedisCluster {
    /// The masters' URLs (`redis://127.0.0.1:<port>`), the seed nodes of a cluster client.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// A key prefix no other test shares, ending in `:`, free of `{` and `}`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys matching `pattern` on each master, in the order of [`urls`](Self::urls)
    /// (`KEYS` on each node: a test's own few keys, never a production keyspace).
    ///
    /// # Panics
    ///
    /// When a master does not answer.
    pub fn keys_by_master(&self, pattern: &str) -> Vec<Vec<String>> {
        self.urls
            .iter()
            .map(|url| {
                let client = redis::Client::open(url.as_str()).expect("a Redis URL");
                let mut connection = client
                    .get_connection_with_timeout(Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("{url}: {e}"));
                redis::cmd("KEYS")
                    .arg(pattern)
                    .query(&mut connection)
                    .unwrap_or_else(|e| panic!("KEYS on {url}: {e}"))
            })
            .collect()
    }

    /// The cluster slot of `key` (`CLUSTER KEYSLOT`, asked of the first master).
    ///
    /// # Panics
    ///
    /// When the master does not answer.
    pub fn slot(&self, key: &str) -> u16 {
        let client = redis::Client::open(self.urls[0].as_str()).expect("a Redis URL");
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("the first master answers");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connection)
            .expect("CLUSTER KEYSLOT")
    }
}

/// Returns the test cluster of this binary and a fresh key prefix for the test `test_name`.
///
/// The cluster is `REDIS_CLUSTER_URLS` (comma-separated seed URLs) when it is set, else three
/// masters started once per test binary with [`ClusterNodes::start`] (about 2 s), stopped when
/// the binary exits.
///
/// # Panics
///
/// When no cluster can be found or formed, saying what to install: a test that needs a
/// cluster fails, it is never skipped.
pub fn redis_cluster(test_name: &str) -> TestRedisCluster {
    struct Shared {
        urls: Vec<String>,
        _nodes: Option<ClusterNodes>,
    }
    static CLUSTER: OnceLock<Result<Shared, String>> = OnceLock::new();
    let shared = CLUSTER.get_or_init(|| {
        if let Some(urls) = std::env::var("REDIS_CLUSTER_URLS")
            .ok()
            .filter(|urls| !urls.trim().is_empty())
        {
            let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
            return Ok(Shared { urls, _nodes: None });
        }
        let nodes = ClusterNodes::start(0).map_err(|e| {
            format!("no Redis Cluster for the tests: REDIS_CLUSTER_URLS is unset and {e}; {INSTALL_HINT}")
        })?;
        Ok(Shared {
            urls: nodes.urls(),
            _nodes: Some(nodes),
        })
    });
    match shared {
        Ok(shared) => TestRedisCluster {
            urls: shared.urls.clone(),
            prefix: unique_prefix(test_name),
        },
        Err(message) => panic!("{message}"),
    }
}

/// Cluster nodes this process started: three masters and `replicas` replicas of each. Dropping
/// it stops them all and removes their files.
#[derive(Debug)]
pub struct ClusterNodes {
    masters: Vec<Option<RedisServer>>,
    replicas: Vec<RedisServer>,
}

impl ClusterNodes {
    /// Starts three masters (and `replicas` replicas of each), forms the cluster and waits
    /// until every node reports `cluster_state:ok` and every replica is in sync.
    ///
    /// # Errors
    ///
    /// When `redis-server` is missing, a node does not come up, or the cluster does not form
    /// within 20 s.
    pub fn start(replicas: usize) -> Result<Self, String> {
        let masters = (0..SLOTS.len())
            .map(|_| spawn_node())
            .collect::<Result<Vec<_>, _>>()?;
        let replicas = (0..SLOTS.len() * replicas)
            .map(|_| spawn_node())
            .collect::<Result<Vec<_>, _>>()?;
        for (master, (first, last)) in masters.iter().zip(SLOTS) {
            command(
                master.port(),
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            )?;
        }
        let seed = masters[0].port();
        for node in masters.iter().skip(1).chain(&replicas) {
            command(
                seed,
                &["CLUSTER", "MEET", "127.0.0.1", &node.port().to_string()],
            )?;
        }
        let all: Vec<u16> = masters
            .iter()
            .chain(&replicas)
            .map(RedisServer::port)
            .collect();
        let known = all.len().to_string();
        for &port in &all {
            wait_for(port, &["CLUSTER", "INFO"], |info| {
                field(info, "cluster_known_nodes") == Some(known.as_str())
            })?;
        }
        for (n, replica) in replicas.iter().enumerate() {
            let master = &masters[n % masters.len()];
            let id = command(master.port(), &["CLUSTER", "MYID"])?;
            // A replica learns of its master's id through the cluster bus: retry until it has.
            wait_for(replica.port(), &["CLUSTER", "REPLICATE", &id], |reply| {
                reply == "OK"
            })?;
        }
        for &port in &all {
            wait_for(port, &["CLUSTER", "INFO"], |info| {
                field(info, "cluster_state") == Some("ok")
            })?;
        }
        for replica in &replicas {
            wait_for(replica.port(), &["INFO", "replication"], |info| {
                field(info, "master_link_status") == Some("up")
            })?;
        }
        Ok(ClusterNodes {
            masters: masters.into_iter().map(Some).collect(),
            replicas,
        })
    }

    /// The URLs of the masters still running.
    pub fn urls(&self) -> Vec<String> {
        self.masters
            .iter()
            .flatten()
            .map(RedisServer::url)
            .collect()
    }

    /// The replicas.
    pub fn replicas(&self) -> &[RedisServer] {
        &self.replicas
    }

    /// Master `n`, while it runs.
    pub fn master(&self, n: usize) -> Option<&RedisServer> {
        self.masters.get(n).and_then(Option::as_ref)
    }

    /// The replicas of master `n`.
    pub fn replicas_of(&self, n: usize) -> Vec<&RedisServer> {
        self.replicas
            .iter()
            .skip(n)
            .step_by(self.masters.len())
            .collect()
    }

    /// Closes master `n`'s replication links (`CLIENT KILL TYPE replica`): what it writes
    /// from now on reaches no replica until they reconnect (freeze them first with
    /// [`RedisServer::pause`] to keep them from reconnecting), as in a network partition.
    ///
    /// # Errors
    ///
    /// When master `n` does not answer.
    pub fn cut_replication_of(&self, n: usize) -> Result<(), String> {
        let master = self.master(n).ok_or("no such master")?;
        command(master.port(), &["CLIENT", "KILL", "TYPE", "replica"]).map(drop)
    }

    /// Waits until a replica of master `n` has taken over (after a master dies the cluster
    /// elects its most up-to-date replica once the node timeout, 2 s, has passed) and every
    /// running node sees the cluster `ok`; returns how long that took.
    ///
    /// # Errors
    ///
    /// When no replica takes over within 20 s.
    pub fn await_failover_of(&self, n: usize) -> Result<Duration, String> {
        let started = Instant::now();
        let replicas = self.replicas_of(n);
        let deadline = Instant::now() + FORM_TIMEOUT;
        let promoted = loop {
            let promoted = replicas.iter().find(|replica| {
                command(replica.port(), &["INFO", "replication"])
                    .is_ok_and(|info| field(&info, "role") == Some("master"))
            });
            if let Some(promoted) = promoted {
                break promoted.port();
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no replica of master {n} took over within {FORM_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let running: Vec<u16> = self
            .masters
            .iter()
            .flatten()
            .chain(&self.replicas)
            .map(RedisServer::port)
            .collect();
        for port in running.into_iter().chain([promoted]) {
            wait_for(port, &["CLUSTER", "INFO"], |info| {
                field(info, "cluster_state") == Some("ok")
            })?;
        }
        Ok(started.elapsed())
    }

    /// Kills master `n` with `SIGKILL` (no shutdown, its replica not told), and removes its
    /// files; returns its port.
    ///
    /// # Panics
    ///
    /// When master `n` does not exist or was already killed.
    pub fn kill_master(&mut self, n: usize) -> u16 {
        let master = self.masters[n].take().expect("a running master");
        master.kill();
        master.port()
    }
}

/// A node on a port whose cluster bus port (+10000) is free too.
fn spawn_node() -> Result<RedisServer, String> {
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
    ];
    let mut last_error = String::from("no port with a free bus port");
    for _ in 0..10 {
        let Some(port) = port_with_free_bus() else {
            continue;
        };
        match RedisServer::spawn_with(port, &args) {
            Ok(server) => return Ok(server),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

fn port_with_free_bus() -> Option<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    let port = listener.local_addr().ok()?.port();
    let bus = port.checked_add(10_000)?;
    std::net::TcpListener::bind(("127.0.0.1", bus)).ok()?;
    Some(port)
}

/// Runs one command on the node at `port` and returns its reply as text.
fn command(port: u16, args: &[&str]) -> Result<String, String> {
    let describe = |e: redis::RedisError| format!("`{}` on port {port}: {e}", args.join(" "));
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(describe)?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(describe)?;
    connection
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(describe)?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let reply: redis::Value = cmd.query(&mut connection).map_err(describe)?;
    Ok(match reply {
        redis::Value::SimpleString(text) => text,
        redis::Value::Okay => "OK".to_owned(),
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => format!("{other:?}"),
    })
}

/// Runs `args` on the node at `port` every 50 ms until its reply satisfies `done`, for at most
/// [`FORM_TIMEOUT`].
fn wait_for(port: u16, args: &[&str], done: impl Fn(&str) -> bool) -> Result<(), String> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match command(port, args) {
            Ok(reply) if done(&reply) => return Ok(()),
            Ok(reply) => last = reply,
            Err(error) => last = error,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "the Redis Cluster did not form within {FORM_TIMEOUT:?}: `{}` on port {port} last said {last}",
        args.join(" ")
    ))
}

/// The value of `name` in an `INFO`-style reply (`name:value` lines).
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_forms_and_covers_every_slot() {
        let cluster = redis_cluster("a_cluster_forms");
        assert_eq!(cluster.urls().len(), 3);
        let port: u16 = cluster.urls()[0]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        let info = command(port, &["CLUSTER", "INFO"]).expect("CLUSTER INFO");
        assert_eq!(field(&info, "cluster_state"), Some("ok"), "{info}");
        assert_eq!(
            field(&info, "cluster_slots_assigned"),
            Some("16384"),
            "{info}"
        );
    }
}
