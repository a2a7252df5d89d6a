//! The WebSocket frame format (see `frontends/stream/README.md`).
//!
//! Client to server:
//! - text frame: a KServe v2 infer request JSON with `id` (and `model_name` unless the
//!   route names the model), or a control message `{"cancel": "<id>"}`;
//! - binary frame: `u32` little-endian length `N`, then `N` bytes of that same JSON, then the
//!   raw bytes of every input that carries `"parameters": {"binary_data_size": n}` (and no
//!   `data`), in input order: KServe's binary tensor extension in one frame.
//!
//! Server to client: one frame per response, `{"id", "model_name", "model_version",
//! "outputs", "parameters"?, "final"}`; binary (same header layout, outputs with
//! `binary_data_size`) when any output is sent binary; an error is the text frame
//! `{"id", "error", "code", "final": true}`.

use std::collections::HashMap;

use axum::extract::ws::Message;
use bytes::{BufMut, Bytes, BytesMut};
use nereid_engine::{DataType, EngineError, InferRequest, InferResponse, RequestedOutput, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json::{decode_data, encode_data, params_from_json, params_to_json, Data};

/// Request parameter: send every output binary (`true`) or as JSON (`false`).
const BINARY_OUTPUT: &str = "binary_data_output";
/// Input or output parameter: the tensor's bytes follow the header (input: how many).
const BINARY_SIZE: &str = "binary_data_size";
/// Output parameter: send this output binary.
const BINARY_DATA: &str = "binary_data";

/// What a client frame asks for.
pub(crate) enum Incoming {
    /// Run a request.
    Infer(Box<Submission>),
    /// Stop the request with this id.
    Cancel(String),
}

/// A request ready for the engine, and how its responses are to be encoded.
pub(crate) struct Submission {
    /// The id the client gave (empty when it gave none).
    pub id: String,
    /// The engine request.
    pub request: InferRequest,
    /// How outputs go back.
    pub encoding: Encoding,
}

/// Whether each output goes back binary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Encoding {
    default_binary: bool,
    per_output: HashMap<String, bool>,
}

impl Encoding {
    fn binary(&self, output: &str) -> bool {
        self.per_output
            .get(output)
            .copied()
            .unwrap_or(self.default_binary)
    }
}

/// A frame that could not be taken, with the id it carried when it had one.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub id: Option<String>,
    pub error: EngineError,
}

#[derive(Deserialize)]
struct WireRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model_name: Option<String>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    inputs: Option<Vec<WireInput>>,
    #[serde(default)]
    outputs: Vec<WireOutput>,
    #[serde(default)]
    cancel: Option<String>,
}

#[derive(Deserialize)]
struct WireInput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct WireOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// The model a frame goes to when it names none, and the version the route names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Defaults {
    pub model: Option<String>,
    pub version: Option<String>,
}

/// Parses a text frame.
pub(crate) fn parse_text(text: &str, defaults: &Defaults) -> Result<Incoming, Rejected> {
    parse(text.as_bytes(), Bytes::new(), false, defaults)
}

/// Parses a binary frame: length-prefixed JSON header, then the binary inputs.
pub(crate) fn parse_binary(frame: Bytes, defaults: &Defaults) -> Result<Incoming, Rejected> {
    let reject = |msg: String| Rejected {
        id: None,
        error: EngineError::invalid(msg),
    };
    if frame.len() < 4 {
        return Err(reject(
            "binary frame is shorter than its 4-byte header length".into(),
        ));
    }
    let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    let end = 4usize.checked_add(len).filter(|&e| e <= frame.len()).ok_or_else(|| {
        reject(format!("binary frame declares a {len}-byte JSON header but holds {} bytes after the length", frame.len() - 4))
    })?;
    parse(&frame[4..end], frame.slice(end..), true, defaults)
}

fn parse(
    header: &[u8],
    mut payload: Bytes,
    binary_frame: bool,
    defaults: &Defaults,
) -> Result<Incoming, Rejected> {
    let wire: WireRequest = serde_json::from_slice(header).map_err(|e| Rejected {
        id: None,
        error: EngineError::invalid(format!("invalid request JSON: {e}")),
    })?;
    let id = wire.id.clone();
    let reject = |msg: String| Rejected {
        id: id.clone(),
        error: EngineError::invalid(msg),
    };
    if let Some(target) = wire.cancel {
        return Ok(Incoming::Cancel(target));
    }
    let model_name = wire
        .model_name
        .or_else(|| defaults.model.clone())
        .ok_or_else(|| {
            reject(
                "the request names no model: set 'model_name' or use /v2/models/{model}/infer/ws"
                    .into(),
            )
        })?;
    let model_version = match wire
        .model_version
        .or_else(|| defaults.version.clone())
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| reject(format!("model_version '{v}' is not an integer")))?,
        ),
    };
    let parameters = params_from_json(&wire.parameters.unwrap_or_default()).map_err(&reject)?;
    let mut encoding = Encoding {
        default_binary: parameters
            .get(BINARY_OUTPUT)
            .and_then(|p| p.as_bool())
            .unwrap_or(binary_frame),
        per_output: HashMap::new(),
    };
    let inputs = wire
        .inputs
        .ok_or_else(|| reject("the request has no 'inputs'".into()))?;
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let dtype: DataType = input
            .datatype
            .parse()
            .map_err(|e: EngineError| reject(format!("input '{}': {e}", input.name)))?;
        let size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get(BINARY_SIZE))
            .and_then(Value::as_u64);
        let data = match (size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(reject(format!(
                    "input '{}' has both 'data' and '{BINARY_SIZE}'",
                    input.name
                )))
            }
            (Some(n), None) => {
                let n = n as usize;
                if n > payload.len() {
                    return Err(reject(format!(
                        "input '{}' declares {n} binary bytes but only {} remain in the frame",
                        input.name,
                        payload.len()
                    )));
                }
                payload.split_to(n)
            }
            (None, Some(data)) => {
                decode_data(&input.name, dtype, &input.shape, data).map_err(&reject)?
            }
            (None, None) => return Err(reject(format!("input '{}' has no 'data'", input.name))),
        };
        tensors.push(Tensor::new(input.name, dtype, input.shape, data));
    }
    if !payload.is_empty() {
        return Err(reject(format!(
            "{} bytes of the frame belong to no input",
            payload.len()
        )));
    }
    let outputs = wire
        .outputs
        .into_iter()
        .map(|o| {
            if let Some(b) = o
                .parameters
                .as_ref()
                .and_then(|p| p.get(BINARY_DATA))
                .and_then(Value::as_bool)
            {
                encoding.per_output.insert(o.name.clone(), b);
            }
            RequestedOutput {
                name: o.name,
                parameters: Default::default(),
            }
        })
        .collect();
    let request = InferRequest {
        model_name,
        model_version,
        id: id.clone().unwrap_or_default(),
        inputs: tensors,
        outputs,
        parameters,
        deadline: None,
    };
    Ok(Incoming::Infer(Box::new(Submission {
        id: id.unwrap_or_default(),
        request,
        encoding,
    })))
}

#[derive(Serialize)]
struct WireResponse<'a> {
    id: &'a str,
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    outputs: Vec<WireTensor<'a>>,
    #[serde(rename = "final")]
    is_final: bool,
}

#[derive(Serialize)]
struct WireTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data>,
}

#[derive(Serialize)]
struct WireError<'a> {
    id: Option<&'a str>,
    error: String,
    code: u16,
    #[serde(rename = "final")]
    is_final: bool,
}

/// The frame of one response of request `id`.
pub(crate) fn response(id: &str, response: &InferResponse, encoding: &Encoding) -> Message {
    let mut binary: Vec<&Bytes> = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for t in &response.outputs {
        let (parameters, data) = if encoding.binary(&t.name) {
            binary.push(&t.data);
            let mut p = Map::new();
            p.insert(BINARY_SIZE.into(), Value::from(t.data.len()));
            (Some(p), None)
        } else {
            match encode_data(t) {
                Ok(data) => (None, Some(data)),
                Err(e) => {
                    return error(
                        Some(id),
                        &EngineError::internal(format!("output '{}': {e}", t.name)),
                    )
                }
            }
        };
        outputs.push(WireTensor {
            name: &t.name,
            datatype: t.dtype.as_str(),
            shape: &t.shape,
            parameters,
            data,
        });
    }
    let header = WireResponse {
        id,
        model_name: &response.model_name,
        model_version: response.model_version.to_string(),
        parameters: params_to_json(&response.parameters),
        outputs,
        is_final: response.is_final,
    };
    let json = serde_json::to_vec(&header).expect("responses serialise");
    if binary.is_empty() {
        return Message::Text(String::from_utf8(json).expect("JSON is UTF-8").into());
    }
    let mut frame =
        BytesMut::with_capacity(4 + json.len() + binary.iter().map(|b| b.len()).sum::<usize>());
    frame.put_u32_le(json.len() as u32);
    frame.put_slice(&json);
    for b in binary {
        frame.put_slice(b);
    }
    Message::Binary(frame.freeze())
}

/// The error frame of request `id` (or of a frame that had none): always final.
pub(crate) fn error(id: Option<&str>, error: &EngineError) -> Message {
    let (status, _, _) = crate::error::classify(error);
    let body = WireError {
        id,
        error: error.to_string(),
        code: status.as_u16(),
        is_final: true,
    };
    Message::Text(
        serde_json::to_string(&body)
            .expect("errors serialise")
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(incoming: Result<Incoming, Rejected>) -> Submission {
        match incoming {
            Ok(Incoming::Infer(s)) => *s,
            Ok(Incoming::Cancel(_)) => panic!("expected a request"),
            Err(r) => panic!("rejected: {}", r.error),
        }
    }

    #[test]
    fn binary_frame_carries_header_then_tensors() {
        let header = br#"{"id":"a","model_name":"m","inputs":[
            {"name":"X","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}},
            {"name":"Y","datatype":"INT32","shape":[1],"data":[7]}]}"#;
        let mut frame = BytesMut::new();
        frame.put_u32_le(header.len() as u32);
        frame.put_slice(header);
        frame.put_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        let s = infer(parse_binary(frame.freeze(), &Defaults::default()));
        assert_eq!(s.request.inputs[0].to_vec::<i32>().unwrap(), vec![1, 2]);
        assert_eq!(s.request.inputs[1].to_vec::<i32>().unwrap(), vec![7]);
        assert!(
            s.encoding.binary("OUT"),
            "binary frames are answered binary by default"
        );
    }

    #[test]
    fn defaults_cancel_and_rejections() {
        let defaults = Defaults {
            model: Some("m".into()),
            version: None,
        };
        let s = infer(parse_text(
            r#"{"id":"1","inputs":[],"outputs":[{"name":"O","parameters":{"binary_data":true}}]}"#,
            &defaults,
        ));
        assert_eq!(s.request.model_name, "m");
        assert!(s.encoding.binary("O") && !s.encoding.binary("P"));
        assert!(
            matches!(parse_text(r#"{"cancel":"7"}"#, &defaults), Ok(Incoming::Cancel(id)) if id == "7")
        );
        let r = parse_text(
            r#"{"id":"9","inputs":[{"name":"X","datatype":"INT32","shape":[1]}]}"#,
            &defaults,
        )
        .err()
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("9"));
        assert!(parse_text("{", &defaults).is_err());
        assert!(parse_text(r#"{"id":"1","inputs":[]}"#, &Defaults::default()).is_err());
    }

    #[test]
    fn responses_are_text_unless_an_output_is_binary() {
        let out = Tensor::from_vec("OUT", DataType::Int32, vec![1], vec![5i32]);
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: 1,
            outputs: vec![out],
            is_final: true,
            ..Default::default()
        };
        let Message::Text(text) = response("a", &resp, &Encoding::default()) else {
            panic!("expected text")
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([5]));
        assert_eq!(v["final"], true);
        let binary = Encoding {
            default_binary: true,
            per_output: HashMap::new(),
        };
        let Message::Binary(frame) = response("a", &resp, &binary) else {
            panic!("expected binary")
        };
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        let v: Value = serde_json::from_slice(&frame[4..4 + len]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 4);
        assert_eq!(&frame[4 + len..], &5i32.to_le_bytes());
    }
}
