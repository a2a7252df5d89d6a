//! The client's direction: infer requests out, infer responses in. The load generator
//! (and a gateway talking KServe JSON) use these, so clients and server share one format.

use bytes::{BufMut, Bytes, BytesMut};
use nereid_engine::{EngineError, InferResponse, SharedMemory, Tensor};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::binary::{take_tensors, Body};
use crate::request::{decode_message, Direction};
use crate::response::{Binary, Flag, TensorsJson};
use crate::{parse_version, BINARY_DATA_OUTPUT};

/// An encoded infer request body.
#[derive(Debug, Clone)]
pub struct EncodedRequest {
    /// The body.
    pub body: Bytes,
    /// Length of its JSON header when it uses the binary extension (the value of the
    /// `Inference-Header-Content-Length` header).
    pub header_length: Option<usize>,
}

/// Encodes an infer request: inputs as JSON arrays, or with `binary_inputs` as a JSON
/// header followed by the raw tensors; `binary_outputs` asks for every output in binary.
pub fn encode_infer_request(
    inputs: &[Tensor],
    binary_inputs: bool,
    binary_outputs: bool,
) -> Result<EncodedRequest, EngineError> {
    let raw_len: usize = inputs.iter().map(|t| t.data.len()).sum();
    let capacity = 256 + if binary_inputs { raw_len } else { raw_len * 3 };
    let mut out = BytesMut::with_capacity(capacity);
    let header = RequestJson {
        inputs,
        binary_inputs,
        binary_outputs,
    };
    serde_json::to_writer((&mut out).writer(), &header)
        .map_err(|e| EngineError::invalid(format!("cannot encode the request: {e}")))?;
    if !binary_inputs {
        return Ok(EncodedRequest {
            body: out.freeze(),
            header_length: None,
        });
    }
    let header_length = out.len();
    for t in inputs {
        out.extend_from_slice(&t.data);
    }
    Ok(EncodedRequest {
        body: out.freeze(),
        header_length: Some(header_length),
    })
}

/// Decodes an infer response: its outputs as tensors (binary ones slices of the body). A
/// body that is an `{"error": ...}` object becomes that error (as Internal: the server's
/// own status says more, and a client should read it first).
pub fn decode_infer_response(body: Body) -> Result<InferResponse, EngineError> {
    let message = decode_message(&body.header, Direction::Response)?;
    if let Some(error) = message.error {
        return Err(EngineError::internal(format!("server error: {error}")));
    }
    let outputs = take_tensors(
        message.tensors,
        body.binary,
        "output",
        &SharedMemory::default(),
    )?;
    let model_version = parse_version(message.model_version.as_deref().unwrap_or(""))?;
    Ok(InferResponse {
        model_name: message.model_name.unwrap_or_default(),
        model_version: model_version.unwrap_or_default(),
        id: message.id,
        outputs,
        parameters: message.parameters,
        is_final: true,
    })
}

struct RequestJson<'a> {
    inputs: &'a [Tensor],
    binary_inputs: bool,
    binary_outputs: bool,
}

impl Serialize for RequestJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry(
            "inputs",
            &TensorsJson {
                tensors: self.inputs,
                binary: Binary::All(self.binary_inputs),
                placed: &[],
            },
        )?;
        if self.binary_outputs {
            map.serialize_entry("parameters", &Flag(BINARY_DATA_OUTPUT, true))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{binary_outputs, decode_infer_request, write_infer_response, ResponseForm};
    use nereid_engine::{DataType, Parameters};

    fn inputs() -> Vec<Tensor> {
        vec![
            Tensor::from_vec("X", DataType::Fp32, vec![1, 3], vec![0.1f32, -2.0, 3.5]),
            Tensor::from_strings("S", vec![1], ["héllo"]),
        ]
    }

    #[test]
    fn requests_round_trip_through_the_server_decoder_in_both_forms() {
        for binary in [false, true] {
            let encoded = encode_infer_request(&inputs(), binary, binary).unwrap();
            assert_eq!(encoded.header_length.is_some(), binary);
            let body = Body::split(encoded.body, encoded.header_length).unwrap();
            let decoded = decode_infer_request(body, &Default::default()).unwrap();
            assert_eq!(decoded.inputs, inputs(), "binary {binary}");
            assert_eq!(
                decoded.header.parameters.contains_key(BINARY_DATA_OUTPUT),
                binary
            );
        }
    }

    #[test]
    fn responses_round_trip_through_the_server_encoder() {
        let response = InferResponse {
            model_name: "m".into(),
            model_version: 2,
            id: "7".into(),
            outputs: inputs(),
            parameters: Parameters::new(),
            is_final: true,
        };
        for binary in [false, true] {
            let flags = binary_outputs(&response, &[], &Parameters::new(), binary);
            let mut body =
                write_infer_response(&response, &flags, &[], ResponseForm::Unary).unwrap();
            let header_length = body.len();
            for (t, _) in response.outputs.iter().zip(&flags).filter(|(_, &b)| b) {
                body.extend_from_slice(&t.data);
            }
            let body = Body::split(body.into(), binary.then_some(header_length)).unwrap();
            let decoded = decode_infer_response(body).unwrap();
            assert_eq!(
                (decoded.model_name, decoded.model_version, decoded.id),
                ("m".to_string(), 2, "7".to_string())
            );
            assert_eq!(decoded.outputs, response.outputs, "binary {binary}");
        }
        let error = Body::json(Bytes::from_static(br#"{"error":"boom"}"#));
        assert!(decode_infer_response(error)
            .unwrap_err()
            .to_string()
            .contains("boom"));
    }
}
