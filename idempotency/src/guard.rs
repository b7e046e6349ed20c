//! [`ClaimGuard`]: a held claim that is given back if the request never finishes.

use std::time::Duration;

use crate::store::{FencingToken, Fingerprint, IdempotencyStore, Outcome, StoreKey};

/// A claim held while the handler runs. Completing or releasing it disarms it; dropping it
/// armed (the response future was dropped: client gone, timeout layer; or the handler
/// panicked) releases the claim in a spawned task, so a retry can run at once instead of
/// waiting out the lease.
pub(crate) struct ClaimGuard<St: IdempotencyStore> {
    store: St,
    key: StoreKey,
    token: FencingToken,
    armed: bool,
}

impl<St: IdempotencyStore> ClaimGuard<St> {
    pub(crate) fn new(store: St, key: StoreKey, token: FencingToken) -> Self {
        ClaimGuard {
            store,
            key,
            token,
            armed: true,
        }
    }

    pub(crate) async fn complete(
        mut self,
        fingerprint: Fingerprint,
        outcome: Outcome,
        ttl: Duration,
    ) {
        self.armed = false;
        let result = self
            .store
            .complete(self.key, self.token, fingerprint, outcome, ttl)
            .await;
        crate::log::fenced("complete", result);
    }

    pub(crate) async fn release(mut self) {
        self.armed = false;
        let result = self.store.release(self.key, self.token).await;
        crate::log::fenced("release", result);
    }
}

impl<St: IdempotencyStore> Drop for ClaimGuard<St> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let release = self.store.release(self.key, self.token);
        // Without a runtime (never the case under a tokio server) the lease still ends it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                crate::log::fenced("release", release.await);
            });
        }
    }
}
