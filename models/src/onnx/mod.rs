//! The ONNX backend: `platform: "onnxruntime_onnx"` or `backend: "onnxruntime"`, a
//! `model.onnx` in the version folder, run by ONNX Runtime (the C library of the
//! `onnxruntime` wheel, loaded at run time; see [`runtime`]).
//!
//! As in Triton, a config may leave its inputs and outputs out: they are read from the
//! graph ([`Backend::complete_config`]), dynamic axes as -1 and, with `max_batch_size > 0`,
//! the first axis taken as the batch. A config that names them is checked against the
//! graph at load; an operator ONNX Runtime cannot run fails the load with ONNX Runtime's
//! message, which names the node and the operator.

mod convert;
mod runtime;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nereid_engine::{
    Backend, BatchedInstance, DataType, Device, EngineError, ExecBatch, Instance, LoadedModel,
    ModelSpec, Result, Tensor,
};
use nereid_proto::inference::{ModelConfig, ModelInput, ModelOutput};
use ort::session::Session;
use ort::value::{Outlet, ValueType};

use crate::options::{intra_op_threads, load_error, model_error};
use crate::weights::{resolve, ConfigParameters, Wanted};

/// The backend name in `config.pbtxt`.
pub(crate) const BACKEND: &str = "onnxruntime";
/// Triton's platform name for the same models.
pub(crate) const PLATFORM: &str = "onnxruntime_onnx";
/// The model file Triton looks for in a version folder.
const MODEL_FILE: &str = "model.onnx";

/// Loads ONNX models.
pub(crate) struct OnnxRuntime;

impl Backend for OnnxRuntime {
    fn complete_config(&self, config: &mut ModelConfig, version_dir: &Path) -> Result<()> {
        if !config.input.is_empty() && !config.output.is_empty() {
            return Ok(());
        }
        let bad = |e: &dyn std::fmt::Display| model_error(&config.name, BACKEND, e);
        let file = model_file(config, version_dir).map_err(|e| bad(&e))?;
        let session = open(&file, 1).map_err(|e| bad(&e))?;
        let batching = config.max_batch_size > 0;
        if config.input.is_empty() {
            for outlet in session.inputs() {
                let (data_type, dims) = declared(outlet, batching).map_err(|e| bad(&e))?;
                config.input.push(ModelInput {
                    name: outlet.name().to_string(),
                    data_type,
                    dims,
                    ..Default::default()
                });
            }
        }
        if config.output.is_empty() {
            for outlet in session.outputs() {
                let (data_type, dims) = declared(outlet, batching).map_err(|e| bad(&e))?;
                config.output.push(ModelOutput {
                    name: outlet.name().to_string(),
                    data_type,
                    dims,
                    ..Default::default()
                });
            }
        }
        Ok(())
    }

    fn load(&self, spec: &ModelSpec, version_dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        let bad = |e: &dyn std::fmt::Display| load_error(spec, BACKEND, e);
        if spec.decoupled {
            return Err(bad(
                &"ONNX models answer once per request; remove the decoupled policy",
            ));
        }
        let file = model_file(&spec.config, version_dir).map_err(|e| bad(&e))?;
        let threads = intra_op_threads(spec).map_err(|e| bad(&e))?;
        let session = open(&file, threads).map_err(|e| bad(&e))?;
        let batching = spec.max_batch_size > 0;
        for input in &spec.inputs {
            let outlet = outlet(session.inputs(), "input", &input.name).map_err(|e| bad(&e))?;
            matches(outlet, input.dtype, &input.dims, batching)
                .map_err(|e| bad(&format!("input '{}': {e}", input.name)))?;
        }
        for outlet in session.inputs() {
            if !spec.inputs.iter().any(|i| i.name == outlet.name()) {
                return Err(bad(&format!(
                    "the graph's input '{}' is not in the config's inputs",
                    outlet.name()
                )));
            }
        }
        for output in &spec.outputs {
            let outlet = outlet(session.outputs(), "output", &output.name).map_err(|e| bad(&e))?;
            matches(outlet, output.dtype, &output.dims, batching)
                .map_err(|e| bad(&format!("output '{}': {e}", output.name)))?;
        }
        Ok(Arc::new(OnnxModel {
            name: spec.name().to_string(),
            file,
            threads,
            outputs: spec
                .outputs
                .iter()
                .map(|o| (o.name.clone(), o.dtype))
                .collect(),
            first: std::sync::Mutex::new(Some(session)),
        }))
    }
}

/// A loaded ONNX model: its file, opened once per instance.
struct OnnxModel {
    name: String,
    file: PathBuf,
    threads: usize,
    outputs: Vec<(String, DataType)>,
    /// The session opened to check the graph at load, handed to the first instance.
    first: std::sync::Mutex<Option<Session>>,
}

impl LoadedModel for OnnxModel {
    fn create_instance(&self, device: Device, _index: usize) -> Result<Instance> {
        if let Device::Gpu(_) = device {
            return Err(model_error(
                &self.name,
                BACKEND,
                "KIND_GPU instances need ONNX Runtime's CUDA provider, which this build does \
                 not load; use KIND_CPU",
            ));
        }
        let taken = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        let session = match taken {
            Some(session) => session,
            None => {
                open(&self.file, self.threads).map_err(|e| model_error(&self.name, BACKEND, e))?
            }
        };
        Ok(Instance::Batched(Box::new(OnnxInstance {
            session,
            outputs: self.outputs.clone(),
        })))
    }
}

/// One instance: its own session (ORT runs one call per session at a time here).
struct OnnxInstance {
    session: Session,
    outputs: Vec<(String, DataType)>,
}

impl BatchedInstance for OnnxInstance {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let inputs = batch
            .inputs
            .iter()
            .map(|t| Ok((t.name.as_str(), convert::to_value(t)?)))
            .collect::<Result<Vec<_>>>()?;
        let results = self
            .session
            .run(inputs)
            .map_err(|e| EngineError::internal(format!("ONNX Runtime: {e}")))?;
        self.outputs
            .iter()
            .map(|(name, dtype)| {
                let value = results.get(name).ok_or_else(|| {
                    EngineError::internal(format!("ONNX Runtime returned no output '{name}'"))
                })?;
                convert::from_value(name, *dtype, value)
            })
            .collect()
    }
}

/// The version's `model.onnx` (or the file the weights parameters fetch).
fn model_file(config: &impl ConfigParameters, version_dir: &Path) -> anyhow::Result<PathBuf> {
    let direct = version_dir.join(MODEL_FILE);
    if direct.is_file() {
        return Ok(direct);
    }
    resolve(config, version_dir, Wanted::File { extension: "onnx" })
}

/// A session over `file` with `threads` intra-op threads.
fn open(file: &Path, threads: usize) -> anyhow::Result<Session> {
    let environment = runtime::environment()?;
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", file.display());
    Session::builder(&environment)
        .map_err(|e| fail(&e))?
        .with_intra_threads(threads)
        .map_err(|e| fail(&e))?
        .with_inter_threads(1)
        .map_err(|e| fail(&e))?
        .commit_from_file(file)
        .map_err(|e| fail(&e))
}

/// The graph's `kind` (input or output) called `name`.
fn outlet<'a>(outlets: &'a [Outlet], kind: &str, name: &str) -> Result<&'a Outlet, String> {
    outlets.iter().find(|o| o.name() == name).ok_or_else(|| {
        let names: Vec<&str> = outlets.iter().map(Outlet::name).collect();
        format!("{kind} '{name}' is not an {kind} of the graph, which has {names:?}")
    })
}

/// An outlet's element type and shape as a Triton config declares them: data type and
/// dims, without the batch axis when batching.
fn declared(outlet: &Outlet, batching: bool) -> Result<(i32, Vec<i64>), String> {
    let (dtype, shape) = tensor_of(outlet)?;
    let dims = config_dims(outlet.name(), &shape, batching)?;
    Ok((dtype.to_config(), dims))
}

/// A graph shape as config dims: the batch axis (which must be dynamic) dropped when
/// batching.
fn config_dims(name: &str, shape: &[i64], batching: bool) -> Result<Vec<i64>, String> {
    if !batching {
        return Ok(shape.to_vec());
    }
    match shape.split_first() {
        Some((&first, rest)) if first < 0 => Ok(rest.to_vec()),
        _ => Err(format!(
            "'{name}' has shape {shape:?}, whose first axis is not dynamic, so it cannot batch; \
             set max_batch_size: 0"
        )),
    }
}

/// An outlet's engine type and full shape (-1 for dynamic axes).
fn tensor_of(outlet: &Outlet) -> Result<(DataType, Vec<i64>), String> {
    match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let dtype = convert::engine_type(*ty).ok_or_else(|| {
                format!(
                    "'{}' has element type {ty:?}, which Nereid has no type for",
                    outlet.name()
                )
            })?;
            Ok((
                dtype,
                shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            ))
        }
        other => Err(format!(
            "'{}' is a {other:?}, not a tensor; only tensors are served",
            outlet.name()
        )),
    }
}

/// Whether a config tensor (type, dims without the batch axis when batching) fits the
/// graph's outlet.
fn matches(outlet: &Outlet, dtype: DataType, dims: &[i64], batching: bool) -> Result<(), String> {
    let (graph_type, graph_shape) = tensor_of(outlet)?;
    if graph_type != dtype {
        return Err(format!(
            "the config says {}, the graph {}",
            dtype.as_str(),
            graph_type.as_str()
        ));
    }
    fits(dims, &graph_shape, batching)
}

/// Same rank, and every fixed axis of the graph the same in the config.
fn fits(dims: &[i64], graph_shape: &[i64], batching: bool) -> Result<(), String> {
    let full: Vec<i64> = if batching {
        std::iter::once(-1).chain(dims.iter().copied()).collect()
    } else {
        dims.to_vec()
    };
    let fits = full.len() == graph_shape.len()
        && full.iter().zip(graph_shape).all(|(&c, &g)| g < 0 || c == g);
    if !fits {
        return Err(format!(
            "the config's shape {full:?} (with the batch axis as -1 when batching) does not fit \
             the graph's {graph_shape:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_drops_a_dynamic_first_axis_and_refuses_a_fixed_one() {
        assert_eq!(config_dims("x", &[-1, 3, 224], true).unwrap(), vec![3, 224]);
        assert_eq!(config_dims("x", &[1, 3], false).unwrap(), vec![1, 3]);
        let refused = config_dims("x", &[1, 3], true).unwrap_err();
        assert!(
            refused.contains("'x'") && refused.contains("max_batch_size: 0"),
            "{refused}"
        );
        assert!(config_dims("x", &[], true).is_err());
    }

    #[test]
    fn config_dims_fit_the_graph_where_its_axes_are_fixed() {
        fits(&[8], &[-1, 8], true).unwrap();
        fits(&[-1, 16], &[-1, -1, 16], true).unwrap();
        fits(&[4, 16], &[-1, -1, 16], true).unwrap();
        assert!(fits(&[7], &[-1, 8], true).is_err());
        assert!(fits(&[8], &[-1, 8], false).is_err());
        assert!(fits(&[-1], &[-1, 8], true)
            .unwrap_err()
            .contains("[-1, -1]"));
    }
}
