//! The orders service: every guardrail of the workspace composed into one public API.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = orders::Config::with_database("sqlite://orders.db");
//! let app = orders::App::build(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! let grace = std::time::Duration::from_secs(config.shutdown_grace_seconds);
//! orders::serve::serve(listener, app.router(), &config.limits, std::future::pending(), grace)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Layers, outermost first, and why
//!
//! | layer | why here |
//! |---|---|
//! | [`serve`](serve::serve) (the connection) | bounds what a connection holds before any request exists: the connection cap, the head and idle timeouts, HTTP/2's stream and header limits |
//! | [`ProblemLayer`] | gives every request its id first, so every later log line and problem carries it; turns bare errors (axum's 405, a body over the limit) and panics into problems, so nothing below can answer anything but problem+json |
//! | [`observe`](observe::observe) | sees the final status of every request, the edge's 408/503 included, for the access log and metrics |
//! | [`edge`](edge::edge) | the request deadline (503 `deadline-exceeded`, cancelling the work); the body inactivity timeout (408); reads away a refused body so the client sees the answer |
//! | [`SunsetLayer`] (`/v1` only) | every `/v1` response, the 401 and 429 included, says `Deprecation`/`Sunset`; after the sunset, 410 before authentication and the rate limit, so a retired API spends no quota |
//! | [`authenticate`] | finds the tenant; everything below keys on it, and an unauthenticated request costs nothing more |
//! | [`RateLimitLayer`] per tenant | one budget per tenant across `/v1` and `/v2`; sheds load before any database or idempotency work, so a storm is stopped at its cheapest point |
//! | [`IdempotencyLayer`] (POSTs) | inside the rate limit, so a refused request never claims a key; just outside the handler, so the stored response is exactly what the handler said |
//! | [`CursorLayer`] (`GET` lists) | validates `limit` and `cursor` into a [`PageRequest`] before the handler |
//!
//!
//! The internal gRPC API ([`grpc`], served by [`App::grpc_router`] on `--grpc-listen`) runs
//! through the same layers, from the connection to the rate limit, and every one of them
//! answers a gRPC request in gRPC. There is no sunset layer (`orders.v1` is current); the
//! idempotency layer sits on `CreateOrder` alone; page tokens are message fields, so the
//! handler checks them with the same [`Paginator`]. Health checking sits outside
//! authentication and the rate limit, as `/health` and `/ready` do; reflection inside them.
//! Each router states its listener's [`Protocol`] in the request extensions, which
//! [`Protocol::detect`] in every layer (the library guardrails' and the service's own) reads
//! first: REST stays HTTP whatever `content-type` a client sends, and the gRPC listener
//! refuses anything but gRPC (415).
//!
//! [`PageRequest`]: tower_cursor::PageRequest

pub mod auth;
mod config;
pub mod db;
pub mod edge;
pub mod grpc;
pub mod handlers;
pub mod json;
pub mod observe;
pub mod order;
pub mod problems;
pub mod representation;
pub mod serve;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use guardrail_store::CircuitBreaker;
use guardrail_store::redis::{ClusterConnection, RedisBackend};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, StatusCode};
use serde_json::json;
use tower::ServiceBuilder;
use tower_cursor::{
    CursorCodec, CursorLayer, CursorSecret, KeyId, KeyRing, Paginator, QueryFingerprint,
};
use tower_idempotency::{IdempotencyLayer, IdempotencyStore, Scope};
use tower_problem_details::{ProblemLayer, Protocol};
use tower_ratelimit::{KeyExtractor, Policy, Quota, RateLimitKey, RateLimitLayer, RateLimitStore};
use tower_sunset::{Link, SunsetLayer, UriRef};

use self::auth::{ApiKeys, AuthState, Tenant, authenticate};
pub use self::config::{Config, Limits};
use self::db::{Database, OrderPosition, PoolOptions};
use self::edge::EdgeState;
use self::problems::{NOT_READY, Problems};
use self::representation::ApiVersion;

/// The contract, served at `GET /openapi.yaml`.
pub const OPENAPI: &str = include_str!("../openapi.yaml");

/// How often expired idempotency rows are deleted from the database (they are vacant as soon
/// as they expire; the sweep only gives their space back).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How long `/ready` waits for each dependency.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The guardrail stores.
#[derive(Clone)]
pub enum Stores {
    /// Without Redis (the embedded default): idempotency records in the orders database
    /// (they survive restarts, and on PostgreSQL every instance shares them), rate limits in
    /// this process's memory.
    Database {
        /// Idempotency records.
        idempotency: tower_idempotency::SqlStore,
        /// Rate-limit state.
        ratelimit: tower_ratelimit::MemoryStore,
        /// Deletes expired idempotency rows every minute, for as long as a clone lives.
        sweeper: Arc<tower_idempotency::Sweeper>,
    },
    /// In Redis, shared by every instance, on one connection.
    Redis {
        /// Idempotency records.
        idempotency: tower_idempotency::RedisStore,
        /// Rate-limit state.
        ratelimit: tower_ratelimit::RedisStore,
    },
    /// In a Redis Cluster, shared by every instance.
    RedisCluster {
        /// Idempotency records.
        idempotency: tower_idempotency::RedisStore<ClusterConnection>,
        /// Rate-limit state.
        ratelimit: tower_ratelimit::RedisStore<ClusterConnection>,
    },
    /// DEMO ONLY: no idempotency, no rate limit.
    Off,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stores::Database { .. } => "Stores::Database",
            Stores::Redis { .. } => "Stores::Redis",
            Stores::RedisCluster { .. } => "Stores::RedisCluster",
            Stores::Off => "Stores::Off",
        })
    }
}

/// Everything the service is built from: its configuration and its connections.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The configuration.
    pub config: Arc<Config>,
    /// The order store.
    pub db: Database,
    /// The problem builder.
    pub problems: Problems,
    /// The guardrail stores.
    pub stores: Stores,
    redis: Option<Redis>,
}

/// The Redis back end both stores and `/ready` share.
#[derive(Clone, Debug)]
enum Redis {
    Single(RedisBackend),
    Cluster(RedisBackend<ClusterConnection>),
}

impl AppState {
    /// Connects to the database (and Redis, when configured): the service's only I/O before
    /// it serves.
    ///
    /// # Errors
    ///
    /// When a dependency cannot be reached or its URL is invalid.
    pub async fn connect(config: &Config) -> Result<Self, BuildError> {
        let limits = &config.limits;
        let pool = PoolOptions {
            max_connections: config.database_max_connections,
            acquire_timeout: Duration::from_millis(config.database_acquire_timeout_ms),
            statement_timeout: limits.request_timeout(),
        };
        let db = Database::connect(&config.database, pool)
            .await
            .map_err(|e| fail("cannot open the database")(&e))?;
        let redis = match (&config.redis, config.redis_cluster.as_slice()) {
            (Some(url), _) => Some(Redis::Single(redis_backend(url).await?)),
            (None, []) => None,
            (None, seeds) => Some(Redis::Cluster(redis_cluster_backend(seeds).await?)),
        };
        let prefix = &config.redis_prefix;
        let stores = match (&redis, config.demo_disable_guardrails) {
            (_, true) => Stores::Off,
            (None, false) => {
                let idempotency = db
                    .idempotency_store()
                    .await
                    .map_err(|e| fail("cannot create the idempotency table")(&e))?;
                Stores::Database {
                    sweeper: Arc::new(idempotency.spawn_sweeper(SWEEP_EVERY)),
                    idempotency,
                    ratelimit: tower_ratelimit::MemoryStore::new(),
                }
            }
            (Some(Redis::Single(backend)), false) => {
                let (idempotency, ratelimit) = redis_stores(backend, prefix).await?;
                Stores::Redis {
                    idempotency,
                    ratelimit,
                }
            }
            (Some(Redis::Cluster(backend)), false) => {
                let (idempotency, ratelimit) = redis_stores(backend, prefix).await?;
                Stores::RedisCluster {
                    idempotency,
                    ratelimit,
                }
            }
        };
        Ok(AppState {
            config: Arc::new(config.clone()),
            db,
            problems: Problems::default(),
            stores,
            redis,
        })
    }
}

/// A failure to start.
#[derive(Debug)]
pub struct BuildError(String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

fn fail(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> BuildError + '_ {
    move |error| BuildError(format!("{what}: {error}"))
}

/// The built service.
#[derive(Clone, Debug)]
pub struct App {
    services: Services,
    state: AppState,
    // Keeps `grpc.health.v1` in step with `/ready` for as long as a clone lives, from the
    // first call of `grpc_router` (no probing for a service nobody serves).
    health: Arc<OnceLock<HealthProbe>>,
}

impl App {
    /// Connects ([`AppState::connect`]) and composes the service ([`services`]).
    ///
    /// # Errors
    ///
    /// When a dependency cannot be reached or the configuration is inconsistent (for example
    /// a sunset before the deprecation, or a cursor secret shorter than 32 bytes).
    pub async fn build(config: &Config) -> Result<Self, BuildError> {
        let state = AppState::connect(config).await?;
        let services = services(&state)?;
        Ok(App {
            services,
            state,
            health: Arc::default(),
        })
    }

    /// The REST service, ready for [`serve::serve`].
    pub fn router(&self) -> Router {
        self.services.rest.clone()
    }

    /// The gRPC service (`orders.v1.OrderService`, health and reflection), ready for
    /// [`serve::serve_grpc`] on its own listener. The first call starts the task that keeps
    /// `grpc.health.v1` in step with `/ready` (every [`HEALTH_EVERY`]).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the health task is spawned on it).
    pub fn grpc_router(&self) -> Router {
        self.health
            .get_or_init(|| HealthProbe::spawn(self.state.clone(), self.services.health.clone()));
        self.services.grpc.clone()
    }

    /// Says `NOT_SERVING` on `grpc.health.v1` from now on (shutdown has begun), so balancers
    /// stop sending calls while the ones in flight finish.
    pub async fn announce_shutdown(&self) {
        if let Some(probe) = self.health.get() {
            probe.0.abort();
        }
        for service in ["", grpc::SERVICE_NAME] {
            self.services
                .health
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
    }

    /// The order store.
    pub fn database(&self) -> &Database {
        &self.state.db
    }
}

/// The REST service as a router, with no I/O: every layer in the order the crate docs give.
///
/// # Errors
///
/// When the configuration is inconsistent (a sunset before the deprecation, a cursor secret
/// shorter than 32 bytes, a zero rate).
pub fn app(state: &AppState) -> Result<Router, BuildError> {
    Ok(services(state)?.rest)
}

/// Both protocols' services, sharing one set of guardrail layers (so one rate-limit budget
/// per tenant, whichever protocol spends it).
#[derive(Clone, Debug)]
pub struct Services {
    /// The REST API and the operational routes.
    pub rest: Router,
    /// `orders.v1.OrderService`, `grpc.health.v1.Health` and server reflection.
    pub grpc: Router,
    /// The health service's state, which [`App`] keeps in step with `/ready`.
    pub health: tonic_health::server::HealthReporter,
}

/// Composes [`Services`], with no I/O.
///
/// # Errors
///
/// As [`app`].
pub fn services(state: &AppState) -> Result<Services, BuildError> {
    observe::prometheus();
    let config = &state.config;
    let guardrails = Guardrails::new(config, &state.problems)?;
    if guardrails.keys.is_demo() {
        tracing::warn!(
            "DEMO MODE: no --api-keys given, so any well-formed API key is accepted and is its \
             own tenant; give --api-keys in production"
        );
    }
    let edge = EdgeState::new(state.problems.clone(), &config.limits);
    let (api, grpc_api) = match state.stores.clone() {
        Stores::Off => {
            tracing::warn!(
                "DEMO ONLY: guardrails are off (no idempotency, no rate limit); \
                 retries will create duplicate orders"
            );
            guardrails.api::<tower_idempotency::MemoryStore, tower_ratelimit::MemoryStore>(
                state, &edge, None,
            )
        }
        Stores::Database {
            idempotency,
            ratelimit,
            ..
        } => guardrails.api(state, &edge, Some((idempotency, ratelimit))),
        Stores::Redis {
            idempotency,
            ratelimit,
        } => guardrails.api(state, &edge, Some((idempotency, ratelimit))),
        Stores::RedisCluster {
            idempotency,
            ratelimit,
        } => guardrails.api(state, &edge, Some((idempotency, ratelimit))),
    };
    let public = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi))
        .route("/problems/{slug}", get(problems::page))
        .method_not_allowed_fallback(problems::method_not_allowed)
        .fallback(problems::no_such_resource)
        .layer(middleware::from_fn_with_state(edge.clone(), edge::edge))
        .with_state(state.clone());
    let problem_layer = ProblemLayer::new()
        .catalog(state.problems.catalog().clone())
        .responder(state.problems.responder().clone());
    // Each listener states its protocol (`Protocol::detect`, which every guardrail layer
    // asks): REST is HTTP whatever `content-type` a client sends.
    // One `Router::layer` per stack (see `Guardrails::api`), outermost first.
    let rest = api.merge(public).layer(
        ServiceBuilder::new()
            .layer(Extension(Protocol::Http))
            .layer(problem_layer.clone())
            .layer(middleware::from_fn(observe::observe))
            .layer(DefaultBodyLimit::max(config.limits.max_body_bytes)),
    );
    // Health checking outside authentication and the rate limit, as `/health` and `/ready`.
    let (health, health_routes) = grpc::health_routes();
    let grpc = grpc_api
        .merge(health_routes.layer(middleware::from_fn_with_state(edge, edge::edge)))
        .fallback({
            let problems = state.problems.clone();
            move || std::future::ready(grpc::unimplemented(&problems))
        })
        .layer(
            ServiceBuilder::new()
                .layer(Extension(Protocol::Grpc))
                .layer(problem_layer)
                .layer(middleware::from_fn(observe::observe))
                .layer(middleware::from_fn_with_state(
                    state.problems.clone(),
                    grpc::only_grpc,
                )),
        );
    Ok(Services { rest, grpc, health })
}

/// The configuration every API route shares.
struct Guardrails {
    keys: ApiKeys,
    paginator: Paginator,
    quota: Quota,
    v1_sunset: SunsetLayer,
    max_body: usize,
    lease: Duration,
    reflection: Router,
}

impl Guardrails {
    fn new(config: &Config, problems: &Problems) -> Result<Self, BuildError> {
        let secret = match &config.cursor_secret {
            Some(secret) => {
                CursorSecret::new(secret.as_bytes()).map_err(|e| fail("--cursor-secret")(&e))?
            }
            None => {
                tracing::warn!(
                    "no --cursor-secret: cursors are signed with a random secret and die with \
                     this process; give every instance the same secret"
                );
                CursorSecret::generate().map_err(|e| fail("cursor secret")(&e))?
            }
        };
        let paginator = Paginator::new(CursorCodec::new(KeyRing::new(KeyId::new(1), &secret)))
            .page_size(20, 100)
            .map_err(|e| fail("page size")(&e))?
            .catalog(problems.catalog().clone())
            .responder(problems.responder().clone())
            // A cursor is bound to the listing and to the tenant it was issued to.
            .query_fingerprint(|parts| {
                QueryFingerprint::builder()
                    .path(parts.uri.path())
                    .param(
                        "tenant",
                        Tenant::of_request(parts).map_or("", Tenant::as_str),
                    )
                    .finish()
            });
        let quota = Quota::per_second(config.rate_limit_per_second)
            .and_then(|q| q.with_burst(config.rate_limit_burst))
            .map_err(|e| fail("--rate-limit-per-second / --rate-limit-burst")(&e))?;
        let v1_sunset = SunsetLayer::new(config.v1_deprecated_at)
            .and_then(|layer| layer.sunset_at(config.v1_sunset_at))
            .map_err(|e| fail("--v1-deprecated-at / --v1-sunset-at")(&e))?
            .successor_version(Link::new(UriRef::from_static("/v2/orders")))
            .deprecation_link(Link::new(UriRef::from_static("/openapi.yaml")))
            .gone_after_sunset(true)
            .catalog(problems.catalog().clone())
            .responder(problems.responder().clone());
        Ok(Guardrails {
            keys: ApiKeys::from_list(&config.api_keys),
            paginator,
            quota,
            v1_sunset,
            max_body: config.limits.max_body_bytes,
            lease: Duration::from_millis(config.idempotency_lease_ms),
            reflection: grpc::reflection_routes().map_err(|e| fail("gRPC reflection")(&e))?,
        })
    }

    /// The authenticated API, both REST versions and gRPC, with the guardrails when `stores`
    /// is given: one rate-limit layer for all three, so one budget per tenant.
    fn api<I, R>(
        &self,
        state: &AppState,
        edge: &EdgeState,
        stores: Option<(I, R)>,
    ) -> (Router, Router)
    where
        I: IdempotencyStore + Clone + 'static,
        R: RateLimitStore + Send + Sync + 'static,
        RateLimitLayer<R>: Clone,
    {
        let (idempotency, grpc_idempotency, limit) = match stores {
            None => (None, None, None),
            Some((idempotency, ratelimit)) => (
                Some(self.idempotency(state, idempotency.clone(), Protocol::Http)),
                Some(self.idempotency(state, idempotency, Protocol::Grpc)),
                Some(self.rate_limit(state, ratelimit)),
            ),
        };
        let auth = middleware::from_fn_with_state(
            AuthState {
                keys: self.keys.clone(),
                problems: state.problems.clone(),
            },
            authenticate,
        );
        // One `Router::layer` per stack, its layers composed by `ServiceBuilder`: each
        // `Router::layer` boxes every route again, and axum clones the boxed chain at each
        // level for every request, so a layer of its own cost a GET by id eleven allocations.
        // Outermost first: the sunset (v1 only: the 410 after the sunset costs no quota, and
        // the 401, 429, 408 and 503 carry its headers too), the edge, authentication, and one
        // rate-limit layer, so one budget per tenant across both versions and gRPC; then the
        // API version the handlers read.
        let stack = |version: Option<ApiVersion>| {
            // Either branch answers axum's `Response`, as `option_layer` needs. An admitted
            // request's body is the handler's own `Body`, unwrapped: boxing the wrapper cost
            // every admitted GET an allocation.
            let limit = limit.clone().map(|limit| {
                ServiceBuilder::new()
                    .map_response(
                        |response: Response<tower_problem_details::ResponseBody<Body>>| {
                            response.map(|body| body.try_into_inner().unwrap_or_else(Body::new))
                        },
                    )
                    .layer(limit)
            });
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(edge.clone(), edge::edge))
                .layer(auth.clone())
                .option_layer(limit)
                .option_layer(version.map(Extension))
        };
        let v1_sunset = self
            .v1_sunset
            .clone()
            .on_deprecated_call(|_: &Request<Body>, phase| {
                observe::count_deprecated_call("v1", phase);
            });
        let v1 = self
            .routes(state, ApiVersion::V1, idempotency.as_ref())
            .layer(
                ServiceBuilder::new()
                    .layer(v1_sunset)
                    .layer(stack(Some(ApiVersion::V1))),
            );
        let v2 = self
            .routes(state, ApiVersion::V2, idempotency.as_ref())
            .layer(stack(Some(ApiVersion::V2)));
        let grpc = self.grpc_routes(state, grpc_idempotency).layer(stack(None));
        (v1.merge(v2), grpc)
    }

    /// `orders.v1.OrderService`, with idempotency on `CreateOrder`.
    fn grpc_routes<I: IdempotencyStore + 'static>(
        &self,
        state: &AppState,
        idempotency: Option<IdempotencyLayer<I>>,
    ) -> Router {
        let dedupe = idempotency.is_some();
        let server = grpc::OrderService::new(
            state.db.clone(),
            state.problems.clone(),
            self.paginator.clone(),
            dedupe,
        )
        .server(grpc::MAX_MESSAGE_BYTES.min(self.max_body));
        // Reflection behind authentication and the rate limit too: stock tools send the
        // same `authorization` metadata to it (grpcurl's `-H`).
        let methods = Router::new()
            .route_service(grpc::METHODS_PATH, server.clone())
            .merge(self.reflection.clone());
        match idempotency {
            Some(layer) => {
                methods.route_service(grpc::CREATE_ORDER_PATH, tower::Layer::layer(&layer, server))
            }
            None => methods,
        }
    }

    /// One version's routes, with idempotency on the POST handlers and cursors on the lists.
    fn routes<I: IdempotencyStore + 'static>(
        &self,
        state: &AppState,
        version: ApiVersion,
        idempotency: Option<&IdempotencyLayer<I>>,
    ) -> Router {
        let prefix = version.prefix();
        let list =
            handlers::list_orders.layer(CursorLayer::<OrderPosition>::new(self.paginator.clone()));
        // On the POST handlers only, so another method on these paths still gets its 405.
        let (create, cancel) = match idempotency {
            Some(layer) => (
                post(handlers::create_order.layer(layer.clone())),
                post(handlers::cancel_order.layer(layer.clone())),
            ),
            None => (post(handlers::create_order), post(handlers::cancel_order)),
        };
        Router::new()
            .route(&format!("{prefix}/orders"), create.get(list))
            .route(&format!("{prefix}/orders/{{id}}"), get(handlers::get_order))
            .route(&format!("{prefix}/orders/{{id}}/cancel"), cancel)
            .method_not_allowed_fallback(problems::method_not_allowed)
            // Shared: axum clones the state for every request's `State`, and a clone of
            // `AppState` is a dozen reference counts (its stores, pools and catalog), which
            // a profile of GET by id put at a sixteenth of what the guardrails add to it.
            .with_state(Arc::new(state.clone()))
    }

    /// The idempotency layer of one protocol. Its records are scoped to the tenant and the
    /// protocol: a stored REST answer cannot answer a gRPC call (the orders table dedupes
    /// creates across protocols). REST requires the key; gRPC takes it from the metadata or
    /// the handler from `request_id`.
    fn idempotency<I: IdempotencyStore>(
        &self,
        state: &AppState,
        store: I,
        protocol: Protocol,
    ) -> IdempotencyLayer<I> {
        let layer = match protocol {
            Protocol::Grpc => IdempotencyLayer::new(
                store,
                Scope::from_fn(|parts| {
                    Tenant::of_request(parts).map(|t| format!("{}/grpc", t.as_str()))
                }),
            ),
            _ => IdempotencyLayer::new(
                store,
                Scope::from_fn(|parts| Tenant::of_request(parts).map(|t| t.as_str().to_owned())),
            )
            .require_key(),
        };
        layer
            .lease(self.lease)
            .max_request_body(self.max_body)
            .catalog(state.problems.catalog().clone())
            .responder(state.problems.responder().clone())
    }

    fn rate_limit<R>(&self, state: &AppState, store: R) -> RateLimitLayer<R>
    where
        R: RateLimitStore + Send + Sync + 'static,
    {
        let policy = Policy::gcra("per-key", self.quota).expect("a valid policy name");
        RateLimitLayer::new(
            store,
            [policy],
            KeyExtractor::from_fn(|parts| {
                Tenant::of_request(parts).map(|t| RateLimitKey::new(t.to_shared()))
            }),
        )
        .expect("one valid policy")
        .catalog(state.problems.catalog().clone())
        .responder(state.problems.responder().clone())
        .on_decision(observe::count_decision)
        // The access log's `ratelimit` field reads them.
        .decisions_in_extensions()
    }
}

/// One Redis back end (one reconnecting connection, one deadline, one circuit breaker):
/// both stores and `/ready` share it, so an outage is seen once and fails fast everywhere.
async fn redis_backend(url: &str) -> Result<RedisBackend, BuildError> {
    let backend = RedisBackend::connect(url)
        .await
        .map_err(|e| fail("cannot reach Redis")(&e))?;
    Ok(backend.breaker(counted_breaker()))
}

/// The same on a Redis Cluster: one cluster connection (slots routed to their primaries).
async fn redis_cluster_backend(
    seeds: &[String],
) -> Result<RedisBackend<ClusterConnection>, BuildError> {
    let backend = RedisBackend::connect_cluster(seeds)
        .await
        .map_err(|e| fail("cannot reach the Redis Cluster")(&e))?;
    Ok(backend.breaker(counted_breaker()))
}

fn counted_breaker() -> CircuitBreaker {
    CircuitBreaker::new().on_transition(observe::count_breaker_transition)
}

/// Both Redis stores on `backend`, their scripts loaded.
async fn redis_stores<C>(
    backend: &RedisBackend<C>,
    prefix: &str,
) -> Result<
    (
        tower_idempotency::RedisStore<C>,
        tower_ratelimit::RedisStore<C>,
    ),
    BuildError,
>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let idempotency =
        tower_idempotency::RedisStore::new(backend.clone(), &format!("{prefix}:idem"))
            .map_err(|e| fail("--redis-prefix")(&e))?;
    idempotency
        .preload()
        .await
        .map_err(|e| fail("cannot reach Redis for idempotency")(&e))?;
    let ratelimit = tower_ratelimit::RedisStore::new(backend.clone(), &format!("{prefix}:rl"))
        .map_err(|e| fail("--redis-prefix")(&e))?;
    ratelimit
        .preload()
        .await
        .map_err(|e| fail("cannot reach Redis for rate limits")(&e))?;
    Ok((idempotency, ratelimit))
}

/// `GET /health`: the process is up.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: the database and Redis or the Redis Cluster (when configured) answer, each within
/// [`READY_TIMEOUT`].
async fn ready(State(app): State<AppState>) -> Response {
    let failures = unready(&app).await;
    if failures.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let detail = format!("Not reachable: {}.", failures.join(", "));
        app.problems
            .reject(app.problems.unavailable(NOT_READY, detail), Protocol::Http)
    }
}

/// How often `grpc.health.v1` is brought in step with the dependencies.
pub const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// Sets `grpc.health.v1`'s status of the whole server (`""`) and of `orders.v1.OrderService`
/// from the probes `/ready` runs, every [`HEALTH_EVERY`] (each probe bounded by
/// [`READY_TIMEOUT`]); stops when dropped.
#[derive(Debug)]
struct HealthProbe(tokio::task::JoinHandle<()>);

impl HealthProbe {
    fn spawn(app: AppState, health: tonic_health::server::HealthReporter) -> Self {
        HealthProbe(tokio::spawn(async move {
            let mut every = tokio::time::interval(HEALTH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let status = if unready(&app).await.is_empty() {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for service in ["", grpc::SERVICE_NAME] {
                    health.set_service_status(service, status).await;
                }
            }
        }))
    }
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The dependencies that do not answer within [`READY_TIMEOUT`] each.
async fn unready(app: &AppState) -> Vec<&'static str> {
    let mut failures = Vec::new();
    if !answers("database", app.db.ping()).await {
        failures.push("database");
    }
    let ping = redis::cmd("PING");
    let redis_answers = match &app.redis {
        None => true,
        Some(Redis::Single(redis)) => {
            let mut redis = redis.connection().clone();
            answers("redis", ping.query_async::<String>(&mut redis)).await
        }
        Some(Redis::Cluster(redis)) => {
            let mut redis = redis.connection().clone();
            answers("redis", ping.query_async::<String>(&mut redis)).await
        }
    };
    if !redis_answers {
        failures.push("redis");
    }
    failures
}

/// Whether a readiness probe succeeds within [`READY_TIMEOUT`]; logs why not.
async fn answers<T, E: std::fmt::Display>(
    dependency: &'static str,
    probe: impl Future<Output = Result<T, E>>,
) -> bool {
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, dependency, "readiness: failed");
            false
        }
        Err(_) => {
            tracing::warn!(dependency, timeout = ?READY_TIMEOUT, "readiness: no answer in time");
            false
        }
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics() -> Response {
    let handle = observe::prometheus();
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /openapi.yaml`: the contract.
async fn openapi() -> Response {
    let mut response = (StatusCode::OK, OPENAPI).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    response
}
