//! [`Finishing`]: a store call that runs to its end even if its caller goes away.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{StoreError, StoreErrorKind};

type Call<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// A store call that runs to its end even if the future awaiting it is dropped first.
///
/// Awaited, the call is polled in place: no task, no thread switch, no wake-up through the
/// scheduler. Dropped before it finished (a client hung up, a request timed out), it hands
/// the rest of the call to a task on the current tokio runtime, so a circuit breaker still
/// learns how the call ended and a statement is never abandoned half way through on a pooled
/// connection. Dropped outside a runtime, the rest of the call is dropped with it.
///
/// A panic inside the call is caught and answered as [`StoreErrorKind::BadReply`], as a
/// spawned task's `JoinError` would be, so a layer that fails open on store errors also does
/// on a store's bug.
///
/// The call must bound itself: once its caller is gone nothing else ends it, so give it its
/// deadline inside (as `RedisBackend::eval` and the SQL stores do), not around the
/// `Finishing`.
///
/// # Panics
///
/// When polled again after it completed, as any future may.
///
/// ```
/// use guardrail_store::{Finishing, StoreError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (done, finished) = tokio::sync::oneshot::channel();
/// let call = Finishing::new(async move {
///     tokio::task::yield_now().await;
///     let _ = done.send(());
///     Ok::<_, StoreError>(())
/// });
/// // The caller gives up at once; the call still ends, in a task of its own.
/// drop(call);
/// finished.await.expect("the call ran to its end");
/// # }
/// ```
pub struct Finishing<T: Send + 'static> {
    call: Option<Call<T>>,
}

impl<T: Send + 'static> Finishing<T> {
    /// Wraps `call`. Nothing runs until the wrapper is polled or dropped.
    pub fn new<F>(call: F) -> Self
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        Finishing {
            call: Some(Box::pin(call)),
        }
    }
}

impl<T: Send + 'static> Future for Finishing<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let call = self
            .call
            .as_mut()
            .expect("`Finishing` polled after it completed");
        let polled = catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)));
        let output = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => output,
            Err(_) => Err(StoreError::new(
                StoreErrorKind::BadReply,
                "a store call panicked",
            )),
        };
        self.call = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for Finishing<T> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(call);
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Finishing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finishing")
            .field("finished", &self.call.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn awaited_it_answers_with_the_call_s_output() {
        let answer = Finishing::new(async { Ok::<_, StoreError>(42) }).await;
        assert_eq!(answer.expect("no error"), 42);
    }

    #[tokio::test]
    async fn awaited_it_runs_in_place_not_in_a_task() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let during = Finishing::new(async move {
            tokio::task::yield_now().await;
            Ok::<_, StoreError>(tasks())
        })
        .await
        .expect("no error");
        assert_eq!(during, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_half_way_it_finishes_in_a_task() {
        let steps = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&steps);
        let mut call = Box::pin(Finishing::new(async move {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            seen.fetch_add(1, Ordering::SeqCst);
            Ok::<_, StoreError>(())
        }));
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        assert_eq!(steps.load(Ordering::SeqCst), 1);
        drop(call);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panic_in_the_call_is_a_bad_reply() {
        let error = Finishing::new(async {
            if true {
                panic!("a store bug");
            }
            Ok::<(), StoreError>(())
        })
        .await
        .expect_err("the call panicked");
        assert_eq!(error.kind(), StoreErrorKind::BadReply);
    }

    #[test]
    fn dropped_outside_a_runtime_it_drops_the_call() {
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let counted = Counted(Arc::clone(&dropped));
        let call = Finishing::new(async move {
            let _held = counted;
            Ok::<_, StoreError>(())
        });
        drop(call);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
