#![doc = include_str!("../README.md")]

mod catalog;
mod error;
mod json;
pub mod middleware;
mod problem;
mod response;
mod uri_ref;
mod validation;

pub use self::catalog::{ProblemCatalog, ProblemKind};
pub use self::error::{ExtensionError, ParseError, ParseErrorKind};
pub use self::json::APPLICATION_PROBLEM_JSON;
pub use self::middleware::{ProblemLayer, REQUEST_ID_MEMBER, RequestId};
pub use self::problem::Problem;
pub use self::response::retry_after_seconds;
pub use self::uri_ref::{InvalidUriRef, UriRef};
pub use self::validation::{
    ERRORS_MEMBER, InvalidJsonPointer, JsonPointer, ValidationError, ValidationErrors,
};
