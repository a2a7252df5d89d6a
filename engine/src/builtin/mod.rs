//! Backends built into the engine, cheap enough to carry conformance tests and protocol
//! benchmarks: `add_sub` (Triton's `simple`), `identity`, the decoupled `repeat`, the
//! stateful `sequence` and `accumulate` (for the sequence batcher), and `sleep` (holds its
//! instance, for tests of queues and cancellation).

mod add_sub;
pub mod demo;
mod identity;
mod repeat;
mod sequence;
mod sleep;

use std::path::Path;
use std::sync::Arc;

use crate::{Backend, BackendRegistry, Device, Instance, LoadedModel, ModelSpec, Result};

/// Makes an instance of a weightless model from its spec, checking the spec fits.
type MakeInstance = fn(&ModelSpec) -> Result<Instance>;

/// Registers the built-in backends under their names.
pub fn register(registry: &mut BackendRegistry) {
    registry.register("add_sub", Arc::new(Stateless(add_sub::instance)));
    registry.register("identity", Arc::new(Stateless(identity::instance)));
    registry.register("repeat", Arc::new(Stateless(repeat::instance)));
    registry.register("sleep", Arc::new(Stateless(sleep::instance)));
    registry.register("sequence", Arc::new(Stateless(sequence::sequence)));
    registry.register("accumulate", Arc::new(Stateless(sequence::accumulate)));
}

/// A backend with no weights: every instance is made from the spec alone.
struct Stateless(MakeInstance);

struct StatelessModel {
    spec: ModelSpec,
    make: MakeInstance,
}

impl Backend for Stateless {
    fn load(&self, spec: &ModelSpec, _version_dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        (self.0)(spec)?; // a config the backend cannot serve fails at load, not per request
        Ok(Arc::new(StatelessModel {
            spec: spec.clone(),
            make: self.0,
        }))
    }
}

impl LoadedModel for StatelessModel {
    fn create_instance(&self, _device: Device, _index: usize) -> Result<Instance> {
        (self.make)(&self.spec)
    }
}

/// Checks that the spec has exactly `n` inputs and outputs of one shared datatype.
fn pairs(
    spec: &ModelSpec,
    backend: &str,
    inputs: usize,
    outputs: usize,
) -> Result<crate::DataType> {
    let bad = |msg: String| {
        crate::EngineError::invalid(format!(
            "model '{}' (backend {backend}): {msg}",
            spec.name()
        ))
    };
    if spec.inputs.len() != inputs || spec.outputs.len() != outputs {
        return Err(bad(format!("needs {inputs} inputs and {outputs} outputs")));
    }
    let dtype = spec.inputs[0].dtype;
    if spec
        .inputs
        .iter()
        .chain(&spec.outputs)
        .any(|t| t.dtype != dtype)
    {
        return Err(bad("inputs and outputs must share one datatype".into()));
    }
    Ok(dtype)
}
