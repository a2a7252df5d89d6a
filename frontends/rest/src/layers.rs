//! The one layer stack every HTTP route runs under, whichever door it belongs to (KServe,
//! OpenAI, WebSocket): the body limit, request decompression, response compression, and
//! the wording of errors the stack itself produces. Routes are merged first, then layered
//! once, so no door escapes a limit or gets a differently shaped error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::error::ApiError;
use crate::RestArgs;

/// How a door words an error: its status and message, as that door's clients expect them.
pub type ErrorShape = fn(StatusCode, String) -> Response;

/// Routes whose errors are worded their own way: every path under `prefix`.
#[derive(Debug, Clone, Copy)]
pub struct Door {
    /// Path prefix, e.g. `/v1/`.
    pub prefix: &'static str,
    /// How the door words an error.
    pub shape: ErrorShape,
}

/// How much of a plain-text error body is kept as the message.
const MAX_ERROR_TEXT: usize = 4096;

#[derive(Clone)]
struct Shaping {
    doors: Arc<[Door]>,
    limit: usize,
}

/// Puts the one layer stack over `routes`: bodies over `--http-max-input-size` (after
/// decompression, so a small gzip bomb is refused too) are 413, gzip/deflate bodies are
/// decompressed and responses compressed when the client accepts it, and any error the
/// stack or an extractor answers in plain text is reworded as JSON, in the shape of the
/// [`Door`] whose prefix the path has, else KServe's `{"error": "..."}`.
pub fn app(routes: Router, args: &RestArgs, doors: &[Door]) -> Router {
    let shaping = Shaping {
        doors: doors.into(),
        limit: args.http_max_input_size,
    };
    routes
        // The limit below is the only one: axum's own 2 MiB default for extractors is off.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(args.http_max_input_size))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::from_fn_with_state(shaping, shape_errors))
        .layer(CompressionLayer::new())
}

async fn shape_errors(State(shaping): State<Shaping>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let door = shaping
        .doors
        .iter()
        .find(|d| path.starts_with(d.prefix))
        .copied();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let accept_encoding = response.headers().get(header::ACCEPT_ENCODING).cloned();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(shaping.limit).message,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "unsupported Content-Encoding; send gzip, deflate or an uncompressed body".into()
        }
        _ => text_of(response.into_body(), status).await,
    };
    let mut shaped = match door {
        Some(door) => (door.shape)(status, message),
        None => ApiError::new(status, message).into_response(),
    };
    if let Some(accepted) = accept_encoding {
        shaped
            .headers_mut()
            .insert(header::ACCEPT_ENCODING, accepted);
    }
    shaped
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The text of a plain error body, or the status's reason when it has none.
async fn text_of(body: Body, status: StatusCode) -> String {
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    }
}
