#![doc = include_str!("../README.md")]

mod body;
mod catalog;
mod error;
mod grpc;
mod json;
pub mod middleware;
mod problem;
mod rejection;
mod responder;
mod response;
mod uri_ref;
mod validation;

pub use self::body::ResponseBody;
pub use self::catalog::{ProblemCatalog, ProblemKind};
pub use self::error::{ExtensionError, ParseError, ParseErrorKind};
pub use self::grpc::GrpcCode;
pub use self::grpc::{GRPC_MESSAGE, GRPC_RETRY_PUSHBACK, GRPC_STATUS, GRPC_STATUS_DETAILS};
pub use self::json::APPLICATION_PROBLEM_JSON;
pub use self::middleware::{ProblemLayer, REQUEST_ID_MEMBER, RequestId};
pub use self::problem::Problem;
pub use self::rejection::{Protocol, QuotaViolation, Rejection};
pub use self::responder::{DEFAULT_GRPC_DOMAIN, Responder};
pub use self::response::retry_after_seconds;
pub use self::uri_ref::{InvalidUriRef, UriRef};
pub use self::validation::{
    ERRORS_MEMBER, InvalidJsonPointer, JsonPointer, ValidationError, ValidationErrors,
};
