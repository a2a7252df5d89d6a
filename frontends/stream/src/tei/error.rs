//! The one place that decides the status and body of a failed TEI route: TEI's
//! `{"error": "...", "error_type": "Validation"}` with TEI's status for each type
//! (Validation 413, Tokenizer 422, Empty 400, Backend 424, Overloaded 429, Unhealthy 503),
//! which TEI's clients and `huggingface_hub` read.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nereid_engine::EngineError;
use serde::Serialize;

/// TEI's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum ErrorType {
    /// The request breaks a limit or a rule (413).
    Validation,
    /// The body could not be read as the route's request (422).
    Tokenizer,
    /// A list that must not be empty was (400).
    Empty,
    /// The model failed or cannot serve the route (424).
    Backend,
    /// The server is overloaded (429).
    Overloaded,
    /// The server or the model is not ready (503).
    Unhealthy,
}

impl ErrorType {
    fn status(self) -> StatusCode {
        match self {
            Self::Validation => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Tokenizer => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Empty => StatusCode::BAD_REQUEST,
            Self::Backend => StatusCode::FAILED_DEPENDENCY,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A failed TEI request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TeiError {
    /// The HTTP status (TEI's for the type, or 404 for a model that is not served).
    status: StatusCode,
    error: String,
    error_type: ErrorType,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_type: ErrorType,
}

impl TeiError {
    /// An error of `error_type` with TEI's status for it.
    pub(crate) fn new(error_type: ErrorType, error: impl Into<String>) -> Self {
        Self {
            status: error_type.status(),
            error: error.into(),
            error_type,
        }
    }

    /// A request that breaks a rule: 413 Validation.
    pub(crate) fn validation(error: impl Into<String>) -> Self {
        Self::new(ErrorType::Validation, error)
    }

    /// An empty list where one is needed: 400 Empty, naming the field.
    pub(crate) fn empty(field: &str) -> Self {
        Self::new(ErrorType::Empty, format!("`{field}` cannot be empty"))
    }

    /// A body that is not the route's request: 422, naming the field when serde knows it.
    pub(crate) fn unreadable(error: impl Into<String>) -> Self {
        Self::new(ErrorType::Tokenizer, error)
    }

    /// A model that cannot serve the route: 424 Backend.
    pub(crate) fn backend(error: impl Into<String>) -> Self {
        Self::new(ErrorType::Backend, error)
    }

    /// A route that could serve several models and was told none: 400.
    pub(crate) fn ambiguous(error: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            ..Self::validation(error)
        }
    }

    /// A model name no ready model has: 404.
    pub(crate) fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            ..Self::validation(format!("model '{model}' does not exist or is not ready"))
        }
    }

    /// The HTTP status it answers with.
    pub(crate) fn http_status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong.
    pub(crate) fn message(&self) -> &str {
        &self.error
    }
}

impl From<EngineError> for TeiError {
    fn from(error: EngineError) -> Self {
        let error_type = match &error {
            EngineError::InvalidArgument(_) | EngineError::Unimplemented(_) => {
                ErrorType::Validation
            }
            EngineError::NotFound(_) | EngineError::Unavailable(_) => ErrorType::Unhealthy,
            EngineError::ResourceExhausted(_) => ErrorType::Overloaded,
            EngineError::Cancelled(_)
            | EngineError::DeadlineExceeded(_)
            | EngineError::Internal(_) => ErrorType::Backend,
        };
        let message = error.to_string();
        match error {
            EngineError::NotFound(_) => Self {
                status: StatusCode::NOT_FOUND,
                ..Self::new(error_type, message)
            },
            EngineError::DeadlineExceeded(_) => Self {
                status: StatusCode::GATEWAY_TIMEOUT,
                ..Self::new(error_type, message)
            },
            _ => Self::new(error_type, message),
        }
    }
}

impl IntoResponse for TeiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() || self.status == StatusCode::FAILED_DEPENDENCY {
            tracing::warn!(status = self.status.as_u16(), error = %self.error, "TEI request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), error = %self.error, "TEI request rejected");
        }
        let body = Body {
            error: &self.error,
            error_type: self.error_type,
        };
        let mut response = (self.status, Json(body)).into_response();
        if matches!(
            self.error_type,
            ErrorType::Overloaded | ErrorType::Unhealthy
        ) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(crate::error::RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// Result of a TEI handler.
pub(crate) type TeiResult<T> = Result<T, TeiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_take_tei_statuses_and_types() {
        for (error, status, kind) in [
            (
                EngineError::InvalidArgument("x".into()),
                413,
                ErrorType::Validation,
            ),
            (
                EngineError::ResourceExhausted("x".into()),
                429,
                ErrorType::Overloaded,
            ),
            (
                EngineError::Unavailable("x".into()),
                503,
                ErrorType::Unhealthy,
            ),
            (EngineError::NotFound("x".into()), 404, ErrorType::Unhealthy),
            (EngineError::Internal("x".into()), 424, ErrorType::Backend),
            (
                EngineError::DeadlineExceeded("x".into()),
                504,
                ErrorType::Backend,
            ),
        ] {
            let e = TeiError::from(error);
            assert_eq!((e.status.as_u16(), e.error_type), (status, kind));
        }
        assert_eq!(TeiError::empty("texts").status.as_u16(), 400);
        assert_eq!(TeiError::empty("texts").error, "`texts` cannot be empty");
        let body = serde_json::to_value(Body {
            error: "e",
            error_type: ErrorType::Validation,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "e", "error_type": "Validation"})
        );
    }
}
