//! A model's Triton `ModelConfig`, validated and turned into what the scheduler needs.

use std::collections::HashSet;
use std::time::Duration;

use nereid_proto::inference::{
    model_config::SchedulingChoice, model_instance_group::Kind, model_queue_policy::TimeoutAction,
    ModelConfig, ModelDynamicBatching, ModelInstanceGroup, ModelQueuePolicy,
};

use crate::{DataType, EngineError, Result};

mod ensemble;
mod fields;
mod labels;
mod sequence;

pub use ensemble::{EnsembleSpec, EnsembleStep, ENSEMBLE_PLATFORM};
pub use fields::{field_support, FieldSupport, FIELD_SUPPORT, IGNORED_FIELDS_PARAMETER};
pub use labels::LABELS_PARAMETER;
pub use sequence::{
    ControlKind, SequenceControl, SequenceSpec, SequenceState, SequenceStrategy,
    DEFAULT_SEQUENCE_IDLE,
};

/// Queue bound used where the config says `max_queue_size: 0` (Triton's "unlimited"): every
/// queue here is bounded.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 16_384;

/// An input or output as declared in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DataType,
    /// Dimensions without the batch dimension; -1 is "any size".
    pub dims: Vec<i64>,
    /// An optional input may be left out of a request.
    pub optional: bool,
}

/// Where one instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// Host CPU.
    Cpu,
    /// A GPU by ordinal.
    Gpu(u32),
}

/// What to do with a request whose queue timeout passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPolicy {
    /// Answer UNAVAILABLE at once.
    Reject,
    /// Keep it, but behind every request that has not timed out.
    Delay,
}

/// One priority level's queue policy.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePolicy {
    /// What happens on timeout.
    pub timeout_action: TimeoutPolicy,
    /// Queue timeout applied when the request names none.
    pub default_timeout: Option<Duration>,
    /// Whether a request's `timeout` parameter may override the default.
    pub allow_timeout_override: bool,
    /// Most requests waiting at this level.
    pub max_queue_size: usize,
}

/// The dynamic batcher's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchingPolicy {
    /// Batch sizes to dispatch at once when reached, ascending.
    pub preferred_batch_sizes: Vec<usize>,
    /// Longest a request waits for others to join its batch.
    pub max_queue_delay: Duration,
    /// Whether responses leave in the order requests were dispatched.
    pub preserve_ordering: bool,
}

/// A validated model configuration.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The config as loaded (with instance groups filled in), served by the config APIs.
    pub config: ModelConfig,
    /// Inputs in config order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in config order.
    pub outputs: Vec<TensorSpec>,
    /// 0 means the model does not batch and requests carry no batch dimension.
    pub max_batch_size: usize,
    /// Decoupled models send any number of responses per request.
    pub decoupled: bool,
    /// Requests an instance of a decoupled model keeps live at once: the `max_sequences`
    /// parameter, else `max_batch_size` (at least 1). 1 for other models, whose instances
    /// run one batch at a time.
    pub max_sequences: usize,
    /// Present when `dynamic_batching` is configured.
    pub batching: Option<BatchingPolicy>,
    /// Queue policy per priority level (index 0 is level 1, the highest).
    pub levels: Vec<QueuePolicy>,
    /// Level (1-based) of requests that name no priority.
    pub default_priority: usize,
    /// One entry per instance to start.
    pub instances: Vec<Device>,
    /// Longest one batch may compute (the `execution_timeout_ms` parameter): past it the
    /// batch's requests fail and the instance is replaced by a fresh one.
    pub execution_timeout: Option<Duration>,
    /// Whether identical requests are answered from the server's response cache
    /// (`response_cache { enable: true }`).
    pub response_cache: bool,
    /// Present for a stateful model (`sequence_batching`): its requests carry a sequence
    /// id and flags, and run in order one at a time per sequence.
    pub sequence: Option<SequenceSpec>,
    /// Present for an ensemble (`platform: "ensemble"`): its requests run through its
    /// steps' models; it has no instances of its own.
    pub ensemble: Option<EnsembleSpec>,
    /// The class name of each score of a classifier (the `labels` parameter, see
    /// [`LABELS_PARAMETER`]).
    pub labels: Option<Vec<String>>,
}

impl ModelSpec {
    /// The model's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Finds an input spec by name.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// Finds an output spec by name.
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|t| t.name == name)
    }

    /// A string parameter from the config's `parameters` map.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.config
            .parameters
            .get(key)
            .map(|p| p.string_value.as_str())
    }

    /// Validates a config and derives the scheduler's view of it.
    pub fn from_config(mut config: ModelConfig) -> Result<Self> {
        if config.name.is_empty() {
            return Err(EngineError::invalid("model config has an empty 'name'"));
        }
        if let Err(msg) = fields::check_fields(&mut config) {
            return Err(EngineError::invalid(format!(
                "model '{}': {msg}",
                config.name
            )));
        }
        let bad = |msg: String| EngineError::invalid(format!("model '{}': {msg}", config.name));
        if config.max_batch_size < 0 {
            return Err(bad(format!(
                "max_batch_size must be >= 0, got {}",
                config.max_batch_size
            )));
        }
        let max_batch_size = config.max_batch_size as usize;
        let inputs = tensor_specs(
            &config.name,
            "input",
            config
                .input
                .iter()
                .map(|i| (i.name.as_str(), i.data_type, i.dims.as_slice(), i.optional)),
        )?;
        let outputs = tensor_specs(
            &config.name,
            "output",
            config
                .output
                .iter()
                .map(|o| (o.name.as_str(), o.data_type, o.dims.as_slice(), false)),
        )?;
        if outputs.is_empty() {
            return Err(bad("declares no output".into()));
        }
        let decoupled = config
            .model_transaction_policy
            .as_ref()
            .is_some_and(|p| p.decoupled);

        let max_sequences = match config
            .parameters
            .get("max_sequences")
            .map(|p| p.string_value.trim())
            .filter(|v| !v.is_empty())
        {
            None if decoupled => max_batch_size.max(1),
            None => 1,
            Some(_) if !decoupled => {
                return Err(bad(
                    "parameter 'max_sequences' applies to decoupled models only".into(),
                ))
            }
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(bad(format!(
                        "parameter 'max_sequences' = '{v}' is not a positive integer"
                    )))
                }
            },
        };

        let execution_timeout = execution_timeout(&config, decoupled).map_err(bad)?;
        let response_cache = config.response_cache.is_some_and(|c| c.enable);
        let labels = labels::parse(&config, &outputs).map_err(bad)?;
        if response_cache && decoupled {
            return Err(bad(
                "field 'response_cache' is not supported for decoupled models (as in Triton): \
                 their responses stream and are not kept"
                    .into(),
            ));
        }

        let mut sequence_batching = None;
        let dynamic = match &config.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(d)) => Some(d.clone()),
            Some(SchedulingChoice::SequenceBatching(s)) => {
                if decoupled {
                    return Err(bad(
                        "field 'sequence_batching' is not supported for decoupled models".into(),
                    ));
                }
                if response_cache {
                    return Err(bad(
                        "field 'response_cache' is not supported with sequence_batching: a \
                         sequence's responses depend on its earlier requests"
                            .into(),
                    ));
                }
                if !config.model_warmup.is_empty() {
                    return Err(bad(
                        "field 'model_warmup' is not supported with sequence_batching".into(),
                    ));
                }
                sequence_batching = Some(s.clone());
                None
            }
            Some(SchedulingChoice::EnsembleScheduling(_)) => None,
            None => None,
        };
        let ensemble = match &config.scheduling_choice {
            Some(SchedulingChoice::EnsembleScheduling(e)) => {
                if config.platform != ENSEMBLE_PLATFORM {
                    return Err(bad(format!(
                        "ensemble_scheduling needs platform: \"{ENSEMBLE_PLATFORM}\""
                    )));
                }
                for (set, field) in [
                    (response_cache, "response_cache"),
                    (!config.model_warmup.is_empty(), "model_warmup"),
                    (!config.instance_group.is_empty(), "instance_group"),
                ] {
                    if set {
                        return Err(bad(format!(
                            "field '{field}' is not supported for an ensemble: its steps' \
                             models have their own"
                        )));
                    }
                }
                Some(ensemble::parse(e, &inputs, &outputs).map_err(bad)?)
            }
            _ if config.platform == ENSEMBLE_PLATFORM => {
                return Err(bad(
                    "platform \"ensemble\" needs ensemble_scheduling with its steps".into(),
                ))
            }
            _ => None,
        };
        let mut batching = match &dynamic {
            Some(d) if max_batch_size > 0 => Some(batching_policy(d, max_batch_size).map_err(bad)?),
            _ => None,
        };
        let (levels, default_priority) =
            queue_levels(dynamic.as_ref().unwrap_or(&ModelDynamicBatching::default()))
                .map_err(bad)?;

        if config.instance_group.is_empty() && ensemble.is_none() {
            config.instance_group.push(ModelInstanceGroup {
                name: config.name.clone(),
                count: 1,
                kind: Kind::Cpu as i32,
                ..Default::default()
            });
        }
        let mut instances = Vec::new();
        for (gi, group) in config.instance_group.iter_mut().enumerate() {
            if group.name.is_empty() {
                group.name = format!("{}_{gi}", config.name);
            }
            if group.count < 0 {
                return Err(bad(format!(
                    "instance_group {gi}: count must be >= 1, got {}",
                    group.count
                )));
            }
            if group.count == 0 {
                group.count = 1;
            }
            let kind = Kind::try_from(group.kind)
                .map_err(|_| bad(format!("instance_group {gi}: unknown kind {}", group.kind)))?;
            let devices: Vec<Device> = match kind {
                Kind::Gpu => {
                    if group.gpus.is_empty() {
                        group.gpus.push(0);
                    }
                    group
                        .gpus
                        .iter()
                        .map(|&g| Device::Gpu(g.max(0) as u32))
                        .collect()
                }
                Kind::Auto if !group.gpus.is_empty() => {
                    group.kind = Kind::Gpu as i32;
                    group
                        .gpus
                        .iter()
                        .map(|&g| Device::Gpu(g.max(0) as u32))
                        .collect()
                }
                Kind::Auto | Kind::Cpu | Kind::Model => {
                    group.kind = Kind::Cpu as i32;
                    vec![Device::Cpu]
                }
            };
            // Triton starts `count` instances on each listed GPU.
            let total = instances.len() + devices.len() * group.count as usize;
            if total > MAX_INSTANCES {
                return Err(bad(format!(
                    "instance_group {gi}: {total} instances in all (count {} on {} devices); at most {MAX_INSTANCES}",
                    group.count,
                    devices.len()
                )));
            }
            for device in devices {
                instances.extend(std::iter::repeat_n(device, group.count as usize));
            }
        }

        let sequence = match &sequence_batching {
            Some(s) => {
                let parsed = sequence::parse(s, max_batch_size, instances.len(), &inputs, &outputs)
                    .map_err(bad)?;
                batching = parsed.batching;
                Some(parsed.spec)
            }
            None => None,
        };

        Ok(Self {
            config,
            inputs,
            outputs,
            max_batch_size,
            decoupled,
            max_sequences,
            batching,
            levels,
            default_priority,
            instances,
            execution_timeout,
            response_cache,
            sequence,
            ensemble,
            labels,
        })
    }
}

/// The `execution_timeout_ms` parameter: a positive whole number of milliseconds, for
/// models that compute one batch per call (a decoupled model's sequences run for as long
/// as they generate, so a bound per call would not mean the same).
fn execution_timeout(config: &ModelConfig, decoupled: bool) -> Result<Option<Duration>, String> {
    let Some(text) = config
        .parameters
        .get(EXECUTION_TIMEOUT_PARAMETER)
        .map(|p| p.string_value.trim())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    if decoupled {
        return Err(format!(
            "parameter '{EXECUTION_TIMEOUT_PARAMETER}' applies to models that are not decoupled"
        ));
    }
    match text.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(format!(
            "parameter '{EXECUTION_TIMEOUT_PARAMETER}' = '{text}' is not a positive number of milliseconds"
        )),
    }
}

/// Most instances one model version may start (each is a thread, and often a copy of
/// the model's state): a config asking for more is refused, not an allocation that takes
/// the server down.
pub const MAX_INSTANCES: usize = 1024;

/// The config parameter that bounds one batch's compute time.
pub const EXECUTION_TIMEOUT_PARAMETER: &str = "execution_timeout_ms";

fn tensor_specs<'a>(
    model: &str,
    what: &str,
    items: impl Iterator<Item = (&'a str, i32, &'a [i64], bool)>,
) -> Result<Vec<TensorSpec>> {
    let mut seen = HashSet::new();
    let mut specs = Vec::new();
    for (name, data_type, dims, optional) in items {
        let bad =
            |msg: String| EngineError::invalid(format!("model '{model}': {what} '{name}': {msg}"));
        if name.is_empty() {
            return Err(EngineError::invalid(format!(
                "model '{model}': an {what} has an empty name"
            )));
        }
        if !seen.insert(name) {
            return Err(bad("declared twice".into()));
        }
        let dtype = DataType::from_config(data_type)
            .ok_or_else(|| bad(format!("data_type {data_type} is not a valid TYPE_*")))?;
        if let Some(d) = dims.iter().find(|&&d| d < -1) {
            return Err(bad(format!(
                "dims {dims:?} has invalid dimension {d}; use -1 for any size"
            )));
        }
        specs.push(TensorSpec {
            name: name.to_string(),
            dtype,
            dims: dims.to_vec(),
            optional,
        });
    }
    Ok(specs)
}

fn batching_policy(
    d: &ModelDynamicBatching,
    max_batch_size: usize,
) -> Result<BatchingPolicy, String> {
    let mut preferred = Vec::new();
    for &p in &d.preferred_batch_size {
        if p <= 0 || p as usize > max_batch_size {
            return Err(format!(
                "preferred_batch_size {p} must be between 1 and max_batch_size {max_batch_size}"
            ));
        }
        preferred.push(p as usize);
    }
    preferred.sort_unstable();
    preferred.dedup();
    Ok(BatchingPolicy {
        preferred_batch_sizes: preferred,
        max_queue_delay: Duration::from_micros(d.max_queue_delay_microseconds),
        preserve_ordering: d.preserve_ordering,
    })
}

fn queue_policy(p: &ModelQueuePolicy) -> Result<QueuePolicy, String> {
    let timeout_action = match TimeoutAction::try_from(p.timeout_action) {
        Ok(TimeoutAction::Reject) => TimeoutPolicy::Reject,
        Ok(TimeoutAction::Delay) => TimeoutPolicy::Delay,
        Err(_) => return Err(format!("unknown timeout_action {}", p.timeout_action)),
    };
    Ok(QueuePolicy {
        timeout_action,
        default_timeout: (p.default_timeout_microseconds > 0)
            .then(|| Duration::from_micros(p.default_timeout_microseconds)),
        allow_timeout_override: p.allow_timeout_override,
        max_queue_size: match p.max_queue_size {
            0 => DEFAULT_MAX_QUEUE_SIZE,
            n => n as usize,
        },
    })
}

fn queue_levels(d: &ModelDynamicBatching) -> Result<(Vec<QueuePolicy>, usize), String> {
    let default_policy = queue_policy(&d.default_queue_policy.unwrap_or_default())?;
    let count = d.priority_levels.max(1) as usize;
    if count > 256 {
        return Err(format!(
            "priority_levels {} is more than 256",
            d.priority_levels
        ));
    }
    let default_level = match d.default_priority_level {
        0 if d.priority_levels == 0 => 1,
        0 => {
            return Err("priority_levels is set, so default_priority_level must be set too".into())
        }
        l if l as usize > count => {
            return Err(format!(
                "default_priority_level {l} is above priority_levels {count}"
            ))
        }
        l => l as usize,
    };
    let mut levels = vec![default_policy; count];
    for (&level, policy) in &d.priority_queue_policy {
        if level == 0 || level as usize > count {
            return Err(format!(
                "priority_queue_policy names level {level}, outside 1..={count}"
            ));
        }
        levels[level as usize - 1] = queue_policy(policy)?;
    }
    Ok((levels, default_level))
}

#[cfg(test)]
mod tests;
