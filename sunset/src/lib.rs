#![doc = include_str!("../README.md")]

mod config;
mod date;
mod error;
mod future;
mod hook;
mod layer;
mod link;
mod parse;
mod phase;
mod rejection;
mod service;

pub use self::config::{DEPRECATION, EXPOSED_HEADERS, SUCCESSOR_VERSION_MEMBER, SUNSET};
pub use self::error::{ConfigError, ConfigErrorKind, ParseError};
pub use self::future::ResponseFuture;
pub use self::hook::OnDeprecatedCall;
pub use self::layer::SunsetLayer;
pub use self::link::Link;
pub use self::parse::{ParsedDeprecation, ParsedSunset, parse_deprecation, parse_sunset};
pub use self::phase::Phase;
pub use self::rejection::SunsetRejection;
pub use self::service::Sunset;
pub use tower_problem_details::UriRef;
