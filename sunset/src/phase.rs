//! Where a deprecated API is in its life, and the clock that tells.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Where the wrapped API is in its retirement, at the time of a request.
///
/// Given to the [`OnDeprecatedCall`](crate::OnDeprecatedCall) hook, and put in the
/// extensions of every response the layer returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// The deprecation is announced for a later time; the API is not deprecated yet.
    Announced,
    /// The API is deprecated and still served.
    Deprecated,
    /// The API is in a scheduled brownout: requests are answered 410 until the window ends.
    Brownout,
    /// The sunset has passed. Requests are answered 410 if the layer enforces the sunset,
    /// and served (with the headers) otherwise.
    Retired,
}

/// Wall-clock time that follows tokio's clock, so `tokio::time::pause` and `advance` move it
/// in tests.
///
/// The wall-clock time is read once, when the layer is built; after that, time advances with
/// `tokio::time::Instant`, which is monotonic. A server that runs for months can drift from
/// the wall clock by as much as the system clock is corrected meanwhile (usually well under
/// a second per day), which is immaterial for dates given to the second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    wall: SystemTime,
    monotonic: Instant,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Clock {
            wall: SystemTime::now(),
            monotonic: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.wall + self.monotonic.elapsed()
    }
}

/// Whole seconds from `now` until `later`, rounded up, at least 1.
pub(crate) fn seconds_until(now: SystemTime, later: SystemTime) -> u64 {
    let left = later.duration_since(now).unwrap_or(Duration::ZERO);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_until_rounds_up_and_is_never_zero() {
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(seconds_until(t, t), 1);
        assert_eq!(seconds_until(t, t + Duration::from_millis(1)), 1);
        assert_eq!(seconds_until(t, t + Duration::from_millis(1001)), 2);
        assert_eq!(seconds_until(t, t + Duration::from_secs(30)), 30);
        assert_eq!(seconds_until(t + Duration::from_secs(5), t), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_paused_tokio_time() {
        let clock = Clock::start();
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let elapsed = clock.now().duration_since(before).expect("forward");
        assert_eq!(elapsed, Duration::from_secs(3600));
    }
}
