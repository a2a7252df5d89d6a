//! `sequence_batching`: how a stateful model's sequences are scheduled, which control
//! tensors tell it where a sequence starts and ends, and which state the server carries
//! from one request of a sequence to the next.

use std::time::Duration;

use bytes::Bytes;
use nereid_proto::inference::{
    model_sequence_batching::{
        control::Kind, initial_state::StateData, Control, StrategyChoice, StrategyDirect,
        StrategyOldest,
    },
    ModelSequenceBatching,
};

use super::{BatchingPolicy, TensorSpec};
use crate::DataType;

/// Triton's default for `max_sequence_idle_microseconds`: one second.
pub const DEFAULT_SEQUENCE_IDLE: Duration = Duration::from_secs(1);

/// How a sequence model's requests are scheduled.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceSpec {
    /// The strategy, as configured.
    pub strategy: SequenceStrategy,
    /// Sequences live at once; a sequence that starts beyond this waits in the backlog
    /// until one ends or idles out.
    pub max_live: usize,
    /// A live sequence with no request for this long is released: its state is dropped,
    /// and its next request must start it again.
    pub max_idle: Duration,
    /// The control tensors the server adds to every request, in config order.
    pub controls: Vec<SequenceControl>,
    /// Implicit state: what the server feeds back from one request to the next.
    pub states: Vec<SequenceState>,
}

/// The sequence batcher's strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceStrategy {
    /// Each instance holds `max_batch_size` sequences at once.
    Direct,
    /// Up to `max_candidate_sequences` sequences, batched oldest request first.
    Oldest,
}

/// What a control tensor signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// True on the first request of a sequence.
    Start,
    /// True on the last request of a sequence.
    End,
    /// True when the batch row holds a request (always, as rows are never padded).
    Ready,
    /// The sequence's correlation id.
    CorrelationId,
}

/// One control tensor: the model input it arrives in and how its value is written.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceControl {
    /// The model input that carries it (not one of the config's `input`s).
    pub input: String,
    /// What it signals.
    pub kind: ControlKind,
    /// Its element type.
    pub dtype: DataType,
    /// For flags: the element written for false and for true, in `dtype`'s bytes.
    pub false_true: Option<[Bytes; 2]>,
}

/// One implicit state tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceState {
    /// The model input the state is fed through.
    pub input: String,
    /// The model output the next state is read from; never sent to the client.
    pub output: String,
    /// Element type.
    pub dtype: DataType,
    /// Dimensions without the batch dimension.
    pub dims: Vec<i64>,
    /// The data file of its `initial_state` (under the model's `initial_state/` folder),
    /// when one is given; else a sequence starts from zeros.
    pub initial_file: Option<String>,
}

impl SequenceSpec {
    /// The control of a kind, if the model asks for it.
    pub fn control(&self, kind: ControlKind) -> Option<&SequenceControl> {
        self.controls.iter().find(|c| c.kind == kind)
    }

    /// Whether `name` is an input the server fills in (a control or a state).
    pub fn fills_input(&self, name: &str) -> bool {
        self.controls.iter().any(|c| c.input == name) || self.states.iter().any(|s| s.input == name)
    }
}

/// What the dynamic batcher under the sequence batcher is told: how long a ready
/// sequence waits for others, and the batch sizes it dispatches at once.
pub(super) struct Parsed {
    pub spec: SequenceSpec,
    pub batching: Option<BatchingPolicy>,
}

/// Validates `sequence_batching` for a model with the given shape and instance count.
pub(super) fn parse(
    s: &ModelSequenceBatching,
    max_batch_size: usize,
    instances: usize,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
) -> Result<Parsed, String> {
    if s.iterative_sequence {
        return Err(
            "field 'sequence_batching.iterative_sequence' is not supported: sequences advance \
             one request at a time"
                .into(),
        );
    }
    let slots = max_batch_size.max(1);
    let default_direct = StrategyDirect::default();
    let (strategy, max_live, batching) = match &s.strategy_choice {
        None => (
            SequenceStrategy::Direct,
            instances * slots,
            direct(&default_direct, max_batch_size)?,
        ),
        Some(StrategyChoice::Direct(d)) => (
            SequenceStrategy::Direct,
            instances * slots,
            direct(d, max_batch_size)?,
        ),
        Some(StrategyChoice::Oldest(o)) => {
            let (max_live, batching) = oldest(o, max_batch_size)?;
            (SequenceStrategy::Oldest, max_live, batching)
        }
    };
    let mut controls = Vec::new();
    for input in &s.control_input {
        let field = format!("sequence_batching.control_input '{}'", input.name);
        if input.name.is_empty() {
            return Err("a sequence_batching.control_input has an empty name".into());
        }
        let [control] = input.control.as_slice() else {
            return Err(format!("{field}: needs exactly one control"));
        };
        let control =
            sequence_control(&input.name, control).map_err(|e| format!("{field}: {e}"))?;
        if controls
            .iter()
            .any(|c: &SequenceControl| c.kind == control.kind)
        {
            return Err(format!(
                "{field}: a second control of kind {:?}",
                control.kind
            ));
        }
        controls.push(control);
    }
    let mut states = Vec::new();
    for state in &s.state {
        let field = format!("sequence_batching.state '{}'", state.input_name);
        if state.input_name.is_empty() || state.output_name.is_empty() {
            return Err("a sequence_batching.state needs input_name and output_name".into());
        }
        let dtype = DataType::from_config(state.data_type)
            .ok_or_else(|| format!("{field}: data_type {} is not a TYPE_*", state.data_type))?;
        if state.dims.iter().any(|&d| d < 1) {
            return Err(format!(
                "{field}: dims {:?} must all be fixed (variable state shapes are not supported)",
                state.dims
            ));
        }
        if dtype == DataType::Bytes {
            return Err(format!("{field}: BYTES state is not supported"));
        }
        let initial_file = match state.initial_state.as_slice() {
            [] => None,
            [initial] => {
                if initial.dims != state.dims || initial.data_type != state.data_type {
                    return Err(format!(
                        "{field}: initial_state '{}' must have the state's data_type and dims",
                        initial.name
                    ));
                }
                match &initial.state_data {
                    Some(StateData::ZeroData(true)) => None,
                    Some(StateData::DataFile(file)) if !file.is_empty() => Some(file.clone()),
                    _ => {
                        return Err(format!(
                            "{field}: initial_state '{}' needs zero_data: true or a data_file",
                            initial.name
                        ))
                    }
                }
            }
            _ => return Err(format!("{field}: at most one initial_state")),
        };
        states.push(SequenceState {
            input: state.input_name.clone(),
            output: state.output_name.clone(),
            dtype,
            dims: state.dims.clone(),
            initial_file,
        });
    }
    let mut filled: Vec<&str> = controls.iter().map(|c| c.input.as_str()).collect();
    filled.extend(states.iter().map(|s| s.input.as_str()));
    for (i, name) in filled.iter().enumerate() {
        if filled[..i].contains(name) {
            return Err(format!(
                "sequence_batching: input '{name}' is named by two controls or states"
            ));
        }
        if inputs.iter().any(|t| t.name == *name) {
            return Err(format!(
                "sequence_batching: '{name}' is filled by the server, so it must not be one of \
                 the config's inputs"
            ));
        }
    }
    for state in &states {
        if outputs.iter().any(|t| t.name == state.output) {
            return Err(format!(
                "sequence_batching.state '{}': output '{}' is kept by the server, so it must \
                 not be one of the config's outputs",
                state.input, state.output
            ));
        }
    }
    Ok(Parsed {
        spec: SequenceSpec {
            strategy,
            max_live,
            max_idle: match s.max_sequence_idle_microseconds {
                0 => DEFAULT_SEQUENCE_IDLE,
                us => Duration::from_micros(us),
            },
            controls,
            states,
        },
        batching,
    })
}

/// Direct: a ready sequence waits up to the delay for `minimum_slot_utilization` of the
/// batch to fill.
fn direct(d: &StrategyDirect, max_batch_size: usize) -> Result<Option<BatchingPolicy>, String> {
    if !(0.0..=1.0).contains(&d.minimum_slot_utilization) {
        return Err(format!(
            "sequence_batching.direct.minimum_slot_utilization {} is outside 0..=1",
            d.minimum_slot_utilization
        ));
    }
    if max_batch_size == 0 {
        return Ok(None);
    }
    let wanted = (d.minimum_slot_utilization * max_batch_size as f32).ceil() as usize;
    Ok(Some(BatchingPolicy {
        preferred_batch_sizes: if wanted > 1 { vec![wanted] } else { Vec::new() },
        max_queue_delay: Duration::from_micros(d.max_queue_delay_microseconds),
        preserve_ordering: false,
    }))
}

/// Oldest: the candidate bound, and the dynamic batcher's knobs over ready sequences.
fn oldest(
    o: &StrategyOldest,
    max_batch_size: usize,
) -> Result<(usize, Option<BatchingPolicy>), String> {
    if o.max_candidate_sequences < 1 {
        return Err(format!(
            "sequence_batching.oldest.max_candidate_sequences must be at least 1, got {}",
            o.max_candidate_sequences
        ));
    }
    let mut preferred = Vec::new();
    for &p in &o.preferred_batch_size {
        if p <= 0 || p as usize > max_batch_size.max(1) {
            return Err(format!(
                "sequence_batching.oldest.preferred_batch_size {p} must be between 1 and \
                 max_batch_size {max_batch_size}"
            ));
        }
        preferred.push(p as usize);
    }
    preferred.sort_unstable();
    preferred.dedup();
    let batching = (max_batch_size > 0).then(|| BatchingPolicy {
        preferred_batch_sizes: preferred,
        max_queue_delay: Duration::from_micros(o.max_queue_delay_microseconds),
        preserve_ordering: o.preserve_ordering,
    });
    Ok((o.max_candidate_sequences as usize, batching))
}

fn sequence_control(name: &str, c: &Control) -> Result<SequenceControl, String> {
    let kind = match Kind::try_from(c.kind) {
        Ok(Kind::ControlSequenceStart) => ControlKind::Start,
        Ok(Kind::ControlSequenceEnd) => ControlKind::End,
        Ok(Kind::ControlSequenceReady) => ControlKind::Ready,
        Ok(Kind::ControlSequenceCorrid) => ControlKind::CorrelationId,
        Err(_) => return Err(format!("unknown control kind {}", c.kind)),
    };
    if kind == ControlKind::CorrelationId {
        let dtype = DataType::from_config(c.data_type)
            .filter(|d| {
                matches!(
                    d,
                    DataType::Uint64
                        | DataType::Int64
                        | DataType::Uint32
                        | DataType::Int32
                        | DataType::Bytes
                )
            })
            .ok_or_else(|| {
                "CONTROL_SEQUENCE_CORRID needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, \
                 TYPE_INT32 or TYPE_STRING"
                    .to_string()
            })?;
        return Ok(SequenceControl {
            input: name.to_string(),
            kind,
            dtype,
            false_true: None,
        });
    }
    let pair = |values: Vec<Bytes>| -> Result<[Bytes; 2], String> {
        <[Bytes; 2]>::try_from(values).map_err(|_| "a *_false_true list needs two values".into())
    };
    let (dtype, false_true) = match (
        c.int32_false_true.is_empty(),
        c.fp32_false_true.is_empty(),
        c.bool_false_true.is_empty(),
    ) {
        (false, true, true) => (
            DataType::Int32,
            pair(
                c.int32_false_true
                    .iter()
                    .map(|v| Bytes::copy_from_slice(&v.to_le_bytes()))
                    .collect(),
            )?,
        ),
        (true, false, true) => (
            DataType::Fp32,
            pair(
                c.fp32_false_true
                    .iter()
                    .map(|v| Bytes::copy_from_slice(&v.to_le_bytes()))
                    .collect(),
            )?,
        ),
        (true, true, false) => (
            DataType::Bool,
            pair(
                c.bool_false_true
                    .iter()
                    .map(|&v| Bytes::copy_from_slice(&[v as u8]))
                    .collect(),
            )?,
        ),
        _ => {
            return Err(
                "a flag control needs exactly one of int32_false_true, fp32_false_true or \
                 bool_false_true"
                    .into(),
            )
        }
    };
    Ok(SequenceControl {
        input: name.to_string(),
        kind,
        dtype,
        false_true: Some(false_true),
    })
}
