//! The one error type of the engine. Frontends map its variants to gRPC codes and HTTP
//! statuses in one place each; nothing else decides a wire status.

/// Everything that can go wrong between a frontend handing over a request and a response.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The request itself is wrong: unknown input, dtype, shape, batch size, byte size.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such model or version.
    #[error("{0}")]
    NotFound(String),
    /// The model exists but cannot take the request now: not ready, queue full, queue
    /// timeout, server draining.
    #[error("{0}")]
    Unavailable(String),
    /// The operation is not supported for this model (unary infer on a decoupled model).
    #[error("{0}")]
    Unimplemented(String),
    /// The server as a whole holds as many requests as it may (`--max-inflight`): a
    /// client should retry later, ideally elsewhere.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The client went away before the response was ready.
    #[error("{0}")]
    Cancelled(String),
    /// The client's deadline passed before the request could be computed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The model failed (an error or a panic in a backend).
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// Shorthand for [`EngineError::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// Shorthand for [`EngineError::Internal`].
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into())
    }

    /// Shorthand for [`EngineError::Unavailable`].
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::Unavailable(msg.into())
    }

    /// A model the server does not know, in Triton's words (clients match them).
    pub fn unknown_model(name: &str) -> Self {
        Self::NotFound(format!("Request for unknown model: '{name}' is not found"))
    }

    /// A version the server does not have of a model it knows, in Triton's words.
    pub fn unknown_version(name: &str, version: i64) -> Self {
        Self::NotFound(format!(
            "Request for unknown model: '{name}' version {version} is not found"
        ))
    }

    /// The same error, its message prefixed with `context` (`"CONTEXT: MESSAGE"`).
    pub fn in_context(self, context: &str) -> Self {
        let wrap = |msg: String| format!("{context}: {msg}");
        match self {
            Self::InvalidArgument(m) => Self::InvalidArgument(wrap(m)),
            Self::NotFound(m) => Self::NotFound(wrap(m)),
            Self::Unavailable(m) => Self::Unavailable(wrap(m)),
            Self::Unimplemented(m) => Self::Unimplemented(wrap(m)),
            Self::ResourceExhausted(m) => Self::ResourceExhausted(wrap(m)),
            Self::Cancelled(m) => Self::Cancelled(wrap(m)),
            Self::DeadlineExceeded(m) => Self::DeadlineExceeded(wrap(m)),
            Self::Internal(m) => Self::Internal(wrap(m)),
        }
    }

    /// The failure reason label Triton uses on `nv_inference_request_failure`.
    pub fn failure_reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) | Self::NotFound(_) | Self::Unimplemented(_) => "REJECTED",
            Self::Unavailable(_) | Self::ResourceExhausted(_) => "REJECTED",
            Self::Cancelled(_) => "CANCELED",
            Self::DeadlineExceeded(_) => "CANCELED",
            Self::Internal(_) => "BACKEND",
        }
    }
}

/// Result with the engine's error.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
