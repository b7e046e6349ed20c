//! The memory store's clock: nanoseconds since the store was made.
//!
//! Reading the time was a third of a hot-key decision's cycles with `clock_gettime` (perf on
//! the `ratelimit/hot_key` bench), so by default the store reads the CPU's time-stamp counter
//! through `quanta` (calibrated once per process against the OS clock; where the CPU has no
//! invariant TSC, quanta falls back to the OS's monotonic clock). With the `test-util`
//! feature the store reads tokio's clock instead, so `tokio::time::pause()` and `advance()`
//! drive it, as tokio's own `test-util` does for its timers.

/// A monotonic clock in nanoseconds since it was made, never 0 (0 marks a new GCRA bucket).
#[derive(Clone)]
pub(crate) enum Clock {
    Tsc { source: quanta::Clock, epoch: u64 },
    Tokio { epoch: tokio::time::Instant },
}

impl Clock {
    /// The store's clock: tokio's with the `test-util` feature, else the TSC.
    pub(crate) fn new() -> Self {
        if cfg!(feature = "test-util") {
            Self::tokio()
        } else {
            Self::tsc()
        }
    }

    pub(crate) fn tsc() -> Self {
        let source = quanta::Clock::new();
        let epoch = source.raw();
        Clock::Tsc { source, epoch }
    }

    pub(crate) fn tokio() -> Self {
        Clock::Tokio {
            epoch: tokio::time::Instant::now(),
        }
    }

    /// Nanoseconds since the clock was made, plus one.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        let elapsed = match self {
            Clock::Tsc { source, epoch } => source.delta_as_nanos(*epoch, source.raw()),
            Clock::Tokio { epoch } => u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX),
        };
        elapsed.saturating_add(1)
    }

    /// Which source the clock reads, for `Debug` output (the benches print it).
    pub(crate) fn source(&self) -> &'static str {
        match self {
            Clock::Tsc { .. } => "tsc (quanta)",
            Clock::Tokio { .. } => "tokio",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Clock;

    fn never_zero_and_never_backwards(clock: &Clock) {
        let mut last = clock.now();
        assert_ne!(last, 0);
        for _ in 0..10_000 {
            let now = clock.now();
            assert!(now >= last, "{now} < {last}");
            last = now;
        }
    }

    #[test]
    fn tsc_is_monotonic_and_counts_nanoseconds() {
        let clock = Clock::tsc();
        never_zero_and_never_backwards(&clock);
        // Each TSC reading is bracketed by OS-clock readings, so a preemption only widens the
        // bounds: the TSC span lies between the inner and the outer OS spans, up to
        // quanta's calibration error (a few parts in a thousand; 5 % allowed).
        let (w0, t0, w1) = (Instant::now(), clock.now(), Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        let (w2, t1, w3) = (Instant::now(), clock.now(), Instant::now());
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).expect("small");
        let (inner, outer, tsc) = (nanos(w2 - w1), nanos(w3 - w0), t1 - t0);
        assert!(
            tsc >= inner - inner / 20 && tsc <= outer + outer / 20,
            "tsc {tsc} ns, os clock between {inner} and {outer} ns"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_follows_paused_time() {
        let clock = Clock::tokio();
        never_zero_and_never_backwards(&clock);
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.now() - before, 3_000_000_000);
    }

    #[test]
    fn the_feature_picks_the_source() {
        let expected = if cfg!(feature = "test-util") {
            "tokio"
        } else {
            "tsc (quanta)"
        };
        assert_eq!(Clock::new().source(), expected);
    }
}
