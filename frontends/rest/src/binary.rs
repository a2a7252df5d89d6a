//! Triton's binary tensor data extension: a body of a JSON header
//! (`Inference-Header-Content-Length` bytes) followed by raw tensors, both ways. Binary
//! inputs are slices of the received body (no copy); binary outputs are the tensors' own
//! bytes sent after the header (no copy).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use nereid_engine::tensor::element_count;
use nereid_engine::{InferRequest, InferResponse, ParamValue, RequestedOutput, Tensor};

use crate::body::ChunkBody;
use crate::error::{ApiError, ApiResult};
use crate::json::{InferHeader, InputData};

/// The header that says how long the JSON part of a body is.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a body into its JSON header and binary section.
pub(crate) fn split_body(headers: &HeaderMap, body: Bytes) -> ApiResult<(Bytes, Bytes)> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body, Bytes::new()));
    };
    let len: usize = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "header Inference-Header-Content-Length is {value:?}, not a byte count"
            ))
        })?;
    if len > body.len() {
        return Err(ApiError::bad_request(format!(
            "header Inference-Header-Content-Length is {len} but the body has only {} bytes",
            body.len()
        )));
    }
    let binary = body.slice(len..);
    Ok((body.slice(..len), binary))
}

/// Builds the engine request from a decoded header, taking binary inputs from `binary` in
/// input order. Sizes are checked against the shapes before the engine sees them.
pub(crate) fn assemble(
    model: &str,
    version: Option<i64>,
    header: InferHeader,
    binary: Bytes,
) -> ApiResult<InferRequest> {
    let mut offset = 0usize;
    let mut inputs = Vec::with_capacity(header.inputs.len());
    for input in header.inputs {
        let data = match input.data {
            InputData::Json(bytes) => bytes,
            InputData::Binary(size) => {
                let name = &input.name;
                if let Some(elem) = input.dtype.element_size() {
                    let count = element_count(&input.shape)
                        .map_err(|e| ApiError::bad_request(format!("input '{name}': {e}")))?;
                    if count.checked_mul(elem) != Some(size) {
                        return Err(ApiError::bad_request(format!(
                            "input '{name}': binary_data_size is {size} but shape {:?} of {} needs {} bytes",
                            input.shape,
                            input.dtype,
                            count as u128 * elem as u128
                        )));
                    }
                }
                let end = offset.checked_add(size).filter(|&end| end <= binary.len()).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "input '{name}': binary_data_size {size} at offset {offset} runs past the {} bytes of \
                         binary data after the JSON header",
                        binary.len()
                    ))
                })?;
                let slice = binary.slice(offset..end);
                offset = end;
                slice
            }
        };
        inputs.push(Tensor::new(input.name, input.dtype, input.shape, data));
    }
    if offset != binary.len() {
        return Err(ApiError::bad_request(format!(
            "the body has {} bytes of binary data after the JSON header but the inputs' binary_data_size \
             add up to {offset}",
            binary.len()
        )));
    }
    Ok(InferRequest {
        model_name: model.to_string(),
        model_version: version,
        id: header.id,
        inputs,
        outputs: header.outputs,
        parameters: header.parameters,
        deadline: None,
    })
}

/// Which outputs of `response` go binary: an output's own `binary_data` parameter decides,
/// else the request's `binary_data_output`.
pub(crate) fn binary_outputs(
    response: &InferResponse,
    requested: &[RequestedOutput],
    binary_data_output: bool,
) -> Vec<bool> {
    response
        .outputs
        .iter()
        .map(|t| {
            requested
                .iter()
                .find(|r| r.name == t.name)
                .and_then(|r| r.parameters.get("binary_data"))
                .and_then(ParamValue::as_bool)
                .unwrap_or(binary_data_output)
        })
        .collect()
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::decode_infer_header;

    #[test]
    fn binary_inputs_are_slices_in_order_and_sizes_are_checked() {
        let json = br#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},
                       {"name":"B","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":1}}]}"#;
        let body = Bytes::from([&json[..], &[1, 0, 0, 0, 2, 0, 0, 0, 9]].concat());
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, HeaderValue::from(json.len()));
        let (head, bin) = split_body(&headers, body.clone()).unwrap();
        let req = assemble("m", None, decode_infer_header(&head).unwrap(), bin.clone()).unwrap();
        assert_eq!(req.inputs[0].to_vec::<i32>().unwrap(), vec![1, 2]);
        assert_eq!(&req.inputs[1].data[..], &[9]);

        let short = bin.slice(..5);
        let err = assemble("m", None, decode_infer_header(&head).unwrap(), short).unwrap_err();
        assert!(err.message.contains("runs past"), "{}", err.message);
        let long = Bytes::from([&bin[..], &[0]].concat());
        let err = assemble("m", None, decode_infer_header(&head).unwrap(), long).unwrap_err();
        assert!(err.message.contains("add up to 9"), "{}", err.message);

        headers.insert(HEADER_LENGTH, HeaderValue::from(body.len() + 1));
        let err = split_body(&headers, body).unwrap_err();
        assert!(
            err.message.contains("Inference-Header-Content-Length"),
            "{}",
            err.message
        );
    }

    #[test]
    fn binary_size_must_match_the_shape() {
        let json = br#"{"inputs":[{"name":"A","shape":[1000000000000],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let err = assemble(
            "m",
            None,
            decode_infer_header(json).unwrap(),
            Bytes::from_static(&[0; 4]),
        )
        .unwrap_err();
        assert!(
            err.message.contains("needs 4000000000000 bytes"),
            "{}",
            err.message
        );
    }
}
