//! [`ClaimGuard`]: a held claim, kept alive while the handler runs and settled however the
//! request ends.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::{Either, select};
use guardrail_store::Finishing;

use crate::store::{Completion, FencingToken, Fingerprint, IdempotencyStore, StoreKey};

/// What dropping the guard does to the claim.
enum OnDrop {
    /// Nothing: it was settled.
    Nothing,
    /// The handler did not finish (future dropped, panic): give the key back for a retry.
    Release,
    /// The handler finished, but its response was not recorded (the future was dropped
    /// while reading the body): record it as not replayable, so it never runs twice.
    CompleteUnreplayable {
        fingerprint: Fingerprint,
        ttl: Duration,
    },
}

/// A claim held while the handler runs.
///
/// Every store write runs in a spawned task that the request awaits, so dropping the request
/// half way through a write never leaves the write undone.
pub(crate) struct ClaimGuard<St: IdempotencyStore> {
    store: St,
    key: StoreKey,
    token: FencingToken,
    on_drop: OnDrop,
}

impl<St: IdempotencyStore> ClaimGuard<St> {
    pub(crate) fn new(store: St, key: StoreKey, token: FencingToken) -> Self {
        ClaimGuard {
            store,
            key,
            token,
            on_drop: OnDrop::Release,
        }
    }

    /// Runs `call` while renewing the lease every third of it, so a slow handler keeps its key
    /// for as long as it runs; only a crashed process lets a lease run out.
    pub(crate) async fn hold_while<F: Future>(&self, call: F, lease: Duration) -> F::Output {
        let every = lease / 3;
        let mut call = pin!(call);
        // A handler that answers on its first poll needs no timer: arming one reads the clock
        // and takes the timer wheel's lock, twice (armed, then cancelled), per request.
        if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
            return output;
        }
        loop {
            let tick = pin!(tokio::time::sleep(every));
            match select(call.as_mut(), tick).await {
                Either::Left((output, _)) => return output,
                Either::Right(((), _)) => {
                    let renewed = self.store.renew(self.key, self.token, lease).await;
                    crate::log::fenced("renew", renewed);
                }
            }
        }
    }

    /// The handler answered: from now on, a drop records "completed, not replayable".
    /// Renews the lease every third of `lease` until the task is aborted: for a response that
    /// streams after the handler returned. `None` without a runtime.
    pub(crate) fn renewal(&self, lease: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let (store, key, token) = (self.store.clone(), self.key, self.token);
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(runtime.spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                crate::log::fenced("renew", store.renew(key, token, lease).await);
            }
        }))
    }

    pub(crate) fn handler_finished(&mut self, fingerprint: Fingerprint, ttl: Duration) {
        self.on_drop = OnDrop::CompleteUnreplayable { fingerprint, ttl };
    }

    pub(crate) async fn complete(
        mut self,
        fingerprint: Fingerprint,
        outcome: Completion,
        ttl: Duration,
    ) {
        self.on_drop = OnDrop::Nothing;
        let (store, key, token) = (self.store.clone(), self.key, self.token);
        settle(async move {
            // One retry: a lost completion would let a retry run the handler again.
            let mut result = store
                .complete(key, token, fingerprint, outcome.clone(), ttl)
                .await;
            if result.is_err() {
                result = store.complete(key, token, fingerprint, outcome, ttl).await;
            }
            crate::log::fenced("complete", result);
        })
        .await;
    }

    pub(crate) async fn release(mut self) {
        self.on_drop = OnDrop::Nothing;
        let (store, key, token) = (self.store.clone(), self.key, self.token);
        settle(async move {
            crate::log::fenced("release", store.release(key, token).await);
        })
        .await;
    }
}

/// Runs a store write to the end even if the request is dropped meanwhile: awaited in place
/// (no task switch on the common path), and handed to a spawned task if the request is
/// dropped half way through it. The write logs its own outcome, so only a panic in it is
/// left to log here.
async fn settle(write: impl Future<Output = ()> + Send + 'static) {
    let written = Finishing::new(async move {
        write.await;
        Ok(())
    });
    if let Err(error) = written.await {
        crate::log::store_error("settle", &error);
    }
}

type Write = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl<St: IdempotencyStore> Drop for ClaimGuard<St> {
    fn drop(&mut self) {
        let write = match std::mem::replace(&mut self.on_drop, OnDrop::Nothing) {
            OnDrop::Nothing => return,
            OnDrop::Release => {
                let release = self.store.release(self.key, self.token);
                Box::pin(async move { crate::log::fenced("release", release.await) }) as Write
            }
            OnDrop::CompleteUnreplayable { fingerprint, ttl } => {
                let complete = self.store.complete(
                    self.key,
                    self.token,
                    fingerprint,
                    Completion::NotReplayable,
                    ttl,
                );
                Box::pin(async move { crate::log::fenced("complete", complete.await) })
            }
        };
        // Without a runtime (never the case under a tokio server) the lease still ends it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(write);
        }
    }
}
