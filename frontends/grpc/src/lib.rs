//! Nereid's gRPC frontend: the KServe v2 / Triton `inference.GRPCInferenceService` over
//! tonic, so stock `tritonclient.grpc`, `grpcurl` and Kubernetes gRPC probes work
//! unchanged.
//!
//! [`serve`] runs every RPC of the service (shared memory, trace and log settings answer
//! UNIMPLEMENTED), `ModelStreamInfer` with many requests in flight per stream,
//! `grpc.health.v1.Health`, server reflection (v1 and v1alpha) and gRPC-Web on one port,
//! with gzip, TLS / mutual TLS, keepalive and message limits from [`GrpcArgs`].
//! [`client::GrpcClient`] is the typed client of `nereid infer` and `nereid bench`;
//! [`bare::serve_bare`] is a tonic server without the engine, the baseline of benchmarks.
//!
//! Module map: [`convert`] translates wire messages and engine types both ways,
//! [`status`] is the one place engine errors become gRPC codes, `service` and `stream`
//! hold the RPCs, `health`, `tls`, `deadline` and `server` the rest.

#![warn(missing_docs)]

mod args;
pub mod bare;
pub mod client;
pub mod convert;
mod deadline;
#[cfg(test)]
mod fuzz;
mod guard;
mod health;
mod server;
mod service;
pub mod status;
mod stop;
mod stream;
mod tls;

pub use args::{CompressionLevel, GrpcArgs, DEFAULT_MAX_MESSAGE_SIZE};
pub use health::HealthService;
pub use server::{serve, server, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE};
pub use service::InferenceService;
pub use stream::OutStream;
