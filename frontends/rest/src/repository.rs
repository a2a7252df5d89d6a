//! Model repository extension: index, load (optionally with a config given inline) and
//! unload.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use nereid_engine::RepositoryEntry;
use serde::Deserialize;
use serde_json::Value;

use crate::body::optional_json;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{answers, schema};
use crate::state::AppState;

#[derive(Deserialize, Default)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

#[derive(Deserialize, Default)]
struct ControlRequest {
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

/// The repository index: every model the repository holds, with its state.
#[utoipa::path(post, path = "/v2/repository/index", tag = "repository",
    request_body(content = Option<schema::RepositoryIndexRequest>, description = "Optional; `ready: true` lists only ready models"),
    responses((status = 200, description = "Models and their state", body = Vec<schema::RepositoryEntry>),
              answers::BadRequest,
              answers::TooLarge))]
pub(crate) async fn repository_index(
    State(state): State<AppState>,
    body: Body,
) -> ApiResult<Json<Vec<RepositoryEntry>>> {
    let request: IndexRequest =
        optional_json(body, state.max_input_size, "repository index request").await?;
    Ok(Json(state.engine.repository_index(request.ready)))
}

/// Loads or reloads a model (explicit model control mode only). Parameter `config` may
/// hold a model configuration as a JSON string, used instead of the repository's.
#[utoipa::path(post, path = "/v2/repository/models/{model}/load", tag = "repository",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = Option<schema::LoadRequest>),
    responses((status = 200, description = "Loaded"),
              (status = 400, description = "Bad config or model failed to load", body = schema::ErrorBody),
              (status = 404, description = "No such model in the repository", body = schema::ErrorBody),
              (status = 501, description = "File overrides are not supported", body = schema::ErrorBody),
              (status = 503, description = "Model control is not explicit", body = schema::ErrorBody),
              answers::TooLarge))]
pub(crate) async fn repository_load(
    State(state): State<AppState>,
    Path(model): Path<String>,
    body: Body,
) -> ApiResult<StatusCode> {
    let request: ControlRequest = optional_json(body, state.max_input_size, "load request").await?;
    if let Some(key) = request.parameters.keys().find(|k| k.starts_with("file:")) {
        return Err(ApiError::unimplemented(format!(
            "parameter '{key}': loading model files sent with the request is not supported"
        )));
    }
    let config = match request.parameters.get("config") {
        None => None,
        Some(Value::String(text)) => {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                ApiError::bad_request(format!(
                    "parameter 'config': {}",
                    nereid_kserve::describe_json_error(e)
                ))
            })?;
            Some(
                nereid_proto::model_config_from_json(&value)
                    .map_err(|e| ApiError::bad_request(format!("parameter 'config': {e}")))?,
            )
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "parameter 'config' must be a string holding JSON",
            ))
        }
    };
    state.engine.load_model(&model, config).await?;
    Ok(StatusCode::OK)
}

/// Unloads a model once its queued requests finish (explicit model control mode only).
#[utoipa::path(post, path = "/v2/repository/models/{model}/unload", tag = "repository",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = Option<schema::UnloadRequest>),
    responses((status = 200, description = "Unloaded"),
              (status = 404, description = "Unknown model", body = schema::ErrorBody),
              (status = 503, description = "Model control is not explicit", body = schema::ErrorBody),
              answers::BadRequest,
              answers::TooLarge))]
pub(crate) async fn repository_unload(
    State(state): State<AppState>,
    Path(model): Path<String>,
    body: Body,
) -> ApiResult<StatusCode> {
    // `unload_dependents` has no meaning without ensembles; the body is read for its errors.
    let _: ControlRequest = optional_json(body, state.max_input_size, "unload request").await?;
    state.engine.unload_model(&model).await?;
    Ok(StatusCode::OK)
}
