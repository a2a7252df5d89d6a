//! The infer route: body (JSON or JSON + binary) -> engine request -> JSON or binary answer.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use nereid_engine::Engine;
use nereid_kserve::{binary_outputs, decode_infer_request, write_infer_response, ResponseForm};

use crate::binary;
use crate::body::read_body;
use crate::error::ApiResult;
use crate::openapi::schema;
use crate::state::{path_version, AppState};

/// Runs one inference from a received body on `engine`.
pub(crate) async fn run(
    engine: &Engine,
    model: &str,
    version: Option<i64>,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    let body = nereid_kserve::Body::split(body, binary::header_length(headers)?)?;
    let decoded = decode_infer_request(body)?;
    binary::check_output_parameters(&decoded.header.outputs)?;
    let requested = decoded.header.outputs.clone();
    let parameters = decoded.header.parameters.clone();
    let response = engine
        .infer(decoded.into_request(model.to_string(), version))
        .await?;
    let flags = binary_outputs(&response, &requested, &parameters, false);
    let json = write_infer_response(&response, &flags, ResponseForm::Unary)?;
    Ok(binary::respond(json, &response, &flags))
}
async fn infer(
    state: AppState,
    model: &str,
    version: Option<i64>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(body, state.max_input_size).await?;
    run(&state.engine, model, version, &headers, body).await
}

/// Inference on a model's newest ready version.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "inference",
    params(("model" = String, Path, description = "Model name"),
           ("Inference-Header-Content-Length" = Option<usize>, Header,
            description = "Binary tensor extension: length of the JSON header at the start of the body")),
    request_body(content = schema::InferRequest, description = "JSON, or a JSON header followed by raw tensors \
        (binary tensor extension); may be gzip or deflate compressed (Content-Encoding)"),
    responses((status = 200, description = "Outputs, as JSON or a JSON header plus raw tensors", body = schema::InferResponse),
              (status = 400, description = "Malformed request or input that does not fit the model", body = schema::ErrorBody),
              (status = 404, description = "Unknown model", body = schema::ErrorBody),
              (status = 413, description = "Body over --http-max-input-size", body = schema::ErrorBody),
              (status = 501, description = "The model is decoupled: use generate_stream", body = schema::ErrorBody),
              (status = 503, description = "Model not ready, queue full or server draining", body = schema::ErrorBody)))]
pub(crate) async fn model_infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    infer(state, &model, None, headers, body).await
}

/// Inference on one model version.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "inference",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version")),
    request_body(content = schema::InferRequest, description = "As for /v2/models/{model}/infer"),
    responses((status = 200, description = "Outputs", body = schema::InferResponse),
              (status = 400, description = "Bad request", body = schema::ErrorBody),
              (status = 404, description = "Unknown model or version", body = schema::ErrorBody)))]
pub(crate) async fn model_version_infer(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let version = path_version(&version)?;
    infer(state, &model, version, headers, body).await
}
