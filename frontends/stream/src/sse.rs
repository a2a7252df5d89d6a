//! Server-sent events for the OpenAI streaming routes: `data: {json}` events ending with
//! `data: [DONE]`.
//!
//! The event stream handed to [`respond`] owns the engine streams it reads: axum drops the
//! response body, and with it the stream, as soon as the client goes away, which cancels
//! the sequences in the engine. The stream is pulled only as fast as the socket takes the
//! bytes, so a slow reader fills its own bounded engine buffer and stalls only its own
//! sequence.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::error::ApiError;

/// How often an idle stream sends a comment, so proxies keep the connection and a client
/// that left is noticed (the write fails) even while a sequence waits in the queue.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The SSE response of a stream of events.
pub(crate) fn respond<S>(events: S) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let mut response = Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // nginx buffers responses by default, which would hold tokens back.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

/// A `data: {json}` event.
pub(crate) fn json<T: Serialize>(value: &T) -> Event {
    match serde_json::to_string(value) {
        Ok(text) => Event::default().data(text),
        Err(e) => error(&ApiError::internal(format!("cannot encode a chunk: {e}"))),
    }
}

/// The error event sent when a stream fails after it started: OpenAI's error object, which
/// the `openai` SDKs raise as an exception.
pub(crate) fn error(error: &ApiError) -> Event {
    Event::default().data(serde_json::to_string(&error.body()).unwrap_or_default())
}

/// The last event.
pub(crate) fn done() -> Event {
    Event::default().data("[DONE]")
}
