//! [`IdempotencyLayer`]: the configuration, built once and shared by every clone.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use tower_layer::Layer;
use tower_problem_details::{ProblemCatalog, Responder};

use crate::key::DEFAULT_MAX_KEY_LEN;
use crate::policy::OutcomePolicy;
use crate::replay::{DEFAULT_REPLAYED_HEADERS, replayable};
use crate::scope::Scope;
use crate::service::Idempotency;
use crate::store::IdempotencyStore;

/// The default lease: how long a claim holds its key before a retry may take it over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// The default record lifetime: how long a result is replayed.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest lease or record lifetime the layer accepts (longer ones are cut to it): one
/// year, so that no store overflows its clock or rejects the expiry.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The default limit on request bodies (larger ones get 413).
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1024 * 1024;
/// The default limit on kept responses (larger ones are completed but not replayable).
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// Applies `Idempotency-Key` semantics to the requests of a service. See the crate
/// documentation for the behaviour and every status it answers.
///
/// The configuration lives in an `Arc` built by [`IdempotencyLayer::new`]; every service the
/// layer makes (axum makes one per route) shares it and the store.
#[derive(Clone, Debug)]
pub struct IdempotencyLayer<St> {
    config: Arc<Config<St>>,
}

#[derive(Clone, Debug)]
pub(crate) struct Config<St> {
    pub(crate) store: St,
    pub(crate) scope: Scope,
    pub(crate) methods: Vec<Method>,
    pub(crate) required: bool,
    pub(crate) lease: Duration,
    pub(crate) ttl: Duration,
    pub(crate) max_key_len: usize,
    pub(crate) max_request_body: usize,
    pub(crate) max_response_body: usize,
    pub(crate) policy: OutcomePolicy,
    pub(crate) replayed_headers: Vec<HeaderName>,
    pub(crate) catalog: ProblemCatalog,
    pub(crate) responder: Responder,
    pub(crate) wait_in_flight: Option<Duration>,
}

impl<St: IdempotencyStore> IdempotencyLayer<St> {
    /// A layer keeping claims and results in `store`, with keys kept apart per `scope`
    /// ([`Scope::unscoped`] to opt out explicitly).
    ///
    /// Defaults: POST and PATCH; the key optional (requests without one pass through); a
    /// 60 s lease and a 24 h record lifetime; keys up to 255 characters; bodies up to 1 MiB
    /// both ways; [`OutcomePolicy::retry_friendly`]; no waiting for an in-flight original.
    pub fn new(store: St, scope: Scope) -> Self {
        IdempotencyLayer {
            config: Arc::new(Config {
                store,
                scope,
                methods: vec![Method::POST, Method::PATCH],
                required: false,
                lease: DEFAULT_LEASE,
                ttl: DEFAULT_TTL,
                max_key_len: DEFAULT_MAX_KEY_LEN,
                max_request_body: DEFAULT_MAX_REQUEST_BODY,
                max_response_body: DEFAULT_MAX_RESPONSE_BODY,
                policy: OutcomePolicy::default(),
                replayed_headers: DEFAULT_REPLAYED_HEADERS.to_vec(),
                catalog: ProblemCatalog::default(),
                responder: Responder::default(),
                wait_in_flight: None,
            }),
        }
    }

    fn config(&mut self) -> &mut Config<St> {
        Arc::make_mut(&mut self.config)
    }

    /// Requires the key: requests without one get 400 `idempotency-key-missing`.
    #[must_use]
    pub fn require_key(mut self) -> Self {
        self.config().required = true;
        self
    }

    /// The methods the layer applies to (others pass through untouched).
    #[must_use]
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config().methods = methods.into_iter().collect();
        self
    }

    /// How long a claim holds its key without news from its holder (from one second to
    /// [`MAX_DURATION`]). The layer renews the lease every third of it while the handler runs,
    /// so it bounds how long a crashed process blocks a key, not how long a handler may take.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config().lease = lease.clamp(Duration::from_secs(1), MAX_DURATION);
        self
    }

    /// How long a result is replayed (from one second to [`MAX_DURATION`]).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config().ttl = ttl.clamp(Duration::from_secs(1), MAX_DURATION);
        self
    }

    /// The longest key accepted, in characters (at least 1).
    #[must_use]
    pub fn max_key_len(mut self, max: usize) -> Self {
        self.config().max_key_len = max.max(1);
        self
    }

    /// The largest request body accepted (413 `payload-too-large` beyond).
    #[must_use]
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.config().max_request_body = bytes;
        self
    }

    /// The largest response kept; a larger or streaming one completes the key without a
    /// replayable result (retries get 409 `idempotency-result-unavailable`).
    #[must_use]
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.config().max_response_body = bytes;
        self
    }

    /// Which results are kept and which release the key.
    #[must_use]
    pub fn outcome_policy(mut self, policy: OutcomePolicy) -> Self {
        self.config().policy = policy;
        self
    }

    /// Stripe v1 semantics: every result is kept, 5xx included.
    #[must_use]
    pub fn stripe_v1(self) -> Self {
        self.outcome_policy(OutcomePolicy::store_everything())
    }

    /// Also replays `name`. Credentials and state (`Set-Cookie`, `Authorization`,
    /// `WWW-Authenticate`, …) and per-response headers (`Date`, `Content-Length`) are never
    /// replayed, even when named here.
    #[must_use]
    pub fn replay_header(mut self, name: HeaderName) -> Self {
        if replayable(&name) && !self.config.replayed_headers.contains(&name) {
            self.config().replayed_headers.push(name);
        }
        self
    }

    /// The responder that renders the layer's rejections (by default `application/problem+json`,
    /// and Trailers-Only gRPC answers with `tower-problem-details`' `grpc` feature). The
    /// [`IdempotencyRejection`](crate::IdempotencyRejection) and
    /// [`IdempotencyOutcome::Rejected`](crate::IdempotencyOutcome::Rejected) are put into the
    /// response extensions whatever it does.
    #[must_use]
    pub fn responder(mut self, responder: Responder) -> Self {
        self.config().responder = responder;
        self
    }

    /// The problem catalog for `type` URIs.
    #[must_use]
    pub fn catalog(mut self, catalog: ProblemCatalog) -> Self {
        self.config().catalog = catalog;
        self
    }

    /// Waits up to `wait` for an in-flight original to finish and replays its result, instead
    /// of answering 409 at once. Off by default: it holds a connection while waiting.
    #[must_use]
    pub fn wait_for_in_flight(mut self, wait: Duration) -> Self {
        self.config().wait_in_flight = Some(wait);
        self
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.config.store
    }
}

impl<S, St: IdempotencyStore> Layer<S> for IdempotencyLayer<St> {
    type Service = Idempotency<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(inner, Arc::clone(&self.config))
    }
}
