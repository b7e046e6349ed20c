//! [`FakeRedis`]: a Redis connection that hangs, refuses or answers as the test says, for
//! tests on a paused clock (a real socket and a paused clock do not mix: tokio would jump
//! time forward while the test waits on I/O).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// How a [`FakeRedis`] answers each command.
#[derive(Clone)]
pub enum Reply {
    /// Never answers, as a frozen server.
    Hang,
    /// Fails at once with "connection refused", as a stopped server.
    Refuse,
    /// Answers with what the function makes of the command.
    With(Arc<dyn Fn(&Cmd) -> Value + Send + Sync>),
}

impl Reply {
    /// Answers every command with `value`.
    pub fn always(value: Value) -> Self {
        Reply::With(Arc::new(move |_| value.clone()))
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reply::Hang => "Hang",
            Reply::Refuse => "Refuse",
            Reply::With(_) => "With(<fn>)",
        })
    }
}

/// A connection whose behaviour the test switches at will; clones share it and count every
/// command they are sent, so a test can tell "failed fast without calling Redis" from
/// "called Redis and failed".
#[derive(Clone, Debug)]
pub struct FakeRedis {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    reply: Mutex<Reply>,
    calls: AtomicUsize,
}

impl FakeRedis {
    /// A connection that answers with `reply`.
    pub fn new(reply: Reply) -> Self {
        FakeRedis {
            shared: Arc::new(Shared {
                reply: Mutex::new(reply),
                calls: AtomicUsize::new(0),
            }),
        }
    }

    /// Answers with `reply` from now on.
    ///
    /// # Panics
    ///
    /// When another thread panicked while switching it.
    pub fn set(&self, reply: Reply) {
        *self.shared.reply.lock().expect("not poisoned") = reply;
    }

    /// Commands sent so far, by every clone.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }
}

impl ConnectionLike for FakeRedis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        let reply = self.shared.reply.lock().expect("not poisoned").clone();
        match reply {
            Reply::Hang => Box::pin(std::future::pending()),
            Reply::Refuse => Box::pin(std::future::ready(Err(RedisError::from(
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
            )))),
            Reply::With(answer) => Box::pin(std::future::ready(Ok(answer(cmd)))),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _pipeline: &'a Pipeline,
        _offset: usize,
        _count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Err(RedisError::from((
            redis::ErrorKind::Client,
            "FakeRedis does not run pipelines",
        )))))
    }

    fn get_db(&self) -> i64 {
        0
    }
}
