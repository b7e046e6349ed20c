use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;
use super::request_id::RequestId;
use crate::body::ResponseBody;
use crate::rejection::Protocol;

/// The service made by [`ProblemLayer`](super::ProblemLayer).
///
/// (Named `ProblemService` rather than `Problem`, which is the document type.)
#[derive(Clone, Debug)]
pub struct ProblemService<S> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config>,
}

impl<S> ProblemService<S> {
    /// Wraps `inner` with the default configuration of
    /// [`ProblemLayer::new`](super::ProblemLayer::new).
    pub fn new(inner: S) -> Self {
        ProblemService {
            inner,
            config: Arc::default(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ProblemService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let request_id = RequestId::ensure(&mut request, &self.config.request_id_header);
        let protocol = Protocol::detect(request.extensions(), request.headers());
        let config = Arc::clone(&self.config);
        let inner = &mut self.inner;
        // The inner service is not used again by this call after a panic, so observing it
        // in a broken state is not a concern here.
        match catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
            Ok(future) => ResponseFuture::new(future, config, request_id, protocol),
            Err(panic) => ResponseFuture::panicked(&*panic, config, request_id, protocol),
        }
    }
}
