//! Triton's system shared-memory extension: register, unregister and list the regions
//! from which inputs are read and into which outputs are written (the registry is the
//! engine's, shared with the gRPC door).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use nereid_engine::SharedMemoryRegion;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::optional_json;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{answers, schema};
use crate::state::AppState;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    key: Option<String>,
    #[serde(default)]
    offset: u64,
    byte_size: Option<u64>,
}

fn status_json(regions: Vec<SharedMemoryRegion>) -> Json<Value> {
    Json(Value::Array(
        regions
            .into_iter()
            .map(|r| json!({ "name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size }))
            .collect(),
    ))
}

/// Every registered region.
#[utoipa::path(get, path = "/v2/systemsharedmemory/status", tag = "shared memory",
    responses((status = 200, description = "The registered regions", body = Vec<schema::SharedMemoryRegion>)))]
pub(crate) async fn status(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(status_json(state.engine.shared_memory().status("")?))
}

/// One registered region.
#[utoipa::path(get, path = "/v2/systemsharedmemory/region/{region}/status", tag = "shared memory",
    params(("region" = String, Path, description = "Region name")),
    responses((status = 200, description = "The region", body = Vec<schema::SharedMemoryRegion>),
              (status = 404, description = "No region of that name is registered", body = schema::ErrorBody)))]
pub(crate) async fn region_status(
    State(state): State<AppState>,
    Path(region): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(status_json(state.engine.shared_memory().status(&region)?))
}

/// Maps `byte_size` bytes at `offset` of the POSIX shared-memory object `key` as the region.
#[utoipa::path(post, path = "/v2/systemsharedmemory/region/{region}/register", tag = "shared memory",
    params(("region" = String, Path, description = "Region name")),
    request_body(content = schema::SharedMemoryRegisterRequest),
    responses((status = 200, description = "Registered"),
              answers::BadRequest,
              answers::TooLarge))]
pub(crate) async fn register(
    State(state): State<AppState>,
    Path(region): Path<String>,
    body: Body,
) -> ApiResult<StatusCode> {
    let request: RegisterRequest =
        optional_json(body, state.max_input_size, "register request").await?;
    let missing = |field: &str| {
        ApiError::bad_request(format!("register request: field '{field}' is required"))
    };
    let key = request.key.ok_or_else(|| missing("key"))?;
    let byte_size = request.byte_size.ok_or_else(|| missing("byte_size"))?;
    state
        .engine
        .shared_memory()
        .register(&region, &key, request.offset, byte_size)?;
    Ok(StatusCode::OK)
}

/// Unregisters one region (a name that is not registered is not an error, as in Triton).
#[utoipa::path(post, path = "/v2/systemsharedmemory/region/{region}/unregister", tag = "shared memory",
    params(("region" = String, Path, description = "Region name")),
    responses((status = 200, description = "Unregistered")))]
pub(crate) async fn unregister(
    State(state): State<AppState>,
    Path(region): Path<String>,
) -> StatusCode {
    state.engine.shared_memory().unregister(&region);
    StatusCode::OK
}

/// Unregisters every region.
#[utoipa::path(post, path = "/v2/systemsharedmemory/unregister", tag = "shared memory",
    responses((status = 200, description = "Every region unregistered")))]
pub(crate) async fn unregister_all(State(state): State<AppState>) -> StatusCode {
    state.engine.shared_memory().unregister("");
    StatusCode::OK
}

/// The CUDA regions: none, as this server has no CUDA shared memory (registering one is
/// 501); listed so that clients that list or unregister every kind of region on start and
/// exit (perf_analyzer) work.
#[utoipa::path(get, path = "/v2/cudasharedmemory/status", tag = "shared memory",
    responses((status = 200, description = "No regions", body = Vec<schema::SharedMemoryRegion>)))]
pub(crate) async fn cuda_status(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(status_json(state.engine.shared_memory().cuda_status("")?))
}

/// One CUDA region: never registered here, so always 404.
#[utoipa::path(get, path = "/v2/cudasharedmemory/region/{region}/status", tag = "shared memory",
    params(("region" = String, Path, description = "Region name")),
    responses((status = 404, description = "No CUDA region is registered", body = schema::ErrorBody)))]
pub(crate) async fn cuda_region_status(
    State(state): State<AppState>,
    Path(region): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(status_json(
        state.engine.shared_memory().cuda_status(&region)?,
    ))
}

/// Unregisters one CUDA region: there is none, so nothing to do (as in Triton).
#[utoipa::path(post, path = "/v2/cudasharedmemory/region/{region}/unregister", tag = "shared memory",
    params(("region" = String, Path, description = "Region name")),
    responses((status = 200, description = "Nothing was registered")))]
pub(crate) async fn cuda_unregister(Path(_region): Path<String>) -> StatusCode {
    StatusCode::OK
}

/// Unregisters every CUDA region: there is none.
#[utoipa::path(post, path = "/v2/cudasharedmemory/unregister", tag = "shared memory",
    responses((status = 200, description = "Nothing was registered")))]
pub(crate) async fn cuda_unregister_all() -> StatusCode {
    StatusCode::OK
}
