//! Rendering a problem as an HTTP response.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};

use crate::json::APPLICATION_PROBLEM_JSON;
use crate::problem::Problem;

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

impl Problem {
    /// Renders the problem as a response with its status, `Content-Type:
    /// application/problem+json` and `Cache-Control: no-store`, for any body type that can
    /// be made from `Bytes` (`Full<Bytes>`, `axum::body::Body`, …).
    ///
    /// ```
    /// use http::{Response, StatusCode};
    /// use http_body_util::Full;
    /// use bytes::Bytes;
    /// use tower_problem_details::Problem;
    ///
    /// let response: Response<Full<Bytes>> = Problem::new(StatusCode::NOT_FOUND).into_response();
    /// assert_eq!(response.status(), StatusCode::NOT_FOUND);
    /// assert_eq!(response.headers()["content-type"], "application/problem+json");
    /// assert_eq!(response.headers()["cache-control"], "no-store");
    /// ```
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.to_json_bytes()));
        *response.status_mut() = self.status;
        set_problem_headers(response.headers_mut());
        response
    }
}

/// A `Retry-After` delay (RFC 9110 §10.2.3) for a wait: whole seconds, rounded up so that
/// waiting exactly that long is enough, and never 0, which clients read as "retry at once".
/// Every guardrail that asks a client to come back later formats its wait with this.
///
/// ```
/// use std::time::Duration;
/// use tower_problem_details::retry_after_seconds;
///
/// assert_eq!(retry_after_seconds(Duration::ZERO), 1);
/// assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
/// assert_eq!(retry_after_seconds(Duration::from_secs(60)), 60);
/// ```
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

/// Sets the headers every problem response carries, replacing any previous values.
pub(crate) fn set_problem_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(APPLICATION_PROBLEM_JSON),
    );
    headers.insert(CACHE_CONTROL, NO_STORE);
}

impl<B: From<Bytes>> From<Problem> for Response<B> {
    fn from(problem: Problem) -> Self {
        problem.into_response()
    }
}

/// Whether a `Content-Type` value names a problem details document (`application/problem+json`
/// or `application/problem+xml`, any parameters, any case).
pub(crate) fn is_problem_content_type(value: &HeaderValue) -> bool {
    media_type_is(value, APPLICATION_PROBLEM_JSON)
        || media_type_is(value, "application/problem+xml")
}

/// Whether a `Content-Type` value names `media_type`, ignoring parameters and case.
pub(crate) fn media_type_is(value: &HeaderValue, media_type: &str) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case(media_type)
    })
}

#[cfg(feature = "axum")]
mod axum_impl {
    use axum::response::{IntoResponse, Response};

    use crate::Problem;

    impl IntoResponse for Problem {
        fn into_response(self) -> Response {
            Problem::into_response(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_content_types_are_recognised() {
        for yes in [
            "application/problem+json",
            "Application/Problem+JSON; charset=utf-8",
            "application/problem+xml",
        ] {
            assert!(
                is_problem_content_type(&HeaderValue::from_static(yes)),
                "{yes}"
            );
        }
        for no in [
            "application/json",
            "text/plain",
            "application/problem+jsonx",
            "",
        ] {
            assert!(
                !is_problem_content_type(&HeaderValue::from_static(no)),
                "{no}"
            );
        }
    }
}
