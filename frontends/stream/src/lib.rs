//! Nereid's streaming frontend, mounted on the REST port next to the KServe routes:
//!
//! - OpenAI-compatible routes (`/v1/models`, `/v1/embeddings`, `/v1/completions`,
//!   `/v1/chat/completions`) with `stream: true` answered as server-sent events;
//! - Hugging Face TEI-compatible routes (`/embed`, `/similarity`, `/rerank`, `/predict`,
//!   `/info`, each also under `/tei/{model}/`) and `/v1/rerank`, see [`tei`];
//! - bidirectional WebSocket inference (`/v2/ws`, `/v2/models/{model}/infer/ws`): many
//!   KServe v2 requests in flight per socket, answered frame by frame as they complete.
//!
//! It depends on the engine and its KServe codec only: every request becomes an
//! [`nereid_engine::InferRequest`], and every engine stream is owned by the response body
//! (SSE) or the socket task (WebSocket), so a client that goes away drops the stream and
//! the engine cancels its sequence at once.
//! Errors of the OpenAI routes are decided in [`error`]; token metrics in [`metrics`]. The
//! WebSocket frame format is documented in `frontends/stream/README.md` and [`ws`].

#![warn(missing_docs)]

pub mod error;
pub mod metrics;
pub mod openai;
mod sse;
pub mod tei;
pub mod ws;

use axum::Router;
use nereid_engine::Engine;

/// Command-line options of this frontend, flattened into `nereid serve` and `gateway`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StreamArgs {
    /// Model the TEI routes at the root (`/embed`, `/rerank`, `/predict`, ...) serve when a
    /// request names none (repeatable: the first of the kind a route needs). Without it,
    /// the one ready model of that kind.
    #[arg(long = "tei-model", env = "NEREID_TEI_MODEL", value_delimiter = ',')]
    pub tei_model: Vec<String>,
}

/// Every route of this frontend, ready to be merged into the REST router. Adds no fallback
/// and no layers: the server puts one layer stack over all its doors (`nereid_rest::app`),
/// with [`error::shape`] wording the stack's own errors on `/v1/` paths.
pub fn router(engine: Engine, args: &StreamArgs) -> Router {
    metrics::describe();
    openai::router(engine.clone())
        .merge(tei::router(engine.clone(), &args.tei_model))
        .merge(ws::router(engine))
}
