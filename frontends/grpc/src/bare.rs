//! A bare tonic `GRPCInferenceService` that answers `ModelInfer` for Triton's `simple`
//! (add/sub over INT32 [batch, 16]) without the engine: no queue, no batcher, no worker
//! thread. It decodes and encodes with the same conversions as the real frontend, so
//! `nereid bench` comparing the two measures what the engine adds to a request.

use std::future::Future;

use anyhow::Context;
use nereid_engine::{DataType, EngineError, InferRequest, InferResponse, SharedMemory, Tensor};
use nereid_proto::inference::*;
use nereid_proto::{GrpcInferenceService, GrpcInferenceServiceServer};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::status::to_status;

/// The one model the bare server knows.
pub const BARE_MODEL: &str = "simple";

/// Serves the bare service on `listener` until `shutdown` completes.
pub async fn serve_bare(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = GrpcInferenceServiceServer::new(Bare)
        .max_decoding_message_size(crate::DEFAULT_MAX_MESSAGE_SIZE)
        .max_encoding_message_size(crate::DEFAULT_MAX_MESSAGE_SIZE);
    Server::builder()
        .http2_adaptive_window(Some(true))
        .add_service(service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .context("the bare gRPC server failed")
}

/// The add/sub computation of `simple`, inline.
fn add_sub(req: &InferRequest) -> Result<Vec<Tensor>, EngineError> {
    let input = |name: &str| -> Result<Vec<i32>, EngineError> {
        let t = req
            .input(name)
            .ok_or_else(|| EngineError::invalid(format!("missing input '{name}'")))?;
        if t.dtype != DataType::Int32 || t.shape.len() != 2 || t.shape[1] != 16 {
            return Err(EngineError::invalid(format!(
                "input '{name}' must be INT32 [batch, 16]"
            )));
        }
        t.check_byte_size()?;
        t.to_vec::<i32>()
    };
    let (a, b) = (input("INPUT0")?, input("INPUT1")?);
    if a.len() != b.len() {
        return Err(EngineError::invalid(
            "INPUT0 and INPUT1 differ in batch size",
        ));
    }
    let shape = req
        .input("INPUT0")
        .map(|t| t.shape.clone())
        .unwrap_or_default();
    let sum = a.iter().zip(&b).map(|(x, y)| x.wrapping_add(*y)).collect();
    let diff = a.iter().zip(&b).map(|(x, y)| x.wrapping_sub(*y)).collect();
    Ok(vec![
        Tensor::from_vec("OUTPUT0", DataType::Int32, shape.clone(), sum),
        Tensor::from_vec("OUTPUT1", DataType::Int32, shape, diff),
    ])
}

fn only_simple(name: &str) -> Result<(), Status> {
    if name == BARE_MODEL {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "unknown model '{name}': the bare server only has '{BARE_MODEL}'"
        )))
    }
}

fn bare_only(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc}: the bare benchmark server only answers ModelInfer and health RPCs"
    ))
}

struct Bare;

#[tonic::async_trait]
impl GrpcInferenceService for Bare {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse {
            ready: req.get_ref().name == BARE_MODEL,
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "nereid-bare".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        only_simple(&req.get_ref().name)?;
        let tensor = |name: &str| model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: "INT32".into(),
            shape: vec![-1, 16],
        };
        Ok(Response::new(ModelMetadataResponse {
            name: BARE_MODEL.into(),
            versions: vec!["1".into()],
            platform: "bare".into(),
            inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
            outputs: vec![tensor("OUTPUT0"), tensor("OUTPUT1")],
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request = convert::request_from_wire(req.into_inner(), None, &SharedMemory::default())
            .map_err(to_status)?;
        only_simple(&request.model_name)?;
        let outputs = add_sub(&request).map_err(to_status)?;
        let response = InferResponse {
            model_name: BARE_MODEL.into(),
            model_version: 1,
            id: request.id,
            outputs,
            is_final: true,
            ..Default::default()
        };
        Ok(Response::new(convert::response_to_wire(
            response,
            false,
            &[],
        )))
    }

    type ModelStreamInferStream = crate::OutStream;

    async fn model_stream_infer(
        &self,
        _: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Err(bare_only("ModelStreamInfer"))
    }

    async fn model_config(
        &self,
        _: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        Err(bare_only("ModelConfig"))
    }

    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        Err(bare_only("ModelStatistics"))
    }

    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        Err(bare_only("RepositoryIndex"))
    }

    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        Err(bare_only("RepositoryModelLoad"))
    }

    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(bare_only("RepositoryModelUnload"))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        Err(bare_only("SystemSharedMemoryStatus"))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        Err(bare_only("SystemSharedMemoryRegister"))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        Err(bare_only("SystemSharedMemoryUnregister"))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        Err(bare_only("CudaSharedMemoryStatus"))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(bare_only("CudaSharedMemoryRegister"))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        Err(bare_only("CudaSharedMemoryUnregister"))
    }

    async fn trace_setting(
        &self,
        _: Request<TraceSettingRequest>,
    ) -> Result<Response<TraceSettingResponse>, Status> {
        Err(bare_only("TraceSetting"))
    }

    async fn log_settings(
        &self,
        _: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        Err(bare_only("LogSettings"))
    }
}
