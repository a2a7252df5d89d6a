//! Conversions between the wire messages of `inference.GRPCInferenceService` and the
//! engine's types, in both directions (the server decodes requests and encodes responses;
//! the client does the reverse). No conversion decides a status code: decode failures are
//! [`nereid_engine::EngineError`]s, mapped to gRPC codes by [`crate::status`].

mod contents;
pub mod infer;
pub mod meta;
pub mod params;
pub mod settings;

pub use infer::{request_from_wire, request_to_wire, response_from_wire, response_to_wire};
pub use meta::{
    index_to_wire, load_config_from_wire, metadata_from_wire, metadata_to_wire,
    server_metadata_to_wire, stats_to_wire,
};
pub use params::{params_from_wire, params_to_wire, ENABLE_EMPTY_FINAL, FINAL_RESPONSE};
