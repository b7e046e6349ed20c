//! Criterion benches for the API guardrail crates; see `benches/` and the README.
//!
//! The one piece the benches share is the instruction-count mode ([`count_request`]): a bench
//! that supports it runs one case a given number of times, without criterion, so that
//! `valgrind --tool=callgrind` (see `count.sh`) counts the instructions it takes. Counts repeat
//! from run to run on a shared machine where the wall clock does not. The benches also share
//! the runtime they drive services on ([`current_thread`]).

/// The runtime the benches drive services on: one thread, as one request's work runs on one
/// (`ratelimit/layer`'s criterion group keeps tokio's multi-thread runtime, whose figures the
/// README quotes).
///
/// # Panics
///
/// When the operating system refuses the runtime's resources.
#[must_use]
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// The case and number of requests asked for by the environment variable `var`, set as
/// `<case>:<requests>`, or `None` when it is unset (the bench then runs under criterion).
///
/// # Panics
///
/// When the variable is set but is not `<case>:<requests>` with a decimal number: a mistyped
/// request for counts must not quietly run the whole criterion bench under valgrind.
#[must_use]
pub fn count_request(var: &str) -> Option<(String, u64)> {
    let spec = std::env::var(var).ok()?;
    let Some((case, requests)) = spec.split_once(':') else {
        panic!("{var}={spec}: expected <case>:<requests>");
    };
    let Ok(requests) = requests.parse() else {
        panic!("{var}={spec}: {requests} is not a number of requests");
    };
    Some((case.to_owned(), requests))
}
