//! Where a deprecated API is in its life, and the clock that tells.

use std::time::SystemTime;

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

/// The wall clock, shifted by however far tokio's clock has moved apart from real time since
/// the layer was built, so `tokio::time::pause` and `advance` move it in tests.
///
/// Unpaused, tokio's clock and the real one run together and this is `SystemTime::now()` at
/// every request (so clock corrections and suspends are followed). Paused, real time no
/// longer counts: it is the wall-clock time at build plus the time advanced since.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    tokio: Instant,
    real: std::time::Instant,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Clock {
            tokio: Instant::now(),
            real: std::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        let tokio_elapsed = self.tokio.elapsed();
        let real_elapsed = self.real.elapsed();
        let wall = SystemTime::now();
        if tokio_elapsed >= real_elapsed {
            wall + (tokio_elapsed - real_elapsed)
        } else {
            wall - (real_elapsed - tokio_elapsed)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_paused_tokio_time() {
        let clock = Clock::start();
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let elapsed = clock.now().duration_since(before).expect("forward");
        // Real time that passed meanwhile does not count; allow for the clock reads.
        let error = elapsed.abs_diff(Duration::from_secs(3600));
        assert!(error < Duration::from_millis(50), "{elapsed:?}");
    }

    #[test]
    fn unpaused_it_is_the_wall_clock() {
        let clock = Clock::start();
        let wall = SystemTime::now();
        let ours = clock.now();
        let gap = ours.duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(gap < Duration::from_millis(50), "{gap:?}");
    }
}
