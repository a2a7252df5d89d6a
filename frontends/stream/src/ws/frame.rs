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

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::{BufMut, Bytes, BytesMut};
use nereid_engine::{
    EngineError, InferRequest, InferResponse, Origin, Parameters, RequestedOutput,
};
use nereid_kserve::{binary_outputs, decode_infer_request, parse_version, Body, ResponseForm};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

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

/// What decides whether each output goes back binary: the requested outputs' and the
/// request's parameters, and the frame kind the request came in (binary frames are
/// answered binary unless the request says otherwise).
#[derive(Debug, Clone, Default)]
pub(crate) struct Encoding {
    requested: Vec<RequestedOutput>,
    parameters: Parameters,
    binary_frame: bool,
}

impl Encoding {
    fn flags(&self, response: &InferResponse) -> Vec<bool> {
        binary_outputs(
            response,
            &self.requested,
            &self.parameters,
            self.binary_frame,
        )
    }
}

/// A frame that could not be taken, with the id it carried when it had one.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub id: Option<String>,
    pub error: EngineError,
}

/// What a text frame whose first key is `cancel` says: the only control message is
/// `{"cancel": "<id>"}`. Any other first key makes the frame an infer request, so telling
/// them apart reads one key.
enum Control {
    /// Not a control message.
    Infer,
    /// `{"cancel": "<id>"}`.
    Cancel(String),
    /// A control message that is malformed, and why.
    Malformed(&'static str),
}

impl<'de> Deserialize<'de> for Control {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Control;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Control, A::Error> {
                if map.next_key::<Cow<'de, str>>()?.as_deref() != Some("cancel") {
                    return Ok(Control::Infer);
                }
                let Ok(id) = map.next_value::<String>() else {
                    return Ok(Control::Malformed(
                        "'cancel' must be the id of a request, a string",
                    ));
                };
                if map.next_key::<IgnoredAny>()?.is_some() {
                    // Read to the end, or the reader reports the rest as an error.
                    map.next_value::<IgnoredAny>()?;
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    return Ok(Control::Malformed(
                        "a cancel message holds 'cancel' and nothing else",
                    ));
                }
                Ok(Control::Cancel(id))
            }
        }
        d.deserialize_map(V)
    }
}

/// The id of a frame the codec refused, read again on its own so the error can name it.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<serde_json::Value>,
}

/// The model a frame goes to when it names none, the version the route names, and the
/// origin (request id, trace context) of the upgrade request every frame's request shares.
#[derive(Debug, Clone, Default)]
pub(crate) struct Defaults {
    pub model: Option<String>,
    pub version: Option<String>,
    pub origin: Origin,
}

/// WebSocket frames carry their tensors: a tensor naming a region is refused as such.
static NO_SHARED_MEMORY: std::sync::LazyLock<nereid_engine::SharedMemory> =
    std::sync::LazyLock::new(|| {
        nereid_engine::SharedMemory::refused(
            "WebSocket frames carry their tensors; use HTTP or gRPC for shared memory",
        )
    });

/// Parses a text frame (its bytes are decoded where they are, not copied first).
pub(crate) fn parse_text(text: Utf8Bytes, defaults: &Defaults) -> Result<Incoming, Rejected> {
    match serde_json::from_str(text.as_str()) {
        Ok(Control::Cancel(id)) => return Ok(Incoming::Cancel(id)),
        Ok(Control::Malformed(why)) => {
            return Err(Rejected {
                id: None,
                error: EngineError::invalid(format!("invalid control message: {why}")),
            })
        }
        // Not a control message; what is wrong with it the request decoder says.
        Ok(Control::Infer) | Err(_) => {}
    }
    parse(Body::json(Bytes::from(text)), false, defaults)
}

/// Parses a binary frame: length-prefixed JSON header, then the binary inputs.
pub(crate) fn parse_binary(frame: Bytes, defaults: &Defaults) -> Result<Incoming, Rejected> {
    let body = Body::from_prefixed(frame).map_err(|error| Rejected { id: None, error })?;
    parse(body, true, defaults)
}

fn parse(body: Body, binary_frame: bool, defaults: &Defaults) -> Result<Incoming, Rejected> {
    let decoded = match decode_infer_request(body.clone(), &NO_SHARED_MEMORY) {
        Ok(decoded) => decoded,
        Err(error) => {
            return Err(Rejected {
                id: id_of(&body.header),
                error,
            })
        }
    };
    let id = decoded.header.id.clone();
    let reject = |error: EngineError| Rejected {
        id: Some(id.clone()).filter(|id| !id.is_empty()),
        error,
    };
    let model_name = decoded
        .header
        .model_name
        .clone()
        .or_else(|| defaults.model.clone())
        .ok_or_else(|| {
            reject(EngineError::invalid(
                "the request names no model: set 'model_name' or use /v2/models/{model}/infer/ws",
            ))
        })?;
    let version = decoded
        .header
        .model_version
        .as_deref()
        .or(defaults.version.as_deref())
        .unwrap_or("");
    let model_version = parse_version(version).map_err(reject)?;
    let encoding = Encoding {
        requested: decoded.header.outputs.clone(),
        parameters: decoded.header.parameters.clone(),
        binary_frame,
    };
    let mut request = decoded.into_request(model_name, model_version);
    request.origin = defaults.origin.clone();
    Ok(Incoming::Infer(Box::new(Submission {
        id,
        request,
        encoding,
    })))
}

/// The id of a frame, when it is JSON with a string or numeric `id`.
fn id_of(header: &[u8]) -> Option<String> {
    match serde_json::from_slice::<IdOnly>(header).ok()?.id? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Serialize)]
struct WireError<'a> {
    id: Option<&'a str>,
    error: String,
    code: u16,
    #[serde(rename = "final")]
    is_final: bool,
}

/// The frame of one response: KServe's response JSON with `"final"`, as a text frame, or
/// length-prefixed and followed by the binary outputs when any output goes binary.
pub(crate) fn response(id: &str, response: &InferResponse, encoding: &Encoding) -> Message {
    let flags = encoding.flags(response);
    let json =
        match nereid_kserve::write_infer_response(response, &flags, &[], ResponseForm::Streamed) {
            Ok(json) => json,
            Err(e) => return error(Some(id), &e),
        };
    if !flags.iter().any(|&b| b) {
        return Message::Text(String::from_utf8(json).expect("JSON is UTF-8").into());
    }
    let binary = response
        .outputs
        .iter()
        .zip(&flags)
        .filter(|(_, &b)| b)
        .map(|(t, _)| &t.data);
    let size: usize = binary.clone().map(|b| b.len()).sum();
    let mut frame = BytesMut::with_capacity(4 + json.len() + size);
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
    use nereid_engine::{DataType, Tensor};
    use serde_json::Value;

    fn parse_str(text: &str, defaults: &Defaults) -> Result<Incoming, Rejected> {
        parse_text(text.into(), defaults)
    }

    fn answer(names: &[&str]) -> InferResponse {
        InferResponse {
            outputs: names
                .iter()
                .map(|n| Tensor::from_vec(*n, DataType::Int32, vec![1], vec![0i32]))
                .collect(),
            ..Default::default()
        }
    }

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
        assert_eq!(
            s.encoding.flags(&answer(&["OUT"])),
            vec![true],
            "binary frames are answered binary by default"
        );
    }

    #[test]
    fn defaults_cancel_and_rejections() {
        let defaults = Defaults {
            model: Some("m".into()),
            ..Defaults::default()
        };
        let s = infer(parse_str(
            r#"{"id":"1","inputs":[],"outputs":[{"name":"O","parameters":{"binary_data":true}}]}"#,
            &defaults,
        ));
        assert_eq!(s.request.model_name, "m");
        assert_eq!(s.encoding.flags(&answer(&["O", "P"])), vec![true, false]);
        assert!(
            matches!(parse_str(r#"{"cancel":"7"}"#, &defaults), Ok(Incoming::Cancel(id)) if id == "7")
        );
        for (frame, needle) in [
            (r#"{"cancel":5}"#, "'cancel' must be the id of a request"),
            (r#"{"cancel":"7","id":"8"}"#, "'cancel' and nothing else"),
        ] {
            let r = parse_str(frame, &defaults).err().unwrap();
            assert!(r.error.to_string().contains(needle), "{frame}: {}", r.error);
        }
        let r = parse_str(
            r#"{"id":"9","inputs":[{"name":"X","datatype":"INT32","shape":[1]}]}"#,
            &defaults,
        )
        .err()
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("9"));
        assert!(parse_str("{", &defaults).is_err());
        assert!(parse_str(r#"{"id":"1","inputs":[]}"#, &Defaults::default()).is_err());
        // Triton's rule on every door: "-1" is refused, no version means the newest.
        let r = parse_str(r#"{"id":"v","model_version":"-1","inputs":[]}"#, &defaults)
            .err()
            .unwrap();
        assert_eq!(r.id.as_deref(), Some("v"));
        assert!(
            matches!(r.error, EngineError::InvalidArgument(_)),
            "{}",
            r.error
        );
        let s = infer(parse_str(r#"{"id":"n","inputs":[]}"#, &defaults));
        assert_eq!(s.request.model_version, None);
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
            binary_frame: true,
            ..Encoding::default()
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
