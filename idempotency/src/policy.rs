//! Which results are kept for replay, and which give the key back for a retry.

use http::StatusCode;

/// What happens to a claim once the handler answered.
///
/// The default keeps 2xx, 3xx and 4xx results, except the statuses that depend on time or
/// credentials and heal by themselves (401, 403, 407, 408, 425, 429, and 499, a call
/// cancelled on the way, which is gRPC's `CANCELLED`), and releases the claim on 5xx so that
/// a retry runs again. An inner service error, a panic and a dropped future (client
/// gone, timeout layer) always release it.
///
/// [`OutcomePolicy::store_everything`] is Stripe's original rule: every status is kept,
/// including 5xx, so a request never runs twice even when its first run failed half way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomePolicy {
    store_server_errors: bool,
    store_transient_client_errors: bool,
}

impl OutcomePolicy {
    /// The default: keep 2xx, 3xx and definitive 4xx; release on 5xx and transient 4xx.
    pub const fn retry_friendly() -> Self {
        OutcomePolicy {
            store_server_errors: false,
            store_transient_client_errors: false,
        }
    }

    /// Stripe v1: keep every result, 5xx included (strict at-most-once).
    pub const fn store_everything() -> Self {
        OutcomePolicy {
            store_server_errors: true,
            store_transient_client_errors: true,
        }
    }

    /// Whether a response with `status` is kept (`true`) or its claim released (`false`).
    pub fn keeps(&self, status: StatusCode) -> bool {
        if status.is_server_error() {
            return self.store_server_errors;
        }
        let transient = matches!(status.as_u16(), 401 | 403 | 407 | 408 | 425 | 429 | 499);
        !transient || self.store_transient_client_errors
    }
}

impl Default for OutcomePolicy {
    fn default() -> Self {
        Self::retry_friendly()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_definitive_results_only() {
        let policy = OutcomePolicy::default();
        for kept in [200, 201, 204, 301, 400, 404, 409, 422] {
            assert!(
                policy.keeps(StatusCode::from_u16(kept).expect("status")),
                "{kept}"
            );
        }
        for released in [401, 403, 407, 408, 425, 429, 499, 500, 502, 503, 504] {
            assert!(
                !policy.keeps(StatusCode::from_u16(released).expect("status")),
                "{released}"
            );
        }
        let stripe = OutcomePolicy::store_everything();
        assert!(stripe.keeps(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(stripe.keeps(StatusCode::TOO_MANY_REQUESTS));
    }
}
