//! Request bodies read under the size limit, and response bodies made of shared chunks.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};

/// Reads a whole (already decompressed) request body. The layer stack bounds it by
/// `--http-max-input-size` (`limit`, named in the 413's message) while it is read.
pub(crate) async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    match body.collect().await {
        // One chunk stays as received; several are copied once into one buffer.
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if is_length_limit(&e) => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// Reads an optional JSON body (model control, trace and log settings): empty means
/// `T::default()`; a value of the wrong type is refused naming its field.
pub(crate) async fn optional_json<T: for<'de> Deserialize<'de> + Default>(
    body: Body,
    limit: usize,
    what: &str,
) -> ApiResult<T> {
    let body = read_body(body, limit).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // Only a value of the wrong type has a field to name; a syntax error has a place.
        let field = (e.inner().classify() == serde_json::error::Category::Data)
            .then(|| e.path().to_string())
            .filter(|f| !matches!(f.as_str(), "" | ".") && !f.contains('?'));
        let why = nereid_kserve::describe_json_error(e.into_inner());
        ApiError::bad_request(match field {
            None => format!("{what}: {why}"),
            Some(field) => format!("{what}, field '{field}': {why}"),
        })
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!("{what}: {}", nereid_kserve::describe_json_error(e)))
    })?;
    Ok(parsed)
}

/// Whether a body error is, somewhere in its chain, the limit layer's refusal.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A response body of byte chunks sent as they are (shared with the tensors that own
/// them), with an exact length so HTTP/1.1 sends `Content-Length` rather than chunks.
pub(crate) struct ChunkBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl ChunkBody {
    /// A body of `chunks` in order.
    pub(crate) fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self { chunks, remaining }
    }
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.chunks.pop_front().map(|chunk| {
            self.remaining -= chunk.len() as u64;
            Ok(Frame::data(chunk))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl From<ChunkBody> for Body {
    fn from(body: ChunkBody) -> Self {
        Body::new(body)
    }
}
