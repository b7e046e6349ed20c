use std::sync::Arc;
use std::time::SystemTime;

use tower_layer::Layer;
use tower_problem_details::{ProblemCatalog, Responder};

use crate::config::Config;
use crate::error::ConfigError;
use crate::link::Link;
use crate::service::Sunset;

/// Marks every response of the wrapped routes as deprecated (RFC 9745), announces their
/// sunset (RFC 8594) and links to the documentation and the successor version; optionally
/// answers 410 after the sunset and during brownouts.
///
/// Times are `SystemTime`s, never strings, and header values are rendered when the layer is
/// configured, not per request. A configuration the RFCs forbid (a sunset earlier than the
/// deprecation) is refused by the setter that would make it.
///
/// The configuration and the hook are shared by every clone of the layer and of its
/// services; the time is read from a clock that starts when the layer is made (see
/// [`Phase`](crate::Phase) and the crate docs for how tests move it).
#[derive(Debug)]
pub struct SunsetLayer<H = ()> {
    config: Arc<Config>,
    hook: Arc<H>,
}

impl SunsetLayer {
    /// A layer for an API deprecated at `deprecated_at` (which may be in the future: the
    /// deprecation is then announced).
    ///
    /// # Errors
    ///
    /// Fails when `deprecated_at` is before 1970 or after 9999.
    pub fn new(deprecated_at: SystemTime) -> Result<Self, ConfigError> {
        Ok(SunsetLayer {
            config: Arc::new(Config::new(deprecated_at)?),
            hook: Arc::new(()),
        })
    }
}

impl<H> SunsetLayer<H> {
    /// Announces the sunset, the time after which the API may stop answering.
    ///
    /// # Errors
    ///
    /// Fails when `sunset_at` is earlier than the deprecation (RFC 9745 §4), earlier than the
    /// end of a brownout window, or outside 1970..=9999.
    pub fn sunset_at(mut self, sunset_at: SystemTime) -> Result<Self, ConfigError> {
        Arc::make_mut(&mut self.config).set_sunset(sunset_at)?;
        Ok(self)
    }

    /// Links to the document that explains the deprecation (`rel="deprecation"`).
    #[must_use]
    pub fn deprecation_link(mut self, link: Link) -> Self {
        Arc::make_mut(&mut self.config).set_deprecation_link(link);
        self
    }

    /// Links to the retirement policy (`rel="sunset"`).
    #[must_use]
    pub fn sunset_link(mut self, link: Link) -> Self {
        Arc::make_mut(&mut self.config).set_sunset_link(link);
        self
    }

    /// Links to the version that replaces this one (`rel="successor-version"`, RFC 5829). It
    /// is also named in the 410 problems, as the `successor_version` member.
    #[must_use]
    pub fn successor_version(mut self, link: Link) -> Self {
        Arc::make_mut(&mut self.config).set_successor_version(link);
        self
    }

    /// After the sunset, answers every request with 410 and the problem
    /// `api-version-sunset`, without calling the inner service. Off by default: the headers
    /// alone are a hint (RFC 8594), and retiring is a decision.
    #[must_use]
    pub fn gone_after_sunset(mut self, yes: bool) -> Self {
        Arc::make_mut(&mut self.config).gone_after_sunset = yes;
        self
    }

    /// Schedules a brownout: from `start` (inclusive) to `end` (exclusive) requests are
    /// answered 410 (`api-version-sunset`, with `Retry-After` until the end of the window),
    /// so clients that ignore the headers notice before the sunset. Several windows may be
    /// scheduled.
    ///
    /// # Errors
    ///
    /// Fails when the window is empty, starts before the deprecation or ends after the
    /// sunset.
    pub fn brownout(mut self, start: SystemTime, end: SystemTime) -> Result<Self, ConfigError> {
        Arc::make_mut(&mut self.config).add_brownout(start, end)?;
        Ok(self)
    }

    /// The responder that renders the layer's refusals (by default `application/problem+json`,
    /// and Trailers-Only gRPC answers with `tower-problem-details`' `grpc` feature). The
    /// [`Phase`](crate::Phase) and the typed [`SunsetRejection`](crate::SunsetRejection) are
    /// put into the response extensions, and the deprecation headers added, whatever it does.
    #[must_use]
    pub fn responder(mut self, responder: Responder) -> Self {
        Arc::make_mut(&mut self.config).responder = responder;
        self
    }

    /// The catalog whose `api-version-sunset` type the 410 problems carry.
    #[must_use]
    pub fn catalog(mut self, catalog: ProblemCatalog) -> Self {
        Arc::make_mut(&mut self.config).set_catalog(catalog);
        self
    }

    /// Calls `hook` on every request, with the phase the API is in; see
    /// [`OnDeprecatedCall`](crate::OnDeprecatedCall).
    #[must_use]
    pub fn on_deprecated_call<H2>(self, hook: H2) -> SunsetLayer<H2> {
        SunsetLayer {
            config: self.config,
            hook: Arc::new(hook),
        }
    }
}

impl<H> Clone for SunsetLayer<H> {
    fn clone(&self) -> Self {
        SunsetLayer {
            config: Arc::clone(&self.config),
            hook: Arc::clone(&self.hook),
        }
    }
}

impl<S, H> Layer<S> for SunsetLayer<H> {
    type Service = Sunset<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        Sunset::new(inner, Arc::clone(&self.config), Arc::clone(&self.hook))
    }
}
