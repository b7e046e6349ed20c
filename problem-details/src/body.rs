//! [`ResponseBody`]: the body of every guardrail's response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of the workspace's middleware: the inner service's body, untouched,
    /// or one the middleware wrote (a problem document, an empty Trailers-Only gRPC answer,
    /// a replayed response with its trailers).
    ///
    /// It works with any inner body whose data is [`Bytes`] (`Full<Bytes>`, axum's and
    /// tonic's bodies, hyper's `Incoming`), so the layers compose on all of them.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Trailers { #[pin] body: B, rewrite: Option<Rewrite> },
    }
}

/// Rewrites the trailers of a body once, when they come.
pub(crate) type Rewrite = Box<dyn FnOnce(&mut HeaderMap) + Send + Sync>;

impl<B> ResponseBody<B> {
    /// The inner service's body, passed through but for its trailers, which `rewrite` may
    /// change.
    // Only `ProblemLayer`'s gRPC rendering rewrites trailers.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) fn rewriting_trailers(body: B, rewrite: Rewrite) -> Self {
        ResponseBody {
            kind: Kind::Trailers {
                body,
                rewrite: Some(rewrite),
            },
        }
    }

    /// The inner service's body, passed through.
    pub fn new(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    /// A body of `data` (no frame at all when `data` is empty).
    pub fn full(data: Bytes) -> Self {
        Self::with_trailers(data, None)
    }

    /// A body of `data` followed by `trailers`.
    pub fn with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        ResponseBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    /// The inner service's body when this passes it through untouched (the middleware let the
    /// request through and wrote nothing), else this body back.
    ///
    /// A service that answers one body type for every route can unwrap the passed-through
    /// case instead of boxing this wrapper around a body that is already its own:
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use tower_problem_details::ResponseBody;
    ///
    /// let passed = ResponseBody::new(Full::new(Bytes::from_static(b"order")));
    /// assert!(passed.try_into_inner().is_ok());
    ///
    /// let written = ResponseBody::<Full<Bytes>>::full(Bytes::from_static(b"{}"));
    /// assert!(written.try_into_inner().is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// This body, when the middleware wrote it (a problem, a replayed response) or rewrites
    /// the inner body's trailers.
    #[expect(
        clippy::result_large_err,
        reason = "the error is the caller's own body handed back; boxing it would allocate to \
                  return what was just moved in"
    )]
    pub fn try_into_inner(self) -> Result<B, Self> {
        match self.kind {
            Kind::Inner { body } => Ok(body),
            kind => Err(ResponseBody { kind }),
        }
    }
}

/// An empty body (for layers such as tower-http's CORS that answer with `Default` bodies).
impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data, trailers } => Poll::Ready(match data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            KindProj::Trailers { body, rewrite } => {
                let frame = std::task::ready!(body.poll_frame(cx));
                Poll::Ready(frame.map(|frame| {
                    frame.map(|frame| match frame.into_trailers() {
                        Ok(mut trailers) => {
                            if let Some(rewrite) = rewrite.take() {
                                rewrite(&mut trailers);
                            }
                            Frame::trailers(trailers)
                        }
                        Err(frame) => frame,
                    })
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } | Kind::Trailers { body, .. } => body.is_end_stream(),
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } | Kind::Trailers { body, .. } => body.size_hint(),
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } | Kind::Trailers { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Full { data, trailers } => f
                .debug_struct("ResponseBody::Full")
                .field("data", data)
                .field("trailers", trailers)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty};

    use super::*;

    #[tokio::test]
    async fn a_full_body_yields_its_data_then_its_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("a value"));
        let body = ResponseBody::<Empty<Bytes>>::with_trailers(
            Bytes::from_static(b"x"),
            Some(trailers.clone()),
        );
        assert_eq!(body.size_hint().exact(), Some(1));
        let collected = body.collect().await.expect("infallible");
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "x");
    }

    #[tokio::test]
    async fn only_a_passed_through_body_unwraps() {
        let passed = ResponseBody::new(http_body_util::Full::new(Bytes::from_static(b"x")));
        let inner = passed.try_into_inner().expect("passed through");
        assert_eq!(inner.collect().await.expect("infallible").to_bytes(), "x");

        let written = ResponseBody::<Empty<Bytes>>::full(Bytes::from_static(b"{}"));
        let back = written
            .try_into_inner()
            .expect_err("written by the middleware");
        assert_eq!(back.collect().await.expect("infallible").to_bytes(), "{}");
    }

    #[test]
    fn an_empty_full_body_is_at_its_end() {
        assert!(ResponseBody::<Empty<Bytes>>::full(Bytes::new()).is_end_stream());
    }
}
