//! Triton's trace and logging extensions: `/v2/trace/setting`,
//! `/v2/models/{model}/trace/setting` and `/v2/logging`, GET to read, POST to change.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use nereid_engine::trace::TraceUpdate;
use nereid_engine::{LogSettings, LogValue, TraceSettings};
use serde_json::{Map, Value};

use crate::body::optional_json;
use crate::error::{ApiError, ApiResult};
use crate::openapi::answers;
use crate::state::AppState;

/// The global trace settings.
#[utoipa::path(get, path = "/v2/trace/setting", tag = "trace",
    responses((status = 200, description = "trace_level (a list), trace_rate, trace_count, log_frequency, trace_mode, trace_file", body = Object)))]
pub(crate) async fn trace_setting(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(trace_json(&state.engine.trace_settings(None)?)))
}

/// Changes the global trace settings: the settings named change, the others stay.
#[utoipa::path(post, path = "/v2/trace/setting", tag = "trace",
    request_body(content = Object, description = "e.g. {\"trace_level\": [\"TIMESTAMPS\"], \"trace_rate\": \"1\"}"),
    responses((status = 200, description = "Every setting after the update", body = Object),
              answers::BadRequest))]
pub(crate) async fn update_trace_setting(
    State(state): State<AppState>,
    body: Body,
) -> ApiResult<Json<Value>> {
    update_trace(&state, None, body).await
}

/// A model's trace settings: its own where it has them, the global ones for the rest.
#[utoipa::path(get, path = "/v2/models/{model}/trace/setting", tag = "trace",
    params(("model" = String, Path, description = "Model name")),
    responses((status = 200, description = "The model's trace settings", body = Object),
              answers::NotFound))]
pub(crate) async fn model_trace_setting(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(trace_json(
        &state.engine.trace_settings(Some(&model))?,
    )))
}

/// Changes a model's trace settings; a setting given `null` follows the global one again.
#[utoipa::path(post, path = "/v2/models/{model}/trace/setting", tag = "trace",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = Object, description = "e.g. {\"trace_level\": [\"OFF\"]} or {\"trace_rate\": null}"),
    responses((status = 200, description = "The model's settings after the update", body = Object),
              answers::BadRequest,
              answers::NotFound))]
pub(crate) async fn update_model_trace_setting(
    State(state): State<AppState>,
    Path(model): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    update_trace(&state, Some(&model), body).await
}

/// The log settings.
#[utoipa::path(get, path = "/v2/logging", tag = "logging",
    responses((status = 200, description = "log_file, log_info, log_warning, log_error, log_verbose_level, log_format", body = Object)))]
pub(crate) async fn logging(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(log_json(&state.engine.log_settings()?)))
}

/// Changes log settings: the settings named change, the others stay.
#[utoipa::path(post, path = "/v2/logging", tag = "logging",
    request_body(content = Object, description = "e.g. {\"log_verbose_level\": 1}"),
    responses((status = 200, description = "Every setting after the update", body = Object),
              answers::BadRequest))]
pub(crate) async fn update_logging(
    State(state): State<AppState>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let object: Map<String, Value> =
        optional_json(body, state.max_input_size, "log settings").await?;
    let update = object
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| {
            let value = match value {
                Value::Bool(b) => LogValue::Bool(*b),
                Value::Number(n) if n.is_u64() => LogValue::Uint(n.as_u64().unwrap_or_default()),
                Value::Number(n) if n.is_i64() => LogValue::Int(n.as_i64().unwrap_or_default()),
                Value::String(s) => LogValue::Str(s.clone()),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "log setting '{key}' must be a boolean, an integer or a string"
                    )))
                }
            };
            Ok((key.clone(), value))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(log_json(&state.engine.update_log_settings(&update)?)))
}

/// Applies a trace settings body, globally or to `model`; answers the settings after it.
async fn update_trace(state: &AppState, model: Option<&str>, body: Body) -> ApiResult<Json<Value>> {
    let object: Map<String, Value> =
        optional_json(body, state.max_input_size, "trace settings").await?;
    let update = trace_update(&object)?;
    Ok(Json(trace_json(
        &state.engine.update_trace_settings(model, &update)?,
    )))
}

/// Triton's trace settings body: each value a string, a list of strings, or `null`
/// (numbers are taken as their text).
fn trace_update(object: &Map<String, Value>) -> ApiResult<TraceUpdate> {
    let text = |key: &str, value: &Value| match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(ApiError::bad_request(format!(
            "trace setting '{key}' must be a string, a list of strings or null"
        ))),
    };
    object
        .iter()
        .map(|(key, value)| {
            let values = match value {
                Value::Null => None,
                Value::Array(items) => Some(
                    items
                        .iter()
                        .map(|item| text(key, item))
                        .collect::<ApiResult<Vec<_>>>()?,
                ),
                other => Some(vec![text(key, other)?]),
            };
            Ok((key.clone(), values))
        })
        .collect()
}

fn trace_json(settings: &TraceSettings) -> Value {
    Value::Object(
        settings
            .to_strings()
            .into_iter()
            .map(|(key, mut values)| {
                let value = if key == "trace_level" {
                    Value::from(values)
                } else {
                    Value::from(values.pop().unwrap_or_default())
                };
                (key.to_string(), value)
            })
            .collect(),
    )
}

fn log_json(settings: &LogSettings) -> Value {
    Value::Object(
        settings
            .entries()
            .into_iter()
            .map(|(key, value)| {
                let value = match value {
                    LogValue::Bool(b) => Value::from(b),
                    LogValue::Uint(n) => Value::from(n),
                    LogValue::Int(n) => Value::from(n),
                    LogValue::Str(s) => Value::from(s),
                };
                (key.to_string(), value)
            })
            .collect(),
    )
}
