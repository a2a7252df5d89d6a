//! Returns each input as the output in the same position, sharing its bytes.

use crate::{BatchedInstance, EngineError, ExecBatch, Instance, ModelSpec, Result, Tensor};

/// Output i is input i, without copying.
pub(super) struct Identity {
    pairs: Vec<(String, String)>,
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
    let pairs = spec
        .inputs
        .iter()
        .zip(&spec.outputs)
        .map(|(i, o)| (i.name.clone(), o.name.clone()))
        .collect();
    Ok(Instance::Batched(Box::new(Identity { pairs })))
}

impl BatchedInstance for Identity {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
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
