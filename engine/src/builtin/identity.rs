//! Returns each input as the output in the same position, sharing its bytes.
//!
//! For fault tests, the config parameter `panic_marker` (an FP32 value) makes an instance
//! panic when a batch's first input starts with that value: a real repository model with
//! which to prove that a panicking model fails only its own batch.

use crate::{BatchedInstance, EngineError, ExecBatch, Instance, ModelSpec, Result, Tensor};

/// The config parameter that arms the fault of fault tests.
const PANIC_MARKER: &str = "panic_marker";

/// Output i is input i, without copying.
pub(super) struct Identity {
    pairs: Vec<(String, String)>,
    panic_marker: Option<f32>,
}

pub(super) fn instance(spec: &ModelSpec) -> Result<Instance> {
    if spec.inputs.len() != spec.outputs.len() {
        return Err(EngineError::invalid(format!(
            "model '{}' (backend identity): needs as many outputs as inputs",
            spec.name()
        )));
    }
    for (i, o) in spec.inputs.iter().zip(&spec.outputs) {
        if i.dtype != o.dtype {
            return Err(EngineError::invalid(format!(
                "model '{}' (backend identity): output '{}' must have the datatype of input '{}'",
                spec.name(),
                o.name,
                i.name
            )));
        }
    }
    let panic_marker = match spec.parameter(PANIC_MARKER) {
        None => None,
        Some(text) => {
            let bad = |why: &str| {
                EngineError::invalid(format!(
                    "model '{}' (backend identity): parameter '{PANIC_MARKER}' = '{text}' {why}",
                    spec.name()
                ))
            };
            if spec.inputs.first().map(|t| t.dtype) != Some(crate::DataType::Fp32) {
                return Err(bad("needs an FP32 first input"));
            }
            Some(
                text.trim()
                    .parse::<f32>()
                    .map_err(|_| bad("is not a number"))?,
            )
        }
    };
    let pairs = spec
        .inputs
        .iter()
        .zip(&spec.outputs)
        .map(|(i, o)| (i.name.clone(), o.name.clone()))
        .collect();
    Ok(Instance::Batched(Box::new(Identity {
        pairs,
        panic_marker,
    })))
}

impl BatchedInstance for Identity {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        if let (Some(marker), Some((input, _))) = (self.panic_marker, self.pairs.first()) {
            let first = batch.input(input).and_then(|t| t.data.get(..4));
            if first.is_some_and(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) == marker) {
                panic!("identity: the batch starts with panic_marker {marker}");
            }
        }
        Ok(self
            .pairs
            .iter()
            .filter_map(|(input, output)| {
                let t = batch.input(input)?;
                Some(Tensor::new(
                    output.clone(),
                    t.dtype,
                    t.shape.clone(),
                    t.data.clone(),
                ))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::demo::IDENTITY_FP32;

    fn with_marker(config: &str, marker: &str) -> Result<Instance> {
        let text = format!(
            "{config}parameters {{ key: \"{PANIC_MARKER}\" value: {{ string_value: \"{marker}\" }} }}\n"
        );
        let config = nereid_proto::parse_model_config(&text).expect("config parses");
        instance(&ModelSpec::from_config(config)?)
    }

    #[test]
    fn a_panic_marker_must_be_a_number_on_an_fp32_input() {
        assert!(with_marker(IDENTITY_FP32, "-7").is_ok());
        let err = with_marker(IDENTITY_FP32, "seven")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("'panic_marker' = 'seven' is not a number"),
            "{err}"
        );
        let int32 = IDENTITY_FP32.replace("TYPE_FP32", "TYPE_INT32");
        let err = with_marker(&int32, "1").err().unwrap().to_string();
        assert!(err.contains("needs an FP32 first input"), "{err}");
    }
}
