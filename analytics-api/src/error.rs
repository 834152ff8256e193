//! The API's one error type, its status codes and the SPEC's error body:
//! `{"error": {"code": "...", "message": "..."}}`.

use activity_core::database::{ConnectError, PoolError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or one that is expired, unsigned or wrongly signed.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token asking outside its scope.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A path the API has, asked with a method it does not answer.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The database cannot answer now (down, overloaded, timed out).
    #[error("the database is unavailable; retry later")]
    /// What went wrong, for the log (the caller sees only that it did).
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `unauthorized`, `forbidden`,
    /// `bad_request`, `not_found`, `method_not_allowed`, `unavailable`,
    /// `internal`.
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Internal(detail) => tracing::error!(detail, "internal error"),
            Self::Unavailable(error) => tracing::warn!(%error, "database unavailable"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        let text = match error.as_db_error() {
            Some(db) => format!(
                "{} ({}){}",
                db.message(),
                db.code().code(),
                db.where_().map(|w| format!(" at {w}")).unwrap_or_default()
            ),
            None => error.to_string(),
        };
        Self::classify(&error, text)
    }
}

impl From<ConnectError> for ApiError {
    fn from(error: ConnectError) -> Self {
        Self::classify(error.postgres(), error.to_string())
    }
}

impl From<PoolError> for ApiError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Connect(e) => e.into(),
            PoolError::Pool(_) => Self::Unavailable(error.to_string()),
        }
    }
}

impl ApiError {
    /// A database error, by its SQLSTATE, told in the log as `text`.
    fn classify(error: &tokio_postgres::Error, text: String) -> Self {
        let class = error.code().map(|c| c.code().get(..2).unwrap_or(""));
        match class {
            // Connection, resources, operator intervention (statement timeout
            // is 57014), transaction conflicts, and a database that refuses
            // the API's login or does not exist (a deployment's fault, not
            // the request's): the caller may retry.
            None | Some("08" | "53" | "57" | "40" | "28" | "3D") => Self::Unavailable(text),
            _ => Self::Internal(text),
        }
    }
}
