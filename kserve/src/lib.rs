//! The one KServe v2 codec of Nereid, for every door that carries KServe JSON: the REST
//! frontend, WebSocket frames, the load generator and any gateway.
//!
//! * [`decode_infer_request`] reads an infer request: a JSON header whose inputs carry
//!   `data` (flat or nested, decoded element by element straight into tensor bytes) or a
//!   `binary_data_size` whose bytes follow the header (Triton's binary tensor extension);
//!   [`write_infer_response`] and [`write_generate_response`] write answers the same way
//!   round.
//! * [`encode_infer_request`] and [`decode_infer_response`] are the client's direction, so
//!   a client of Nereid and Nereid itself cannot disagree on the format.
//! * [`parse_version`] gives a model version string the same meaning on every door.
//!
//! Every failure is an [`EngineError`](nereid_engine::EngineError) (InvalidArgument for
//! what a client sent wrong), so each door maps it to its status in its own one place.
//!
//! ```
//! use bytes::Bytes;
//! use nereid_kserve::{decode_infer_request, Body};
//!
//! let body = Body::json(Bytes::from_static(
//!     br#"{"id":"1","inputs":[{"name":"X","datatype":"INT32","shape":[2],"data":[1,2]}]}"#,
//! ));
//! let request = decode_infer_request(body, &Default::default()).unwrap();
//! assert_eq!(request.header.id, "1");
//! assert_eq!(request.inputs[0].to_vec::<i32>().unwrap(), vec![1, 2]);
//! ```

mod auth;
mod binary;
mod client;
mod data;
#[cfg(test)]
mod fuzz;
mod params;
mod request;
mod response;
mod restrict;
mod version;

/// The Triton protocol extensions this server speaks, as server metadata reports them on
/// both doors (Triton reports one server-wide list, whatever the protocol asked).
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "parameters",
    "model_configuration",
    "model_repository",
    "schedule_policy",
    "statistics",
    "generate",
    "trace",
    "logging",
    "system_shared_memory",
];

pub use auth::{ApiKeys, UNAUTHORIZED};
pub use binary::{
    binary_outputs, Body, BINARY_DATA, BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, HEADER_LENGTH,
};
pub use client::{decode_infer_response, encode_infer_request, EncodedRequest};
pub use data::{tensor_from_json, MAX_DATA_DEPTH};
pub use params::{param_from_json, params_from_json};
pub use request::{decode_infer_request, describe_json_error, DecodedRequest, RequestHeader};
pub use response::{write_generate_response, write_infer_response, ResponseForm};
pub use restrict::{ApiGroup, Restriction, Restrictions};
pub use version::parse_version;
