//! `GET /info`: TEI's description of the model a route serves (`model_type` with its
//! pooling or labels, the input limit, the batch limit).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::{Kind, Tei, TeiModel, TeiResult, MAX_CLIENT_BATCH_SIZE};

#[derive(Debug, Serialize)]
pub(super) struct Info {
    model_id: String,
    model_sha: Option<String>,
    model_dtype: String,
    model_type: ModelType,
    max_concurrent_requests: Option<usize>,
    max_input_length: Option<usize>,
    max_batch_tokens: Option<usize>,
    max_batch_requests: Option<usize>,
    max_client_batch_size: usize,
    auto_truncate: bool,
    tokenization_workers: Option<usize>,
    version: String,
    sha: Option<String>,
    docker_label: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum ModelType {
    Embedding { pooling: String },
    Classifier(Labels),
    Reranker(Labels),
}

#[derive(Debug, Serialize)]
struct Labels {
    id2label: BTreeMap<String, String>,
    label2id: BTreeMap<String, usize>,
}

/// `GET /info` (the model from the path, else the only ready TEI model).
pub(super) async fn info(State(tei): State<Tei>, model: Option<String>) -> TeiResult<Json<Info>> {
    let model = TeiModel::find(
        &tei,
        model.as_deref(),
        &[Kind::Embedder, Kind::Classifier, Kind::Reranker],
    )?;
    let spec = &model.facts.spec;
    let labels = || {
        let names = spec
            .labels
            .clone()
            .unwrap_or_else(|| vec!["LABEL_0".into()]);
        Labels {
            id2label: names
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone()))
                .collect(),
            label2id: names
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i))
                .collect(),
        }
    };
    let model_type = match model.kind {
        Kind::Embedder => ModelType::Embedding {
            pooling: spec.parameter("pooling").unwrap_or("mean").to_string(),
        },
        Kind::Classifier => ModelType::Classifier(labels()),
        Kind::Reranker => ModelType::Reranker(labels()),
    };
    let server = tei.engine.server_metadata();
    Ok(Json(Info {
        model_id: model.name.clone(),
        model_sha: None,
        model_dtype: spec.parameter("dtype").unwrap_or("float32").to_string(),
        model_type,
        max_concurrent_requests: tei.engine.max_inflight(),
        max_input_length: spec
            .parameter("max_seq_length")
            .and_then(|v| v.trim().parse().ok()),
        max_batch_tokens: None,
        max_batch_requests: (spec.max_batch_size > 0).then_some(spec.max_batch_size),
        max_client_batch_size: MAX_CLIENT_BATCH_SIZE,
        auto_truncate: false,
        tokenization_workers: None,
        version: server.version,
        sha: None,
        docker_label: None,
    }))
}
