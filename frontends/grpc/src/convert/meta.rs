//! Everything but inference: metadata, statistics, repository index and load parameters.

use nereid_engine::{
    DurationSnapshot, EngineError, ModelConfig, ModelMetadata, ModelStatsSnapshot, RepositoryEntry,
    ServerMetadata, TensorMetadata,
};
use nereid_proto::inference::model_metadata_response::TensorMetadata as WireTensor;
use nereid_proto::inference::model_repository_parameter::ParameterChoice as RepoChoice;
use nereid_proto::inference::repository_index_response::ModelIndex;
use nereid_proto::inference::{
    InferBatchStatistics, InferStatistics, ModelMetadataResponse, ModelRepositoryParameter,
    ModelStatistics, ModelStatisticsResponse, RepositoryIndexResponse, ServerMetadataResponse,
    StatisticDuration,
};

/// Server metadata with the server's extensions.
pub fn server_metadata_to_wire(m: ServerMetadata) -> ServerMetadataResponse {
    ServerMetadataResponse {
        name: m.name,
        version: m.version,
        extensions: nereid_kserve::EXTENSIONS
            .iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

fn tensors_to_wire(ts: Vec<TensorMetadata>) -> Vec<WireTensor> {
    ts.into_iter()
        .map(|t| WireTensor {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        })
        .collect()
}

fn tensors_from_wire(ts: Vec<WireTensor>) -> Vec<TensorMetadata> {
    ts.into_iter()
        .map(|t| TensorMetadata {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        })
        .collect()
}

/// Model metadata for the wire.
pub fn metadata_to_wire(m: ModelMetadata) -> ModelMetadataResponse {
    ModelMetadataResponse {
        name: m.name,
        versions: m.versions,
        platform: m.platform,
        inputs: tensors_to_wire(m.inputs),
        outputs: tensors_to_wire(m.outputs),
    }
}

/// Model metadata from the wire (the client's direction).
pub fn metadata_from_wire(m: ModelMetadataResponse) -> ModelMetadata {
    ModelMetadata {
        name: m.name,
        versions: m.versions,
        platform: m.platform,
        inputs: tensors_from_wire(m.inputs),
        outputs: tensors_from_wire(m.outputs),
    }
}

fn duration(d: DurationSnapshot) -> Option<StatisticDuration> {
    Some(StatisticDuration {
        count: d.count,
        ns: d.ns,
    })
}

/// Statistics snapshots as Triton's statistics response.
pub fn stats_to_wire(snapshots: Vec<ModelStatsSnapshot>) -> ModelStatisticsResponse {
    let model_stats = snapshots
        .into_iter()
        .map(|s| {
            let i = s.inference_stats;
            ModelStatistics {
                name: s.name,
                version: s.version,
                last_inference: s.last_inference,
                inference_count: s.inference_count,
                execution_count: s.execution_count,
                inference_stats: Some(InferStatistics {
                    success: duration(i.success),
                    fail: duration(i.fail),
                    queue: duration(i.queue),
                    compute_input: duration(i.compute_input),
                    compute_infer: duration(i.compute_infer),
                    compute_output: duration(i.compute_output),
                    cache_hit: duration(i.cache_hit),
                    cache_miss: duration(i.cache_miss),
                }),
                batch_stats: s
                    .batch_stats
                    .into_iter()
                    .map(|b| InferBatchStatistics {
                        batch_size: b.batch_size,
                        compute_input: duration(b.compute_input),
                        compute_infer: duration(b.compute_infer),
                        compute_output: duration(b.compute_output),
                    })
                    .collect(),
                memory_usage: Vec::new(),
                response_stats: Default::default(),
            }
        })
        .collect();
    ModelStatisticsResponse { model_stats }
}

/// The repository index for the wire.
pub fn index_to_wire(entries: Vec<RepositoryEntry>) -> RepositoryIndexResponse {
    RepositoryIndexResponse {
        models: entries
            .into_iter()
            .map(|e| ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state,
                reason: e.reason,
            })
            .collect(),
    }
}

/// The config a load request carries in its `config` parameter (Triton's JSON form), if any.
/// `file:` parameters (model files sent inline) are UNIMPLEMENTED.
pub fn load_config_from_wire(
    params: &std::collections::HashMap<String, ModelRepositoryParameter>,
) -> Result<Option<ModelConfig>, EngineError> {
    if let Some(key) = params.keys().find(|k| k.starts_with("file:")) {
        return Err(EngineError::Unimplemented(format!(
            "load parameter '{key}': loading model files sent with the request is not supported yet; \
             put them in the model repository"
        )));
    }
    let Some(param) = params.get("config") else {
        return Ok(None);
    };
    let text = match &param.parameter_choice {
        Some(RepoChoice::StringParam(s)) => s.clone(),
        Some(RepoChoice::BytesParam(b)) => String::from_utf8(b.clone())
            .map_err(|_| EngineError::invalid("load parameter 'config' is not UTF-8 JSON"))?,
        _ => {
            return Err(EngineError::invalid(
                "load parameter 'config' must be a string holding the config as JSON",
            ))
        }
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        EngineError::invalid(format!("load parameter 'config' is not valid JSON: {e}"))
    })?;
    nereid_proto::model_config_from_json(&json)
        .map(Some)
        .map_err(|e| EngineError::invalid(format!("load parameter 'config': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_config_parameter_is_json() {
        let mut params = std::collections::HashMap::new();
        assert_eq!(load_config_from_wire(&params).unwrap(), None);
        params.insert(
            "config".to_string(),
            ModelRepositoryParameter {
                parameter_choice: Some(RepoChoice::StringParam(r#"{"max_batch_size": 4}"#.into())),
            },
        );
        assert_eq!(
            load_config_from_wire(&params)
                .unwrap()
                .unwrap()
                .max_batch_size,
            4
        );
        params.insert(
            "config".to_string(),
            ModelRepositoryParameter {
                parameter_choice: Some(RepoChoice::StringParam("{".into())),
            },
        );
        assert!(matches!(
            load_config_from_wire(&params),
            Err(EngineError::InvalidArgument(_))
        ));
        params.insert(
            "file:1/model.bin".to_string(),
            ModelRepositoryParameter::default(),
        );
        assert!(matches!(
            load_config_from_wire(&params),
            Err(EngineError::Unimplemented(_))
        ));
    }
}
