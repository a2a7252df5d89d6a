//! Checks a request against its model's config before anything is queued, so bad input
//! costs nothing and never reaches a model.

use std::collections::HashSet;
use std::time::Duration;

use crate::{EngineError, InferRequest, ModelSpec, Result, TensorSpec};

/// What validation learned about a request that the scheduler needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Admission {
    /// Batch elements the request holds (1 for non-batching models).
    pub batch_size: usize,
    /// Priority level, 0-based (0 is the highest).
    pub level: usize,
    /// Queue timeout asked for by the request's `timeout` parameter, if any.
    pub timeout: Option<Duration>,
}

/// Validates `req` against `spec`.
pub(crate) fn validate(spec: &ModelSpec, req: &InferRequest) -> Result<Admission> {
    let model = spec.name();
    let bad = |msg: String| EngineError::invalid(format!("model '{model}': {msg}"));
    let batching = spec.max_batch_size > 0;
    let mut seen = HashSet::with_capacity(req.inputs.len());
    let mut batch_size: Option<usize> = None;

    for tensor in &req.inputs {
        let name = tensor.name.as_str();
        if !seen.insert(name) {
            return Err(bad(format!("input '{name}' is given more than once")));
        }
        let expected = spec.input(name).ok_or_else(|| {
            bad(format!(
                "unexpected input '{name}'; the model's inputs are {}",
                names(&spec.inputs)
            ))
        })?;
        if tensor.dtype != expected.dtype {
            return Err(bad(format!(
                "input '{name}' has datatype {} but the model expects {}",
                tensor.dtype, expected.dtype
            )));
        }
        let dims = if batching {
            let Some((&batch, rest)) = tensor.shape.split_first() else {
                return Err(bad(format!(
                    "input '{name}' has shape [] but the model batches, so the shape needs a batch dimension then {:?}",
                    expected.dims
                )));
            };
            if batch < 1 || batch as usize > spec.max_batch_size {
                return Err(bad(format!(
                    "input '{name}' has batch size {batch}, outside 1..={} (max_batch_size)",
                    spec.max_batch_size
                )));
            }
            match batch_size {
                Some(b) if b != batch as usize => {
                    return Err(bad(format!(
                        "input '{name}' has batch size {batch} but another input has {b}"
                    )))
                }
                _ => batch_size = Some(batch as usize),
            }
            rest
        } else {
            &tensor.shape[..]
        };
        if !dims_match(&expected.dims, dims) {
            let full = if batching {
                format!(
                    "[-1{}]",
                    expected
                        .dims
                        .iter()
                        .map(|d| format!(", {d}"))
                        .collect::<String>()
                )
            } else {
                format!("{:?}", expected.dims)
            };
            return Err(bad(format!(
                "input '{name}' has shape {:?} but the model expects {full} (-1 is any size)",
                tensor.shape
            )));
        }
        tensor.check_byte_size().map_err(|e| bad(e.to_string()))?;
    }
    for input in &spec.inputs {
        if !input.optional && !seen.contains(input.name.as_str()) {
            return Err(bad(format!("missing input '{}'", input.name)));
        }
    }

    let mut requested = HashSet::with_capacity(req.outputs.len());
    for output in &req.outputs {
        if spec.output(&output.name).is_none() {
            return Err(bad(format!(
                "unknown requested output '{}'; the model's outputs are {}",
                output.name,
                names(&spec.outputs)
            )));
        }
        if !requested.insert(output.name.as_str()) {
            return Err(bad(format!(
                "output '{}' is requested more than once",
                output.name
            )));
        }
    }

    let level = match req.parameters.get("priority") {
        None => spec.default_priority - 1,
        Some(p) => match p.as_u64() {
            Some(0) => spec.default_priority - 1,
            Some(l) if l as usize <= spec.levels.len() => l as usize - 1,
            _ => {
                return Err(bad(format!(
                    "parameter 'priority' must be an integer in 0..={} (0 is the default level)",
                    spec.levels.len()
                )))
            }
        },
    };
    let timeout = match req.parameters.get("timeout") {
        None => None,
        Some(t) => Some(Duration::from_micros(t.as_u64().ok_or_else(|| {
            bad("parameter 'timeout' must be a non-negative integer of microseconds".into())
        })?)),
    };
    Ok(Admission {
        batch_size: batch_size.unwrap_or(1),
        level,
        timeout,
    })
}

fn dims_match(expected: &[i64], actual: &[i64]) -> bool {
    expected.len() == actual.len()
        && expected
            .iter()
            .zip(actual)
            .all(|(&e, &a)| a >= 0 && (e == -1 || e == a))
}

fn names(specs: &[TensorSpec]) -> String {
    let names: Vec<_> = specs.iter().map(|s| format!("'{}'", s.name)).collect();
    format!("[{}]", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataType, ParamValue, Tensor};

    fn spec() -> ModelSpec {
        ModelSpec::from_config(
            nereid_proto::parse_model_config(
                r#"name: "m" max_batch_size: 4
                input [ { name: "A" data_type: TYPE_INT32 dims: [2] },
                        { name: "B" data_type: TYPE_FP32 dims: [-1] optional: true } ]
                output { name: "Y" data_type: TYPE_INT32 dims: [2] }
                dynamic_batching { priority_levels: 2 default_priority_level: 2 }"#,
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn a(shape: Vec<i64>, n: usize) -> Tensor {
        Tensor::from_vec("A", DataType::Int32, shape, vec![1i32; n])
    }

    fn err(req: InferRequest) -> String {
        validate(&spec(), &req).unwrap_err().to_string()
    }

    #[test]
    fn good_request_admits_with_batch_and_priority() {
        let mut req = InferRequest::new("m", vec![a(vec![3, 2], 6)]);
        let adm = validate(&spec(), &req).unwrap();
        assert_eq!(
            adm,
            Admission {
                batch_size: 3,
                level: 1,
                timeout: None
            }
        );
        req.parameters.insert("priority".into(), ParamValue::Int(1));
        req.parameters
            .insert("timeout".into(), ParamValue::Int(500));
        let adm = validate(&spec(), &req).unwrap();
        assert_eq!(
            (adm.level, adm.timeout),
            (0, Some(Duration::from_micros(500)))
        );
    }

    #[test]
    fn each_bad_input_names_the_problem() {
        assert!(err(InferRequest::new("m", vec![])).contains("missing input 'A'"));
        assert!(err(InferRequest::new("m", vec![a(vec![5, 2], 10)])).contains("batch size 5"));
        assert!(err(InferRequest::new("m", vec![a(vec![1, 3], 3)])).contains("shape [1, 3]"));
        assert!(err(InferRequest::new("m", vec![a(vec![1, 2], 3)])).contains("needs 8 bytes"));
        assert!(err(InferRequest::new("m", vec![a(vec![], 1)])).contains("batch dimension"));
        let wrong = Tensor::from_vec("A", DataType::Fp32, vec![1, 2], vec![0f32; 2]);
        assert!(err(InferRequest::new("m", vec![wrong]))
            .contains("datatype FP32 but the model expects INT32"));
        let extra = Tensor::from_vec("C", DataType::Fp32, vec![1, 2], vec![0f32; 2]);
        assert!(err(InferRequest::new("m", vec![a(vec![1, 2], 2), extra]))
            .contains("unexpected input 'C'"));
        assert!(err(InferRequest::new(
            "m",
            vec![a(vec![1, 2], 2), a(vec![1, 2], 2)]
        ))
        .contains("more than once"));
        let b = Tensor::from_vec("B", DataType::Fp32, vec![2, 1], vec![0f32; 2]);
        assert!(
            err(InferRequest::new("m", vec![a(vec![1, 2], 2), b])).contains("another input has 1")
        );
        let mut req = InferRequest::new("m", vec![a(vec![1, 2], 2)]);
        req.outputs.push(crate::RequestedOutput {
            name: "Z".into(),
            parameters: Default::default(),
        });
        assert!(err(req).contains("unknown requested output 'Z'"));
        let mut req = InferRequest::new("m", vec![a(vec![1, 2], 2)]);
        req.parameters.insert("priority".into(), ParamValue::Int(3));
        assert!(err(req).contains("'priority'"));
    }
}
