//! The Trailers-Only rendering of a rejection, and the `google.rpc` messages it carries.
//!
//! Only the five messages a rejection needs are defined here (field numbers from
//! `google/rpc/status.proto`, `google/rpc/error_details.proto`, `google/protobuf/any.proto`
//! and `google/protobuf/duration.proto`), so the crate needs `prost` but not tonic.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use prost::Message;
use serde_json::Value;

use super::{GRPC_MESSAGE, GRPC_RETRY_PUSHBACK, GRPC_STATUS, GRPC_STATUS_DETAILS};
use crate::rejection::{Rejection, append};

/// What `grpc-message` leaves unencoded: printable ASCII but `%` (gRPC's PROTOCOL-HTTP2.md:
/// `%x20-%x24 / %x26-%x7E`); everything else, non-ASCII included, is percent-encoded.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(btree_map = "string, string", tag = "3")]
    metadata: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[derive(Clone, PartialEq, Message)]
struct QuotaFailure {
    #[prost(message, repeated, tag = "1")]
    violations: Vec<Violation>,
}

#[derive(Clone, PartialEq, Message)]
struct Violation {
    #[prost(string, tag = "1")]
    subject: String,
    #[prost(string, tag = "2")]
    description: String,
}

fn any(name: &str, message: &impl Message) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{name}"),
        value: message.encode_to_vec(),
    }
}

impl Rejection {
    /// The `grpc-message`: the problem's `detail`, or its title, or the code's name.
    pub fn grpc_message(&self) -> &str {
        let problem = self.problem();
        problem
            .detail()
            .or(problem.title())
            .unwrap_or(self.grpc_code().name())
    }

    /// The `ErrorInfo.reason`: the catalog slug in upper snake case (`QUOTA_EXCEEDED`), or for a
    /// problem outside the catalog its status's reason phrase (`METHOD_NOT_ALLOWED`).
    pub fn grpc_reason(&self) -> String {
        let words = match self.kind() {
            Some(kind) => kind.slug(),
            None => self
                .problem()
                .status()
                .canonical_reason()
                .unwrap_or(self.grpc_code().name()),
        };
        words
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// The encoded `google.rpc.Status` of `grpc-status-details-bin`: code, message, an
    /// `ErrorInfo` (reason, `domain`, the problem's extension members as metadata, strings
    /// as they are and other values as JSON), a `RetryInfo` when there is a retry delay and a
    /// `QuotaFailure` when quotas were violated.
    ///
    /// A tonic handler that meets a guardrail's rejection itself (a bad `page_token`, say)
    /// answers with `tonic::Status::with_details(code, message, details)` from
    /// [`grpc_code`](Self::grpc_code), [`grpc_message`](Self::grpc_message) and this.
    pub fn grpc_status_details(&self, domain: &str) -> Bytes {
        let metadata = self
            .problem()
            .extensions()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name.to_owned(), value)
            })
            .collect();
        let mut details = vec![any(
            "google.rpc.ErrorInfo",
            &ErrorInfo {
                reason: self.grpc_reason(),
                domain: domain.to_owned(),
                metadata,
            },
        )];
        if let Some(wait) = self.retry_after() {
            details.push(any(
                "google.rpc.RetryInfo",
                &RetryInfo {
                    retry_delay: Some(proto_duration(wait)),
                },
            ));
        }
        if !self.quota_violations().is_empty() {
            let violations = self
                .quota_violations()
                .iter()
                .map(|v| Violation {
                    subject: v.subject.clone().into_owned(),
                    description: v.description.clone().into_owned(),
                })
                .collect();
            details.push(any("google.rpc.QuotaFailure", &QuotaFailure { violations }));
        }
        let status = Status {
            code: self.grpc_code().value(),
            message: self.grpc_message().to_owned(),
            details,
        };
        Bytes::from(status.encode_to_vec())
    }

    /// The gRPC rendering, a Trailers-Only answer: HTTP 200 with an empty body and
    /// `content-type: application/grpc`, `cache-control: no-store`, `grpc-status`, the
    /// percent-encoded `grpc-message`,
    /// `grpc-status-details-bin` (see [`grpc_status_details`](Self::grpc_status_details)),
    /// `grpc-retry-pushback-ms` when there is a retry delay, then the rejection's headers.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_problem_details::{ProblemCatalog, ProblemKind};
    ///
    /// let response = ProblemCatalog::default()
    ///     .rejection(ProblemKind::QuotaExceeded)
    ///     .with_detail("Quota used up; retry in 2 s.")
    ///     .with_retry_after(Duration::from_millis(1500))
    ///     .into_grpc_response("api.example.com");
    /// assert_eq!(response.status(), 200);
    /// assert_eq!(response.headers()["content-type"], "application/grpc");
    /// assert_eq!(response.headers()["grpc-status"], "8");
    /// assert_eq!(response.headers()["grpc-message"], "Quota used up; retry in 2 s.");
    /// assert_eq!(response.headers()["grpc-retry-pushback-ms"], "1500");
    /// assert_eq!(response.headers()["cache-control"], "no-store");
    /// assert!(response.body().is_empty());
    /// ```
    pub fn into_grpc_response(self, domain: &str) -> Response<Bytes> {
        let details = STANDARD_NO_PAD.encode(self.grpc_status_details(domain));
        let message = utf8_percent_encode(self.grpc_message(), MESSAGE_ESCAPES).to_string();
        let code = self.grpc_code();
        let pushback = self.retry_after().map(pushback_ms);
        let extra = self.headers;

        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        // A refusal is an HTTP 200 here: no cache may keep it for the URL (a client that
        // merely claims to speak gRPC must not poison a shared cache).
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(GRPC_STATUS, HeaderValue::from(code.value()));
        // Percent-encoding leaves visible ASCII only; base64 is visible ASCII.
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert(GRPC_MESSAGE, value);
        }
        if let Ok(value) = HeaderValue::from_str(&details) {
            headers.insert(GRPC_STATUS_DETAILS, value);
        }
        if let Some(ms) = pushback {
            headers.insert(GRPC_RETRY_PUSHBACK, HeaderValue::from(ms));
        }
        append(headers, extra);
        response
    }
}

fn proto_duration(wait: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        // Below 10^9, so it fits.
        nanos: i32::try_from(wait.subsec_nanos()).unwrap_or(0),
    }
}

/// Milliseconds, rounded up, as the ASCII signed 32-bit integer A6 asks for.
fn pushback_ms(wait: Duration) -> i32 {
    let ms = wait.as_nanos().div_ceil(1_000_000);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Problem, ProblemCatalog, ProblemKind};

    fn decode(response: &Response<Bytes>) -> Status {
        let text = response.headers()[GRPC_STATUS_DETAILS].as_bytes();
        let bytes = STANDARD_NO_PAD.decode(text).expect("base64");
        Status::decode(&*bytes).expect("a google.rpc.Status")
    }

    #[test]
    fn the_status_carries_error_info_retry_info_and_quota_failure() {
        let mut rejection = ProblemCatalog::default()
            .rejection(ProblemKind::QuotaExceeded)
            .with_detail("used up")
            .with_retry_after(Duration::from_millis(2500))
            .with_quota_violation("per-tenant", "60 requests per minute");
        let _ = rejection
            .problem_mut()
            .insert_extension("violated-policies", vec!["per-tenant"]);
        let response = rejection.into_grpc_response("orders.example.com");
        let status = decode(&response);
        assert_eq!(status.code, 8);
        assert_eq!(status.message, "used up");
        let types: Vec<_> = status.details.iter().map(|d| d.type_url.as_str()).collect();
        assert_eq!(
            types,
            [
                "type.googleapis.com/google.rpc.ErrorInfo",
                "type.googleapis.com/google.rpc.RetryInfo",
                "type.googleapis.com/google.rpc.QuotaFailure",
            ]
        );
        let info = ErrorInfo::decode(&*status.details[0].value).expect("ErrorInfo");
        assert_eq!(info.reason, "QUOTA_EXCEEDED");
        assert_eq!(info.domain, "orders.example.com");
        assert_eq!(info.metadata["violated-policies"], r#"["per-tenant"]"#);
        let retry = RetryInfo::decode(&*status.details[1].value).expect("RetryInfo");
        let delay = retry.retry_delay.expect("a delay");
        assert_eq!((delay.seconds, delay.nanos), (2, 500_000_000));
        let quota = QuotaFailure::decode(&*status.details[2].value).expect("QuotaFailure");
        assert_eq!(quota.violations[0].subject, "per-tenant");
        assert_eq!(response.headers()[GRPC_RETRY_PUSHBACK], "2500");
    }

    #[test]
    fn messages_are_percent_encoded() {
        let response = Rejection::new(Problem::new(http::StatusCode::BAD_REQUEST))
            .with_detail("100% sûr\nnext")
            .into_grpc_response("d");
        assert_eq!(response.headers()[GRPC_MESSAGE], "100%25 s%C3%BBr%0Anext");
        assert_eq!(response.headers()[GRPC_STATUS], "3");
        let status = decode(&response);
        assert_eq!(status.message, "100% sûr\nnext");
        let info = ErrorInfo::decode(&*status.details[0].value).expect("ErrorInfo");
        assert_eq!(info.reason, "BAD_REQUEST");
        assert_eq!(status.details.len(), 1);
    }

    #[test]
    fn pushback_rounds_up_to_the_millisecond() {
        assert_eq!(pushback_ms(Duration::from_micros(1500)), 2);
        assert_eq!(pushback_ms(Duration::from_millis(7)), 7);
        assert_eq!(pushback_ms(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
