//! `inference.GRPCInferenceService` over the engine: each RPC decodes its message, calls
//! the engine, and encodes the answer. Status codes come only from [`crate::status`].

use nereid_engine::{Engine, Origin, SharedMemory};
use nereid_proto::inference::*;
use nereid_proto::GrpcInferenceService;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::deadline::Deadline;
use crate::guard::CalledModel;
use crate::status::{not_built, to_status};
use crate::stop::Stop;
use crate::stream::{self, OutStream};

/// The inference service: a thin translation layer in front of an [`Engine`].
#[derive(Clone)]
pub struct InferenceService {
    engine: Engine,
    stop: Stop,
    /// The access log is on: answers name their model for it.
    access_log: bool,
}

impl InferenceService {
    /// A service answering from `engine`. Streams it serves end only when their client
    /// ends them; [`crate::serve`] also ends them at shutdown.
    pub fn new(engine: Engine) -> Self {
        Self::for_server(engine, Stop::never(), false)
    }

    pub(crate) fn for_server(engine: Engine, stop: Stop, access_log: bool) -> Self {
        Self {
            engine,
            stop,
            access_log,
        }
    }
}

/// The request id and trace context [`crate::guard`] read from the call's metadata.
fn origin_of<T>(req: &Request<T>) -> Origin {
    req.extensions()
        .get::<Origin>()
        .cloned()
        .unwrap_or_default()
}

fn version(v: &str) -> Result<Option<i64>, Status> {
    nereid_kserve::parse_version(v).map_err(to_status)
}

/// Why the shared-memory RPCs answer UNIMPLEMENTED.
const NO_CUDA_SHARED_MEMORY: &str =
    "CUDA shared memory is not supported; use system shared memory or send tensors in the request";

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse {
            live: self.engine.is_live(),
        }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.engine.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let req = req.into_inner();
        let ready = self.engine.model_ready(&req.name, version(&req.version)?);
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(convert::server_metadata_to_wire(
            self.engine.server_metadata(),
        )))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let req = req.into_inner();
        let meta = self
            .engine
            .model_metadata(&req.name, version(&req.version)?)
            .map_err(to_status)?;
        Ok(Response::new(convert::metadata_to_wire(meta)))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let deadline = Deadline::of(&req);
        let origin = origin_of(&req);
        let shm = self.engine.shared_memory();
        let mut request = convert::request_from_wire(req.into_inner(), deadline.instant(), shm)
            .map_err(to_status)?;
        request.origin = origin;
        let in_shared_memory = SharedMemory::take_placements(&mut request.outputs);
        let model = self
            .access_log
            .then(|| CalledModel(request.model_name.clone()));
        // Dropping this future (client gone, deadline passed: see `DeadlineLayer`) takes the
        // request out of the engine's queue.
        let mut response = self.engine.infer(request).await.map_err(to_status)?;
        let placed = shm
            .place_outputs(&in_shared_memory, &mut response)
            .map_err(to_status)?;
        let mut response = Response::new(convert::response_to_wire(response, false, &placed));
        if let Some(model) = model {
            response.extensions_mut().insert(model);
        }
        Ok(response)
    }

    type ModelStreamInferStream = OutStream;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let deadline = Deadline::of(&req);
        let origin = origin_of(&req);
        Ok(Response::new(stream::start(
            self.engine.clone(),
            req.into_inner(),
            deadline,
            origin,
            self.stop.clone(),
        )))
    }

    async fn model_config(
        &self,
        req: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let req = req.into_inner();
        let config = self
            .engine
            .model_config(&req.name, version(&req.version)?)
            .map_err(to_status)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let req = req.into_inner();
        let name = (!req.name.is_empty()).then_some(req.name.as_str());
        let stats = self
            .engine
            .model_statistics(name, version(&req.version)?)
            .map_err(to_status)?;
        Ok(Response::new(convert::stats_to_wire(stats)))
    }

    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(convert::index_to_wire(
            self.engine.repository_index(req.ready),
        )))
    }

    async fn repository_model_load(
        &self,
        req: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let req = req.into_inner();
        let config = convert::load_config_from_wire(&req.parameters).map_err(to_status)?;
        self.engine
            .load_model(&req.model_name, config)
            .await
            .map_err(to_status)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let req = req.into_inner();
        self.engine
            .unload_model(&req.model_name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        req: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        let regions = self
            .engine
            .shared_memory()
            .status(&req.into_inner().name)
            .map_err(to_status)?;
        Ok(Response::new(SystemSharedMemoryStatusResponse {
            regions: regions
                .into_iter()
                .map(|r| {
                    let status = system_shared_memory_status_response::RegionStatus {
                        name: r.name.clone(),
                        key: r.key,
                        offset: r.offset,
                        byte_size: r.byte_size,
                    };
                    (r.name, status)
                })
                .collect(),
        }))
    }

    async fn system_shared_memory_register(
        &self,
        req: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        let req = req.into_inner();
        self.engine
            .shared_memory()
            .register(&req.name, &req.key, req.offset, req.byte_size)
            .map_err(to_status)?;
        Ok(Response::new(SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        req: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        self.engine
            .shared_memory()
            .unregister(&req.into_inner().name);
        Ok(Response::new(SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        req: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        // No CUDA region is ever registered: an empty list, or NOT_FOUND for a name.
        self.engine
            .shared_memory()
            .cuda_status(&req.into_inner().name)
            .map_err(to_status)?;
        Ok(Response::new(CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(not_built("CudaSharedMemoryRegister", NO_CUDA_SHARED_MEMORY))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        // Nothing is registered, so there is nothing to unregister (as in Triton).
        Ok(Response::new(CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(
        &self,
        req: Request<TraceSettingRequest>,
    ) -> Result<Response<TraceSettingResponse>, Status> {
        let req = req.into_inner();
        let model = Some(req.model_name.as_str()).filter(|m| !m.is_empty());
        let settings = if req.settings.is_empty() {
            self.engine.trace_settings(model)
        } else {
            let update = convert::settings::trace_update_from_wire(req.settings);
            self.engine.update_trace_settings(model, &update)
        }
        .map_err(to_status)?;
        Ok(Response::new(convert::settings::trace_settings_to_wire(
            &settings,
        )))
    }

    async fn log_settings(
        &self,
        req: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        let req = req.into_inner();
        let settings = if req.settings.is_empty() {
            self.engine.log_settings()
        } else {
            let update = convert::settings::log_update_from_wire(req.settings)?;
            self.engine.update_log_settings(&update)
        }
        .map_err(to_status)?;
        Ok(Response::new(convert::settings::log_settings_to_wire(
            &settings,
        )))
    }
}
