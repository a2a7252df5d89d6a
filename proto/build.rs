//! Compiles `protos/*.proto` without a system `protoc`:
//!
//! 1. `protox` (pure Rust) parses both files into a `FileDescriptorSet`;
//! 2. its encoded bytes go to `$OUT_DIR/nereid_descriptor.bin` (embedded by
//!    the crate for gRPC reflection and the prost-reflect descriptor pool);
//! 3. `tonic-prost-build` generates the prost messages and the tonic server
//!    and client from that same descriptor set.

use std::{env, fs, path::PathBuf};

use prost_types::FileDescriptorSet;

/// The proto files, relative to the `protos` include directory.
const PROTOS: &[&str] = &["grpc_service.proto", "model_config.proto"];

/// `bytes` fields decoded as `bytes::Bytes`, so that tensor payloads are
/// slices of the received buffer instead of fresh `Vec<u8>` copies.
const BYTES_FIELDS: &[&str] = &[
    ".inference.ModelInferRequest.raw_input_contents",
    ".inference.ModelInferResponse.raw_output_contents",
    ".inference.InferTensorContents.bytes_contents",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let include = manifest_dir.join("protos");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", include.join(proto).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let fds: FileDescriptorSet = protox::compile(PROTOS, [&include])?;
    fs::write(
        out_dir.join("nereid_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&fds),
    )?;

    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true);
    for field in BYTES_FIELDS {
        builder = builder.bytes(field);
    }
    builder.compile_fds(fds)?;

    Ok(())
}
