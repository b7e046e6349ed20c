//! The orders service: every guardrail of the workspace composed into one public API.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = orders::Config::with_database("sqlite://orders.db");
//! let app = orders::App::build(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! axum::serve(listener, app.router()).await?;
//! # Ok(()) }
//! ```
//!
//! # Layers, outermost first, and why
//!
//! | layer | why here |
//! |---|---|
//! | [`ProblemLayer`] | gives every request its id first, so every later log line and problem carries it; turns bare errors (axum's 405, a body over the limit) and panics into problems, so nothing below can answer anything but problem+json |
//! | [`observe`](observe::observe) | sees the final status of every request, rejections included, for the access log and metrics |
//! | [`authenticate`] | finds the tenant; everything below keys on it, and an unauthenticated request costs nothing more |
//! | [`RateLimitLayer`] per tenant | sheds load before any database or idempotency work, so a storm is stopped at its cheapest point |
//! | [`SunsetLayer`] (`/v1` only) | every `/v1` response, rejections below included, says `Deprecation`/`Sunset`; after the sunset, 410 without touching the store |
//! | [`IdempotencyLayer`] (POSTs) | inside the rate limit, so a refused request never claims a key; just outside the handler, so the stored response is exactly what the handler said |
//! | [`CursorLayer`] (`GET` lists) | validates `limit` and `cursor` into a [`PageRequest`] before the handler |
//!
//! [`PageRequest`]: tower_cursor::PageRequest

pub mod auth;
mod config;
pub mod db;
pub mod handlers;
pub mod observe;
pub mod order;
pub mod problems;
pub mod representation;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, StatusCode};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::json;
use tower_cursor::{
    CursorCodec, CursorLayer, CursorSecret, KeyId, KeyRing, Paginator, QueryFingerprint,
};
use tower_idempotency::{IdempotencyLayer, IdempotencyStore, Scope};
use tower_problem_details::{ProblemCatalog, ProblemKind, ProblemLayer};
use tower_ratelimit::{KeyExtractor, Policy, Quota, RateLimitKey, RateLimitLayer, RateLimitStore};
use tower_sunset::{Link, SunsetLayer, UriRef};

use self::auth::{ApiKeys, AuthState, Tenant, authenticate};
pub use self::config::Config;
use self::db::{Database, OrderPosition};
use self::problems::{NOT_READY, Problems};
use self::representation::ApiVersion;

/// The largest request body accepted: 1 MiB. Larger ones are answered 413 `payload-too-large`.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// The contract, served at `GET /openapi.yaml`.
pub const OPENAPI: &str = include_str!("../openapi.yaml");

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The order store.
    pub db: Database,
    /// The problem builder.
    pub problems: Problems,
    redis: Option<ConnectionManager>,
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
    router: Router,
    state: AppState,
}

impl App {
    /// Connects to the database (and Redis, when configured) and composes the service.
    ///
    /// # Errors
    ///
    /// When a dependency cannot be reached or the configuration is inconsistent (for example
    /// a sunset before the deprecation, or a cursor secret shorter than 32 bytes).
    pub async fn build(config: &Config) -> Result<Self, BuildError> {
        observe::prometheus();
        let db = Database::connect(&config.database, config.database_max_connections)
            .await
            .map_err(|e| fail("cannot open the database")(&e))?;
        let problems = Problems::new(ProblemCatalog::default());
        let redis = match &config.redis {
            None => None,
            Some(url) => Some(redis_connection(url).await?),
        };
        let state = AppState {
            db,
            problems,
            redis,
        };
        let guardrails = Guardrails::new(config, &state.problems)?;
        let api = match (&config.redis, config.demo_disable_guardrails) {
            (_, true) => {
                tracing::warn!(
                    "DEMO ONLY: guardrails are off (no idempotency, no rate limit); \
                     retries will create duplicate orders"
                );
                guardrails.api(
                    &state,
                    None::<Stores<tower_idempotency::MemoryStore, tower_ratelimit::MemoryStore>>,
                )
            }
            (None, false) => guardrails.api(
                &state,
                Some(Stores {
                    idempotency: tower_idempotency::MemoryStore::new(),
                    ratelimit: tower_ratelimit::MemoryStore::new(),
                }),
            ),
            (Some(url), false) => {
                let idempotency = tower_idempotency::RedisStore::connect(
                    url,
                    &format!("{}:idem", config.redis_prefix),
                )
                .await
                .map_err(|e| fail("cannot reach Redis for idempotency")(&e))?;
                let ratelimit = tower_ratelimit::RedisStore::connect(
                    url,
                    &format!("{}:rl", config.redis_prefix),
                )
                .await
                .map_err(|e| fail("cannot reach Redis for rate limits")(&e))?;
                guardrails.api(
                    &state,
                    Some(Stores {
                        idempotency,
                        ratelimit,
                    }),
                )
            }
        };
        let public = Router::new()
            .route("/health", get(health))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .route("/openapi.yaml", get(openapi))
            .with_state(state.clone());
        let fallback_problems = state.problems.clone();
        let router = api
            .merge(public)
            .fallback(move || {
                let problems = fallback_problems.clone();
                async move {
                    problems
                        .kind(ProblemKind::NotFound)
                        .with_detail("No such resource.")
                        .into_response::<Body>()
                }
            })
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
            .layer(middleware::from_fn(observe::observe))
            .layer(ProblemLayer::new().catalog(state.problems.catalog().clone()));
        Ok(App { router, state })
    }

    /// The service, ready for `axum::serve`.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The order store.
    pub fn database(&self) -> &Database {
        &self.state.db
    }
}

/// The two guardrail stores.
struct Stores<I, R> {
    idempotency: I,
    ratelimit: R,
}

/// The configuration every API route shares.
struct Guardrails {
    keys: ApiKeys,
    paginator: Paginator,
    quota: Quota,
    v1_sunset: SunsetLayer,
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
            .catalog(problems.catalog().clone());
        Ok(Guardrails {
            keys: ApiKeys::from_list(&config.api_keys),
            paginator,
            quota,
            v1_sunset,
        })
    }

    /// The authenticated API, both versions, with the guardrails when `stores` is given.
    fn api<I, R>(&self, state: &AppState, stores: Option<Stores<I, R>>) -> Router
    where
        I: IdempotencyStore + 'static,
        R: RateLimitStore + Send + Sync + 'static,
        RateLimitLayer<R>: Clone,
    {
        let idempotency = stores.as_ref().map(|stores| {
            IdempotencyLayer::new(
                stores.idempotency.clone(),
                Scope::from_fn(|parts| Tenant::of_request(parts).map(|t| t.as_str().to_owned())),
            )
            .require_key()
            .max_request_body(MAX_REQUEST_BODY)
            .catalog(state.problems.catalog().clone())
        });
        let version = |version: ApiVersion| {
            let prefix = version.prefix();
            let list = handlers::list_orders
                .layer(CursorLayer::<OrderPosition>::new(self.paginator.clone()));
            // On the POST handlers only, so another method on these paths still gets its 405.
            let (create, cancel) = match &idempotency {
                Some(layer) => (
                    post(handlers::create_order.layer(layer.clone())),
                    post(handlers::cancel_order.layer(layer.clone())),
                ),
                None => (post(handlers::create_order), post(handlers::cancel_order)),
            };
            let router = Router::new()
                .route(&format!("{prefix}/orders"), create.get(list))
                .route(&format!("{prefix}/orders/{{id}}"), get(handlers::get_order))
                .route(&format!("{prefix}/orders/{{id}}/cancel"), cancel)
                .layer(Extension(version));
            router.with_state(state.clone())
        };
        let v1 = version(ApiVersion::V1).layer(self.v1_sunset.clone().on_deprecated_call(
            |_: &Request<Body>, phase| {
                observe::count_deprecated_call("v1", phase);
            },
        ));
        let mut api = v1.merge(version(ApiVersion::V2));
        if let Some(stores) = stores {
            let policy = Policy::gcra("per-key", self.quota).expect("a valid policy name");
            let limit = RateLimitLayer::new(
                stores.ratelimit,
                [policy],
                KeyExtractor::from_fn(|parts| {
                    Tenant::of_request(parts).map(|t| RateLimitKey::new(t.as_str()))
                }),
            )
            .expect("one valid policy")
            .catalog(state.problems.catalog().clone())
            .on_decision(observe::count_decision);
            api = api.layer(limit);
        }
        api.layer(middleware::from_fn_with_state(
            AuthState {
                keys: self.keys.clone(),
                problems: state.problems.clone(),
            },
            authenticate,
        ))
    }
}

async fn redis_connection(url: &str) -> Result<ConnectionManager, BuildError> {
    let client = redis::Client::open(url).map_err(|e| fail("--redis")(&e))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| fail("cannot reach Redis")(&e))
}

/// `GET /health`: the process is up.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: the database and Redis (when configured) answer.
async fn ready(State(app): State<AppState>) -> Response {
    let mut failures = Vec::new();
    if let Err(error) = app.db.ping().await {
        tracing::warn!(%error, "readiness: database");
        failures.push("database");
    }
    if let Some(mut redis) = app.redis.clone() {
        let ping: Result<String, _> = redis::cmd("PING").query_async(&mut redis).await;
        if let Err(error) = ping {
            tracing::warn!(%error, "readiness: redis");
            failures.push("redis");
        }
    }
    if failures.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        app.problems
            .service(NOT_READY)
            .with_detail(format!("Not reachable: {}.", failures.join(", ")))
            .into_response::<Body>()
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
