//! The compiled schema as protobuf descriptors.

use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

/// Encoded `google.protobuf.FileDescriptorSet` of `grpc_service.proto` and
/// `model_config.proto` (source info included), as compiled by `build.rs`.
///
/// Hand it to `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`
/// to serve gRPC reflection for `inference.GRPCInferenceService`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nereid_descriptor.bin"));

/// Fully qualified name of the inference service.
pub const SERVICE_NAME: &str = "inference.GRPCInferenceService";

/// Fully qualified name of the model configuration message.
pub const MODEL_CONFIG_MESSAGE: &str = "inference.ModelConfig";

/// The descriptor pool built from [`FILE_DESCRIPTOR_SET`], decoded once on
/// first use and shared afterwards.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("the descriptor set embedded by build.rs is valid")
    })
}
