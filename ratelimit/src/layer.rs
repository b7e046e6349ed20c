//! [`RateLimitLayer`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, StatusCode};
use tower_layer::Layer;
use tower_problem_details::{Problem, ProblemCatalog, ProblemKind, Responder};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::headers::{RateLimitHeader, policy_header};
use crate::key::KeyExtractor;
use crate::metrics::{CounterSnapshot, Counters, DecisionEvent, Hook, HookDebug};
use crate::policy::Policy;
use crate::service::RateLimit;
use crate::store::RateLimitStore;

type CostFn = dyn Fn(&Parts) -> u64 + Send + Sync;

/// Limits requests per key with one or more policies, answering `429` with `Retry-After` and a
/// `quota-exceeded` problem, and stamping `RateLimit-Policy` and `RateLimit` on every response.
///
/// The store's buckets and the counters are built once, in [`new`](Self::new); every clone of
/// the layer, and every service it makes, shares them. (axum clones a layer for each route: a
/// limiter that kept state per clone would limit nothing.)
pub struct RateLimitLayer<St: RateLimitStore> {
    pub(crate) config: Config,
    pub(crate) state: Arc<State<St>>,
}

/// What the layer shares between all its clones. The store's prepared state is why the layer
/// names the store trait in its definition.
pub(crate) struct State<St: RateLimitStore> {
    pub(crate) store: St,
    pub(crate) prepared: St::Prepared,
    pub(crate) counters: Counters,
}

/// Settings, cloned into each service.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) policies: Arc<[Policy]>,
    pub(crate) key: KeyExtractor,
    pub(crate) cost: Option<Arc<CostFn>>,
    pub(crate) policy_header: HeaderValue,
    pub(crate) ratelimit_header: RateLimitHeader,
    pub(crate) fail_closed: bool,
    pub(crate) shadow: bool,
    pub(crate) legacy_headers: bool,
    pub(crate) decisions_extension: bool,
    pub(crate) catalog: ProblemCatalog,
    pub(crate) missing_key: Problem,
    pub(crate) responder: Responder,
    pub(crate) hook: Option<Hook>,
}

impl Config {
    pub(crate) fn report(&self, counters: &Counters, event: &DecisionEvent<'_>) {
        counters.count(event);
        if let Some(hook) = &self.hook {
            hook(event);
        }
    }
}

impl<St: RateLimitStore> RateLimitLayer<St> {
    /// Limits by `key` with `policies`, decided together on `store`.
    ///
    /// Defaults: each request costs 1; a store failure lets the request through (fail open,
    /// counted and given to the hook); no shadow mode; no legacy headers; a request without a
    /// key gets 401 `unauthorized` when the key is a header, 400 otherwise.
    ///
    /// # Errors
    ///
    /// Fails without policies or with two policies of the same name.
    pub fn new(
        store: St,
        policies: impl IntoIterator<Item = Policy>,
        key: KeyExtractor,
    ) -> Result<Self, ConfigError> {
        let policies: Arc<[Policy]> = policies.into_iter().collect();
        if policies.is_empty() {
            return Err(ConfigError::new(ConfigErrorKind::NoPolicies));
        }
        let mut names = HashSet::new();
        if let Some(duplicate) = policies.iter().find(|p| !names.insert(p.name())) {
            return Err(ConfigError::new(ConfigErrorKind::DuplicatePolicy(
                duplicate.name().to_owned(),
            )));
        }
        let catalog = ProblemCatalog::default();
        let missing_key = default_missing_key(&catalog, &key);
        let prepared = store.prepare(&policies);
        Ok(RateLimitLayer {
            config: Config {
                policy_header: policy_header(&policies),
                ratelimit_header: RateLimitHeader::new(&policies),
                policies,
                key,
                cost: None,
                fail_closed: false,
                shadow: false,
                legacy_headers: false,
                decisions_extension: false,
                catalog,
                missing_key,
                responder: Responder::default(),
                hook: None,
            },
            state: Arc::new(State {
                store,
                prepared,
                counters: Counters::default(),
            }),
        })
    }

    /// Weighs requests: `cost(parts)` units each (for example by the number of items in a
    /// batch). All or nothing: a request is admitted only if every policy has the whole cost.
    #[must_use]
    pub fn cost<F>(mut self, cost: F) -> Self
    where
        F: Fn(&Parts) -> u64 + Send + Sync + 'static,
    {
        self.config.cost = Some(Arc::new(cost));
        self
    }

    /// When the store fails, answers `503` `rate-limit-store-unavailable` (with
    /// `Retry-After: 1`) instead of letting the request through.
    #[must_use]
    pub fn fail_closed(mut self) -> Self {
        self.config.fail_closed = true;
        self
    }

    /// Decides and stamps the headers, but never refuses: for rolling out a new limit and
    /// watching what it would do through the counters and the hook.
    #[must_use]
    pub fn shadow(mut self) -> Self {
        self.config.shadow = true;
        self
    }

    /// Also writes `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
    /// (delta seconds) for the policy with the least remaining, for older clients.
    #[must_use]
    pub fn legacy_headers(mut self) -> Self {
        self.config.legacy_headers = true;
        self
    }

    /// Also leaves the [`Decisions`](crate::Decisions) in the extensions of every response
    /// the layer decided, admitted or refused, for an outer layer to read (an access log, a
    /// metrics layer). Off by default: a response without extensions pays three allocations
    /// for them (`http`'s extension map, its table and the boxed value), a fifth of the
    /// layer's own work per request. The [`on_decision`](Self::on_decision) hook sees the same
    /// decisions without any of that.
    ///
    /// ```
    /// use tower_ratelimit::{KeyExtractor, MemoryStore, Policy, Quota, RateLimitLayer};
    ///
    /// let quota = Quota::per_second(10).expect("a valid quota");
    /// let layer = RateLimitLayer::new(
    ///     MemoryStore::new(),
    ///     [Policy::gcra("per-key", quota).expect("a valid name")],
    ///     KeyExtractor::global(),
    /// )
    /// .expect("one policy")
    /// // An outer layer then reads `response.extensions().get::<tower_ratelimit::Decisions>()`.
    /// .decisions_in_extensions();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn decisions_in_extensions(mut self) -> Self {
        self.config.decisions_extension = true;
        self
    }

    /// The catalog whose base URI the problems' `type` uses.
    #[must_use]
    pub fn catalog(mut self, catalog: ProblemCatalog) -> Self {
        self.config.missing_key = default_missing_key(&catalog, &self.config.key);
        self.config.catalog = catalog;
        self
    }

    /// The responder that renders the layer's rejections (by default `application/problem+json`,
    /// and Trailers-Only gRPC answers with `tower-problem-details`' `grpc` feature). The typed
    /// [`RateLimitRejection`](crate::RateLimitRejection) is put into the response extensions
    /// whatever the responder does.
    #[must_use]
    pub fn responder(mut self, responder: Responder) -> Self {
        self.config.responder = responder;
        self
    }

    /// The problem a request without a key gets.
    #[must_use]
    pub fn missing_key_problem(mut self, problem: Problem) -> Self {
        self.config.missing_key = problem;
        self
    }

    /// Calls `hook` with every outcome, for metrics or logs. It runs on the request path: keep
    /// it quick.
    #[must_use]
    pub fn on_decision<F>(mut self, hook: F) -> Self
    where
        F: Fn(&DecisionEvent<'_>) + Send + Sync + 'static,
    {
        self.config.hook = Some(Arc::new(hook));
        self
    }

    /// The policies, in decision order.
    pub fn policies(&self) -> &[Policy] {
        &self.config.policies
    }

    /// The counters so far, over every clone of this layer.
    pub fn counters(&self) -> CounterSnapshot {
        self.state.counters.snapshot()
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.state.store
    }
}

fn default_missing_key(catalog: &ProblemCatalog, key: &KeyExtractor) -> Problem {
    let detail = format!("No rate-limit key was found in {}.", key.describe());
    if key.is_credential() {
        catalog
            .problem(ProblemKind::Unauthorized)
            .with_detail(detail)
    } else {
        Problem::new(StatusCode::BAD_REQUEST).with_detail(detail)
    }
}

impl<S, St: RateLimitStore> Layer<S> for RateLimitLayer<St> {
    type Service = RateLimit<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            Arc::new(self.config.clone()),
            Arc::clone(&self.state),
        )
    }
}

impl<St: RateLimitStore> Clone for RateLimitLayer<St> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            config: self.config.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

impl<St: RateLimitStore + fmt::Debug> fmt::Debug for RateLimitLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("store", &self.state.store)
            .field("config", &self.config)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("policies", &self.policies)
            .field("key", &self.key)
            .field("cost", &self.cost.as_ref().map(|_| "<fn>"))
            .field("fail_closed", &self.fail_closed)
            .field("shadow", &self.shadow)
            .field("legacy_headers", &self.legacy_headers)
            .field("catalog", &self.catalog)
            .field("responder", &self.responder)
            .field("hook", &HookDebug(&self.hook))
            .finish_non_exhaustive()
    }
}
