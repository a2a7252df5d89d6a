//! Health, server and model metadata, model config and statistics routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nereid_kserve::EXTENSIONS;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::openapi::{answers, schema};
use crate::state::{path_version, AppState};

/// Server metadata.
#[utoipa::path(get, path = "/v2", tag = "server",
    responses((status = 200, description = "Server name, version and extensions", body = schema::ServerMetadata)))]
pub(crate) async fn server_metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    let meta = state.engine.server_metadata();
    Json(json!({ "name": meta.name, "version": meta.version, "extensions": EXTENSIONS }))
}

/// Liveness.
#[utoipa::path(get, path = "/v2/health/live", tag = "server",
    responses((status = 200, description = "The server is live"),
              (status = 503, description = "The server is shutting down")))]
pub(crate) async fn server_live(State(state): State<AppState>) -> StatusCode {
    if state.engine.is_live() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Readiness.
#[utoipa::path(get, path = "/v2/health/ready", tag = "server",
    responses((status = 200, description = "The server is ready for inference"),
              (status = 503, description = "Not ready: starting, shutting down, or (strict readiness) a model is not ready")))]
pub(crate) async fn server_ready(State(state): State<AppState>) -> StatusCode {
    if state.engine.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn metadata(state: &AppState, model: &str, version: Option<i64>) -> ApiResult<Response> {
    Ok(Json(state.engine.model_metadata(model, version)?).into_response())
}

/// Metadata of a model's newest ready version.
#[utoipa::path(get, path = "/v2/models/{model}", tag = "model",
    params(("model" = String, Path, description = "Model name")),
    responses((status = 200, description = "Model metadata", body = schema::ModelMetadata),
              answers::NotFound,
              answers::Unavailable))]
pub(crate) async fn model_metadata(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Response> {
    metadata(&state, &model, None)
}

/// Metadata of one model version.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "model",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version")),
    responses((status = 200, description = "Model metadata", body = schema::ModelMetadata),
              answers::BadRequest,
              answers::NotFound,
              answers::Unavailable))]
pub(crate) async fn model_version_metadata(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    metadata(&state, &model, path_version(&version)?)
}

fn ready(state: &AppState, model: &str, version: Option<i64>) -> ApiResult<StatusCode> {
    if state.engine.model_ready(model, version) {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::bad_request(format!(
            "model '{model}' is not ready"
        )))
    }
}

/// Whether a model is ready.
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "model",
    params(("model" = String, Path, description = "Model name")),
    responses((status = 200, description = "Ready"), (status = 400, description = "Not ready or unknown", body = schema::ErrorBody)))]
pub(crate) async fn model_ready(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<StatusCode> {
    ready(&state, &model, None)
}

/// Whether a model version is ready.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "model",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version")),
    responses((status = 200, description = "Ready"), (status = 400, description = "Not ready or unknown", body = schema::ErrorBody)))]
pub(crate) async fn model_version_ready(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ready(&state, &model, path_version(&version)?)
}

fn config(state: &AppState, model: &str, version: Option<i64>) -> ApiResult<Response> {
    let config = state.engine.model_config(model, version)?;
    Ok(Json(nereid_proto::model_config_to_json(&config)).into_response())
}

/// A model's configuration, as Triton's model_config JSON.
#[utoipa::path(get, path = "/v2/models/{model}/config", tag = "model",
    params(("model" = String, Path, description = "Model name")),
    responses((status = 200, description = "Model configuration (Triton's model_config schema)", body = Object),
              answers::NotFound))]
pub(crate) async fn model_config(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Response> {
    config(&state, &model, None)
}

/// A model version's configuration.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/config", tag = "model",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version")),
    responses((status = 200, description = "Model configuration", body = Object),
              answers::BadRequest,
              answers::NotFound))]
pub(crate) async fn model_version_config(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    config(&state, &model, path_version(&version)?)
}

fn stats(state: &AppState, model: Option<&str>, version: Option<i64>) -> ApiResult<Response> {
    let stats = state.engine.model_statistics(model, version)?;
    Ok(Json(json!({ "model_stats": stats })).into_response())
}

/// Statistics of every ready model.
#[utoipa::path(get, path = "/v2/models/stats", tag = "statistics",
    responses((status = 200, description = "Statistics in Triton's shape", body = schema::Statistics)))]
pub(crate) async fn all_stats(State(state): State<AppState>) -> ApiResult<Response> {
    stats(&state, None, None)
}

/// Statistics of a model's ready versions.
#[utoipa::path(get, path = "/v2/models/{model}/stats", tag = "statistics",
    params(("model" = String, Path, description = "Model name")),
    responses((status = 200, description = "Statistics", body = schema::Statistics),
              answers::NotFound))]
pub(crate) async fn model_stats(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Response> {
    stats(&state, Some(&model), None)
}

/// Statistics of one model version.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/stats", tag = "statistics",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version")),
    responses((status = 200, description = "Statistics", body = schema::Statistics),
              answers::BadRequest,
              answers::NotFound))]
pub(crate) async fn model_version_stats(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    stats(&state, Some(&model), path_version(&version)?)
}
