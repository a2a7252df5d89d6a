//! Decoding the JSON header of a KServe message in one pass: tensors' `data` go straight
//! into tensor bytes as they are read (see [`crate::data`]); a tensor whose `data` comes
//! before its name, datatype or shape is kept as raw JSON text and decoded right after.
//! Requests (inputs plus requested outputs) and responses (outputs) share the tensor
//! decoder, so a server and its clients read tensors the same way.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use nereid_engine::{
    DataType, EngineError, InferRequest, Parameters, RequestedOutput, SharedMemory,
    SharedMemoryRef, Tensor,
};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::binary::{take_tensors, Body};
use crate::params::JsonParams;
use crate::BINARY_DATA_OUTPUT;

mod outputs;
mod tensors;

use outputs::{bool_or_absent, RequestedSeed, Text};
use tensors::TensorsSeed;

/// What an infer request says besides its inputs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestHeader {
    /// Request id (`id`; a number is kept as its text).
    pub id: String,
    /// `model_name`, for doors whose URL does not name the model (WebSocket).
    pub model_name: Option<String>,
    /// `model_version` as written; see [`crate::parse_version`].
    pub model_version: Option<String>,
    /// Request parameters.
    pub parameters: Parameters,
    /// Requested outputs with their parameters.
    pub outputs: Vec<RequestedOutput>,
}

/// A decoded infer request: its header and its input tensors, whose bytes are slices of the
/// received body (binary inputs) or decoded from JSON (one copy).
#[derive(Debug, Clone)]
pub struct DecodedRequest {
    /// Everything but the inputs.
    pub header: RequestHeader,
    /// The inputs, in request order.
    pub inputs: Vec<Tensor>,
}

impl DecodedRequest {
    /// The engine request for `model_name` (and version) that the door resolved.
    pub fn into_request(self, model_name: String, model_version: Option<i64>) -> InferRequest {
        InferRequest {
            model_name,
            model_version,
            id: self.header.id,
            inputs: self.inputs,
            outputs: self.header.outputs,
            parameters: self.header.parameters,
            deadline: None,
            origin: Default::default(),
        }
    }
}

/// Decodes an infer request, reading inputs placed in system shared memory from `shm`.
/// Errors are InvalidArgument naming the field or input.
pub fn decode_infer_request(body: Body, shm: &SharedMemory) -> Result<DecodedRequest, EngineError> {
    let message = decode_message(&body.header, Direction::Request)?;
    if !message.has_tensors {
        return Err(EngineError::invalid(
            "invalid request: the request has no 'inputs'",
        ));
    }
    if !bool_or_absent(&message.parameters, BINARY_DATA_OUTPUT) {
        return Err(EngineError::invalid(format!(
            "invalid request: parameter '{BINARY_DATA_OUTPUT}' must be a bool"
        )));
    }
    let inputs = take_tensors(message.tensors, body.binary, "input", shm)?;
    Ok(DecodedRequest {
        header: RequestHeader {
            id: message.id,
            model_name: message.model_name,
            model_version: message.model_version,
            parameters: message.parameters,
            outputs: message.requested,
        },
        inputs,
    })
}

/// Which KServe message a header is: it decides what `outputs` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// `inputs` are tensors; `outputs` name requested outputs.
    Request,
    /// `outputs` are tensors; `error` may replace them.
    Response,
}

/// Everything a request or response header can hold.
#[derive(Debug, Default)]
pub(crate) struct Message {
    pub id: String,
    pub model_name: Option<String>,
    pub model_version: Option<String>,
    pub parameters: Parameters,
    pub tensors: Vec<TensorHeader>,
    pub has_tensors: bool,
    pub requested: Vec<RequestedOutput>,
    pub error: Option<String>,
}

/// One tensor of a header.
#[derive(Debug)]
pub(crate) struct TensorHeader {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// Where a tensor's elements are.
#[derive(Debug)]
pub(crate) enum TensorData {
    /// Decoded from JSON `data` into raw bytes.
    Json(Bytes),
    /// The next this-many bytes of the binary section (`binary_data_size`).
    Binary(usize),
    /// In a registered system shared-memory region (`shared_memory_*` parameters).
    Shared(SharedMemoryRef),
}

/// Decodes a header of either direction.
pub(crate) fn decode_message(text: &[u8], direction: Direction) -> Result<Message, EngineError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let message = HeaderSeed {
        text_len: text.len(),
        direction,
    }
    .deserialize(&mut de)
    .map_err(describe_json_error)?;
    de.end().map_err(describe_json_error)?;
    Ok(message)
}

/// Words a JSON error for a person: syntax errors say "invalid JSON", errors of content
/// (wrong types, the decoder's own checks) "invalid request".
pub fn describe_json_error(e: serde_json::Error) -> EngineError {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        return EngineError::invalid(format!(
            "invalid JSON: nested more than 128 levels deep (line {} column {})",
            e.line(),
            e.column()
        ));
    }
    EngineError::invalid(match e.classify() {
        serde_json::error::Category::Data => format!("invalid request: {text}"),
        _ => format!("invalid JSON: {text}"),
    })
}

/// An object key, borrowed from the body unless it has escapes.
pub(crate) struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

struct HeaderSeed {
    text_len: usize,
    direction: Direction,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed {
    type Value = Message;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Message, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.direction {
            Direction::Request => {
                f.write_str("an inference request object {\"inputs\": [...], ...}")
            }
            Direction::Response => {
                f.write_str("an inference response object {\"outputs\": [...], ...}")
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut message = Message::default();
        let tensors_key = match self.direction {
            Direction::Request => "inputs",
            Direction::Response => "outputs",
        };
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "id" => message.id = map.next_value::<Id>()?.0,
                "model_name" => {
                    message.model_name = Some(map.next_value_seed(Text("'model_name'"))?)
                }
                "model_version" => message.model_version = Some(map.next_value::<Id>()?.0),
                "parameters" => message.parameters = map.next_value::<JsonParams>()?.0,
                k if k == tensors_key => {
                    message.tensors = map.next_value_seed(TensorsSeed {
                        text_len: self.text_len,
                        kind: if self.direction == Direction::Request {
                            "input"
                        } else {
                            "output"
                        },
                    })?;
                    message.has_tensors = true;
                }
                "outputs" => message.requested = map.next_value_seed(RequestedSeed)?,
                "error" if self.direction == Direction::Response => {
                    message.error = Some(map.next_value_seed(Text("'error'"))?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(message)
    }
}

/// The request id: a string (numbers are accepted and kept as their text).
struct Id(String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'id' as a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &[u8]) -> Result<Message, String> {
        decode_message(text, Direction::Request).map_err(|e| e.to_string())
    }

    #[test]
    fn decodes_inputs_outputs_id_and_parameters() {
        let h = header(
            br#"{"id":"7","model_name":"m","model_version":"2","parameters":{"binary_data_output":true,"priority":2,"s":"x"},
                "inputs":[{"name":"A","shape":[1,2],"datatype":"INT32","data":[[1,2]]},
                          {"name":"B","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}],
                "outputs":[{"name":"Y","parameters":{"binary_data":true}}]}"#,
        )
        .unwrap();
        assert_eq!(h.id, "7");
        assert_eq!(
            (h.model_name.as_deref(), h.model_version.as_deref()),
            (Some("m"), Some("2"))
        );
        assert_eq!(h.parameters.len(), 3);
        assert!(matches!(&h.tensors[0].data, TensorData::Json(b) if b.len() == 8));
        assert!(matches!(h.tensors[1].data, TensorData::Binary(4)));
        assert_eq!(h.requested[0].name, "Y");
        assert_eq!(
            h.requested[0]
                .parameters
                .get("binary_data")
                .and_then(|v| v.as_bool()),
            Some(true)
        );
    }

    #[test]
    fn data_before_its_datatype_is_decoded_afterwards() {
        let h = header(br#"{"inputs":[{"data":[1,2],"name":"A","datatype":"INT64","shape":[2]}]}"#)
            .unwrap();
        assert!(matches!(&h.tensors[0].data, TensorData::Json(b) if b.len() == 16));
    }

    #[test]
    fn a_response_header_holds_output_tensors_or_an_error() {
        let m = decode_message(
            br#"{"model_name":"m","outputs":[{"name":"O","datatype":"FP32","shape":[2],"data":[1,2]}]}"#,
            Direction::Response,
        )
        .unwrap();
        assert!(m.has_tensors && m.requested.is_empty());
        assert_eq!(m.tensors[0].name, "O");
        let m = decode_message(br#"{"error":"boom"}"#, Direction::Response).unwrap();
        assert_eq!(m.error.as_deref(), Some("boom"));
    }

    #[test]
    fn malformed_headers_name_the_problem() {
        let err = |t: &str| {
            decode_infer_request(
                Body::json(Bytes::copy_from_slice(t.as_bytes())),
                &Default::default(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(err("{").contains("invalid JSON"));
        assert!(err("{}").contains("invalid request: the request has no 'inputs'"));
        assert!(err(r#"{"inputs":[{"name":"A","shape":[1],"data":[1]}]}"#)
            .contains("input 'A' has no 'datatype'"));
        assert!(
            err(r#"{"inputs":[{"name":"A","shape":[1],"datatype":"FLOAT","data":[1]}]}"#)
                .contains("'FLOAT'")
        );
        assert!(
            err(r#"{"inputs":[{"name":"A","shape":[1.5],"datatype":"FP32","data":[1]}]}"#)
                .contains("input 'A': 'shape' must be an array of integers")
        );
        assert!(
            err(r#"{"inputs":[{"name":"A","shape":[1],"datatype":"FP32"}]}"#).contains("no 'data'")
        );
        let good = r#""inputs":[{"name":"A","shape":[1],"datatype":"FP32","data":[1]}]"#;
        for (extra, needle) in [
            (r#""model_name":5"#, "expected 'model_name' as a string"),
            (r#""outputs":5"#, "expected 'outputs' as an array"),
            (
                r#""outputs":[{"name":5}]"#,
                "expected output #0: 'name' as a string",
            ),
            (
                r#""outputs":[{"nam":"Y"}]"#,
                "output #0: unknown field 'nam'",
            ),
            (r#""outputs":[{}]"#, "output #0 has no 'name'"),
            (
                r#""outputs":[{"name":"Y","parameters":{"binary_data":2}}]"#,
                "output 'Y': parameter 'binary_data' must be a bool",
            ),
            (
                r#""parameters":{"binary_data_output":"yes"}"#,
                "parameter 'binary_data_output' must be a bool",
            ),
        ] {
            let e = err(&format!("{{{extra},{good}}}"));
            assert!(e.contains(needle), "{extra}: {e}");
        }
        assert!(
            err(r#"{"inputs":[{"name":[],"shape":[1],"datatype":"FP32","data":[1]}]}"#)
                .contains("expected input #0: 'name' as a string")
        );
        // Nesting in a field the decoder skips costs no stack (serde_json skips iteratively);
        // wherever a value is built recursively, the limit answers.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(header(format!("{{\"x\":{deep},\"inputs\":[]}}").as_bytes()).is_ok());
        let e = describe_json_error(serde_json::from_str::<serde_json::Value>(&deep).unwrap_err());
        assert!(e.to_string().contains("nested more than 128 levels"), "{e}");
    }
}
