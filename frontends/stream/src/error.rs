//! The one place that decides the status and the OpenAI error JSON of a failure:
//! `{"error": {"message", "type", "param", "code"}}`, which the `openai` SDKs turn into
//! their typed exceptions (404 -> `NotFoundError`, 400 -> `BadRequestError`, ...).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nereid_engine::EngineError;
use serde::Serialize;

/// Status for a client that went away (nginx's "client closed request"); nobody reads it,
/// but access logs do.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Seconds a client is asked to wait (`Retry-After`) after a 503: the server is
/// overloaded, draining or has the model not ready, none of which lasts long on one server.
pub const RETRY_AFTER_SECS: u32 = 1;

/// An error of an OpenAI route: an HTTP status and the error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's error `type`: `invalid_request_error` for the client's fault, `server_error`
    /// for ours.
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `unsupported_parameter`, ...).
    pub code: Option<&'static str>,
}

/// The error object inside `{"error": ...}`.
#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    /// What went wrong.
    pub message: &'a str,
    /// Error type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The field at fault.
    pub param: Option<&'a str>,
    /// Machine-readable code.
    pub code: Option<&'a str>,
}

/// The whole error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorObject<'a>,
}

impl ApiError {
    /// A 400 for a malformed or unacceptable request body.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    /// A 400 naming the field at fault.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            code: Some("invalid_value"),
            ..Self::invalid(message)
        }
    }

    /// A 400 for a field this server does not support (with a value that matters).
    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            code: Some("unsupported_parameter"),
            ..Self::invalid(message)
        }
    }

    /// A 404 for a model that is not served (or not ready).
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model '{model}' does not exist or is not ready"),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// A 500 for a failure on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The `{"error": {...}}` value (also the payload of an error event in an SSE stream).
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }
}

/// An error the HTTP layer stack produced for an OpenAI route (body over the limit, an
/// unknown Content-Encoding, a malformed upgrade), in OpenAI's shape: the `openai` SDKs
/// read the message only from there.
pub fn shape(status: StatusCode, message: String) -> Response {
    let (kind, code) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", Some("request_too_large")),
        s if s.is_server_error() => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    ApiError {
        status,
        message,
        kind,
        param: None,
        code,
    }
    .into_response()
}

/// The status, error type and code of each engine error kind (protocol.md's status table).
pub fn classify(error: &EngineError) -> (StatusCode, &'static str, Option<&'static str>) {
    let status = |code: u16| StatusCode::from_u16(code).expect("valid status code");
    match error {
        EngineError::InvalidArgument(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("invalid_value"),
        ),
        EngineError::NotFound(_) => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        EngineError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("service_unavailable"),
        ),
        EngineError::ResourceExhausted(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("server_overloaded"),
        ),
        EngineError::Unimplemented(_) => (
            StatusCode::NOT_IMPLEMENTED,
            "invalid_request_error",
            Some("unsupported"),
        ),
        EngineError::Cancelled(_) => (
            status(CLIENT_CLOSED_REQUEST),
            "invalid_request_error",
            Some("cancelled"),
        ),
        EngineError::DeadlineExceeded(_) => {
            (StatusCode::GATEWAY_TIMEOUT, "server_error", Some("timeout"))
        }
        EngineError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let (status, kind, code) = classify(&error);
        let param = matches!(error, EngineError::NotFound(_)).then(|| "model".to_string());
        Self {
            status,
            message: error.to_string(),
            kind,
            param,
            code,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "OpenAI request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), error = %self.message, "OpenAI request rejected");
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// Result of an OpenAI handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_has_its_status_and_shape() {
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
        let body = serde_json::to_value(ApiError::model_not_found("m").body()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["code"], "model_not_found");
        assert!(body["error"]["message"].as_str().unwrap().contains("'m'"));
        let body = serde_json::to_value(ApiError::internal("boom").body()).unwrap();
        assert_eq!(body["error"]["param"], serde_json::Value::Null);
    }
}
