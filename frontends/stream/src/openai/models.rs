//! `GET /v1/models` and `GET /v1/models/{model}`: the engine's ready models as OpenAI model
//! objects.

use axum::extract::{Path, State};
use axum::Json;
use nereid_engine::Engine;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// An OpenAI model object.
#[derive(Debug, Serialize)]
pub(crate) struct Model {
    id: String,
    object: &'static str,
    /// The engine does not record load times; 0 is what OpenAI-compatible servers without
    /// one report.
    created: u64,
    owned_by: &'static str,
}

impl Model {
    fn new(id: String) -> Self {
        Self {
            id,
            object: "model",
            created: 0,
            owned_by: "nereid",
        }
    }
}

/// The list answer.
#[derive(Debug, Serialize)]
pub(crate) struct ModelList {
    object: &'static str,
    data: Vec<Model>,
}

/// Every ready model once (the index has a row per ready version), in name order.
pub(crate) async fn list(State(engine): State<Engine>) -> Json<ModelList> {
    let mut names: Vec<String> = engine
        .repository_index(true)
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names.dedup();
    Json(ModelList {
        object: "list",
        data: names.into_iter().map(Model::new).collect(),
    })
}

/// One ready model, or 404 `model_not_found`.
pub(crate) async fn retrieve(
    State(engine): State<Engine>,
    Path(model): Path<String>,
) -> ApiResult<Json<Model>> {
    if engine.model_ready(&model, None) {
        Ok(Json(Model::new(model)))
    } else {
        Err(ApiError::model_not_found(&model))
    }
}
