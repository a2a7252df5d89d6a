//! `ensemble_scheduling`: a model made of other models' steps, each step's inputs taken
//! from the ensemble's inputs or earlier steps' outputs by name.

use std::collections::{HashMap, HashSet};

use nereid_proto::inference::ModelEnsembling;

use super::TensorSpec;

/// The platform name that makes a model an ensemble.
pub const ENSEMBLE_PLATFORM: &str = "ensemble";

/// A validated ensemble: its steps form a graph in which every step can run once its
/// inputs exist.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleSpec {
    /// The steps, in config order.
    pub steps: Vec<EnsembleStep>,
    /// Ensemble requests computing at once (`max_inflight_requests`), so each step has at
    /// most this many in flight; `None`: no bound beyond the steps' own queues.
    pub max_inflight: Option<usize>,
}

/// One step: a model, and where its inputs come from and its outputs go.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleStep {
    /// The composing model.
    pub model: String,
    /// Its version; `None`: the newest ready one.
    pub version: Option<i64>,
    /// (the step model's input, the ensemble tensor it is read from), sorted.
    pub inputs: Vec<(String, String)>,
    /// (the step model's output, the ensemble tensor it becomes), sorted.
    pub outputs: Vec<(String, String)>,
}

impl EnsembleStep {
    /// How errors name the step: its position (from 1) and model.
    pub fn label(&self, index: usize) -> String {
        format!("step {} (model '{}')", index + 1, self.model)
    }
}

/// Checks the graph: each tensor made once (by the request or one step), every step input
/// made by something, no cycle, every ensemble output made.
pub(super) fn parse(
    e: &ModelEnsembling,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
) -> Result<EnsembleSpec, String> {
    if e.step.is_empty() {
        return Err("ensemble_scheduling has no step".into());
    }
    let mut steps = Vec::with_capacity(e.step.len());
    for (i, s) in e.step.iter().enumerate() {
        let at = format!("ensemble_scheduling step {}", i + 1);
        if s.model_name.is_empty() {
            return Err(format!("{at}: model_name is empty"));
        }
        if !s.model_namespace.is_empty() {
            return Err(format!("{at}: model_namespace is not supported"));
        }
        if s.output_map.is_empty() {
            return Err(format!(
                "{at} (model '{}'): output_map is empty",
                s.model_name
            ));
        }
        let sorted = |map: &HashMap<String, String>| {
            let mut pairs: Vec<(String, String)> =
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            pairs.sort();
            pairs
        };
        steps.push(EnsembleStep {
            model: s.model_name.clone(),
            // Triton writes -1 for the newest version.
            version: (s.model_version > 0).then_some(s.model_version),
            inputs: sorted(&s.input_map),
            outputs: sorted(&s.output_map),
        });
    }
    // Who makes each tensor.
    let mut made: HashMap<&str, String> = inputs
        .iter()
        .map(|t| (t.name.as_str(), "the request".to_string()))
        .collect();
    for (i, step) in steps.iter().enumerate() {
        for (_, tensor) in &step.outputs {
            if let Some(first) = made.insert(tensor.as_str(), step.label(i)) {
                return Err(format!(
                    "ensemble tensor '{tensor}' is made by both {first} and {}",
                    step.label(i)
                ));
            }
        }
    }
    for (i, step) in steps.iter().enumerate() {
        for (input, tensor) in &step.inputs {
            if !made.contains_key(tensor.as_str()) {
                return Err(format!(
                    "{} reads '{tensor}' into '{input}', but no step and no ensemble input \
                     makes it",
                    step.label(i)
                ));
            }
        }
    }
    for output in outputs {
        if !made.contains_key(output.name.as_str()) {
            return Err(format!(
                "ensemble output '{}' is made by no step",
                output.name
            ));
        }
    }
    // Run the graph once by availability: a step that never becomes ready is on a cycle.
    let mut have: HashSet<&str> = inputs.iter().map(|t| t.name.as_str()).collect();
    let mut left: Vec<usize> = (0..steps.len()).collect();
    loop {
        let before = left.len();
        left.retain(|&i| {
            let ready = steps[i]
                .inputs
                .iter()
                .all(|(_, t)| have.contains(t.as_str()));
            if ready {
                have.extend(steps[i].outputs.iter().map(|(_, t)| t.as_str()));
            }
            !ready
        });
        if left.is_empty() {
            break;
        }
        if left.len() == before {
            let stuck: Vec<String> = left.iter().map(|&i| steps[i].label(i)).collect();
            return Err(format!(
                "ensemble steps wait on each other in a cycle: {}",
                stuck.join(", ")
            ));
        }
    }
    Ok(EnsembleSpec {
        steps,
        max_inflight: (e.max_inflight_requests > 0).then_some(e.max_inflight_requests as usize),
    })
}
