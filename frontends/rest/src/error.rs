//! The one place that decides HTTP statuses: every handler fails with an [`ApiError`], and
//! engine errors become one through [`status_of`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nereid_engine::EngineError;

/// An error in KServe's shape, `{"error": "..."}`: for a [`crate::Door`] whose clients
/// read errors as the KServe routes word them.
pub fn kserve_shape(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}

/// Status for a client that went away (nginx's "client closed request"); nobody reads it,
/// but access logs and metrics do.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Seconds a client is asked to wait (`Retry-After`) after a 503: the server is
/// overloaded, draining or has the model not ready, none of which lasts long on one server.
pub const RETRY_AFTER_SECS: u32 = 1;

/// An error answer: a status and a message, sent as `{"error": "<message>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or does not fit the model.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 413: the body is over `--http-max-input-size`, which is `limit`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the limit of {limit} bytes (--http-max-input-size)"),
        )
    }

    /// 501: a feature this server does not have.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message)
    }

    /// The `{"error": ...}` body.
    pub fn body(&self) -> String {
        error_json(&self.message)
    }
}

/// The HTTP status of each engine error kind (protocol.md's status table).
pub fn status_of(error: &EngineError) -> StatusCode {
    match error {
        EngineError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::Unavailable(_) | EngineError::ResourceExhausted(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        EngineError::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
        EngineError::Cancelled(_) => {
            StatusCode::from_u16(CLIENT_CLOSED_REQUEST).expect("499 is a valid status code")
        }
        EngineError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
        EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        Self::new(status_of(&error), error.to_string())
    }
}

/// `{"error": message}` as JSON text (also the payload of an error event in SSE streams).
pub fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "HTTP request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), error = %self.message, "HTTP request rejected");
        }
        let mut response = (self.status, self.body()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_has_its_status() {
        let cases = [
            (EngineError::InvalidArgument("x".into()), 400),
            (EngineError::NotFound("x".into()), 404),
            (EngineError::Unavailable("x".into()), 503),
            (EngineError::ResourceExhausted("x".into()), 503),
            (EngineError::Unimplemented("x".into()), 501),
            (EngineError::Cancelled("x".into()), 499),
            (EngineError::DeadlineExceeded("x".into()), 504),
            (EngineError::Internal("x".into()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status.as_u16(), status);
        }
        assert_eq!(
            ApiError::bad_request("a \"b\"").body(),
            r#"{"error":"a \"b\""}"#
        );
    }
}
