//! Triton's binary tensor data extension: a message is a JSON header followed by raw
//! tensors, each named in the header by `binary_data_size`. Binary tensors are slices of the
//! received buffer (no copy) and go out as the tensors' own bytes after the header.

use bytes::Bytes;
use nereid_engine::tensor::element_count;
use nereid_engine::{
    EngineError, InferResponse, ParamValue, RequestedOutput, SharedMemory, Tensor,
};

use crate::request::{TensorData, TensorHeader};

/// The HTTP header giving the length of the JSON part of a body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";
/// Tensor parameter: this tensor's bytes follow the header, this many of them.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Request parameter: send every output binary unless the output says otherwise.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";
/// Requested-output parameter: send this output binary (`true`) or as JSON (`false`).
pub const BINARY_DATA: &str = "binary_data";

/// A received message: the JSON header and the binary section after it (empty for plain
/// JSON). Both are views of the received buffer.
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// The JSON header.
    pub header: Bytes,
    /// The raw tensors that follow it.
    pub binary: Bytes,
}

impl Body {
    /// A body that is JSON only.
    pub fn json(header: Bytes) -> Self {
        Self {
            header,
            binary: Bytes::new(),
        }
    }

    /// Splits an HTTP body by its `Inference-Header-Content-Length` (none: all JSON).
    pub fn split(body: Bytes, header_length: Option<usize>) -> Result<Self, EngineError> {
        let Some(len) = header_length else {
            return Ok(Self::json(body));
        };
        if len > body.len() {
            return Err(EngineError::invalid(format!(
                "header Inference-Header-Content-Length is {len} but the body has only {} bytes",
                body.len()
            )));
        }
        Ok(Self {
            header: body.slice(..len),
            binary: body.slice(len..),
        })
    }

    /// Splits a length-prefixed message: a `u32` little-endian header length, the JSON
    /// header, then the raw tensors (one WebSocket binary frame).
    pub fn from_prefixed(frame: Bytes) -> Result<Self, EngineError> {
        let Some(prefix) = frame.get(..4) else {
            return Err(EngineError::invalid(
                "binary frame is shorter than its 4-byte header length",
            ));
        };
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        let end = 4usize
            .checked_add(len)
            .filter(|&e| e <= frame.len())
            .ok_or_else(|| {
                EngineError::invalid(format!(
                    "binary frame declares a {len}-byte JSON header but holds {} bytes after the length",
                    frame.len() - 4
                ))
            })?;
        Ok(Self {
            header: frame.slice(4..end),
            binary: frame.slice(end..),
        })
    }
}

/// Builds tensors from decoded headers, taking binary ones from `binary` in order. Sizes
/// are checked against the shapes, and every byte of `binary` must belong to a tensor.
pub(crate) fn take_tensors(
    headers: Vec<TensorHeader>,
    binary: Bytes,
    kind: &str,
    shm: &SharedMemory,
) -> Result<Vec<Tensor>, EngineError> {
    let mut offset = 0usize;
    let mut tensors = Vec::with_capacity(headers.len());
    for t in headers {
        let data = match t.data {
            TensorData::Json(bytes) => bytes,
            TensorData::Shared(at) => shm.read(&at, &format!("{kind} '{}'", t.name))?,
            TensorData::Binary(size) => {
                let name = &t.name;
                if let Some(elem) = t.dtype.element_size() {
                    let count = element_count(&t.shape)
                        .map_err(|e| EngineError::invalid(format!("{kind} '{name}': {e}")))?;
                    if count.checked_mul(elem) != Some(size) {
                        return Err(EngineError::invalid(format!(
                            "{kind} '{name}': binary_data_size is {size} but shape {:?} of {} needs {} bytes",
                            t.shape,
                            t.dtype,
                            count as u128 * elem as u128
                        )));
                    }
                }
                let end = offset
                    .checked_add(size)
                    .filter(|&end| end <= binary.len())
                    .ok_or_else(|| {
                        EngineError::invalid(format!(
                            "{kind} '{name}': binary_data_size {size} at offset {offset} runs past the {} bytes \
                             of binary data after the JSON header",
                            binary.len()
                        ))
                    })?;
                let slice = binary.slice(offset..end);
                offset = end;
                slice
            }
        };
        tensors.push(Tensor::new(t.name, t.dtype, t.shape, data));
    }
    if offset != binary.len() {
        return Err(EngineError::invalid(format!(
            "the body has {} bytes of binary data after the JSON header but the {kind}s' \
             binary_data_size add up to {offset}",
            binary.len()
        )));
    }
    Ok(tensors)
}

/// Which outputs of `response` go binary: an output's own `binary_data` parameter decides,
/// else the request's `binary_data_output`, else `default` (the door's choice).
pub fn binary_outputs(
    response: &InferResponse,
    requested: &[RequestedOutput],
    request_parameters: &nereid_engine::Parameters,
    default: bool,
) -> Vec<bool> {
    let all = request_parameters
        .get(BINARY_DATA_OUTPUT)
        .and_then(ParamValue::as_bool)
        .unwrap_or(default);
    response
        .outputs
        .iter()
        .map(|t| {
            requested
                .iter()
                .find(|r| r.name == t.name)
                .and_then(|r| r.parameters.get(BINARY_DATA))
                .and_then(ParamValue::as_bool)
                .unwrap_or(all)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_infer_request;

    #[test]
    fn binary_inputs_are_slices_in_order_and_sizes_are_checked() {
        let json = br#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},
                       {"name":"B","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":1}}]}"#;
        let body = Bytes::from([&json[..], &[1, 0, 0, 0, 2, 0, 0, 0, 9]].concat());
        let split = Body::split(body.clone(), Some(json.len())).unwrap();
        let req = decode_infer_request(split.clone(), &Default::default()).unwrap();
        assert_eq!(req.inputs[0].to_vec::<i32>().unwrap(), vec![1, 2]);
        assert_eq!(&req.inputs[1].data[..], &[9]);
        assert_eq!(req.inputs[0].data.as_ptr(), body[json.len()..].as_ptr());

        let short = Body {
            binary: split.binary.slice(..5),
            ..split.clone()
        };
        let err = decode_infer_request(short, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("runs past"), "{err}");
        let long = Body {
            binary: Bytes::from([&split.binary[..], &[0]].concat()),
            ..split
        };
        let err = decode_infer_request(long, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("add up to 9"), "{err}");

        let err = Body::split(body.clone(), Some(body.len() + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Inference-Header-Content-Length"), "{err}");
    }

    #[test]
    fn binary_size_must_match_the_shape() {
        let json = br#"{"inputs":[{"name":"A","shape":[1000000000000],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let body = Body {
            header: Bytes::from_static(json),
            binary: Bytes::from_static(&[0; 4]),
        };
        let err = decode_infer_request(body, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs 4000000000000 bytes"), "{err}");
    }

    #[test]
    fn prefixed_frames_split_after_their_length() {
        let mut frame = 2u32.to_le_bytes().to_vec();
        frame.extend_from_slice(b"{}xyz");
        let body = Body::from_prefixed(Bytes::from(frame)).unwrap();
        assert_eq!(
            (&body.header[..], &body.binary[..]),
            (&b"{}"[..], &b"xyz"[..])
        );
        assert!(Body::from_prefixed(Bytes::from_static(&[1, 0])).is_err());
        assert!(Body::from_prefixed(Bytes::from_static(&[9, 0, 0, 0, b'{'])).is_err());
    }
}
