//! Encoding requests and decoding responses on each wire: KServe v2 JSON and the binary
//! tensor extension (through `nereid_kserve`, the server's own codec), and protobuf. The
//! load generator uses these per request (their cost is the client's send and receive
//! time) and the criterion benches measure them alone.

use anyhow::bail;
use bytes::Bytes;
use nereid_engine::{DataType, EngineError, Tensor};
use nereid_kserve::{decode_infer_response, encode_infer_request, Body, EncodedRequest};
use nereid_proto::inference::{
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor, InferParameter,
    InferTensorContents, ModelInferRequest, ModelInferResponse,
};

use crate::inputs::{element_size, InputTensor, ModelInfo};

pub use nereid_kserve::HEADER_LENGTH;

/// An encoded HTTP request body.
pub type HttpBody = EncodedRequest;

/// Encodes an HTTP infer body with the server's own codec: tensors as JSON arrays, or
/// (with `binary_inputs`) a JSON header followed by the raw tensors; `binary_outputs` asks
/// for binary outputs.
pub fn encode_http_request(
    inputs: &[InputTensor],
    binary_inputs: bool,
    binary_outputs: bool,
) -> anyhow::Result<HttpBody> {
    let tensors = inputs
        .iter()
        .map(|t| {
            let dtype: DataType = t.datatype.parse()?;
            Ok(Tensor::new(
                t.name.clone(),
                dtype,
                t.shape.clone(),
                t.data.clone(),
            ))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    Ok(encode_infer_request(
        &tensors,
        binary_inputs,
        binary_outputs,
    )?)
}

/// One output as the client decoded it.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedOutput {
    /// Output name.
    pub name: String,
    /// Datatype.
    pub datatype: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Bytes of the decoded tensor (from JSON, binary or protobuf raw contents), or for
    /// typed protobuf contents the number of elements.
    pub size: usize,
}

/// A decoded response.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DecodedResponse {
    /// Outputs.
    pub outputs: Vec<DecodedOutput>,
    /// Whether the response says it is the last of its request (decoupled models).
    pub is_final: bool,
}

/// Decodes an HTTP infer response with the server's own codec, as a client would: every
/// output into tensor bytes, JSON or binary (a JSON header of `header_length` bytes
/// followed by binary outputs).
pub fn decode_http_response(
    body: &Bytes,
    header_length: Option<usize>,
) -> anyhow::Result<DecodedResponse> {
    let response = decode_infer_response(Body::split(body.clone(), header_length)?)?;
    Ok(DecodedResponse {
        outputs: response
            .outputs
            .into_iter()
            .map(|t| DecodedOutput {
                size: t.data.len(),
                datatype: t.dtype.as_str().to_string(),
                name: t.name,
                shape: t.shape,
            })
            .collect(),
        is_final: true,
    })
}

/// A protobuf infer request with every tensor in `raw_input_contents` (what perf_analyzer
/// and tritonclient send).
pub fn grpc_request(model: &ModelInfo, inputs: &[InputTensor]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.name.clone(),
        model_version: model.version.clone(),
        inputs: inputs
            .iter()
            .map(|t| InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape: t.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|t| t.data.clone()).collect(),
        ..Default::default()
    }
}

/// The same request with typed `contents` (for example `fp32_contents`) instead of raw bytes.
pub fn grpc_request_typed(
    model: &ModelInfo,
    inputs: &[InputTensor],
) -> anyhow::Result<ModelInferRequest> {
    let mut request = grpc_request(model, inputs);
    request.raw_input_contents.clear();
    for (tensor, wire) in inputs.iter().zip(&mut request.inputs) {
        let mut contents = InferTensorContents::default();
        let raw = &tensor.data;
        let size = element_size(&tensor.datatype).unwrap_or(1);
        let words = raw.chunks_exact(size);
        match tensor.datatype.as_str() {
            "FP32" => {
                contents.fp32_contents = words
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                    .collect()
            }
            "FP64" => {
                contents.fp64_contents = words
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
                    .collect()
            }
            "INT32" => {
                contents.int_contents = words
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4")))
                    .collect()
            }
            "INT64" => {
                contents.int64_contents = words
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                    .collect()
            }
            "UINT32" => {
                contents.uint_contents = words
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
                    .collect()
            }
            "UINT64" => {
                contents.uint64_contents = words
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
                    .collect()
            }
            "BOOL" => contents.bool_contents = raw.iter().map(|&b| b != 0).collect(),
            other => bail!("typed contents for {other} are not written by the bench"),
        }
        wire.contents = Some(contents);
    }
    Ok(request)
}

/// Reads a protobuf infer response the way a client would: every output and its size.
pub fn decode_grpc_response(response: &ModelInferResponse) -> anyhow::Result<DecodedResponse> {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for (i, o) in response.outputs.iter().enumerate() {
        let size = match (response.raw_output_contents.get(i), &o.contents) {
            (Some(raw), _) => raw.len(),
            (None, Some(c)) => {
                c.fp32_contents.len()
                    + c.fp64_contents.len()
                    + c.int_contents.len()
                    + c.int64_contents.len()
                    + c.uint_contents.len()
                    + c.uint64_contents.len()
                    + c.bool_contents.len()
                    + c.bytes_contents.len()
            }
            (None, None) => 0,
        };
        outputs.push(DecodedOutput {
            name: o.name.clone(),
            datatype: o.datatype.clone(),
            shape: o.shape.clone(),
            size,
        });
    }
    let is_final = match response.parameters.get("triton_final_response") {
        Some(InferParameter {
            parameter_choice: Some(ParameterChoice::BoolParam(b)),
        }) => *b,
        _ => true,
    };
    Ok(DecodedResponse { outputs, is_final })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::random_fp32;

    fn vector(n: usize) -> Vec<InputTensor> {
        vec![InputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![1, n as i64],
            data: random_fp32(n, 1),
        }]
    }

    #[test]
    fn json_request_round_trips_through_serde() {
        let body = encode_http_request(&vector(8), false, false).unwrap();
        assert!(body.header_length.is_none());
        let v: serde_json::Value = serde_json::from_slice(&body.body).unwrap();
        assert_eq!(v["inputs"][0]["data"].as_array().unwrap().len(), 8);
        assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 8]));
    }

    #[test]
    fn binary_request_has_header_then_raw() {
        let inputs = vector(8);
        let body = encode_http_request(&inputs, true, true).unwrap();
        let n = body.header_length.unwrap();
        assert_eq!(&body.body[n..], &inputs[0].data[..]);
        let v: serde_json::Value = serde_json::from_slice(&body.body[..n]).unwrap();
        assert_eq!(v["inputs"][0]["parameters"]["binary_data_size"], 32);
        assert_eq!(v["parameters"]["binary_data_output"], true);
    }

    #[test]
    fn responses_decode() {
        let json = Bytes::from_static(br#"{"model_name":"m","outputs":[{"name":"O","datatype":"FP32","shape":[1,3],"data":[[1.0,2.5],[3]]}]}"#);
        let r = decode_http_response(&json, None).unwrap();
        assert_eq!(r.outputs[0].size, 12);
        let header = br#"{"model_version":"1","outputs":[{"name":"O","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[0u8; 8]);
        let r = decode_http_response(&Bytes::from(body), Some(header.len())).unwrap();
        assert_eq!(r.outputs[0].size, 8);
        assert!(decode_http_response(&Bytes::from_static(br#"{"error":"boom"}"#), None).is_err());
    }

    #[test]
    fn typed_protobuf_matches_raw() {
        let inputs = vector(4);
        let typed = grpc_request_typed(&ModelInfo::identity_fp32(), &inputs).unwrap();
        let c = typed.inputs[0].contents.as_ref().unwrap();
        assert_eq!(c.fp32_contents.len(), 4);
        assert_eq!(c.fp32_contents[0].to_le_bytes(), inputs[0].data[..4]);
    }
}
