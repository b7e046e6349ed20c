//! gRPC status codes, and the mapping from problems to them.

use std::fmt;

use http::{HeaderName, StatusCode};

use crate::catalog::ProblemKind;

#[cfg(feature = "grpc")]
mod wire;

// The field names are plain constants, for every crate that reads gRPC answers (the
// idempotency layer keeps them); only the rendering needs the `grpc` feature.
/// `grpc-status`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-status-details-bin`.
pub const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
/// `grpc-retry-pushback-ms` (gRPC proposal A6).
pub const GRPC_RETRY_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal, $name:literal; )*) => {
        /// A gRPC status code (`google.rpc.Code`), as sent in `grpc-status`.
        ///
        /// The discriminant is the wire value: `GrpcCode::ResourceExhausted as i32 == 8`, which
        /// is what `tonic::Code::from(i32)` takes.
        ///
        /// ```
        /// use tower_problem_details::{GrpcCode, ProblemKind};
        ///
        /// let code = ProblemKind::QuotaExceeded.grpc_code();
        /// assert_eq!(code, GrpcCode::ResourceExhausted);
        /// assert_eq!((code.value(), code.name()), (8, "RESOURCE_EXHAUSTED"));
        /// assert_eq!(code.http_status(), 429);
        /// assert_eq!(GrpcCode::from_header(&"14".parse()?), Some(GrpcCode::Unavailable));
        /// # Ok::<(), http::header::InvalidHeaderValue>(())
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum GrpcCode {
            $( $(#[$doc])* $variant = $value, )*
        }

        impl GrpcCode {
            /// The wire value.
            pub const fn value(self) -> i32 {
                self as i32
            }

            /// The code's name in `google/rpc/code.proto`, e.g. `RESOURCE_EXHAUSTED`.
            pub const fn name(self) -> &'static str {
                match self { $(GrpcCode::$variant => $name,)* }
            }

            /// The code with wire value `value`.
            pub const fn from_value(value: i32) -> Option<Self> {
                match value {
                    $($value => Some(GrpcCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// Not an error.
    Ok = 0, "OK";
    /// The caller cancelled the operation.
    Cancelled = 1, "CANCELLED";
    /// An error with no better code.
    Unknown = 2, "UNKNOWN";
    /// The request is invalid whatever the state of the system.
    InvalidArgument = 3, "INVALID_ARGUMENT";
    /// The deadline ran out before the operation finished.
    DeadlineExceeded = 4, "DEADLINE_EXCEEDED";
    /// The requested entity does not exist.
    NotFound = 5, "NOT_FOUND";
    /// The entity to create exists already.
    AlreadyExists = 6, "ALREADY_EXISTS";
    /// The caller may not run this operation.
    PermissionDenied = 7, "PERMISSION_DENIED";
    /// A quota or a resource is used up.
    ResourceExhausted = 8, "RESOURCE_EXHAUSTED";
    /// The system is not in the state the operation needs.
    FailedPrecondition = 9, "FAILED_PRECONDITION";
    /// Aborted by a concurrency conflict; retry the whole sequence.
    Aborted = 10, "ABORTED";
    /// Past the valid range.
    OutOfRange = 11, "OUT_OF_RANGE";
    /// The operation is not implemented or not supported (any more).
    Unimplemented = 12, "UNIMPLEMENTED";
    /// An invariant of the server broke.
    Internal = 13, "INTERNAL";
    /// The service is unavailable for now; retry with back-off.
    Unavailable = 14, "UNAVAILABLE";
    /// Data was lost or corrupted.
    DataLoss = 15, "DATA_LOSS";
    /// The request has no valid credentials.
    Unauthenticated = 16, "UNAUTHENTICATED";
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ProblemKind {
    /// The gRPC code a rejection of this kind carries (AIP-193; the workspace's table in
    /// `docs/problems.md`).
    pub const fn grpc_code(self) -> GrpcCode {
        match self {
            ProblemKind::QuotaExceeded | ProblemKind::PayloadTooLarge => {
                GrpcCode::ResourceExhausted
            }
            ProblemKind::IdempotencyStoreUnavailable | ProblemKind::RateLimitStoreUnavailable => {
                GrpcCode::Unavailable
            }
            ProblemKind::IdempotencyKeyInUse => GrpcCode::Aborted,
            ProblemKind::IdempotencyKeyMissing
            | ProblemKind::IdempotencyKeyInvalid
            | ProblemKind::IdempotencyKeyReused
            | ProblemKind::InvalidCursor
            | ProblemKind::InvalidPageSize
            | ProblemKind::ValidationFailed => GrpcCode::InvalidArgument,
            ProblemKind::IdempotencyResultUnavailable => GrpcCode::FailedPrecondition,
            ProblemKind::ApiVersionSunset => GrpcCode::Unimplemented,
            ProblemKind::Unauthorized => GrpcCode::Unauthenticated,
            ProblemKind::NotFound => GrpcCode::NotFound,
            ProblemKind::Internal => GrpcCode::Internal,
        }
    }
}

impl GrpcCode {
    /// The code for a problem outside the catalog, from its HTTP status (the inverse of
    /// `google/rpc/code.proto`'s "HTTP Mapping" lines; other 4xx are `FAILED_PRECONDITION`,
    /// other 5xx `INTERNAL`).
    pub fn from_http_status(status: StatusCode) -> Self {
        match status.as_u16() {
            200..=299 => GrpcCode::Ok,
            400 | 422 => GrpcCode::InvalidArgument,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::NotFound,
            408 | 504 => GrpcCode::DeadlineExceeded,
            409 => GrpcCode::Aborted,
            410 | 501 => GrpcCode::Unimplemented,
            413 | 429 => GrpcCode::ResourceExhausted,
            416 => GrpcCode::OutOfRange,
            499 => GrpcCode::Cancelled,
            502 | 503 => GrpcCode::Unavailable,
            400..=499 => GrpcCode::FailedPrecondition,
            _ => GrpcCode::Internal,
        }
    }
}

impl GrpcCode {
    /// The HTTP status of the code, as `google/rpc/code.proto` maps it (`CANCELLED` is 499).
    pub fn http_status(self) -> StatusCode {
        let status = match self {
            GrpcCode::Ok => 200,
            GrpcCode::InvalidArgument | GrpcCode::FailedPrecondition | GrpcCode::OutOfRange => 400,
            GrpcCode::Unauthenticated => 401,
            GrpcCode::PermissionDenied => 403,
            GrpcCode::NotFound => 404,
            GrpcCode::Aborted | GrpcCode::AlreadyExists => 409,
            GrpcCode::ResourceExhausted => 429,
            GrpcCode::Cancelled => 499,
            GrpcCode::Unknown | GrpcCode::Internal | GrpcCode::DataLoss => 500,
            GrpcCode::Unimplemented => 501,
            GrpcCode::Unavailable => 503,
            GrpcCode::DeadlineExceeded => 504,
        };
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The code in a `grpc-status` value, if it is one.
    pub fn from_header(value: &http::HeaderValue) -> Option<Self> {
        let value = std::str::from_utf8(value.as_bytes()).ok()?;
        Self::from_value(value.trim().parse().ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_the_design_code() {
        let expected = [
            ("idempotency-key-missing", "INVALID_ARGUMENT"),
            ("idempotency-key-invalid", "INVALID_ARGUMENT"),
            ("idempotency-key-in-use", "ABORTED"),
            ("idempotency-key-reused", "INVALID_ARGUMENT"),
            ("idempotency-result-unavailable", "FAILED_PRECONDITION"),
            ("payload-too-large", "RESOURCE_EXHAUSTED"),
            ("idempotency-store-unavailable", "UNAVAILABLE"),
            ("quota-exceeded", "RESOURCE_EXHAUSTED"),
            ("rate-limit-store-unavailable", "UNAVAILABLE"),
            ("invalid-cursor", "INVALID_ARGUMENT"),
            ("invalid-page-size", "INVALID_ARGUMENT"),
            ("api-version-sunset", "UNIMPLEMENTED"),
            ("validation-failed", "INVALID_ARGUMENT"),
            ("unauthorized", "UNAUTHENTICATED"),
            ("not-found", "NOT_FOUND"),
            ("internal", "INTERNAL"),
        ];
        let actual: Vec<_> = ProblemKind::ALL
            .iter()
            .map(|k| (k.slug(), k.grpc_code().name()))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn codes_round_trip_through_their_wire_value() {
        for value in 0..=16 {
            let code = GrpcCode::from_value(value).expect("a code");
            assert_eq!(code.value(), value);
        }
        assert_eq!(GrpcCode::from_value(17), None);
        assert_eq!(GrpcCode::from_value(-1), None);
    }

    #[test]
    fn codes_map_to_http_statuses_like_code_proto() {
        assert_eq!(GrpcCode::Ok.http_status(), 200);
        assert_eq!(GrpcCode::Cancelled.http_status(), 499);
        assert_eq!(GrpcCode::Unavailable.http_status(), 503);
        assert_eq!(GrpcCode::Aborted.http_status(), 409);
        for value in 0..=16 {
            let code = GrpcCode::from_value(value).expect("a code");
            let header = http::HeaderValue::from(value);
            assert_eq!(GrpcCode::from_header(&header), Some(code));
        }
        assert_eq!(
            GrpcCode::from_header(&http::HeaderValue::from_static("x")),
            None
        );
    }

    #[test]
    fn statuses_outside_the_catalog_map_like_code_proto() {
        let cases = [
            (400, GrpcCode::InvalidArgument),
            (401, GrpcCode::Unauthenticated),
            (403, GrpcCode::PermissionDenied),
            (404, GrpcCode::NotFound),
            (405, GrpcCode::FailedPrecondition),
            (409, GrpcCode::Aborted),
            (429, GrpcCode::ResourceExhausted),
            (500, GrpcCode::Internal),
            (501, GrpcCode::Unimplemented),
            (503, GrpcCode::Unavailable),
            (504, GrpcCode::DeadlineExceeded),
        ];
        for (status, code) in cases {
            let status = StatusCode::from_u16(status).expect("a status");
            assert_eq!(GrpcCode::from_http_status(status), code, "{status}");
        }
    }
}
