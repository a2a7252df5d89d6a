//! The HTTP side of Triton's binary tensor data extension (the format itself is
//! `nereid_kserve`'s): the `Inference-Header-Content-Length` header in, and a response of a
//! JSON header followed by the binary outputs (the tensors' own bytes, no copy) out.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nereid_engine::{InferResponse, RequestedOutput};
use nereid_kserve::HEADER_LENGTH;

use crate::body::ChunkBody;
use crate::error::{ApiError, ApiResult};

/// The JSON header's length the client declared, if it used the binary extension.
pub(crate) fn header_length(headers: &HeaderMap) -> ApiResult<Option<usize>> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "header Inference-Header-Content-Length is {value:?}, not a byte count"
            ))
        })
}

/// The HTTP response: plain JSON, or the JSON header followed by the binary outputs.
pub(crate) fn respond(json: Vec<u8>, response: &InferResponse, binary: &[bool]) -> Response {
    let mut headers = HeaderMap::new();
    if !binary.iter().any(|&b| b) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return (StatusCode::OK, headers, json).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(json.len()));
    let tensors = response
        .outputs
        .iter()
        .zip(binary)
        .filter(|(_, &b)| b)
        .map(|(t, _)| t.data.clone());
    let body = ChunkBody::new(std::iter::once(Bytes::from(json)).chain(tensors));
    (StatusCode::OK, headers, axum::body::Body::from(body)).into_response()
}

/// Rejects output parameters this server does not implement, before any work is done.
pub(crate) fn check_output_parameters(requested: &[RequestedOutput]) -> ApiResult<()> {
    for output in requested {
        if output.parameters.contains_key("classification") {
            return Err(ApiError::unimplemented(format!(
                "output '{}': the classification extension is not supported",
                output.name
            )));
        }
        // A malformed placement fails before the model computes.
        nereid_engine::SharedMemoryRef::from_params(
            &output.parameters,
            &format!("output '{}'", output.name),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_length_must_be_a_byte_count() {
        let mut headers = HeaderMap::new();
        assert_eq!(header_length(&headers).unwrap(), None);
        headers.insert(HEADER_LENGTH, HeaderValue::from_static(" 12 "));
        assert_eq!(header_length(&headers).unwrap(), Some(12));
        headers.insert(HEADER_LENGTH, HeaderValue::from_static("-3"));
        let err = header_length(&headers).unwrap_err();
        assert!(
            err.message.contains("Inference-Header-Content-Length"),
            "{}",
            err.message
        );
    }
}
