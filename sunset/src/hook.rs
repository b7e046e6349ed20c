//! The hook called on every request the layer handles.

use http::Request;

use crate::phase::Phase;

/// Called by [`Sunset`](crate::Sunset) on every request it receives, before anything else and in
/// every [`Phase`] (including [`Phase::Announced`], before the deprecation date, and the 410
/// phases), so a service can count who still calls a deprecated API (per API key, per route,
/// …) and filter on the phase.
///
/// Implemented for `()` (does nothing) and for closures `Fn(&Request<B>, Phase)`:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::{Duration, SystemTime};
/// use http::Request;
/// use tower_sunset::{Phase, SunsetLayer};
///
/// let calls = Arc::new(AtomicUsize::new(0));
/// let counter = Arc::clone(&calls);
/// let layer = SunsetLayer::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_688_169_599))?
///     .on_deprecated_call(move |request: &Request<String>, phase: Phase| {
///         // e.g. metrics::counter!("deprecated_calls", "key" => api_key(request)).increment(1)
///         let _ = (request, phase);
///         counter.fetch_add(1, Ordering::Relaxed);
///     });
/// # let _ = layer;
/// # Ok::<(), tower_sunset::ConfigError>(())
/// ```
pub trait OnDeprecatedCall<B> {
    /// Observes one request, in the phase the API is in at that time.
    fn on_deprecated_call(&self, request: &Request<B>, phase: Phase);
}

impl<B> OnDeprecatedCall<B> for () {
    fn on_deprecated_call(&self, _request: &Request<B>, _phase: Phase) {}
}

impl<B, F> OnDeprecatedCall<B> for F
where
    F: Fn(&Request<B>, Phase),
{
    fn on_deprecated_call(&self, request: &Request<B>, phase: Phase) {
        self(request, phase);
    }
}
