//! The infer route: body (JSON or JSON + binary) -> engine request -> JSON or binary answer.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use nereid_engine::{Engine, Origin, SharedMemory};
use nereid_kserve::{binary_outputs, decode_infer_request, write_infer_response, ResponseForm};

use crate::binary;
use crate::body::read_body;
use crate::error::ApiResult;
use crate::openapi::{answers, schema};
use crate::state::{path_version, AppState};

/// Runs one inference from a received body on `engine`.
pub(crate) async fn run(
    engine: &Engine,
    model: &str,
    version: Option<i64>,
    headers: &HeaderMap,
    origin: Origin,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    let body = nereid_kserve::Body::split(body, binary::header_length(headers)?)?;
    let shm = engine.shared_memory();
    let decoded = decode_infer_request(body, shm)?;
    binary::check_output_parameters(&decoded.header.outputs)?;
    let requested = decoded.header.outputs.clone();
    let parameters = decoded.header.parameters.clone();
    let mut request = decoded.into_request(model.to_string(), version);
    let in_shared_memory = SharedMemory::take_placements(&mut request.outputs);
    request.origin = origin;
    let mut response = engine.infer(request).await?;
    let placed = shm.place_outputs(&in_shared_memory, &mut response)?;
    let mut flags = binary_outputs(&response, &requested, &parameters, false);
    // An output written to shared memory has no bytes to send.
    for (flag, placed) in flags.iter_mut().zip(&placed) {
        *flag &= placed.is_none();
    }
    let json = write_infer_response(&response, &flags, &placed, ResponseForm::Unary)?;
    Ok(binary::respond(json, &response, &flags))
}
async fn infer(
    state: AppState,
    model: &str,
    version: Option<i64>,
    headers: HeaderMap,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(body, state.max_input_size).await?;
    let origin = origin.map(|o| o.0).unwrap_or_default();
    run(&state.engine, model, version, &headers, origin, body).await
}

/// Inference on a model's newest ready version.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "inference",
    params(("model" = String, Path, description = "Model name"),
           ("Inference-Header-Content-Length" = Option<usize>, Header,
            description = "Binary tensor extension: length of the JSON header at the start of the body")),
    request_body(content = schema::InferRequest, description = "JSON, or a JSON header followed by raw tensors \
        (binary tensor extension); may be gzip or deflate compressed (Content-Encoding)"),
    responses((status = 200, description = "Outputs, as JSON or a JSON header plus raw tensors", body = schema::InferResponse),
              answers::BadRequest,
              answers::NotFound,
              answers::TooLarge,
              answers::Decoupled,
              answers::Unavailable))]
pub(crate) async fn model_infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    infer(state, &model, None, headers, origin, body).await
}

/// Inference on one model version.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "inference",
    params(("model" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version")),
    request_body(content = schema::InferRequest, description = "As for /v2/models/{model}/infer"),
    responses((status = 200, description = "Outputs", body = schema::InferResponse),
              answers::BadRequest,
              answers::NotFound,
              answers::TooLarge,
              answers::Decoupled,
              answers::Unavailable))]
pub(crate) async fn model_version_infer(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    origin: Option<Extension<Origin>>,
    body: Body,
) -> ApiResult<Response> {
    let version = path_version(&version)?;
    infer(state, &model, version, headers, origin, body).await
}
