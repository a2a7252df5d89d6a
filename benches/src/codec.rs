//! Encoding requests and decoding responses on each wire: KServe v2 JSON, the binary
//! tensor extension, and protobuf. The load generator uses these per request (their cost is
//! the client's send and receive time) and the criterion benches measure them alone.

use std::collections::HashMap;
use std::fmt;

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use nereid_proto::inference::{
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor, InferParameter,
    InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::inputs::{element_size, InputTensor, ModelInfo};

/// The header naming the length of the JSON part of a binary-extension body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An encoded HTTP request body.
#[derive(Clone, Debug)]
pub struct HttpBody {
    /// The body.
    pub body: Bytes,
    /// Length of the JSON header when the body uses the binary extension.
    pub header_length: Option<usize>,
}

/// Raw little-endian tensor bytes, serialized as a flat JSON array of their datatype.
pub struct JsonData<'a> {
    /// KServe datatype.
    pub datatype: &'a str,
    /// Little-endian contents.
    pub raw: &'a [u8],
}

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        macro_rules! numbers {
            ($t:ty) => {{
                const N: usize = std::mem::size_of::<$t>();
                let mut seq = serializer.serialize_seq(Some(self.raw.len() / N))?;
                for c in self.raw.chunks_exact(N) {
                    seq.serialize_element(&<$t>::from_le_bytes(c.try_into().expect("chunk")))?;
                }
                seq.end()
            }};
        }
        match self.datatype {
            "BOOL" => {
                let mut seq = serializer.serialize_seq(Some(self.raw.len()))?;
                for &b in self.raw {
                    seq.serialize_element(&(b != 0))?;
                }
                seq.end()
            }
            "UINT8" => numbers!(u8),
            "INT8" => numbers!(i8),
            "UINT16" => numbers!(u16),
            "INT16" => numbers!(i16),
            "UINT32" => numbers!(u32),
            "INT32" => numbers!(i32),
            "UINT64" => numbers!(u64),
            "INT64" => numbers!(i64),
            "FP32" => numbers!(f32),
            "FP64" => numbers!(f64),
            "BYTES" => {
                let mut seq = serializer.serialize_seq(None)?;
                let mut rest = self.raw;
                while rest.len() >= 4 {
                    let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                    let item = rest
                        .get(4..4 + n)
                        .ok_or_else(|| S::Error::custom("truncated BYTES element"))?;
                    seq.serialize_element(&String::from_utf8_lossy(item))?;
                    rest = &rest[4 + n..];
                }
                seq.end()
            }
            other => Err(S::Error::custom(format!(
                "{other} tensors travel only in binary form"
            ))),
        }
    }
}

#[derive(Serialize)]
struct JsonInput<'a> {
    name: &'a str,
    shape: &'a [i64],
    datatype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct BinaryOutput {
    binary_data_output: bool,
}

#[derive(Serialize)]
struct JsonRequest<'a> {
    inputs: Vec<JsonInput<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryOutput>,
}

/// Encodes an HTTP infer body: tensors as JSON arrays, or (with `binary_inputs`) a JSON
/// header followed by the raw tensors; `binary_outputs` asks for binary outputs.
pub fn encode_http_request(
    inputs: &[InputTensor],
    binary_inputs: bool,
    binary_outputs: bool,
) -> anyhow::Result<HttpBody> {
    let request = JsonRequest {
        inputs: inputs
            .iter()
            .map(|t| JsonInput {
                name: &t.name,
                shape: &t.shape,
                datatype: &t.datatype,
                parameters: binary_inputs.then(|| BinarySize {
                    binary_data_size: t.data.len(),
                }),
                data: (!binary_inputs).then(|| JsonData {
                    datatype: &t.datatype,
                    raw: &t.data,
                }),
            })
            .collect(),
        parameters: binary_outputs.then_some(BinaryOutput {
            binary_data_output: true,
        }),
    };
    let raw_len: usize = if binary_inputs {
        inputs.iter().map(|t| t.data.len()).sum()
    } else {
        0
    };
    let mut out = BytesMut::with_capacity(
        256 + if binary_inputs {
            raw_len
        } else {
            raw_len.max(64) * 3
        },
    );
    serde_json::to_writer((&mut out).writer(), &request).context("cannot encode the JSON body")?;
    if !binary_inputs {
        return Ok(HttpBody {
            body: out.freeze(),
            header_length: None,
        });
    }
    let header_length = out.len();
    for t in inputs {
        out.extend_from_slice(&t.data);
    }
    Ok(HttpBody {
        body: out.freeze(),
        header_length: Some(header_length),
    })
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
    /// Elements decoded (JSON) or bytes received (binary, protobuf raw).
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

/// Counts the scalars of a (possibly nested) JSON array, parsing each like a client would.
#[derive(Default, Debug, PartialEq)]
struct ElementCount(usize);

impl<'de> Deserialize<'de> for ElementCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON array of tensor elements")
            }
            fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
                Ok(1)
            }
            fn visit_i64<E>(self, v: i64) -> Result<usize, E> {
                std::hint::black_box(v);
                Ok(1)
            }
            fn visit_u64<E>(self, v: u64) -> Result<usize, E> {
                std::hint::black_box(v);
                Ok(1)
            }
            fn visit_f64<E>(self, v: f64) -> Result<usize, E> {
                std::hint::black_box(v);
                Ok(1)
            }
            fn visit_str<E>(self, _: &str) -> Result<usize, E> {
                Ok(1)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
                let mut n = 0;
                while let Some(ElementCount(k)) = seq.next_element()? {
                    n += k;
                }
                Ok(n)
            }
        }
        deserializer.deserialize_any(Count).map(ElementCount)
    }
}

#[derive(Deserialize)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    datatype: String,
    #[serde(default)]
    shape: Vec<i64>,
    #[serde(default)]
    parameters: HashMap<String, serde_json::Value>,
    #[serde(default)]
    data: Option<ElementCount>,
}

#[derive(Deserialize)]
struct JsonResponse {
    #[serde(default)]
    outputs: Vec<JsonOutput>,
    #[serde(default)]
    error: Option<String>,
}

/// Decodes an HTTP infer response: JSON, or a JSON header of `header_length` bytes
/// followed by binary outputs.
pub fn decode_http_response(
    body: &Bytes,
    header_length: Option<usize>,
) -> anyhow::Result<DecodedResponse> {
    let header_end = header_length.unwrap_or(body.len());
    let header = body
        .get(..header_end)
        .ok_or_else(|| anyhow!("header length {header_end} is over the body"))?;
    let response: JsonResponse =
        serde_json::from_slice(header).context("response is not KServe JSON")?;
    if let Some(error) = response.error {
        bail!("server error: {error}");
    }
    let mut offset = header_end;
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for o in response.outputs {
        let size = match (
            o.parameters
                .get("binary_data_size")
                .and_then(|v| v.as_u64()),
            o.data,
        ) {
            (Some(n), _) => {
                let n = n as usize;
                if body.len() < offset + n {
                    bail!("output {} claims {n} binary bytes past the body", o.name);
                }
                offset += n;
                n
            }
            (None, Some(ElementCount(n))) => n,
            (None, None) => bail!("output {} has neither data nor binary_data_size", o.name),
        };
        outputs.push(DecodedOutput {
            name: o.name,
            datatype: o.datatype,
            shape: o.shape,
            size,
        });
    }
    Ok(DecodedResponse {
        outputs,
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
        assert_eq!(r.outputs[0].size, 3);
        let header = br#"{"outputs":[{"name":"O","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}"#;
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
