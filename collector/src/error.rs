//! The collector's error answers: `{"error": {"code": "...", "message": "..."}}`,
//! the same body as the analytics API's.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// No key, a malformed header, or a key nobody created.
    #[error("{0}")]
    Unauthorized(String),
    /// A key that was revoked.
    #[error("{0}")]
    Forbidden(String),
    /// A body that is not `{"events": [...]}`.
    #[error("{0}")]
    BadRequest(String),
    /// Over 1 MiB or over 500 events.
    #[error("{0}")]
    TooLarge(String),
    /// The body did not arrive within the time allowed.
    #[error("{0}")]
    Timeout(String),
    /// A path the collector does not serve.
    #[error("{0}")]
    NotFound(String),
    /// A method the path does not take.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A `Content-Encoding` other than gzip.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// The key's rate limit: retry after this long.
    #[error("rate limit exceeded; retry after {} ms", .0.as_millis())]
    RateLimited(Duration),
    /// Kafka (or the key table) cannot answer: nothing was accepted.
    #[error("{0}")]
    Unavailable(String),
}

impl CollectError {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
            }
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for CollectError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = Json(json!({"error": {"code": code, "message": self.to_string()}}));
        let mut response = (status, body).into_response();
        let retry_after = match &self {
            Self::RateLimited(wait) => Some(wait.as_millis().div_ceil(1000).max(1)),
            Self::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            if let Ok(value) = seconds.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
