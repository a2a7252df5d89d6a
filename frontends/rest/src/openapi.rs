//! The OpenAPI 3 document (paths from the handlers' `#[utoipa::path]` annotations, added
//! as the router registers each route, so a route cannot go undocumented) and the `/docs`
//! page rendered from it without any script or CDN.

use std::fmt::Write;

use utoipa::openapi::path::Operation;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::OpenApi;

/// The parts of the document that are not paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Nereid HTTP API",
        description = "KServe v2 / Open Inference Protocol with Triton's extensions: binary tensor data, \
                       generate, model repository, statistics. Errors are `{\"error\": \"...\"}`."
    ),
    tags(
        (name = "server", description = "Health and server metadata"),
        (name = "model", description = "Model metadata, readiness and configuration"),
        (name = "inference", description = "Inference, JSON or binary tensors"),
        (name = "generate", description = "Triton's generate extension (JSON and SSE)"),
        (name = "statistics", description = "Triton's statistics extension"),
        (name = "repository", description = "Model repository extension: index, load, unload"),
        (name = "trace", description = "Triton's trace extension: which requests are traced"),
        (name = "logging", description = "Triton's logging extension: what the server logs"),
        (name = "shared memory", description = "Triton's system shared-memory extension")
    )
)]
pub(crate) struct ApiDoc;

/// The error answers routes share, one definition each: a route lists the ones it can give.
#[allow(dead_code)]
pub(crate) mod answers {
    use utoipa::IntoResponses;

    use super::schema::ErrorBody;

    /// 400.
    #[derive(IntoResponses)]
    #[response(
        status = 400,
        description = "Malformed request (the message names the field), a version that is not \
                       a positive integer, or input that does not fit the model"
    )]
    pub(crate) struct BadRequest(#[to_schema] ErrorBody);

    /// 404.
    #[derive(IntoResponses)]
    #[response(
        status = 404,
        description = "Unknown model, or a version it does not have"
    )]
    pub(crate) struct NotFound(#[to_schema] ErrorBody);

    /// 413.
    #[derive(IntoResponses)]
    #[response(status = 413, description = "Body over --http-max-input-size")]
    pub(crate) struct TooLarge(#[to_schema] ErrorBody);

    /// 501 on the non-streaming inference routes.
    #[derive(IntoResponses)]
    #[response(
        status = 501,
        description = "The model is decoupled: use generate_stream"
    )]
    pub(crate) struct Decoupled(#[to_schema] ErrorBody);

    /// 503.
    #[derive(IntoResponses)]
    #[response(
        status = 503,
        description = "Model not ready, its queue full, the server over --max-inflight or draining"
    )]
    pub(crate) struct Unavailable(#[to_schema] ErrorBody);
}

/// Shapes of the JSON bodies, for the document only: the handlers read and write these
/// with the streaming codec in `json`, not through these types.
#[allow(dead_code)]
pub(crate) mod schema {
    use std::collections::BTreeMap;

    use serde_json::Value;
    use utoipa::ToSchema;

    /// Every error answer.
    #[derive(ToSchema)]
    pub(crate) struct ErrorBody {
        /// What went wrong.
        pub error: String,
    }

    /// `GET /v2`.
    #[derive(ToSchema)]
    pub(crate) struct ServerMetadata {
        /// Server name.
        pub name: String,
        /// Server version.
        pub version: String,
        /// Protocol extensions supported.
        pub extensions: Vec<String>,
    }

    /// An input or output as metadata describes it.
    #[derive(ToSchema)]
    pub(crate) struct TensorMetadata {
        /// Tensor name.
        pub name: String,
        /// Datatype (BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32, FP64, BYTES).
        pub datatype: String,
        /// Shape; -1 is any size.
        pub shape: Vec<i64>,
    }

    /// `GET /v2/models/{model}`.
    #[derive(ToSchema)]
    pub(crate) struct ModelMetadata {
        /// Model name.
        pub name: String,
        /// Ready versions.
        pub versions: Vec<String>,
        /// Platform or backend.
        pub platform: String,
        /// Inputs.
        pub inputs: Vec<TensorMetadata>,
        /// Outputs.
        pub outputs: Vec<TensorMetadata>,
    }

    /// One input of an infer request.
    #[derive(ToSchema)]
    pub(crate) struct InferInput {
        /// Input name.
        pub name: String,
        /// Shape.
        pub shape: Vec<i64>,
        /// Datatype.
        pub datatype: String,
        /// Parameters; `binary_data_size` says the data is in the binary section.
        pub parameters: Option<BTreeMap<String, Value>>,
        /// Elements, row-major, flat or nested; BYTES as strings.
        pub data: Option<Vec<Value>>,
    }

    /// An output the client asks for.
    #[derive(ToSchema)]
    pub(crate) struct RequestedOutput {
        /// Output name.
        pub name: String,
        /// Parameters; `binary_data: true` returns it in the binary section.
        pub parameters: Option<BTreeMap<String, Value>>,
    }

    /// An infer request (or its JSON header, with the binary tensor extension).
    #[derive(ToSchema)]
    pub(crate) struct InferRequest {
        /// Request id, echoed.
        pub id: Option<String>,
        /// Request parameters: priority, timeout (us), binary_data_output, ...
        pub parameters: Option<BTreeMap<String, Value>>,
        /// Inputs.
        pub inputs: Vec<InferInput>,
        /// Outputs to return; all when absent.
        pub outputs: Option<Vec<RequestedOutput>>,
    }

    /// One output of an infer response.
    #[derive(ToSchema)]
    pub(crate) struct InferOutput {
        /// Output name.
        pub name: String,
        /// Shape.
        pub shape: Vec<i64>,
        /// Datatype.
        pub datatype: String,
        /// `binary_data_size` when the data is in the binary section.
        pub parameters: Option<BTreeMap<String, Value>>,
        /// Elements, flat.
        pub data: Option<Vec<Value>>,
    }

    /// An infer response (or its JSON header).
    #[derive(ToSchema)]
    pub(crate) struct InferResponse {
        /// The request's id.
        pub id: Option<String>,
        /// Model name.
        pub model_name: String,
        /// Version that answered.
        pub model_version: String,
        /// Response parameters.
        pub parameters: Option<BTreeMap<String, Value>>,
        /// Outputs.
        pub outputs: Vec<InferOutput>,
    }

    /// A generate request: every other key is an input of that name.
    #[derive(ToSchema)]
    pub(crate) struct GenerateRequest {
        /// Request id.
        pub id: Option<String>,
        /// The prompt, for models with a BYTES input `text_input`.
        pub text_input: Option<String>,
        /// Keys naming inputs are inputs; the rest are request parameters.
        pub parameters: Option<BTreeMap<String, Value>>,
    }

    /// A generate response (or one SSE event of generate_stream): outputs as keys.
    #[derive(ToSchema)]
    pub(crate) struct GenerateResponse {
        /// The request's id.
        pub id: Option<String>,
        /// Model name.
        pub model_name: String,
        /// Version.
        pub model_version: String,
        /// Text, for models with a BYTES output `text_output`.
        pub text_output: Option<String>,
    }

    /// One Server-Sent Event of generate_stream, as an SSE client reads it.
    #[derive(ToSchema)]
    pub(crate) struct GenerateEvent {
        /// A generate response as JSON text (`{"model_name", "model_version", ...outputs
        /// as keys}`), or `{"error": "..."}` when the stream fails after it began.
        pub data: String,
        /// The event type: `message`, the default.
        pub event: Option<String>,
    }

    /// A registered system shared-memory region.
    #[derive(ToSchema)]
    pub(crate) struct SharedMemoryRegion {
        /// Region name.
        pub name: String,
        /// The POSIX shared-memory object's key (`/name`).
        pub key: String,
        /// Where the region starts in the object.
        pub offset: u64,
        /// The region's size in bytes.
        pub byte_size: u64,
    }

    /// `POST /v2/systemsharedmemory/region/{region}/register` body.
    #[derive(ToSchema)]
    pub(crate) struct SharedMemoryRegisterRequest {
        /// The POSIX shared-memory object's key (`/name`), created by the client.
        pub key: String,
        /// Where the region starts in the object (default 0).
        pub offset: Option<u64>,
        /// The region's size in bytes.
        pub byte_size: u64,
    }

    /// `POST /v2/repository/index` body.
    #[derive(ToSchema)]
    pub(crate) struct RepositoryIndexRequest {
        /// List only ready models.
        pub ready: Option<bool>,
    }

    /// One model of the repository index.
    #[derive(ToSchema)]
    pub(crate) struct RepositoryEntry {
        /// Model name.
        pub name: String,
        /// Version.
        pub version: String,
        /// READY, UNAVAILABLE or LOADING.
        pub state: String,
        /// Why it is not ready.
        pub reason: String,
    }

    /// Parameters of a load.
    #[derive(ToSchema)]
    pub(crate) struct LoadParameters {
        /// A model configuration as a JSON string (Triton's model_config JSON).
        pub config: Option<String>,
    }

    /// `POST /v2/repository/models/{model}/load` body.
    #[derive(ToSchema)]
    pub(crate) struct LoadRequest {
        /// Load parameters.
        pub parameters: Option<LoadParameters>,
    }

    /// `POST /v2/repository/models/{model}/unload` body.
    #[derive(ToSchema)]
    pub(crate) struct UnloadRequest {
        /// Unload parameters (`unload_dependents` is accepted and has no effect).
        pub parameters: Option<BTreeMap<String, Value>>,
    }

    /// Statistics in Triton's shape.
    #[derive(ToSchema)]
    pub(crate) struct Statistics {
        /// One entry per model version: name, version, last_inference, inference_count,
        /// execution_count, inference_stats, batch_stats.
        pub model_stats: Vec<Value>,
    }
}

/// The `/docs` page: every route of the document with its summary, as plain HTML.
pub(crate) fn docs_page(api: &OpenApiDoc) -> String {
    let mut rows = String::new();
    for (path, item) in api.paths.paths.iter() {
        let ops: [(&str, &Option<Operation>); 4] = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let tag = op
                .tags
                .as_ref()
                .and_then(|t| t.first())
                .map(String::as_str)
                .unwrap_or("");
            let summary = op.summary.as_deref().unwrap_or("");
            let description = op.description.as_deref().unwrap_or("");
            let _ = writeln!(
                rows,
                "<tr><td>{}</td><td class=m>{method}</td><td><code>{}</code></td><td>{}<div class=d>{}</div></td></tr>",
                escape(tag),
                escape(path),
                escape(summary),
                escape(description)
            );
        }
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=utf-8><title>{title}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;width:100%}}\
         td,th{{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top}}\
         .m{{font-weight:bold}}.d{{color:#555;font-size:90%}}code{{white-space:nowrap}}</style></head>\
         <body><h1>{title} {version}</h1><p>{description}</p><p>The full OpenAPI 3 document is at \
         <a href=\"/openapi.json\">/openapi.json</a>.</p><table><tr><th>tag</th><th>method</th><th>path</th>\
         <th>summary</th></tr>\n{rows}</table></body></html>\n",
        title = escape(&api.info.title),
        version = escape(&api.info.version),
        description = escape(api.info.description.as_deref().unwrap_or("")),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
