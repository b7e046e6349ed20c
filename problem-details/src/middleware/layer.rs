use std::sync::Arc;

use http::HeaderName;
use tower_layer::Layer;

use super::service::ProblemService;
use crate::catalog::ProblemCatalog;
use crate::responder::Responder;

/// Turns bare error responses and panics of the inner service into problems, and gives every
/// request an id. See the [module docs](crate::middleware) for what it does exactly.
///
/// Its configuration is built once and shared: cloning the layer, or the services it makes,
/// does not copy it.
///
/// ```
/// use tower_problem_details::ProblemLayer;
///
/// let layer = ProblemLayer::new()
///     .request_id_header(http::HeaderName::from_static("x-correlation-id"))
///     .client_error_detail_limit(512);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ProblemLayer {
    pub(crate) config: Arc<Config>,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) catalog: ProblemCatalog,
    pub(crate) responder: Responder,
    pub(crate) request_id_header: HeaderName,
    pub(crate) request_id_as_instance: bool,
    pub(crate) client_error_detail_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            catalog: ProblemCatalog::default(),
            responder: Responder::default(),
            request_id_header: HeaderName::from_static("x-request-id"),
            request_id_as_instance: false,
            client_error_detail_limit: 1024,
        }
    }
}

impl ProblemLayer {
    /// A layer with the defaults: the default [`ProblemCatalog`], the `x-request-id` header,
    /// the request id in a `request_id` member, and 4xx `text/plain` bodies up to 1 KiB kept
    /// as `detail`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The catalog whose `internal` type answers panics.
    #[must_use]
    pub fn catalog(mut self, catalog: ProblemCatalog) -> Self {
        Arc::make_mut(&mut self.config).catalog = catalog;
        self
    }

    /// The responder that renders the problems the layer makes (the default renders
    /// `application/problem+json`, and Trailers-Only answers for gRPC requests with the
    /// `grpc` feature).
    #[must_use]
    pub fn responder(mut self, responder: Responder) -> Self {
        Arc::make_mut(&mut self.config).responder = responder;
        self
    }

    /// The header that carries the request id, in the request and the response.
    #[must_use]
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.config).request_id_header = name;
        self
    }

    /// Writes the request id as the problem's `instance` (`urn:uuid:<id>`) instead of a
    /// `request_id` member, when the id is a UUID (generated ids always are); other ids stay in
    /// the member, since an arbitrary client-chosen string is no safe `instance`.
    #[must_use]
    pub fn request_id_as_instance(mut self, yes: bool) -> Self {
        Arc::make_mut(&mut self.config).request_id_as_instance = yes;
        self
    }

    /// The largest `text/plain` body of a 4xx response kept as the problem's `detail`, in
    /// bytes; longer bodies (and bodies that are not UTF-8) are dropped. `0` drops them all.
    #[must_use]
    pub fn client_error_detail_limit(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).client_error_detail_limit = bytes;
        self
    }
}

impl<S> Layer<S> for ProblemLayer {
    type Service = ProblemService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProblemService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}
