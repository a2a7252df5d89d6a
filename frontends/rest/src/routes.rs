//! The router: every KServe v2 route, the OpenAPI document and docs page.

use std::sync::Arc;

use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse};
use axum::routing::{any, get};
use axum::Router;
use nereid_engine::Engine;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::{docs_page, ApiDoc};
use crate::state::AppState;
use crate::{generate, infer, layers, metadata, repository, settings, shared_memory, RestArgs};

/// The KServe v2 routes with their OpenAPI annotations.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(metadata::server_metadata))
        .routes(routes!(metadata::server_live))
        .routes(routes!(metadata::server_ready))
        .routes(routes!(metadata::model_metadata))
        .routes(routes!(metadata::model_version_metadata))
        .routes(routes!(metadata::model_ready))
        .routes(routes!(metadata::model_version_ready))
        .routes(routes!(metadata::model_config))
        .routes(routes!(metadata::model_version_config))
        .routes(routes!(metadata::all_stats))
        .routes(routes!(metadata::model_stats))
        .routes(routes!(metadata::model_version_stats))
        .routes(routes!(infer::model_infer))
        .routes(routes!(infer::model_version_infer))
        .routes(routes!(generate::model_generate))
        .routes(routes!(generate::model_version_generate))
        .routes(routes!(generate::model_generate_stream))
        .routes(routes!(generate::model_version_generate_stream))
        .routes(routes!(repository::repository_index))
        .routes(routes!(repository::repository_load))
        .routes(routes!(repository::repository_unload))
        .routes(routes!(
            settings::trace_setting,
            settings::update_trace_setting
        ))
        .routes(routes!(
            settings::model_trace_setting,
            settings::update_model_trace_setting
        ))
        .routes(routes!(settings::logging, settings::update_logging))
        .routes(routes!(shared_memory::status))
        .routes(routes!(shared_memory::region_status))
        .routes(routes!(shared_memory::register))
        .routes(routes!(shared_memory::unregister))
        .routes(routes!(shared_memory::unregister_all))
        .routes(routes!(shared_memory::cuda_status))
        .routes(routes!(shared_memory::cuda_region_status))
        .routes(routes!(shared_memory::cuda_unregister))
        .routes(routes!(shared_memory::cuda_unregister_all))
}

/// The OpenAPI document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = api_routes().into_openapi();
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    api
}

/// The KServe v2 routes over `engine`, `/openapi.json` and `/docs`, with a JSON 404
/// fallback (so a router merged into it must not bring its own fallback) and no layers:
/// [`crate::app`] puts the one layer stack over these and whatever is merged with them.
pub fn routes(engine: Engine, args: &RestArgs) -> Router {
    let state = AppState {
        engine,
        max_input_size: args.http_max_input_size,
    };
    let (api_router, mut api) = api_routes().with_state(state).split_for_parts();
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    let json: Arc<str> = api
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
        .into();
    let page: Arc<str> = docs_page(&api).into();
    api_router
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        json.to_string(),
                    )
                }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let page = page.clone();
                async move { Html(page.to_string()) }
            }),
        )
        .route("/v2/cudasharedmemory/{*rest}", any(unsupported))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The KServe v2 routes of [`routes`] under the one layer stack of [`crate::app`]: the
/// whole HTTP frontend of a server without the other doors.
pub fn router(engine: Engine, args: &RestArgs) -> Router {
    layers::app(routes(engine, args), args, &[])
}

/// What Nereid does not have of CUDA shared memory (registering a region): a clear 501
/// rather than a 404 that looks like a typo.
async fn unsupported(uri: Uri) -> ApiError {
    ApiError::unimplemented(format!("{} is not supported by this server", uri.path()))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {}; see /docs", uri.path()),
    )
}

async fn method_not_allowed(uri: Uri) -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take this method; see /docs", uri.path()),
    )
}
