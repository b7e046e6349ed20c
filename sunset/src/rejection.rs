//! [`SunsetRejection`], the typed reason of the layer's refusals.

/// Why the layer refused a request, put into the response extensions beside the
/// [`Phase`](crate::Phase): the answer is 410 `api-version-sunset` on HTTP and
/// `UNIMPLEMENTED` on gRPC, whatever responder renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SunsetRejection {
    /// The sunset has passed and the layer enforces it.
    Retired,
    /// A scheduled brownout is running; the rejection says when it ends, unless the API is
    /// retired by then.
    Brownout,
}
