//! [`RateLimit`], the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_problem_details::{Protocol, ResponseBody};
use tower_service::Service;

use crate::future::{Decided, ResponseFuture, decided};
use crate::layer::{Config, State};
use crate::metrics::{DecisionEvent, Verdict};
use crate::rejection::{self, RateLimitRejection};
use crate::store::RateLimitStore;

/// The service made by [`RateLimitLayer`](crate::RateLimitLayer).
pub struct RateLimit<S, St: RateLimitStore> {
    inner: S,
    config: Arc<Config>,
    state: Arc<State<St>>,
}

impl<S, St: RateLimitStore> RateLimit<S, St> {
    pub(crate) fn new(inner: S, config: Arc<Config>, state: Arc<State<St>>) -> Self {
        RateLimit {
            inner,
            config,
            state,
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

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    St: RateLimitStore,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, St, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let Some(key) = self.config.key.extract(&parts) else {
            self.config.report(
                &self.state.counters,
                &DecisionEvent {
                    key: None,
                    policies: &self.config.policies,
                    verdict: Verdict::MissingKey,
                },
            );
            let rejection = rejection::missing_key(&self.config.catalog, &self.config.missing_key);
            let mut response = self.config.responder.respond(
                rejection,
                Protocol::detect(&parts.extensions, &parts.headers),
            );
            response
                .extensions_mut()
                .insert(RateLimitRejection::MissingKey);
            return ResponseFuture::rejected(response);
        };
        let cost = self.config.cost.as_ref().map_or(1, |cost| cost(&parts));
        if let Some(result) = self.state.store.check_now(&self.state.prepared, &key, cost) {
            // Decided at once (the memory store): the inner service, made ready by
            // `poll_ready`, is called here, and the future holds no request, key or `Arc`.
            let protocol = || Protocol::detect(&parts.extensions, &parts.headers);
            return match decided(&self.config, &self.state, &key, protocol, result) {
                Decided::Call(stamp) => {
                    let request = Request::from_parts(parts, body);
                    ResponseFuture::calling(self.inner.call(request), stamp)
                }
                Decided::Answer(response) => ResponseFuture::rejected(response),
            };
        }
        let decision = self.state.store.check(&self.state.prepared, &key, cost);
        // The inner service was driven to readiness by `poll_ready`; take that one into the
        // future and leave a clone behind. See "Be careful when cloning inner services" in
        // tower's `Service` docs.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::deciding(
            decision,
            inner,
            Request::from_parts(parts, body),
            key,
            Arc::clone(&self.config),
            Arc::clone(&self.state),
        )
    }
}

impl<S: Clone, St: RateLimitStore> Clone for RateLimit<S, St> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            state: Arc::clone(&self.state),
        }
    }
}

impl<S: fmt::Debug, St: RateLimitStore> fmt::Debug for RateLimit<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
