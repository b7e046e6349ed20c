//! [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use guardrail_store::StoreError;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_problem_details::{Protocol, ResponseBody};
use tower_service::Service;

use crate::decision::Decisions;
use crate::headers::Stamp;
use crate::key::RateLimitKey;
use crate::layer::{Config, State};
use crate::metrics::{DecisionEvent, Verdict};
use crate::rejection::{self, RateLimitRejection};
use crate::store::RateLimitStore;

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit): waits for the store's
    /// decision (unless the store decided at once), then either answers itself or calls the
    /// inner service.
    pub struct ResponseFuture<S, St, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        St: RateLimitStore,
    {
        #[pin]
        step: Step<S::Future, St::Future, Response<Bytes>>,
        pending: Option<Pending<S, ReqBody>>,
        context: Option<(Arc<Config>, Arc<State<St>>)>,
        stamp: Option<Stamp>,
    }
}

/// What waits for the decision: the ready inner service, the request and its key.
struct Pending<S, ReqBody> {
    inner: S,
    request: Request<ReqBody>,
    key: RateLimitKey,
}

pin_project! {
    #[project = StepProj]
    enum Step<F, D, R> {
        Deciding { #[pin] decision: D },
        Calling { #[pin] future: F },
        Answered { response: Option<R> },
    }
}

/// What a decision leads to.
pub(crate) enum Decided {
    /// Call the inner service; stamp the response when there was a decision (not when the
    /// store failed open).
    Call(Option<Stamp>),
    /// The layer's own answer.
    Answer(Response<Bytes>),
}

/// Reports the store's answer and turns it into what to do with the request, whose protocol
/// `protocol` tells (asked only for a refusal). The request itself stays with the caller: moved
/// in and out of here, it was two of the layer's copies per request.
pub(crate) fn decided<St: RateLimitStore>(
    config: &Config,
    state: &State<St>,
    key: &RateLimitKey,
    protocol: impl FnOnce() -> Protocol,
    result: Result<Decisions, StoreError>,
) -> Decided {
    let report = |verdict| {
        config.report(
            &state.counters,
            &DecisionEvent {
                key: Some(key),
                policies: &config.policies,
                verdict,
            },
        );
    };
    let stamp = |decisions| Stamp::new(config, decisions);
    match result {
        Ok(decisions) if decisions.allowed() || config.shadow => {
            report(if decisions.allowed() {
                Verdict::Allowed(&decisions)
            } else {
                Verdict::ShadowRejected(&decisions)
            });
            Decided::Call(Some(stamp(decisions)))
        }
        Ok(decisions) => {
            report(Verdict::Rejected(&decisions));
            let (rejection, reason) =
                rejection::quota_exceeded(&config.catalog, &config.policies, &decisions);
            let mut response = config.responder.respond(rejection, protocol());
            response.extensions_mut().insert(reason);
            stamp(decisions).apply(&mut response);
            Decided::Answer(response)
        }
        Err(error) => {
            // An open breaker logs once when it opens, not per request.
            #[cfg(feature = "tracing")]
            if error.kind() != guardrail_store::StoreErrorKind::CircuitOpen {
                tracing::warn!(
                    error = %error,
                    fail_closed = config.fail_closed,
                    "rate-limit store failed"
                );
            }
            report(Verdict::StoreError {
                error: &error,
                rejected: config.fail_closed,
            });
            if !config.fail_closed {
                return Decided::Call(None);
            }
            let rejection = rejection::store_unavailable(&config.catalog, &error);
            let mut response = config.responder.respond(rejection, protocol());
            response
                .extensions_mut()
                .insert(RateLimitRejection::StoreUnavailable);
            Decided::Answer(response)
        }
    }
}

impl<S, St, ReqBody> ResponseFuture<S, St, ReqBody>
where
    S: Service<Request<ReqBody>>,
    St: RateLimitStore,
{
    pub(crate) fn deciding(
        decision: St::Future,
        inner: S,
        request: Request<ReqBody>,
        key: RateLimitKey,
        config: Arc<Config>,
        state: Arc<State<St>>,
    ) -> Self {
        ResponseFuture {
            step: Step::Deciding { decision },
            pending: Some(Pending {
                inner,
                request,
                key,
            }),
            context: Some((config, state)),
            stamp: None,
        }
    }

    /// Decided already: the inner service is called.
    pub(crate) fn calling(future: S::Future, stamp: Option<Stamp>) -> Self {
        ResponseFuture {
            step: Step::Calling { future },
            pending: None,
            context: None,
            stamp,
        }
    }

    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        ResponseFuture {
            step: Step::Answered {
                response: Some(response),
            },
            pending: None,
            context: None,
            stamp: None,
        }
    }
}

impl<S, St, ReqBody, ResBody> Future for ResponseFuture<S, St, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: RateLimitStore,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.step.as_mut().project() {
                StepProj::Deciding { decision } => {
                    let result = ready!(decision.poll(cx));
                    let Pending {
                        mut inner,
                        request,
                        key,
                    } = this.pending.take().expect("polled after completion");
                    let (config, state) = this.context.take().expect("set while deciding");
                    let protocol = || Protocol::detect(request.extensions(), request.headers());
                    match decided(&config, &state, &key, protocol, result) {
                        Decided::Call(stamp) => {
                            *this.stamp = stamp;
                            let future = inner.call(request);
                            this.step.set(Step::Calling { future });
                        }
                        Decided::Answer(response) => {
                            this.step.set(Step::Answered { response: None });
                            return Poll::Ready(Ok(response.map(ResponseBody::full)));
                        }
                    }
                }
                StepProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    // Answered with nothing left: a further poll hits the `expect` below.
                    this.step.set(Step::Answered { response: None });
                    let mut response = result?.map(ResponseBody::new);
                    if let Some(stamp) = this.stamp.take() {
                        stamp.apply(&mut response);
                    }
                    return Poll::Ready(Ok(response));
                }
                StepProj::Answered { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            }
        }
    }
}

impl<S, St, ReqBody> fmt::Debug for ResponseFuture<S, St, ReqBody>
where
    S: Service<Request<ReqBody>>,
    St: RateLimitStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
