//! The tensor JSON codec of the KServe v2 HTTP protocol: infer request headers in, infer
//! and generate responses out, `parameters` both ways. Built on serde_json (chosen by
//! measurement: see the crate README) with visitors that move elements between JSON text
//! and little-endian tensor bytes without a heap allocation per element.

pub(crate) mod data;
pub(crate) mod params;
pub(crate) mod request;
pub(crate) mod response;

pub(crate) use data::DataSink;
pub(crate) use params::param_from_value;
pub(crate) use request::{decode_infer_header, describe, InferHeader, InputData};
pub(crate) use response::{write_generate_response, write_infer_response};
