//! Nereid's HTTP/REST frontend: the KServe v2 / Triton HTTP protocol over axum, so that
//! the stock `tritonclient.http` and plain curl work unchanged.
//!
//! * [`routes`] builds every KServe route over an [`nereid_engine::Engine`] (health,
//!   metadata, config, infer with JSON or binary tensors, generate and generate_stream,
//!   statistics, repository control, `/openapi.json` and `/docs`); [`app`] puts the one
//!   layer stack (body limit, decompression, compression, error wording) over those routes
//!   and any other door's merged with them; [`router`] is the two for a KServe-only server.
//!   [`serve`] runs a router on a listener with HTTP/1.1 and HTTP/2 cleartext on one port,
//!   optional TLS, and graceful shutdown.
//! * Tensors in JSON and the binary extension are `nereid_kserve`'s codec.
//! * [`RestArgs`] are the `--http-*` flags of `nereid serve`.
//! * [`serve_bare`] answers `simple` without the engine, as a baseline for `nereid bench`.
//!
//! Errors are `{"error": "..."}` with the status [`error::status_of`] gives each engine
//! error; nowhere else decides a status.

mod args;
mod bare;
mod binary;
mod body;
pub mod error;
mod generate;
mod groups;
mod infer;
mod layers;
mod metadata;
mod openapi;
mod repository;
mod routes;
mod server;
mod settings;
mod shared_memory;
mod state;
mod streams;

pub use args::{parse_size, RestArgs, DEFAULT_MAX_INPUT_SIZE};
pub use bare::{bare_router, serve_bare};
pub use layers::{app, Door, ErrorShape};
pub use routes::{openapi, router, routes};
pub use server::{
    listen, serve, server, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE, SHUTDOWN_GRACE,
};
