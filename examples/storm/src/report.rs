//! The storm's findings, as numbers and as Markdown.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::{Attempt, Storm};

/// What a storm found.
#[derive(Clone, Debug)]
pub struct Report {
    /// Every attempt, in the order they ended.
    pub attempts: Vec<Attempt>,
    /// Attempts by status (`timeout` for timeouts and connection errors).
    pub by_status: BTreeMap<String, usize>,
    /// Keys sent.
    pub keys: usize,
    /// Sends per key.
    pub copies: usize,
    /// Service URLs.
    pub urls: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Orders found afterwards.
    pub orders: usize,
    /// Orders beyond the first per key.
    pub duplicates: usize,
    /// Keys with no order at all.
    pub missing: usize,
    /// 201s whose body differed from the key's first 201.
    pub replay_mismatches: usize,
    /// Sends that ended without a 201 (out of attempts, or a non-retryable status).
    pub gave_up: usize,
    /// 429s without `Retry-After`.
    pub too_many_without_retry_after: usize,
    /// 429s without a problem body.
    pub too_many_without_problem: usize,
    /// Attempt latency, 50th percentile.
    pub p50: Duration,
    /// Attempt latency, 99th percentile.
    pub p99: Duration,
    /// Wall time of the storm (without the listing).
    pub elapsed: Duration,
}

impl Report {
    pub(crate) fn new(
        storm: &Storm,
        attempts: Vec<Attempt>,
        orders_per_key: &[usize],
        replay_mismatches: usize,
        gave_up: usize,
        elapsed: Duration,
    ) -> Self {
        let mut by_status = BTreeMap::new();
        for attempt in &attempts {
            let label = attempt
                .status
                .map_or_else(|| "timeout".to_owned(), |s| s.as_u16().to_string());
            *by_status.entry(label).or_insert(0) += 1;
        }
        let too_many: Vec<_> = attempts
            .iter()
            .filter(|a| a.status.is_some_and(|s| s.as_u16() == 429))
            .collect();
        let mut latencies: Vec<Duration> = attempts.iter().map(|a| a.latency).collect();
        latencies.sort_unstable();
        Report {
            by_status,
            keys: storm.keys,
            copies: storm.copies,
            urls: storm.urls.len(),
            clients: storm.clients,
            orders: orders_per_key.iter().sum(),
            duplicates: orders_per_key.iter().map(|n| n.saturating_sub(1)).sum(),
            missing: orders_per_key.iter().filter(|n| **n == 0).count(),
            replay_mismatches,
            gave_up,
            too_many_without_retry_after: too_many.iter().filter(|a| !a.had_retry_after).count(),
            too_many_without_problem: too_many.iter().filter(|a| !a.had_problem_body).count(),
            p50: percentile(&latencies, 50),
            p99: percentile(&latencies, 99),
            elapsed,
            attempts,
        }
    }

    /// Server errors seen (5xx attempts).
    pub fn server_errors(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.status.is_some_and(|s| s.is_server_error()))
            .count()
    }

    /// The report as Markdown.
    pub fn markdown(&self, title: &str, command: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {title}\n");
        let _ = writeln!(out, "```sh\n{command}\n```\n");
        let _ = writeln!(
            out,
            "{} clients, {} idempotency keys, each sent {} times at once across {} URL(s); {} attempts in {:.1} s.\n",
            self.clients,
            self.keys,
            self.copies,
            self.urls,
            self.attempts.len(),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(out, "| finding | value |\n|---|---|");
        let _ = writeln!(
            out,
            "| orders created | {} (for {} keys) |",
            self.orders, self.keys
        );
        let _ = writeln!(out, "| **duplicate orders** | **{}** |", self.duplicates);
        let _ = writeln!(out, "| keys without an order | {} |", self.missing);
        let _ = writeln!(
            out,
            "| replays that differed from the original | {} |",
            self.replay_mismatches
        );
        let _ = writeln!(out, "| sends that gave up | {} |", self.gave_up);
        let _ = writeln!(out, "| 5xx responses | {} |", self.server_errors());
        let _ = writeln!(
            out,
            "| 429s without Retry-After | {} |",
            self.too_many_without_retry_after
        );
        let _ = writeln!(
            out,
            "| 429s without a problem body | {} |",
            self.too_many_without_problem
        );
        let _ = writeln!(
            out,
            "| latency p50 / p99 | {:.1} ms / {:.1} ms |\n",
            ms(self.p50),
            ms(self.p99)
        );
        let _ = writeln!(out, "| status | attempts |\n|---|---|");
        for (status, count) in &self.by_status {
            let _ = writeln!(out, "| {status} | {count} |");
        }
        out
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}
