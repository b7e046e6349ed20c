use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::{Method, Request, Response};
use http_body::Body;
use tower_problem_details::{Protocol, ResponseBody};
use tower_service::Service;

use crate::config::Config;
use crate::future::ResponseFuture;
use crate::hook::OnDeprecatedCall;

/// The service made by [`SunsetLayer`](crate::SunsetLayer).
pub struct Sunset<S, H = ()> {
    inner: S,
    config: Arc<Config>,
    hook: Arc<H>,
}

impl<S, H> Sunset<S, H> {
    pub(crate) fn new(inner: S, config: Arc<Config>, hook: Arc<H>) -> Self {
        Sunset {
            inner,
            config,
            hook,
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

impl<S, H, ReqBody, ResBody> Service<Request<ReqBody>> for Sunset<S, H>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    H: OnDeprecatedCall<ReqBody>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let now = self.config.now();
        let phase = self.config.phase_at(now);
        self.hook.on_deprecated_call(&request, phase);
        let cross_origin = request.headers().contains_key(ORIGIN);
        let config = Arc::clone(&self.config);
        // A CORS preflight is about the API's shape, not a call to it: refusing it would make
        // browsers report a CORS failure instead of the 410 that follows.
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        match config.rejection(phase, now).filter(|_| !preflight) {
            Some(rejection) => {
                let protocol = Protocol::detect(request.extensions(), request.headers());
                ResponseFuture::rejected(rejection, protocol, config, phase, cross_origin)
            }
            None => ResponseFuture::inner(self.inner.call(request), config, phase, cross_origin),
        }
    }
}

impl<S: Clone, H> Clone for Sunset<S, H> {
    fn clone(&self) -> Self {
        Sunset {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            hook: Arc::clone(&self.hook),
        }
    }
}

impl<S: fmt::Debug, H> fmt::Debug for Sunset<S, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sunset")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("hook", &format_args!("<hook>"))
            .finish()
    }
}
