//! Holds its instance for as many milliseconds as its `MS` input sums to, then answers
//! `OUT` = `MS`: a model for tests of queues, deadlines and cancellation, which need a
//! request computing while others wait.

use std::time::Duration;

use crate::{BatchedInstance, DataType, EngineError, ExecBatch, Instance, ModelSpec, Result};

struct Sleep;

pub(super) fn instance(spec: &ModelSpec) -> Result<Instance> {
    let fits = matches!(spec.inputs.as_slice(), [i] if i.name == "MS" && i.dtype == DataType::Uint32)
        && matches!(spec.outputs.as_slice(), [o] if o.name == "OUT" && o.dtype == DataType::Uint32);
    if !fits {
        return Err(EngineError::invalid(format!(
            "model '{}' (backend sleep): needs one UINT32 input MS and one UINT32 output OUT",
            spec.name()
        )));
    }
    Ok(Instance::Batched(Box::new(Sleep)))
}

impl BatchedInstance for Sleep {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<crate::Tensor>> {
        let ms = batch.require("MS")?;
        let total: u64 = ms.to_vec::<u32>()?.iter().map(|&m| u64::from(m)).sum();
        std::thread::sleep(Duration::from_millis(total));
        let mut out = ms.clone();
        out.name = "OUT".into();
        Ok(vec![out])
    }
}
