//! `application/problem+json`: writing, and tolerant reading as RFC 9457 §3.1 asks.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::StatusCode;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::error::{ParseError, ParseErrorKind};
use crate::problem::Problem;
use crate::uri_ref::UriRef;

/// The media type of a problem details JSON document.
pub const APPLICATION_PROBLEM_JSON: &str = "application/problem+json";

impl Problem {
    /// Serializes the problem as `application/problem+json`, standard members first
    /// (`type`, `title`, `status`, `detail`, `instance`), then extensions in order; `type` is
    /// omitted when it is `about:blank`.
    pub fn to_json_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.estimated_json_len());
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            // Unreachable with the types this crate holds (strings, a status code and JSON
            // values, which serde_json always knows how to write); a minimal document keeps
            // the response honest rather than panicking if that ever changes.
            Err(_) => format!(r#"{{"status":{}}}"#, self.status.as_u16()).into_bytes(),
        }
    }

    /// [`to_json_vec`](Self::to_json_vec) as a `String`.
    pub fn to_json_string(&self) -> String {
        String::from_utf8(self.to_json_vec()).unwrap_or_default()
    }

    /// [`to_json_vec`](Self::to_json_vec) as `Bytes`.
    pub fn to_json_bytes(&self) -> Bytes {
        Bytes::from(self.to_json_vec())
    }

    /// About the size of the document, so that writing it allocates once: the members' text
    /// plus their names and punctuation (escapes and numbers may take a few bytes more).
    fn estimated_json_len(&self) -> usize {
        const MEMBER: usize = 12;
        let text = |s: Option<&str>| s.map_or(0, |s| s.len() + MEMBER);
        let extensions: usize = self
            .extensions
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(s) => s.len(),
                    _ => 32,
                };
                name.len() + value + MEMBER
            })
            .sum();
        16 + text(Some(self.problem_type.as_str()))
            + text(self.title.as_deref())
            + text(self.detail.as_deref())
            + text(self.instance.as_ref().map(UriRef::as_str))
            + extensions
    }

    /// Reads a problem details document.
    ///
    /// Follows RFC 9457 §3.1: a standard member of the wrong type (say `"status": "404"`, a
    /// `status` outside 100..=599, or a `type` that is not a URI reference) is ignored as if it
    /// were absent; unknown members are kept as extensions, in document order. This never
    /// panics, whatever the input.
    ///
    /// A [`Problem`] always has a status, so this is the one member a document must have
    /// here; a client holding the HTTP response should call
    /// [`from_json_with_status`](Self::from_json_with_status), which falls back to the
    /// response's status as RFC 9457 §3.1.2 intends.
    ///
    /// ```
    /// use tower_problem_details::Problem;
    ///
    /// let p = Problem::from_json(br#"{"status": 404, "title": 5, "balance": 30}"#)?;
    /// assert_eq!(p.status(), 404);
    /// assert_eq!(p.title(), None); // wrong type: ignored
    /// assert_eq!(p.extension("balance"), Some(&30.into()));
    /// # Ok::<(), tower_problem_details::ParseError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails when the body is not JSON, not an object, or has no usable `status`; use
    /// [`from_json_with_status`](Self::from_json_with_status) to fall back to the status of
    /// the HTTP response that carried it.
    pub fn from_json(body: &[u8]) -> Result<Self, ParseError> {
        parse(body)?
            .into_problem(None)
            .ok_or_else(|| ParseError::new(ParseErrorKind::MissingStatus, None))
    }

    /// Reads a problem details document received with the HTTP status `response_status`.
    ///
    /// The `status` member is advisory (RFC 9457 §3.1.2): it is used when present and valid,
    /// else `response_status` is.
    ///
    /// # Errors
    ///
    /// Fails when the body is not JSON or not an object.
    pub fn from_json_with_status(
        body: &[u8],
        response_status: StatusCode,
    ) -> Result<Self, ParseError> {
        Ok(parse(body)?
            .into_problem(Some(response_status))
            .unwrap_or_else(|| Problem::new(response_status)))
    }
}

fn parse(body: &[u8]) -> Result<Members, ParseError> {
    serde_json::from_slice::<Members>(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data => ParseErrorKind::NotAnObject,
            _ => ParseErrorKind::InvalidJson,
        };
        ParseError::new(kind, Some(e))
    })
}

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let blank = self.problem_type.is_about_blank();
        let len = usize::from(!blank)
            + usize::from(self.title.is_some())
            + 1
            + usize::from(self.detail.is_some())
            + usize::from(self.instance.is_some())
            + self.extensions.len();
        let mut map = serializer.serialize_map(Some(len))?;
        if !blank {
            map.serialize_entry("type", self.problem_type.as_str())?;
        }
        if let Some(title) = &self.title {
            map.serialize_entry("title", title)?;
        }
        map.serialize_entry("status", &self.status.as_u16())?;
        if let Some(detail) = &self.detail {
            map.serialize_entry("detail", detail)?;
        }
        if let Some(instance) = &self.instance {
            map.serialize_entry("instance", instance.as_str())?;
        }
        for (name, value) in &self.extensions {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Deserializes with the same tolerance as [`Problem::from_json`]; a document without a usable
/// `status` is an error.
impl<'de> Deserialize<'de> for Problem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Members::deserialize(deserializer)?
            .into_problem(None)
            .ok_or_else(|| de::Error::custom("problem details object has no usable status"))
    }
}

/// The members of a problem details object, each kept only if it has the right type.
struct Members {
    status: Option<StatusCode>,
    problem: Problem,
}

impl Members {
    fn into_problem(self, fallback_status: Option<StatusCode>) -> Option<Problem> {
        let mut problem = self.problem;
        problem.status = self.status.or(fallback_status)?;
        Some(problem)
    }

    fn take(&mut self, name: String, value: Value) {
        let problem = &mut self.problem;
        match name.as_str() {
            "type" => {
                if let Some(uri) = as_uri_ref(value) {
                    problem.problem_type = uri;
                }
            }
            "title" => {
                if let Value::String(s) = value {
                    problem.title = Some(Cow::Owned(s));
                }
            }
            "status" => {
                // RFC 9457's schema bounds the member to 100..=599; anything else is as
                // unusable as a wrong type.
                let status = value
                    .as_u64()
                    .filter(|n| (100..=599).contains(n))
                    .and_then(|n| u16::try_from(n).ok())
                    .and_then(|n| StatusCode::from_u16(n).ok());
                if status.is_some() {
                    self.status = status;
                }
            }
            "detail" => {
                if let Value::String(s) = value {
                    problem.detail = Some(Cow::Owned(s));
                }
            }
            "instance" => {
                if let Some(uri) = as_uri_ref(value) {
                    problem.instance = Some(uri);
                }
            }
            _ => {
                problem.insert_extension_unchecked(Cow::Owned(name), value);
            }
        }
    }
}

fn as_uri_ref(value: Value) -> Option<UriRef> {
    match value {
        Value::String(s) => UriRef::try_from(s).ok(),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a problem details JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Members {
                    status: None,
                    // The status is a placeholder until `into_problem`; a document that
                    // does not set a title gets none (no reason phrase is invented).
                    problem: Problem::new(StatusCode::INTERNAL_SERVER_ERROR).without_title(),
                };
                while let Some(name) = map.next_key::<String>()? {
                    let value = map.next_value::<Value>()?;
                    members.take(name, value);
                }
                Ok(members)
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_value(v: &Value) -> Result<Problem, ParseError> {
        Problem::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn status_only_problem_matches_the_rfc_example() {
        let p = Problem::new(StatusCode::NOT_FOUND);
        assert_eq!(p.to_json_string(), r#"{"title":"Not Found","status":404}"#);
    }

    #[test]
    fn wrong_typed_standard_members_are_ignored_and_the_rest_kept() -> Result<(), ParseError> {
        let p = parse_value(&json!({
            "type": 7,
            "title": 5,
            "status": 409,
            "detail": ["not", "a", "string"],
            "instance": "has spaces so not a uri",
            "balance": 30,
        }))?;
        assert!(p.problem_type().is_about_blank());
        assert_eq!(p.title(), None);
        assert_eq!(p.status(), StatusCode::CONFLICT);
        assert_eq!(p.detail(), None);
        assert_eq!(p.instance(), None);
        assert_eq!(p.extension("balance"), Some(&json!(30)));
        Ok(())
    }

    #[test]
    fn a_string_status_is_ignored_not_fatal() {
        let err = parse_value(&json!({"status": "404", "title": "x"})).expect_err("no status");
        assert_eq!(err.kind(), ParseErrorKind::MissingStatus);
        let p =
            Problem::from_json_with_status(br#"{"status":"404","title":"x"}"#, StatusCode::GONE)
                .expect("object");
        assert_eq!(p.status(), StatusCode::GONE);
        assert_eq!(p.title(), Some("x"));
    }

    #[test]
    fn out_of_range_status_is_ignored() {
        for status in [
            json!(99),
            json!(1000),
            json!(-404),
            json!(404.5),
            json!(65940),
        ] {
            let p = Problem::from_json_with_status(
                json!({ "status": status }).to_string().as_bytes(),
                StatusCode::BAD_REQUEST,
            )
            .expect("object");
            assert_eq!(p.status(), StatusCode::BAD_REQUEST, "{status}");
        }
    }

    #[test]
    fn fragments_and_urns_survive_a_round_trip() -> Result<(), ParseError> {
        let p = parse_value(&json!({
            "type": "/problems/connection-error#read-timeout",
            "instance": "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "status": 504,
        }))?;
        assert_eq!(
            p.problem_type().as_str(),
            "/problems/connection-error#read-timeout"
        );
        assert_eq!(
            p.instance().map(UriRef::as_str),
            Some("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
        );
        Ok(())
    }

    #[test]
    fn unknown_members_keep_document_order() -> Result<(), ParseError> {
        let p = Problem::from_json(br#"{"zz":1,"status":400,"aa":2,"mm":3}"#)?;
        let names: Vec<_> = p.extensions().map(|(n, _)| n).collect();
        assert_eq!(names, ["zz", "aa", "mm"]);
        assert_eq!(p.to_json_string(), r#"{"status":400,"zz":1,"aa":2,"mm":3}"#);
        Ok(())
    }

    #[test]
    fn explicit_about_blank_is_omitted_on_the_wire() -> Result<(), ParseError> {
        let p = Problem::from_json(br#"{"type":"about:blank","status":404,"title":"Not Found"}"#)?;
        assert_eq!(p, Problem::new(StatusCode::NOT_FOUND));
        assert_eq!(p.to_json_string(), r#"{"title":"Not Found","status":404}"#);
        Ok(())
    }

    #[test]
    fn non_objects_and_garbage_are_errors_not_panics() {
        let cases: [(&[u8], ParseErrorKind); 5] = [
            (b"", ParseErrorKind::InvalidJson),
            (b"{", ParseErrorKind::InvalidJson),
            (b"[1,2]", ParseErrorKind::NotAnObject),
            (b"\"status\"", ParseErrorKind::NotAnObject),
            (b"null", ParseErrorKind::NotAnObject),
        ];
        for (input, kind) in cases {
            let err = Problem::from_json(input).expect_err("must fail");
            assert_eq!(err.kind(), kind, "{:?}", String::from_utf8_lossy(input));
        }
        let deep = format!(
            r#"{{"status":400,"a":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            Problem::from_json(deep.as_bytes())
                .map_err(|e| e.kind())
                .err(),
            Some(ParseErrorKind::InvalidJson)
        );
    }

    #[test]
    fn serde_deserialize_agrees_with_from_json() {
        let p: Problem = serde_json::from_str(r#"{"status":422,"title":1,"x":true}"#).expect("ok");
        assert_eq!(p.title(), None);
        assert_eq!(p.extension("x"), Some(&json!(true)));
        assert!(serde_json::from_str::<Problem>(r#"{"title":"no status"}"#).is_err());
    }
}
