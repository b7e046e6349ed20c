//! The validated configuration of a layer, with its header values rendered once.

use std::time::{Duration, SystemTime};

use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, LINK};
use http::{HeaderMap, HeaderName, HeaderValue};
use tower_problem_details::{ProblemCatalog, ProblemKind, Rejection, Responder};

use crate::date;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::link::Link;
use crate::phase::{Clock, Phase};
use crate::rejection::SunsetRejection;

/// The `Deprecation` header (RFC 9745).
pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
/// The `Sunset` header (RFC 8594).
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");
/// The headers this crate sets, none of which is CORS-safelisted: give them to your CORS
/// layer's exposed headers (e.g. tower-http's `CorsLayer::expose_headers`) when it runs
/// outside this one, so browser clients can read them.
pub const EXPOSED_HEADERS: [HeaderName; 3] = [DEPRECATION, SUNSET, LINK];

/// The problem member that carries the successor version's URI in a 410.
pub const SUCCESSOR_VERSION_MEMBER: &str = "successor_version";

#[derive(Clone, Debug)]
pub(crate) struct Config {
    deprecation: (SystemTime, u64),
    sunset: Option<(SystemTime, u64)>,
    deprecation_link: Option<Link>,
    sunset_link: Option<Link>,
    successor_version: Option<Link>,
    brownouts: Vec<(SystemTime, SystemTime)>,
    pub(crate) gone_after_sunset: bool,
    catalog: ProblemCatalog,
    pub(crate) responder: Responder,
    clock: Clock,
    rendered: Rendered,
}

/// Header values, rendered whenever the configuration changes and never per request.
#[derive(Clone, Debug)]
struct Rendered {
    deprecation: HeaderValue,
    sunset: Option<HeaderValue>,
    links: Vec<HeaderValue>,
    expose: HeaderValue,
}

impl Config {
    pub(crate) fn new(deprecation: SystemTime) -> Result<Self, ConfigError> {
        let secs = date::unix_seconds(deprecation)?;
        let mut config = Config {
            deprecation: (deprecation, secs),
            sunset: None,
            deprecation_link: None,
            sunset_link: None,
            successor_version: None,
            brownouts: Vec::new(),
            gone_after_sunset: false,
            catalog: ProblemCatalog::default(),
            responder: Responder::default(),
            clock: Clock::start(),
            // Placeholders: `render` below is the one place header values are made.
            rendered: Rendered {
                deprecation: HeaderValue::from_static(""),
                sunset: None,
                links: Vec::new(),
                expose: HeaderValue::from_static(""),
            },
        };
        config.render();
        Ok(config)
    }

    pub(crate) fn set_sunset(&mut self, sunset: SystemTime) -> Result<(), ConfigError> {
        let secs = date::unix_seconds(sunset)?;
        if sunset < self.deprecation.0 {
            return Err(ConfigError::new(ConfigErrorKind::SunsetBeforeDeprecation));
        }
        if self.brownouts.iter().any(|&(_, end)| end > sunset) {
            return Err(ConfigError::new(ConfigErrorKind::InvalidBrownout));
        }
        self.sunset = Some((sunset, secs));
        self.render();
        Ok(())
    }

    pub(crate) fn add_brownout(
        &mut self,
        start: SystemTime,
        end: SystemTime,
    ) -> Result<(), ConfigError> {
        // Both ends are rendered as HTTP dates in the 410's detail, so both must be in range.
        date::unix_seconds(start)?;
        date::unix_seconds(end)?;
        let ends_in_time = self.sunset.is_none_or(|(sunset, _)| end <= sunset);
        if start >= end || start < self.deprecation.0 || !ends_in_time {
            return Err(ConfigError::new(ConfigErrorKind::InvalidBrownout));
        }
        self.brownouts.push((start, end));
        Ok(())
    }

    pub(crate) fn set_deprecation_link(&mut self, link: Link) {
        self.deprecation_link = Some(link);
        self.render();
    }

    pub(crate) fn set_sunset_link(&mut self, link: Link) {
        self.sunset_link = Some(link);
        self.render();
    }

    pub(crate) fn set_successor_version(&mut self, link: Link) {
        self.successor_version = Some(link);
        self.render();
    }

    pub(crate) fn set_catalog(&mut self, catalog: ProblemCatalog) {
        self.catalog = catalog;
    }

    fn render(&mut self) {
        let r = &mut self.rendered;
        r.deprecation = date::deprecation_value(self.deprecation.1);
        r.sunset = self
            .sunset
            .and_then(|(_, secs)| HeaderValue::try_from(date::http_date(secs)).ok());
        r.links = [
            (&self.deprecation_link, "deprecation"),
            (&self.sunset_link, "sunset"),
            (&self.successor_version, "successor-version"),
        ]
        .into_iter()
        .filter_map(|(link, rel)| link.as_ref().map(|l| l.render(rel)))
        .collect();
        let mut expose = vec!["Deprecation"];
        if r.sunset.is_some() {
            expose.push("Sunset");
        }
        if !r.links.is_empty() {
            expose.push("Link");
        }
        r.expose = HeaderValue::from_str(&expose.join(", "))
            .unwrap_or(HeaderValue::from_static("Deprecation"));
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub(crate) fn phase_at(&self, now: SystemTime) -> Phase {
        if self.sunset.is_some_and(|(sunset, _)| now >= sunset) {
            Phase::Retired
        } else if self.brownout_at(now).is_some() {
            Phase::Brownout
        } else if now >= self.deprecation.0 {
            Phase::Deprecated
        } else {
            Phase::Announced
        }
    }

    /// When the brownout `now` falls in ends: the end of the window, extended through any
    /// windows that overlap or follow it without a gap.
    fn brownout_at(&self, now: SystemTime) -> Option<SystemTime> {
        let mut end = self
            .brownouts
            .iter()
            .filter(|&&(start, end)| start <= now && now < end)
            .map(|&(_, end)| end)
            .max()?;
        while let Some(later) = self
            .brownouts
            .iter()
            .filter(|&&(start, e)| start <= end && e > end)
            .map(|&(_, e)| e)
            .max()
        {
            end = later;
        }
        Some(end)
    }

    /// Adds the lifecycle headers to a response (of the inner service or a rejection).
    ///
    /// A response that already has a `Deprecation` got it from a layer nearer the handler,
    /// which knows more precisely: its `Deprecation`, `Sunset` and links are one consistent
    /// set (mixing two layers' could put a sunset before a deprecation, or name two
    /// successors), so this layer adds none of its own.
    pub(crate) fn stamp(&self, headers: &mut HeaderMap, cross_origin: bool) {
        if headers.contains_key(DEPRECATION) {
            return;
        }
        let r = &self.rendered;
        headers.insert(DEPRECATION, r.deprecation.clone());
        if let Some(sunset) = &r.sunset {
            headers.insert(SUNSET, sunset.clone());
        }
        for link in &r.links {
            headers.append(LINK, link.clone());
        }
        let exposed = headers.get_all(ACCESS_CONTROL_EXPOSE_HEADERS);
        let wildcard = exposed.iter().any(|v| v.as_bytes().trim_ascii() == b"*");
        let cors_answered =
            exposed.iter().next().is_some() || headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN);
        if !wildcard && (cors_answered || cross_origin) {
            headers.append(ACCESS_CONTROL_EXPOSE_HEADERS, r.expose.clone());
        }
    }

    /// The rejection (with a retry delay, in a brownout) for a request refused in `phase`, or
    /// `None` when the request is to be served.
    pub(crate) fn rejection(
        &self,
        phase: Phase,
        now: SystemTime,
    ) -> Option<(Rejection, SunsetRejection)> {
        let (detail, retry_after, reason) = match phase {
            Phase::Retired if self.gone_after_sunset => {
                let when = self.rendered.sunset.as_ref()?.to_str().ok()?.to_owned();
                (
                    format!("This API version was retired on {when}."),
                    None,
                    SunsetRejection::Retired,
                )
            }
            Phase::Brownout => {
                let end = self.brownout_at(now)?;
                let mut detail = format!(
                    "This API version is deprecated and unavailable during a scheduled brownout until {}.",
                    httpdate::fmt_http_date(end)
                );
                if let Some(sunset) = &self.rendered.sunset {
                    detail.push_str(" It will be retired on ");
                    detail.push_str(sunset.to_str().unwrap_or_default());
                    detail.push('.');
                }
                // No `Retry-After` when the brownout runs into an enforced sunset: there is
                // nothing to come back to.
                let comes_back = !(self.gone_after_sunset
                    && self.sunset.is_some_and(|(sunset, _)| end >= sunset));
                let wait = end.duration_since(now).unwrap_or(Duration::ZERO);
                (
                    detail,
                    comes_back.then_some(wait),
                    SunsetRejection::Brownout,
                )
            }
            _ => return None,
        };
        let mut rejection = self
            .catalog
            .rejection(ProblemKind::ApiVersionSunset)
            .with_detail(detail);
        if let Some(wait) = retry_after {
            rejection = rejection.with_retry_after(wait);
        }
        if let Some(successor) = &self.successor_version {
            // The member name is not a standard one, so this cannot fail.
            let _ = rejection
                .problem_mut()
                .insert_extension(SUCCESSOR_VERSION_MEMBER, successor.href().as_str());
        }
        Some((rejection, reason))
    }
}
