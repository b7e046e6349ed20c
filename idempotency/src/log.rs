//! What the layer reports through `tracing` (feature `tracing`); nothing without it.

use crate::store::Fenced;
use guardrail_store::StoreError;

/// A store operation failed.
pub(crate) fn store_error(operation: &str, error: &StoreError) {
    // An open breaker logs once when it opens, not per request.
    #[cfg(feature = "tracing")]
    if error.kind() != guardrail_store::StoreErrorKind::CircuitOpen {
        tracing::warn!(operation, %error, "idempotency store failed");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (operation, error);
}

/// The result of a fenced operation: a stale token means this request's lease ran out and
/// its result was not kept.
pub(crate) fn fenced(operation: &str, result: Result<Fenced, StoreError>) {
    match result {
        Ok(Fenced::Applied) => {}
        Ok(Fenced::Stale) => {
            #[cfg(feature = "tracing")]
            tracing::warn!(
                operation,
                "idempotency claim lost its lease before it finished"
            );
        }
        Err(error) => store_error(operation, &error),
    }
}
