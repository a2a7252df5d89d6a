//! `InferParameter` maps to and from the engine's [`Parameters`], and the parameter names
//! the gRPC frontend itself reads or writes.

use std::collections::HashMap;

use nereid_engine::{ParamValue, Parameters};
use nereid_proto::inference::infer_parameter::ParameterChoice;
use nereid_proto::InferParameter;

/// Response parameter of a streamed response: `true` on the last response of a request.
pub const FINAL_RESPONSE: &str = "triton_final_response";

/// Request parameter with which a stream client asks to receive a final response that
/// carries no outputs (Triton sends such responses only when asked).
pub const ENABLE_EMPTY_FINAL: &str = "triton_enable_empty_final_response";

/// One parameter value from the wire; `None` when the oneof is unset.
pub fn param_from_wire(p: InferParameter) -> Option<ParamValue> {
    Some(match p.parameter_choice? {
        ParameterChoice::BoolParam(v) => ParamValue::Bool(v),
        ParameterChoice::Int64Param(v) => ParamValue::Int(v),
        ParameterChoice::StringParam(v) => ParamValue::String(v),
        ParameterChoice::DoubleParam(v) => ParamValue::Double(v),
        ParameterChoice::Uint64Param(v) => ParamValue::Uint(v),
    })
}

/// One parameter value for the wire.
pub fn param_to_wire(v: &ParamValue) -> InferParameter {
    let choice = match v {
        ParamValue::Bool(v) => ParameterChoice::BoolParam(*v),
        ParamValue::Int(v) => ParameterChoice::Int64Param(*v),
        ParamValue::Uint(v) => ParameterChoice::Uint64Param(*v),
        ParamValue::Double(v) => ParameterChoice::DoubleParam(*v),
        ParamValue::String(v) => ParameterChoice::StringParam(v.clone()),
    };
    InferParameter {
        parameter_choice: Some(choice),
    }
}

/// A wire parameter map as engine parameters; parameters without a value are dropped
/// (proto3 cannot tell "unset" from "absent", so there is nothing to keep).
pub fn params_from_wire(map: HashMap<String, InferParameter>) -> Parameters {
    map.into_iter()
        .filter_map(|(k, v)| Some((k, param_from_wire(v)?)))
        .collect()
}

/// Engine parameters as a wire parameter map.
pub fn params_to_wire(params: &Parameters) -> HashMap<String, InferParameter> {
    params
        .iter()
        .map(|(k, v)| (k.clone(), param_to_wire(v)))
        .collect()
}

/// A `bool` parameter of a wire map, if present and a bool.
pub fn wire_bool(map: &HashMap<String, InferParameter>, key: &str) -> Option<bool> {
    match map.get(key)?.parameter_choice {
        Some(ParameterChoice::BoolParam(v)) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let mut params = Parameters::new();
        params.insert("b".into(), ParamValue::Bool(true));
        params.insert("i".into(), ParamValue::Int(-3));
        params.insert("u".into(), ParamValue::Uint(u64::MAX));
        params.insert("d".into(), ParamValue::Double(0.25));
        params.insert("s".into(), ParamValue::String("x".into()));
        let mut wire = params_to_wire(&params);
        assert_eq!(wire_bool(&wire, "b"), Some(true));
        assert_eq!(wire_bool(&wire, "i"), None);
        wire.insert(
            "empty".into(),
            InferParameter {
                parameter_choice: None,
            },
        );
        assert_eq!(params_from_wire(wire), params);
    }
}
