//! Nereid's wire types.
//!
//! * [`inference`]: the prost messages and tonic server / client of the
//!   KServe v2 / Triton gRPC protocol (`inference.GRPCInferenceService`) and
//!   Triton's model configuration schema (`inference.ModelConfig`), generated
//!   at build time from `protos/*.proto` without a system `protoc`.
//! * [`FILE_DESCRIPTOR_SET`] and [`descriptor_pool`]: the same schema as
//!   descriptors, for gRPC server reflection and dynamic (text / JSON)
//!   encoding.
//! * [`parse_model_config`], [`model_config_to_json`] and
//!   [`model_config_from_json`]: `config.pbtxt` and Triton's config JSON.
//!
//! The bulk tensor fields `ModelInferRequest.raw_input_contents`,
//! `ModelInferResponse.raw_output_contents` and
//! `InferTensorContents.bytes_contents` are `bytes::Bytes`, so decoding a
//! request slices the received buffer instead of copying the tensors.

#![warn(missing_docs)]

mod config;
mod descriptor;

/// Generated protocol types (protobuf package `inference`).
///
/// Messages are prost structs named as in the `.proto` files; nested
/// messages, enums and oneofs live in snake_case submodules (for example
/// [`inference::model_infer_request::InferInputTensor`] or
/// [`inference::model_instance_group::Kind`]). The service is in
/// [`inference::grpc_inference_service_server`] (trait
/// `GrpcInferenceService`, tower service `GrpcInferenceServiceServer`) and
/// [`inference::grpc_inference_service_client`] (`GrpcInferenceServiceClient`).
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod inference {
    tonic::include_proto!("inference");
}

pub use config::{
    model_config_field_paths, model_config_from_json, model_config_set_fields,
    model_config_to_json, parse_model_config, ConfigTextError,
};
pub use descriptor::{descriptor_pool, FILE_DESCRIPTOR_SET, MODEL_CONFIG_MESSAGE, SERVICE_NAME};

pub use inference::grpc_inference_service_client::GrpcInferenceServiceClient;
pub use inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
pub use inference::{
    DataType, InferParameter, InferTensorContents, ModelConfig, ModelInferRequest,
    ModelInferResponse, ModelStreamInferResponse,
};

#[cfg(test)]
mod tests;
