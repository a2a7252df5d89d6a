//! Nereid's engine: typed tensors, a Triton-style model repository, a dynamic batcher per
//! model over lock-free queues, instance workers on dedicated threads, and statistics.
//!
//! Frontends learn what a model takes from [`Engine::model`], build an [`InferRequest`],
//! hand it to [`Engine::infer`] or [`Engine::infer_stream`], and encode what comes back;
//! every failure is an [`EngineError`] whose variant decides the wire status. The contract
//! of text generation models, shared by their backends and frontends, is [`generation`].
//! An engine built over an [`Upstream`] serves models that run in other processes (a
//! gateway's).

mod backend;
pub mod builtin;
mod cache;
mod config;
mod dtype;
mod engine;
mod ensemble;
mod error;
#[cfg(test)]
mod fuzz;
pub mod generation;
mod logs;
mod models;
mod order;
mod repository;
mod request;
mod scheduler;
mod sequence;
mod shm;
mod sink;
mod stats;
pub mod tensor;
pub mod trace;
mod upstream;
mod validate;
mod warmup;

pub use backend::{
    Backend, BackendRegistry, BatchShare, BatchedInstance, DecoupledInstance, ExecBatch, Instance,
    LoadedModel, Sequence, TextCodec, TextToken,
};
pub use cache::CacheSettings;
pub use config::{
    field_support, BatchingPolicy, ControlKind, Device, EnsembleSpec, EnsembleStep, FieldSupport,
    ModelSpec, QueuePolicy, SequenceControl, SequenceSpec, SequenceState, SequenceStrategy,
    TensorSpec, TimeoutPolicy, DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SEQUENCE_IDLE, ENSEMBLE_PLATFORM,
    EXECUTION_TIMEOUT_PARAMETER, FIELD_SUPPORT, IGNORED_FIELDS_PARAMETER, LABELS_PARAMETER,
    MAX_INSTANCES,
};
pub use dtype::DataType;
pub use engine::{
    Engine, EngineOptions, ModelControlMode, ModelMetadata, ServerMetadata, TensorMetadata,
};
pub use error::{EngineError, Result};
pub use logs::{ApplyLogSettings, LogSettings, LogValue, LOG_FORMATS};
pub use models::{ModelFacts, RepositoryEntry};
pub use nereid_proto::inference::ModelConfig;
pub use order::SequenceOrder;
pub use repository::{Repository, CONFIG_FILE};
pub use request::{InferRequest, InferResponse, ParamValue, Parameters, RequestedOutput};
pub use sequence::INITIAL_STATE_FOLDER;
pub use shm::{
    SharedMemory, SharedMemoryRef, SharedMemoryRegion, BYTE_SIZE_PARAMETER, OFFSET_PARAMETER,
    REGION_PARAMETER,
};
pub use sink::{Responder, ResponsePermit, ResponseStream, STREAM_BUFFER};
pub use stats::{
    BatchStatsSnapshot, DurationSnapshot, InferStatsSnapshot, ModelStats, ModelStatsSnapshot,
    COMPUTE_DURATION, DURATION_BUCKETS, FIRST_RESPONSE, FIRST_RESPONSE_BUCKETS, KV_CACHE_USAGE,
    QUEUE_DURATION, REQUEST_DURATION, RUNNING_SEQUENCES,
};
pub use tensor::Tensor;
pub use trace::{Origin, SpanExporter, TraceSettings};
pub use upstream::{ControlFuture, Reply, Upstream, UpstreamModel};
pub use warmup::WARMUP_FOLDER;
