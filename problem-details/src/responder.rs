//! [`Responder`]: the one place rejections become responses.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;

use crate::body::ResponseBody;
use crate::rejection::{Protocol, Rejection};

/// The `ErrorInfo.domain` of gRPC rejections unless a responder names another.
pub const DEFAULT_GRPC_DOMAIN: &str = "api-guardrails";

type Render = dyn Fn(Rejection, Protocol) -> Response<Bytes> + Send + Sync;

/// Renders every [`Rejection`] of a layer.
///
/// Each guardrail layer takes one (`.responder(…)`) and uses it for all its refusals; pass the
/// same responder to every layer to shape the whole service's rejections in one place. The
/// layer puts its typed reason (`RateLimitRejection`, …) into the response extensions after
/// the responder ran, so a replaced responder never loses it.
///
/// The default, [`Responder::standard`], renders `application/problem+json` for HTTP and
/// Trailers-Only answers for gRPC (feature `grpc`). Cloning is cheap: clones share it.
///
/// ```
/// use http::{HeaderValue, Response};
/// use tower_problem_details::{ProblemCatalog, ProblemKind, Protocol, Responder};
///
/// // Every rejection also names the support page.
/// let responder = Responder::new(|rejection, protocol| {
///     let mut response = rejection.into_response(protocol, "api.example.com");
///     response
///         .headers_mut()
///         .insert("link", HeaderValue::from_static("<https://example.com/support>; rel=\"help\""));
///     response
/// });
/// let response = responder.respond(
///     ProblemCatalog::default().rejection(ProblemKind::NotFound),
///     Protocol::Http,
/// );
/// assert_eq!(response.status(), 404);
/// assert_eq!(response.headers()["link"], "<https://example.com/support>; rel=\"help\"");
/// ```
#[derive(Clone)]
pub struct Responder {
    render: Rendering,
}

/// The built-in rendering is called directly (it is what nearly every layer uses); a
/// replacement through its closure.
#[derive(Clone)]
enum Rendering {
    Standard { grpc_domain: Arc<str> },
    Custom(Arc<Render>),
}

impl Responder {
    /// A responder that renders with `render`.
    pub fn new<F>(render: F) -> Self
    where
        F: Fn(Rejection, Protocol) -> Response<Bytes> + Send + Sync + 'static,
    {
        Responder {
            render: Rendering::Custom(Arc::new(render)),
        }
    }

    /// The built-in rendering ([`Rejection::into_response`]), naming `grpc_domain` as the
    /// `ErrorInfo.domain` of gRPC rejections (a name you own, such as your API's host name).
    pub fn standard(grpc_domain: impl Into<String>) -> Self {
        Responder {
            render: Rendering::Standard {
                grpc_domain: grpc_domain.into().into(),
            },
        }
    }

    /// The response for `rejection`, for a request speaking `protocol`.
    #[inline]
    pub fn respond(&self, rejection: Rejection, protocol: Protocol) -> Response<Bytes> {
        match &self.render {
            Rendering::Standard { grpc_domain } => rejection.into_response(protocol, grpc_domain),
            Rendering::Custom(render) => render(rejection, protocol),
        }
    }

    /// [`respond`](Self::respond), with the body a layer answers with.
    #[inline]
    pub fn respond_with<B>(
        &self,
        rejection: Rejection,
        protocol: Protocol,
    ) -> Response<ResponseBody<B>> {
        self.respond(rejection, protocol).map(ResponseBody::full)
    }
}

impl Default for Responder {
    fn default() -> Self {
        Responder::standard(DEFAULT_GRPC_DOMAIN)
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.render {
            Rendering::Standard { grpc_domain } => f
                .debug_struct("Responder::Standard")
                .field("grpc_domain", grpc_domain)
                .finish(),
            Rendering::Custom(_) => f.write_str("Responder(<fn>)"),
        }
    }
}
