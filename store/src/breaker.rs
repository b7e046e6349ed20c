//! [`CircuitBreaker`]: fail fast while a store is down, probe with one call, close on success.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ConfigError, ConfigErrorKind, StoreError, StoreErrorKind};

/// Consecutive outage errors (see [`StoreErrorKind::is_outage`]) that open the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// How long the breaker stays open after it first opens.
pub const DEFAULT_BACK_OFF: Duration = Duration::from_millis(100);
/// The longest it stays open: each failed probe doubles the back-off up to this. Kept short,
/// so that a store that is back is used again within half a second.
pub const DEFAULT_MAX_BACK_OFF: Duration = Duration::from_millis(500);

/// The longest back-off accepted: an hour (longer would leave a recovered store unused).
pub const MAX_BACK_OFF: Duration = Duration::from_secs(3600);

/// Where a [`CircuitBreaker`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go to the store.
    Closed,
    /// Calls fail at once with [`StoreErrorKind::CircuitOpen`], until the back-off ends.
    Open,
    /// One call (the probe) is trying the store; the others fail at once until it ends.
    HalfOpen,
}

impl BreakerState {
    /// A stable `snake_case` name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A state change, as given to the [`on_transition`](CircuitBreaker::on_transition) hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// When it moved to [`BreakerState::Open`]: how long until the next probe.
    pub back_off: Option<Duration>,
}

type Hook = Arc<dyn Fn(&Transition) + Send + Sync>;

/// A circuit breaker on store calls.
///
/// - **Closed**: calls go through. After [`failure_threshold`](Self::failure_threshold)
///   consecutive outages (unreachable or timed out; a bad reply does not count, since the
///   store answered) it opens.
/// - **Open**: calls fail at once with [`StoreErrorKind::CircuitOpen`], carrying the time
///   left as [`StoreError::retry_after`], so a layer answers its fail-open or fail-closed
///   policy without waiting out a timeout.
/// - **Half-open**: when the back-off ends, one call probes the store while the others keep
///   failing fast. Success closes the breaker; failure opens it again for twice the back-off
///   (up to the longest). A probe whose caller goes away lets the next call probe.
///
/// Time is tokio's, so tests can pause it. Clones share one state (a clone is one reference
/// count): build one breaker per store (or per connection shared by several stores), set it
/// up, then clone it. Each setting builds a fresh breaker, so set them before cloning.
///
/// ```
/// use std::time::Duration;
/// use guardrail_store::{BreakerState, CircuitBreaker, StoreError, StoreErrorKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreaker::new().failure_threshold(2)?;
/// let down = || async { Err::<(), _>(StoreError::new(StoreErrorKind::Unavailable, "down")) };
/// breaker.run(down()).await.unwrap_err();
/// breaker.run(down()).await.unwrap_err();
/// assert_eq!(breaker.state(), BreakerState::Open);
///
/// // The store is not called now: the answer is immediate.
/// let error = breaker.run(async { Ok(()) }).await.unwrap_err();
/// assert_eq!(error.kind(), StoreErrorKind::CircuitOpen);
/// assert!(error.retry_after() <= Some(Duration::from_millis(100)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    /// Closed with no failures counted: the common case, read without the lock.
    healthy: AtomicBool,
    state: Mutex<State>,
}

#[derive(Clone)]
struct Settings {
    threshold: u32,
    back_off: Duration,
    max_back_off: Duration,
    hook: Option<Hook>,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, back_off: Duration },
    HalfOpen { back_off: Duration },
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreaker {
    /// A closed breaker with the defaults: opens after [`DEFAULT_FAILURE_THRESHOLD`]
    /// consecutive outages, for [`DEFAULT_BACK_OFF`] doubling up to [`DEFAULT_MAX_BACK_OFF`].
    pub fn new() -> Self {
        Self::with_settings(Settings {
            threshold: DEFAULT_FAILURE_THRESHOLD,
            back_off: DEFAULT_BACK_OFF,
            max_back_off: DEFAULT_MAX_BACK_OFF,
            hook: None,
        })
    }

    fn with_settings(settings: Settings) -> Self {
        CircuitBreaker {
            shared: Arc::new(Shared {
                settings,
                healthy: AtomicBool::new(true),
                state: Mutex::new(State::Closed { failures: 0 }),
            }),
        }
    }

    /// A fresh, closed breaker with the settings `change` makes.
    fn configured(&self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.shared.settings.clone();
        change(&mut settings);
        Self::with_settings(settings)
    }

    /// Opens after `failures` consecutive outages.
    ///
    /// # Errors
    ///
    /// Refuses zero.
    pub fn failure_threshold(self, failures: u32) -> Result<Self, ConfigError> {
        if failures == 0 {
            return Err(ConfigError::new(ConfigErrorKind::FailureThreshold));
        }
        Ok(self.configured(|s| s.threshold = failures))
    }

    /// Stays open for `first` after opening, doubling after each failed probe up to
    /// `longest`. The longest back-off bounds how long a store that is back stays unused.
    ///
    /// # Errors
    ///
    /// Refuses a zero `first`, a `longest` shorter than `first`, or one over
    /// [`MAX_BACK_OFF`].
    pub fn back_off(self, first: Duration, longest: Duration) -> Result<Self, ConfigError> {
        if first.is_zero() || longest < first || longest > MAX_BACK_OFF {
            return Err(ConfigError::new(ConfigErrorKind::BackOff));
        }
        Ok(self.configured(|s| {
            s.back_off = first;
            s.max_back_off = longest;
        }))
    }

    /// Calls `hook` on every state change (to count them, or to log them your own way).
    /// The hook runs under the breaker's lock: keep it short, and never call the breaker
    /// from it.
    #[must_use]
    pub fn on_transition<F>(self, hook: F) -> Self
    where
        F: Fn(&Transition) + Send + Sync + 'static,
    {
        self.configured(|s| s.hook = Some(Arc::new(hook)))
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Runs one store call through the breaker: fails at once with
    /// [`StoreErrorKind::CircuitOpen`] while open, else awaits `call` and records how it went.
    ///
    /// Put the call's own deadline inside `call`: a call that never ends never counts.
    ///
    /// # Errors
    ///
    /// The call's error, or [`StoreErrorKind::CircuitOpen`].
    pub async fn run<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = self.admit()?;
        let result = call.await;
        attempt.finish(match &result {
            Ok(_) => None,
            Err(error) => Some(error.kind()),
        });
        result
    }

    fn admit(&self) -> Result<Attempt<'_>, StoreError> {
        if self.shared.healthy.load(Ordering::Acquire) {
            return Ok(Attempt {
                breaker: self,
                probe: false,
                done: false,
            });
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Attempt {
                breaker: self,
                probe: false,
                done: false,
            }),
            State::Open { until, back_off } => {
                let now = Instant::now();
                if now < until {
                    return Err(open_error(until - now));
                }
                self.enter(&mut state, State::HalfOpen { back_off });
                Ok(Attempt {
                    breaker: self,
                    probe: true,
                    done: false,
                })
            }
            State::HalfOpen { back_off } => Err(open_error(back_off)),
        }
    }

    /// Records an attempt's end: `None` for success (or a probe abandoned), else its kind.
    fn record(&self, probe: bool, failure: Option<StoreErrorKind>, abandoned: bool) {
        let outage = failure.is_some_and(StoreErrorKind::is_outage);
        if !probe && !outage && self.shared.healthy.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        match (*state, probe) {
            (State::HalfOpen { back_off }, true) if abandoned => {
                // Nothing was learned: the next call probes at once. Not a state change
                // worth reporting (it would read as the breaker opening again).
                *state = State::Open {
                    until: Instant::now(),
                    back_off,
                };
            }
            (State::HalfOpen { back_off }, true) if outage => {
                let back_off = back_off
                    .saturating_mul(2)
                    .min(self.shared.settings.max_back_off);
                self.open(&mut state, back_off);
            }
            (State::HalfOpen { .. }, true) => {
                self.enter(&mut state, State::Closed { failures: 0 });
            }
            (State::Closed { failures }, false) if outage => {
                let failures = failures + 1;
                if failures >= self.shared.settings.threshold {
                    self.open(&mut state, self.shared.settings.back_off);
                } else {
                    *state = State::Closed { failures };
                    self.shared.healthy.store(false, Ordering::Release);
                }
            }
            (State::Closed { .. }, false) => {
                *state = State::Closed { failures: 0 };
                self.shared.healthy.store(true, Ordering::Release);
            }
            // A call admitted before the breaker opened, ending after: the probe decides.
            _ => {}
        }
    }

    fn open(&self, state: &mut State, back_off: Duration) {
        let until = Instant::now() + back_off.min(MAX_BACK_OFF);
        self.enter(state, State::Open { until, back_off });
    }

    fn enter(&self, state: &mut State, next: State) {
        let from = kind(*state);
        *state = next;
        self.shared.healthy.store(
            matches!(next, State::Closed { failures: 0 }),
            Ordering::Release,
        );
        let to = kind(next);
        if from == to {
            return;
        }
        let transition = Transition {
            from,
            to,
            back_off: match next {
                State::Open { back_off, .. } => Some(back_off),
                _ => None,
            },
        };
        log(&transition);
        if let Some(hook) = &self.shared.settings.hook {
            hook(&transition);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few plain values, valid after any panic: keep using it.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("failure_threshold", &self.shared.settings.threshold)
            .field("back_off", &self.shared.settings.back_off)
            .field("max_back_off", &self.shared.settings.max_back_off)
            .field(
                "on_transition",
                &self.shared.settings.hook.as_ref().map(|_| "<fn>"),
            )
            .finish()
    }
}

/// One admitted call; dropped unfinished (its caller went away), it counts as abandoned.
struct Attempt<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    done: bool,
}

impl Attempt<'_> {
    fn finish(&mut self, failure: Option<StoreErrorKind>) {
        self.done = true;
        self.breaker.record(self.probe, failure, false);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.record(true, None, true);
        }
    }
}

fn open_error(wait: Duration) -> StoreError {
    StoreError::new(
        StoreErrorKind::CircuitOpen,
        "the store's circuit breaker is open after repeated failures",
    )
    .with_retry_after(wait)
}

fn kind(state: State) -> BreakerState {
    match state {
        State::Closed { .. } => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

fn log(transition: &Transition) {
    #[cfg(feature = "tracing")]
    match transition.to {
        BreakerState::Open => tracing::warn!(
            from = transition.from.as_str(),
            back_off_ms = transition.back_off.map(|d| d.as_millis()),
            "store circuit breaker opened: calls fail fast"
        ),
        BreakerState::HalfOpen => tracing::info!("store circuit breaker probing the store"),
        BreakerState::Closed => tracing::info!("store circuit breaker closed: the store answers"),
    }
    #[cfg(not(feature = "tracing"))]
    let _ = transition;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    fn outage() -> Result<(), StoreError> {
        Err(StoreError::new(StoreErrorKind::Timeout, "slow"))
    }

    type Seen = Arc<StdMutex<Vec<(BreakerState, BreakerState)>>>;

    fn recording() -> (CircuitBreaker, Seen) {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let breaker = CircuitBreaker::new()
            .failure_threshold(3)
            .expect("valid")
            .back_off(Duration::from_millis(100), Duration::from_millis(400))
            .expect("valid")
            .on_transition(move |t| log.lock().expect("not poisoned").push((t.from, t.to)));
        (breaker, seen)
    }

    async fn fail(breaker: &CircuitBreaker, times: usize) {
        for _ in 0..times {
            let _ = breaker.run(async { outage() }).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_fails_fast() {
        let (breaker, seen) = recording();
        fail(&breaker, 2).await;
        assert_eq!(breaker.state(), BreakerState::Closed);
        fail(&breaker, 1).await;
        assert_eq!(breaker.state(), BreakerState::Open);
        let mut called = false;
        let error = breaker
            .run(async {
                called = true;
                Ok(())
            })
            .await
            .expect_err("open");
        assert!(!called, "an open breaker does not call the store");
        assert_eq!(error.kind(), StoreErrorKind::CircuitOpen);
        assert_eq!(error.retry_after(), Some(Duration::from_millis(100)));
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            [(BreakerState::Closed, BreakerState::Open)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let (breaker, _) = recording();
        fail(&breaker, 2).await;
        breaker.run(async { Ok(()) }).await.expect("closed");
        fail(&breaker, 2).await;
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_replies_never_open_it() {
        let (breaker, _) = recording();
        for _ in 0..10 {
            let _ = breaker
                .run(async { Err::<(), _>(StoreError::new(StoreErrorKind::BadReply, "garbage")) })
                .await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_the_back_off_closes_it_on_success() {
        let (breaker, seen) = recording();
        fail(&breaker, 3).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let probe = {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                breaker
                    .run(async {
                        let _ = wait.await;
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let other = breaker.run(async { Ok(()) }).await.expect_err("probing");
        assert_eq!(other.kind(), StoreErrorKind::CircuitOpen);
        release.send(()).expect("probe waits");
        probe.await.expect("joins").expect("the probe succeeds");
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.run(async { Ok(()) }).await.expect("closed again");
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            [
                (BreakerState::Closed, BreakerState::Open),
                (BreakerState::Open, BreakerState::HalfOpen),
                (BreakerState::HalfOpen, BreakerState::Closed),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_back_off_up_to_the_longest() {
        let (breaker, _) = recording();
        fail(&breaker, 3).await;
        let mut waits = Vec::new();
        for _ in 0..4 {
            let wait = breaker
                .run(async { Ok(()) })
                .await
                .expect_err("open")
                .retry_after()
                .expect("a hint");
            waits.push(wait);
            tokio::time::sleep(wait).await;
            fail(&breaker, 1).await; // the probe fails
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 400]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_call_probe() {
        let (breaker, _) = recording();
        fail(&breaker, 3).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let probe = breaker.run(std::future::pending::<Result<(), StoreError>>());
        let timed_out = tokio::time::timeout(Duration::from_millis(10), probe).await;
        assert!(
            timed_out.is_err(),
            "the probe never ends; its caller gives up"
        );
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker
            .run(async { Ok(()) })
            .await
            .expect("the next call probes");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn bad_settings_are_refused() {
        let zero = CircuitBreaker::new()
            .failure_threshold(0)
            .expect_err("zero");
        assert_eq!(zero.kind(), &ConfigErrorKind::FailureThreshold);
        let backwards = CircuitBreaker::new()
            .back_off(Duration::from_secs(2), Duration::from_secs(1))
            .expect_err("longest shorter than first");
        assert_eq!(backwards.kind(), &ConfigErrorKind::BackOff);
        let none = CircuitBreaker::new()
            .back_off(Duration::ZERO, Duration::from_secs(1))
            .expect_err("zero");
        assert_eq!(none.kind(), &ConfigErrorKind::BackOff);
    }

    #[test]
    fn breakers_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CircuitBreaker>();
    }
}
