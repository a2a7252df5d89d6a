//! What the metadata endpoints answer, derived from a model's validated spec.

use serde::Serialize;

use crate::ModelSpec;

/// Server metadata.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
}

/// A tensor as model metadata describes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// KServe datatype name.
    pub datatype: String,
    /// Shape with -1 for variable dimensions, including the batch dimension when batching.
    pub shape: Vec<i64>,
}

/// Model metadata (KServe's model metadata response).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Ready versions.
    pub versions: Vec<String>,
    /// Platform (or backend) from the config.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

impl ModelMetadata {
    /// The metadata of `spec` served under `name` with the given ready versions: shapes
    /// with the batch dimension (-1) first when the model batches.
    pub(crate) fn of(name: &str, versions: Vec<String>, spec: &ModelSpec) -> Self {
        let describe = |specs: &[crate::TensorSpec]| {
            specs
                .iter()
                .map(|t| TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.dtype.as_str().into(),
                    shape: if spec.max_batch_size > 0 {
                        std::iter::once(-1).chain(t.dims.iter().copied()).collect()
                    } else {
                        t.dims.clone()
                    },
                })
                .collect()
        };
        let cfg = &spec.config;
        Self {
            name: name.to_string(),
            versions,
            platform: if cfg.platform.is_empty() {
                cfg.backend.clone()
            } else {
                cfg.platform.clone()
            },
            inputs: describe(&spec.inputs),
            outputs: describe(&spec.outputs),
        }
    }
}
