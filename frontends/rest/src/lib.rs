//! Nereid's HTTP/REST frontend: the KServe v2 / Triton HTTP protocol over axum, so that
//! the stock `tritonclient.http` and plain curl work unchanged.
//!
//! * [`router`] builds every route over an [`nereid_engine::Engine`] (health, metadata,
//!   config, infer with JSON or binary tensors, generate and generate_stream, statistics,
//!   repository control, `/openapi.json` and `/docs`); [`serve`] runs a router on a
//!   listener with HTTP/1.1 and HTTP/2 cleartext on one port, optional TLS, and graceful
//!   shutdown.
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
mod infer;
mod json;
mod metadata;
mod openapi;
mod repository;
mod routes;
mod server;

pub use args::{parse_size, RestArgs, DEFAULT_MAX_INPUT_SIZE};
pub use bare::{bare_router, serve_bare};
pub use binary::HEADER_LENGTH;
pub use metadata::EXTENSIONS;
pub use routes::{openapi, router};
pub use server::{serve, tls_config, SHUTDOWN_GRACE};
