//! Inference messages: `ModelInferRequest` to the engine's [`InferRequest`] and
//! [`InferResponse`] to `ModelInferResponse` (the server's direction), and the reverse of
//! both (the client's direction). Tensor bytes are shared, never copied: raw inputs are
//! slices of the received message and outputs go out as `raw_output_contents`.

use std::collections::HashMap;
use std::time::Instant;

use nereid_engine::{
    DataType, EngineError, InferRequest, InferResponse, Parameters, RequestedOutput, SharedMemory,
    SharedMemoryRef, Tensor, REGION_PARAMETER,
};
use nereid_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use nereid_proto::inference::model_infer_response::InferOutputTensor;
use nereid_proto::{InferParameter, ModelInferRequest, ModelInferResponse};

use super::contents::{is_empty, tensor_from_contents};
use super::params::{params_from_wire, params_to_wire, wire_bool, FINAL_RESPONSE};

/// Where an input or output is in system shared memory, if its parameters say so.
fn shared_memory_ref(
    params: &HashMap<String, InferParameter>,
    what: &str,
) -> Result<Option<SharedMemoryRef>, EngineError> {
    if !params.keys().any(|k| k.starts_with("shared_memory_")) {
        return Ok(None);
    }
    SharedMemoryRef::from_params(&params_from_wire(params.clone()), what)
}

/// Decodes a wire request into an engine request with the given client deadline, reading
/// inputs placed in system shared memory from `shm`.
///
/// Either every input not in shared memory carries typed `contents`, or the request
/// carries one `raw_input_contents` entry per such input, in input order; anything else, a
/// bad datatype string, or typed contents that disagree with the shape is INVALID_ARGUMENT
/// naming the input. Classification is UNIMPLEMENTED.
pub fn request_from_wire(
    msg: ModelInferRequest,
    deadline: Option<Instant>,
    shm: &SharedMemory,
) -> Result<InferRequest, EngineError> {
    let model_version = nereid_kserve::parse_version(&msg.model_version)?;
    let raw = msg.raw_input_contents;
    let in_request = msg
        .inputs
        .iter()
        .filter(|i| !i.parameters.contains_key(REGION_PARAMETER))
        .count();
    if !raw.is_empty() && raw.len() != in_request {
        return Err(EngineError::invalid(format!(
            "the request has {in_request} inputs outside shared memory but {} raw_input_contents \
             entries; send exactly one raw entry per such input, in the order of 'inputs'",
            raw.len()
        )));
    }
    let use_raw = !raw.is_empty();
    let mut raw = raw.into_iter();
    let mut inputs = Vec::with_capacity(msg.inputs.len());
    for input in msg.inputs {
        let InferInputTensor {
            name,
            datatype,
            shape,
            parameters,
            contents,
        } = input;
        let dtype: DataType = datatype
            .parse()
            .map_err(|e: EngineError| EngineError::invalid(format!("input '{name}': {e}")))?;
        let what = format!("input '{name}'");
        if let Some(at) = shared_memory_ref(&parameters, &what)? {
            let data = shm.read(&at, &what)?;
            inputs.push(Tensor::new(name, dtype, shape, data));
            continue;
        }
        let typed = contents.filter(|c| !is_empty(c));
        let tensor = match (use_raw, typed) {
            (true, Some(_)) => {
                return Err(EngineError::invalid(format!(
                "input '{name}' sets 'contents' but the request also uses raw_input_contents; use \
                     one or the other for every input"
            )))
            }
            // Zero-copy: the raw entry is already a slice of the received message.
            (true, None) => Tensor::new(name, dtype, shape, raw.next().unwrap_or_default()),
            (false, typed) => {
                tensor_from_contents("input", name, dtype, shape, typed.unwrap_or_default())?
            }
        };
        inputs.push(tensor);
    }
    let mut outputs = Vec::with_capacity(msg.outputs.len());
    for InferRequestedOutputTensor { name, parameters } in msg.outputs {
        // Checked here so a bad output placement fails before the model computes.
        shared_memory_ref(&parameters, &format!("output '{name}'"))?;
        if parameters.contains_key("classification") {
            return Err(EngineError::Unimplemented(format!(
                "output '{name}' asks for classification, which Nereid does not support yet"
            )));
        }
        outputs.push(RequestedOutput {
            name,
            parameters: params_from_wire(parameters),
        });
    }
    Ok(InferRequest {
        model_name: msg.model_name,
        model_version,
        id: msg.id,
        inputs,
        outputs,
        parameters: params_from_wire(msg.parameters),
        deadline,
        origin: Default::default(),
    })
}

/// Tensors as wire tensor headers (built by `header` from name, datatype and shape) and
/// their bytes for the `raw_*_contents` list, shared rather than copied.
fn split_raw<T>(
    tensors: Vec<Tensor>,
    header: impl Fn(String, String, Vec<i64>) -> T,
) -> (Vec<T>, Vec<bytes::Bytes>) {
    tensors
        .into_iter()
        .map(|t| {
            let head = header(t.name, t.dtype.as_str().to_string(), t.shape);
            (head, t.data)
        })
        .unzip()
}

/// Encodes an engine response with raw outputs (what tritonclient reads). `final_flag`
/// adds the `triton_final_response` parameter that streamed responses carry.
/// Encodes an engine response for the wire; `placed` gives, by output position, the
/// parameters of outputs written to shared memory (their raw entry is then empty, as in
/// Triton, so the other outputs keep their positions).
pub fn response_to_wire(
    resp: InferResponse,
    final_flag: bool,
    placed: &[Option<Parameters>],
) -> ModelInferResponse {
    let mut parameters = params_to_wire(&resp.parameters);
    if final_flag {
        parameters.insert(
            FINAL_RESPONSE.into(),
            super::params::param_to_wire(&nereid_engine::ParamValue::Bool(resp.is_final)),
        );
    }
    let (mut outputs, raw) = split_raw(resp.outputs, |name, datatype, shape| InferOutputTensor {
        name,
        datatype,
        shape,
        parameters: HashMap::new(),
        contents: None,
    });
    for (output, params) in outputs.iter_mut().zip(placed) {
        if let Some(params) = params {
            output.parameters = params_to_wire(params);
        }
    }
    ModelInferResponse {
        model_name: resp.model_name,
        model_version: resp.model_version.to_string(),
        id: resp.id,
        parameters,
        outputs,
        raw_output_contents: raw,
    }
}

/// Encodes an engine request for the wire with raw inputs (the client's direction). The
/// deadline is not part of the message: the client sends it as `grpc-timeout`.
pub fn request_to_wire(req: InferRequest) -> ModelInferRequest {
    let (inputs, raw) = split_raw(req.inputs, |name, datatype, shape| InferInputTensor {
        name,
        datatype,
        shape,
        parameters: HashMap::new(),
        contents: None,
    });
    ModelInferRequest {
        model_name: req.model_name,
        model_version: req.model_version.map(|v| v.to_string()).unwrap_or_default(),
        id: req.id,
        parameters: params_to_wire(&req.parameters),
        inputs,
        outputs: req
            .outputs
            .into_iter()
            .map(|o| InferRequestedOutputTensor {
                name: o.name,
                parameters: params_to_wire(&o.parameters),
            })
            .collect(),
        raw_input_contents: raw,
    }
}

/// Decodes a wire response (raw or typed outputs) into an engine response (the client's
/// direction). `is_final` comes from `triton_final_response`, true when absent.
pub fn response_from_wire(msg: ModelInferResponse) -> Result<InferResponse, EngineError> {
    let is_final = wire_bool(&msg.parameters, FINAL_RESPONSE).unwrap_or(true);
    let model_version = nereid_kserve::parse_version(&msg.model_version)?.unwrap_or_default();
    let use_raw = !msg.raw_output_contents.is_empty();
    if use_raw && msg.raw_output_contents.len() != msg.outputs.len() {
        return Err(EngineError::internal(format!(
            "the response has {} outputs but {} raw_output_contents entries",
            msg.outputs.len(),
            msg.raw_output_contents.len()
        )));
    }
    let mut raw = msg.raw_output_contents.into_iter();
    let mut outputs = Vec::with_capacity(msg.outputs.len());
    for o in msg.outputs {
        let dtype: DataType = o
            .datatype
            .parse()
            .map_err(|e: EngineError| EngineError::internal(format!("output '{}': {e}", o.name)))?;
        let tensor = if use_raw {
            Tensor::new(o.name, dtype, o.shape, raw.next().unwrap_or_default())
        } else {
            tensor_from_contents(
                "output",
                o.name,
                dtype,
                o.shape,
                o.contents.unwrap_or_default(),
            )?
        };
        outputs.push(tensor);
    }
    let mut parameters = params_from_wire(msg.parameters);
    parameters.remove(FINAL_RESPONSE);
    Ok(InferResponse {
        model_name: msg.model_name,
        model_version,
        id: msg.id,
        outputs,
        parameters,
        is_final,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use nereid_engine::ParamValue;
    use nereid_proto::inference::infer_parameter::ParameterChoice;
    use nereid_proto::InferTensorContents;

    fn input(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: HashMap::new(),
            contents,
        }
    }

    fn ints(v: Vec<i32>) -> Option<InferTensorContents> {
        Some(InferTensorContents {
            int_contents: v,
            ..Default::default()
        })
    }

    #[test]
    fn raw_and_typed_requests_decode_to_the_same_tensor() {
        let typed = ModelInferRequest {
            model_name: "m".into(),
            model_version: "2".into(),
            id: "a".into(),
            inputs: vec![input("X", "INT32", vec![1, 2], ints(vec![7, 8]))],
            ..Default::default()
        };
        let t = request_from_wire(typed, None, &SharedMemory::default()).unwrap();
        assert_eq!(t.model_version, Some(2));
        let raw_bytes = Bytes::from(vec![7u8, 0, 0, 0, 8, 0, 0, 0]);
        let raw = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![input("X", "INT32", vec![1, 2], None)],
            raw_input_contents: vec![raw_bytes.clone()],
            ..Default::default()
        };
        let r = request_from_wire(raw, None, &SharedMemory::default()).unwrap();
        assert_eq!(r.inputs, t.inputs);
        // Zero-copy: the tensor points into the received buffer.
        assert_eq!(r.inputs[0].data.as_ptr(), raw_bytes.as_ptr());
    }

    fn string_param(s: &str) -> InferParameter {
        InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam(s.into())),
        }
    }

    fn uint_param(n: u64) -> InferParameter {
        InferParameter {
            parameter_choice: Some(ParameterChoice::Uint64Param(n)),
        }
    }

    #[test]
    fn malformed_requests_name_the_input() {
        let req = |inputs, raw: Vec<Bytes>| ModelInferRequest {
            model_name: "m".into(),
            inputs,
            raw_input_contents: raw,
            ..Default::default()
        };
        let err = |r| request_from_wire(r, None, &SharedMemory::default()).unwrap_err();
        let e = err(req(
            vec![input("X", "FLOAT", vec![1], ints(vec![1]))],
            vec![],
        ));
        assert!(
            matches!(&e, EngineError::InvalidArgument(m) if m.contains("'X'") && m.contains("FLOAT")),
            "{e}"
        );
        let e = err(req(
            vec![input("X", "INT32", vec![1], ints(vec![1]))],
            vec![Bytes::from_static(&[0; 4])],
        ));
        assert!(
            matches!(&e, EngineError::InvalidArgument(m) if m.contains("'X'") && m.contains("one or the other")),
            "{e}"
        );
        let e = err(req(
            vec![
                input("X", "INT32", vec![1], None),
                input("Y", "INT32", vec![1], None),
            ],
            vec![Bytes::new()],
        ));
        assert!(
            matches!(&e, EngineError::InvalidArgument(m) if m.contains("2 inputs outside shared memory but 1 raw_input_contents")),
            "{e}"
        );
        let e = err(req(
            vec![input("X", "INT32", vec![3], ints(vec![1]))],
            vec![],
        ));
        assert!(
            matches!(&e, EngineError::InvalidArgument(m) if m.contains("'X'") && m.contains("3 elements")),
            "{e}"
        );
        let mut shm = input("X", "INT32", vec![1], None);
        shm.parameters
            .insert("shared_memory_region".into(), string_param("r"));
        shm.parameters
            .insert("shared_memory_byte_size".into(), uint_param(4));
        let e = err(req(vec![shm], vec![]));
        assert!(
            matches!(&e, EngineError::InvalidArgument(m) if m.contains("input 'X' names shared-memory region 'r', which is not registered")),
            "{e}"
        );
        let bad_version = ModelInferRequest {
            model_version: "x".into(),
            ..Default::default()
        };
        assert!(matches!(err(bad_version), EngineError::InvalidArgument(_)));
    }

    #[test]
    fn responses_and_client_requests_round_trip() {
        let mut resp = InferResponse {
            model_name: "m".into(),
            model_version: 3,
            id: "q".into(),
            outputs: vec![Tensor::from_strings("S", vec![2], ["a", "bc"])],
            is_final: false,
            ..Default::default()
        };
        resp.parameters.insert("k".into(), ParamValue::Int(1));
        let wire = response_to_wire(resp.clone(), true, &[]);
        assert_eq!(wire_bool(&wire.parameters, FINAL_RESPONSE), Some(false));
        assert_eq!(wire.outputs[0].datatype, "BYTES");
        assert_eq!(response_from_wire(wire).unwrap().outputs, resp.outputs);

        let mut req = InferRequest::new(
            "m",
            vec![Tensor::from_vec(
                "X",
                DataType::Fp32,
                vec![2],
                vec![1f32, 2.0],
            )],
        );
        req.model_version = Some(4);
        req.outputs.push(RequestedOutput {
            name: "Y".into(),
            parameters: Default::default(),
        });
        let back = request_from_wire(request_to_wire(req.clone()), None, &SharedMemory::default())
            .unwrap();
        assert_eq!(
            (back.model_version, back.inputs, back.outputs),
            (req.model_version, req.inputs, req.outputs)
        );
    }
}
