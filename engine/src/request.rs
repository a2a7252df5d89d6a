//! What a frontend hands the engine, and what comes back.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::Tensor;

/// A request or response parameter (KServe's `InferParameter`).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// `bool_param`.
    Bool(bool),
    /// `int64_param`.
    Int(i64),
    /// `uint64_param`.
    Uint(u64),
    /// `double_param`.
    Double(f64),
    /// `string_param`.
    String(String),
}

impl ParamValue {
    /// The value as an unsigned integer when it is a non-negative integer of either kind.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Int(v) if v >= 0 => Some(v as u64),
            Self::Uint(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a bool when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }
}

/// Named parameters, ordered for stable output.
pub type Parameters = BTreeMap<String, ParamValue>;

/// An output the client asked for by name.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    /// Output name as in the model config.
    pub name: String,
    /// Per-output parameters (`binary_data`, `classification`, ...), kept for the frontend.
    pub parameters: Parameters,
}

/// One inference request, decoded from any wire.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    /// Model name.
    pub model_name: String,
    /// Model version; `None` means the newest ready version.
    pub model_version: Option<i64>,
    /// Client-chosen id, echoed in responses.
    pub id: String,
    /// Input tensors.
    pub inputs: Vec<Tensor>,
    /// Requested outputs; empty means every output.
    pub outputs: Vec<RequestedOutput>,
    /// Request parameters; `priority` and `timeout` (microseconds) are honoured by the
    /// scheduler.
    pub parameters: Parameters,
    /// The client's deadline (from `grpc-timeout`, say): after it the request is not computed.
    pub deadline: Option<Instant>,
    /// Its request id and trace context, for traces and logs.
    pub origin: crate::trace::Origin,
}

impl InferRequest {
    /// A request for `model` with the given inputs, every output, and no parameters.
    pub fn new(model: impl Into<String>, inputs: Vec<Tensor>) -> Self {
        Self {
            model_name: model.into(),
            inputs,
            ..Self::default()
        }
    }

    /// Finds an input by name.
    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// The sequence the request belongs to, from its `sequence_id` parameter (a non-zero
    /// number or a non-empty string; numbers and strings never share a key). Requests with
    /// one key must reach the same engine, and their answers leave in order.
    pub fn sequence_key(&self) -> Option<String> {
        match self.parameters.get("sequence_id")? {
            ParamValue::String(s) if !s.is_empty() => Some(format!("s:{s}")),
            v => v.as_u64().filter(|&n| n != 0).map(|n| format!("n:{n}")),
        }
    }

    /// Whether the request ends its sequence (`sequence_end: true`).
    pub fn ends_sequence(&self) -> bool {
        self.parameters.get("sequence_end") == Some(&ParamValue::Bool(true))
    }
}

/// One response. Non-decoupled models send exactly one, final; decoupled models send any
/// number and mark the last final (possibly with no outputs).
#[derive(Debug, Clone, Default)]
pub struct InferResponse {
    /// Model name.
    pub model_name: String,
    /// Version that computed it.
    pub model_version: i64,
    /// The request's id.
    pub id: String,
    /// Output tensors, in config order, filtered to the requested ones.
    pub outputs: Vec<Tensor>,
    /// Response parameters.
    pub parameters: Parameters,
    /// Whether this is the request's last response.
    pub is_final: bool,
}

impl InferResponse {
    /// Finds an output by name.
    pub fn output(&self, name: &str) -> Option<&Tensor> {
        self.outputs.iter().find(|t| t.name == name)
    }
}
