//! [`Cursor`], the service.

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use serde::de::DeserializeOwned;
use tower_problem_details::{Protocol, ResponseBody};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::paginator::Paginator;

/// The service made by [`CursorLayer`](crate::CursorLayer).
pub struct Cursor<S, P> {
    inner: S,
    paginator: Paginator,
    _position: PhantomData<fn() -> P>,
}

impl<S, P> Cursor<S, P> {
    pub(crate) fn new(inner: S, paginator: Paginator) -> Self {
        Cursor {
            inner,
            paginator,
            _position: PhantomData,
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

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for Cursor<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    P: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return ResponseFuture::inner(self.inner.call(request));
        }
        let (parts, body) = request.into_parts();
        match self.paginator.page_request::<P>(&parts) {
            Ok(page) => {
                let mut request = Request::from_parts(parts, body);
                request.extensions_mut().insert(page);
                ResponseFuture::inner(self.inner.call(request))
            }
            Err(error) => {
                let rejection = self.paginator.rejection(&error);
                let protocol = Protocol::detect(&parts.extensions, &parts.headers);
                let mut response = self
                    .paginator
                    .settings()
                    .responder
                    .respond(rejection, protocol);
                response.extensions_mut().insert(error);
                ResponseFuture::rejected(response)
            }
        }
    }
}

impl<S: Clone, P> Clone for Cursor<S, P> {
    fn clone(&self) -> Self {
        Cursor::new(self.inner.clone(), self.paginator.clone())
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Cursor<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("inner", &self.inner)
            .field("paginator", &self.paginator)
            .finish()
    }
}
