//! Stateful models for the sequence batcher, after the ones Triton's example clients call:
//!
//! - `sequence` (Triton's `simple_sequence` and `simple_dyna_sequence`): OUTPUT = INPUT,
//!   plus 1 on the first request of a sequence, plus the correlation id on the last when
//!   the model takes one (CORRID). It keeps nothing itself; it reads the controls.
//! - `accumulate` (Triton's `simple_string_dyna_sequence`, and implicit state): OUTPUT =
//!   STATE + INPUT, plus the correlation id on the last request, and the next STATE is
//!   OUTPUT: a running sum from the initial state. The sum lives in the server's implicit
//!   state (reset to the initial state when a sequence starts), not in the instance.
//!
//! Both take one INT32 input and give one INT32 output of one element per row.

use crate::{
    BatchedInstance, ControlKind, DataType, EngineError, ExecBatch, Instance, ModelSpec, Result,
    SequenceControl, Tensor,
};

/// Which of the two models.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    Accumulate,
}

struct SequenceModel {
    input: String,
    output: String,
    /// Required by `sequence`; `accumulate` leaves starting to the server's state reset.
    start: Option<SequenceControl>,
    end: Option<SequenceControl>,
    corrid: Option<SequenceControl>,
    /// (state input, state output) for `accumulate`.
    state: Option<(String, String)>,
    batching: bool,
}

pub(super) fn sequence(spec: &ModelSpec) -> Result<Instance> {
    instance(spec, Kind::Sequence)
}

pub(super) fn accumulate(spec: &ModelSpec) -> Result<Instance> {
    instance(spec, Kind::Accumulate)
}

fn instance(spec: &ModelSpec, kind: Kind) -> Result<Instance> {
    let backend = match kind {
        Kind::Sequence => "sequence",
        Kind::Accumulate => "accumulate",
    };
    let bad = |msg: &str| {
        EngineError::invalid(format!(
            "model '{}' (backend {backend}): {msg}",
            spec.name()
        ))
    };
    let Some(sequence) = &spec.sequence else {
        return Err(bad("needs sequence_batching"));
    };
    let one_int32 = |t: &crate::TensorSpec| t.dtype == DataType::Int32 && t.dims == [1];
    if spec.inputs.len() != 1
        || spec.outputs.len() != 1
        || !one_int32(&spec.inputs[0])
        || !one_int32(&spec.outputs[0])
    {
        return Err(bad(
            "needs one INT32 input and one INT32 output, both with dims [1]",
        ));
    }
    let start = sequence.control(ControlKind::Start).cloned();
    if kind == Kind::Sequence && start.is_none() {
        return Err(bad("needs a CONTROL_SEQUENCE_START control"));
    }
    let state = match (kind, sequence.states.as_slice()) {
        (Kind::Sequence, []) => None,
        (Kind::Sequence, _) => return Err(bad("keeps no implicit state; remove 'state'")),
        (Kind::Accumulate, [s]) if s.dtype == DataType::Int32 && s.dims == [1] => {
            Some((s.input.clone(), s.output.clone()))
        }
        (Kind::Accumulate, _) => {
            return Err(bad("needs one implicit state of TYPE_INT32 with dims [1]"))
        }
    };
    Ok(Instance::Batched(Box::new(SequenceModel {
        input: spec.inputs[0].name.clone(),
        output: spec.outputs[0].name.clone(),
        start,
        end: sequence.control(ControlKind::End).cloned(),
        corrid: sequence.control(ControlKind::CorrelationId).cloned(),
        state,
        batching: spec.max_batch_size > 0,
    })))
}

/// A flag control's value per row.
fn flags(batch: &ExecBatch, control: &SequenceControl) -> Result<Vec<bool>> {
    let t = batch.require(&control.input)?;
    let truth = &control
        .false_true
        .as_ref()
        .expect("flag controls have values")[1];
    Ok(t.data
        .chunks(truth.len())
        .map(|e| e == truth.as_ref())
        .collect())
}

/// The correlation id per row, as a number.
fn correlation_ids(batch: &ExecBatch, control: &SequenceControl) -> Result<Vec<i64>> {
    let t = batch.require(&control.input)?;
    Ok(match control.dtype {
        DataType::Uint64 => t.to_vec::<u64>()?.into_iter().map(|v| v as i64).collect(),
        DataType::Int64 => t.to_vec::<i64>()?,
        DataType::Uint32 => t.to_vec::<u32>()?.into_iter().map(i64::from).collect(),
        DataType::Int32 => t.to_vec::<i32>()?.into_iter().map(i64::from).collect(),
        _ => t
            .string_elements()?
            .iter()
            .map(|e| {
                std::str::from_utf8(e)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| {
                        EngineError::invalid(format!(
                            "sequence id {:?} is not an integer, which this model adds to the \
                             last output",
                            String::from_utf8_lossy(e)
                        ))
                    })
            })
            .collect::<Result<_>>()?,
    })
}

impl BatchedInstance for SequenceModel {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let input = batch.require(&self.input)?.to_vec::<i32>()?;
        let start = match &self.start {
            Some(c) => flags(batch, c)?,
            None => vec![false; input.len()],
        };
        let end = match &self.end {
            Some(c) => flags(batch, c)?,
            None => vec![false; input.len()],
        };
        let corrid = match &self.corrid {
            Some(c) => Some(correlation_ids(batch, c)?),
            None => None,
        };
        let state = match &self.state {
            Some((name, _)) => Some(batch.require(name)?.to_vec::<i32>()?),
            None => None,
        };
        let rows = input.len();
        if start.len() != rows
            || end.len() != rows
            || state.as_ref().is_some_and(|s| s.len() != rows)
        {
            return Err(EngineError::internal(
                "control tensors do not match the batch",
            ));
        }
        let out: Vec<i32> = (0..rows)
            .map(|r| {
                let base = match &state {
                    None => i32::from(start[r]),
                    Some(s) => s[r],
                };
                let last = match &corrid {
                    Some(ids) if end[r] => ids[r] as i32,
                    _ => 0,
                };
                input[r].wrapping_add(base).wrapping_add(last)
            })
            .collect();
        let shape = if self.batching {
            vec![rows as i64, 1]
        } else {
            vec![1]
        };
        let mut outputs = Vec::with_capacity(2);
        if let Some((_, state_output)) = &self.state {
            outputs.push(Tensor::from_vec(
                state_output.clone(),
                DataType::Int32,
                shape.clone(),
                out.clone(),
            ));
        }
        outputs.push(Tensor::from_vec(
            self.output.clone(),
            DataType::Int32,
            shape,
            out,
        ));
        Ok(outputs)
    }
}
