use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tower_problem_details::{Protocol, Rejection, ResponseBody};

use crate::config::Config;
use crate::phase::Phase;
use crate::rejection::SunsetRejection;

pin_project! {
    /// The response future of [`Sunset`](crate::Sunset).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        config: Arc<Config>,
        phase: Phase,
        cross_origin: bool,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Rejected { rejection: Option<(Rejection, SunsetRejection)>, protocol: Protocol },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F, config: Arc<Config>, phase: Phase, cross_origin: bool) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future },
            config,
            phase,
            cross_origin,
        }
    }

    pub(crate) fn rejected(
        rejection: (Rejection, SunsetRejection),
        protocol: Protocol,
        config: Arc<Config>,
        phase: Phase,
        cross_origin: bool,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Rejected {
                rejection: Some(rejection),
                protocol,
            },
            config,
            phase,
            cross_origin,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.kind.project() {
            KindProj::Inner { future } => ready!(future.poll(cx))?.map(ResponseBody::new),
            KindProj::Rejected {
                rejection,
                protocol,
            } => {
                let (rejection, reason) = rejection.take().expect("polled after completion");
                let mut response = this.config.responder.respond_with(rejection, *protocol);
                response.extensions_mut().insert(reason);
                response
            }
        };
        this.config
            .stamp(response.headers_mut(), *this.cross_origin);
        response.extensions_mut().insert(*this.phase);
        Poll::Ready(Ok(response))
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}
