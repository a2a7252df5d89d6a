//! Triton's generate extension: `generate` (one JSON answer) and `generate_stream` (SSE).
//!
//! Each top-level key of the request other than `id` and `parameters` is an input of that
//! name (a scalar becomes shape `[1]`, an array its own shape; the batch dimension `1` is
//! added for batching models); `parameters` keys that name an input are inputs too, the
//! others request parameters. Outputs come back as keys, a single element as a bare value.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures::Stream;
use nereid_engine::tensor::encode_bytes_elements;
use nereid_engine::{
    DataType, Engine, EngineError, InferRequest, InferResponse, Origin, ResponseStream, Tensor,
    TensorSpec,
};
use serde_json::Value;

use crate::body::read_body;
use crate::error::{error_json, ApiError, ApiResult};
use crate::openapi::{answers, schema};
use crate::state::{path_version, AppState};

/// Builds the engine request of a generate body for `model`.
pub(crate) fn build_request(
    engine: &Engine,
    model: &str,
    version: Option<i64>,
    body: &[u8],
) -> ApiResult<InferRequest> {
    let value: Value = serde_json::from_slice(body).map_err(nereid_kserve::describe_json_error)?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(
            "the generate request must be a JSON object",
        ));
    };
    let facts = engine.model(model, version)?;
    let batching = facts.batches();
    let mut request = InferRequest {
        model_name: model.to_string(),
        model_version: version,
        ..Default::default()
    };
    let find = |name: &str| facts.spec.input(name);
    let inputs_list = || {
        facts
            .spec
            .inputs
            .iter()
            .map(|t| format!("'{}'", t.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (key, value) in &object {
        match key.as_str() {
            "id" => {
                request.id = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(ApiError::bad_request("'id' must be a string")),
                }
            }
            "parameters" => {
                let Value::Object(params) = value else {
                    return Err(ApiError::bad_request("'parameters' must be an object"));
                };
                for (name, v) in params {
                    if let Some(spec) = find(name) {
                        request
                            .inputs
                            .push(tensor_from_json(spec, batching, v, body.len())?);
                    } else {
                        let p = nereid_kserve::param_from_json(v).ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "parameter '{name}' must be a bool, a number or a string"
                            ))
                        })?;
                        request.parameters.insert(name.clone(), p);
                    }
                }
            }
            name => {
                let spec = find(name).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "model '{model}' has no input '{name}'; its inputs are [{}]",
                        inputs_list()
                    ))
                })?;
                request
                    .inputs
                    .push(tensor_from_json(spec, batching, value, body.len())?);
            }
        }
    }
    Ok(request)
}

/// One input from a JSON value, its shape read from the value's nesting.
fn tensor_from_json(
    spec: &TensorSpec,
    batching: bool,
    value: &Value,
    text_len: usize,
) -> ApiResult<Tensor> {
    Ok(nereid_kserve::tensor_from_json(
        &spec.name, spec.dtype, batching, value, text_len,
    )?)
}

/// Folds one more response's outputs into `merged`: single-element BYTES outputs (text)
/// are concatenated, everything else is replaced by its latest value.
fn merge(merged: &mut Vec<Tensor>, outputs: Vec<Tensor>) {
    for t in outputs {
        match merged.iter_mut().find(|m| m.name == t.name) {
            Some(m) if is_text(m) && is_text(&t) => {
                let (a, b) = (m.string_elements(), t.string_elements());
                if let (Ok(a), Ok(b)) = (a, b) {
                    m.data = encode_bytes_elements([[&a[0][..], &b[0][..]].concat()]);
                }
            }
            Some(m) => *m = t,
            None => merged.push(t),
        }
    }
}

fn is_text(t: &Tensor) -> bool {
    t.dtype == DataType::Bytes && t.shape.iter().product::<i64>() == 1
}

async fn generate(
    state: AppState,
    model: &str,
    version: Option<i64>,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(body, state.max_input_size).await?;
    let mut request = build_request(&state.engine, model, version, &body)?;
    request.origin = origin.map(|o| o.0).unwrap_or_default();
    let mut stream = state.engine.infer_stream(request)?;
    let mut merged = Vec::new();
    let mut last: Option<InferResponse> = None;
    while let Some(item) = stream.recv().await {
        let mut response = item?;
        merge(&mut merged, std::mem::take(&mut response.outputs));
        let is_final = response.is_final;
        last = Some(response);
        if is_final {
            break;
        }
    }
    let last = last.ok_or_else(|| EngineError::internal("the model sent no response"))?;
    let json = nereid_kserve::write_generate_response(&last, &merged)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response())
}

/// The SSE event of one response.
fn event(response: &InferResponse) -> Event {
    match nereid_kserve::write_generate_response(response, &response.outputs) {
        Ok(json) => Event::default().data(String::from_utf8(json).unwrap_or_default()),
        Err(e) => Event::default().data(error_json(&e.to_string())),
    }
}

struct StreamState {
    first: Option<InferResponse>,
    rx: ResponseStream,
    done: bool,
}

/// Events after the first: one per response with outputs, an error as a last
/// `{"error": ...}` event. Dropping it (the client left) cancels the request.
fn events(
    first: InferResponse,
    rx: ResponseStream,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let done = first.is_final;
    futures::stream::unfold(
        StreamState {
            first: Some(first),
            rx,
            done: false,
        },
        move |mut st| async move {
            if let Some(first) = st.first.take() {
                st.done = done;
                return Some((Ok(event(&first)), st));
            }
            while !st.done {
                match st.rx.recv().await? {
                    Ok(r) if r.outputs.is_empty() => st.done = r.is_final,
                    Ok(r) => {
                        st.done = r.is_final;
                        return Some((Ok(event(&r)), st));
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Ok(Event::default().data(error_json(&e.to_string()))), st));
                    }
                }
            }
            None
        },
    )
}

async fn generate_stream(
    state: AppState,
    model: &str,
    version: Option<i64>,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    let body: Bytes = read_body(body, state.max_input_size).await?;
    let mut request = build_request(&state.engine, model, version, &body)?;
    request.origin = origin.map(|o| o.0).unwrap_or_default();
    let mut rx = state.engine.infer_stream(request)?;
    // Wait for the first response so an error before any event is a plain HTTP error.
    loop {
        match rx.recv().await {
            None => return Err(EngineError::internal("the model sent no response").into()),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(r)) if r.outputs.is_empty() && !r.is_final => continue,
            Some(Ok(r)) if r.outputs.is_empty() => {
                return Ok(
                    Sse::new(futures::stream::empty::<Result<Event, Infallible>>()).into_response(),
                )
            }
            Some(Ok(r)) => return Ok(Sse::new(events(r, rx)).into_response()),
        }
    }
}

/// Generate on a model's newest version: one JSON answer (a decoupled model's responses
/// are folded: text outputs concatenated, others the last value).
#[utoipa::path(post, path = "/v2/models/{model}/generate", tag = "generate",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = schema::GenerateRequest),
    responses((status = 200, description = "The model's outputs as keys", body = schema::GenerateResponse),
              answers::BadRequest,
              answers::NotFound,
              answers::TooLarge,
              answers::Unavailable))]
pub(crate) async fn model_generate(
    State(state): State<AppState>,
    Path(model): Path<String>,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    generate(state, &model, None, origin, body).await
}

/// Generate on one model version.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/generate", tag = "generate",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version")),
    request_body(content = schema::GenerateRequest),
    responses((status = 200, description = "The model's outputs as keys", body = schema::GenerateResponse),
              answers::BadRequest,
              answers::NotFound,
              answers::TooLarge,
              answers::Unavailable))]
pub(crate) async fn model_version_generate(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    let version = path_version(&version)?;
    generate(state, &model, version, origin, body).await
}

/// Streamed generate: Server-Sent Events `data: {...}`, one per response; an error after
/// the first event arrives as an event `{"error": "..."}`.
#[utoipa::path(post, path = "/v2/models/{model}/generate_stream", tag = "generate",
    params(("model" = String, Path, description = "Model name")),
    request_body(content = schema::GenerateRequest),
    responses((status = 200, description = "text/event-stream of generate responses", content_type = "text/event-stream",
               body = schema::GenerateEvent),
              answers::BadRequest,
              answers::NotFound,
              answers::TooLarge,
              answers::Unavailable))]
pub(crate) async fn model_generate_stream(
    State(state): State<AppState>,
    Path(model): Path<String>,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    generate_stream(state, &model, None, origin, body).await
}

/// Streamed generate on one model version.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/generate_stream", tag = "generate",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version")),
    request_body(content = schema::GenerateRequest),
    responses((status = 200, description = "text/event-stream of generate responses", content_type = "text/event-stream",
               body = schema::GenerateEvent),
              answers::BadRequest,
              answers::NotFound,
              answers::TooLarge,
              answers::Unavailable))]
pub(crate) async fn model_version_generate_stream(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    let version = path_version(&version)?;
    generate_stream(state, &model, version, origin, body).await
}
