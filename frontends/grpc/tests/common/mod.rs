//! A server in the test process: the engine over the demo models plus a few test models,
//! and the gRPC frontend on a free port.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid_engine::builtin::demo::{write_repository, BUILTIN_MODELS};
use nereid_engine::{
    Backend, BackendRegistry, BatchedInstance, DataType, Device, Engine, EngineOptions, ExecBatch, InferRequest,
    Instance, LoadedModel, ModelSpec, Result as EngineResult, Tensor,
};
use nereid_grpc::client::GrpcClient;
use nereid_grpc::GrpcArgs;
use nereid_proto::GrpcInferenceServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Test models on top of the demo ones: identities over BYTES, FP16 and BF16, and `sleep`,
/// which holds its single instance for MS milliseconds (to fill a queue).
pub const TEST_MODELS: [(&str, &str); 4] = [
    (
        "identity_bytes",
        r#"name: "identity_bytes" backend: "identity" max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]"#,
    ),
    (
        "identity_fp16",
        r#"name: "identity_fp16" backend: "identity" max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP16 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP16 dims: [ -1 ] } ]"#,
    ),
    (
        "identity_bf16",
        r#"name: "identity_bf16" backend: "identity" max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_BF16 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_BF16 dims: [ -1 ] } ]"#,
    ),
    (
        "sleep",
        r#"name: "sleep" backend: "sleep" max_batch_size: 0
input [ { name: "MS" data_type: TYPE_UINT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_UINT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]"#,
    ),
];

struct Sleep;
struct SleepModel;
struct SleepInstance;

impl Backend for Sleep {
    fn load(&self, _: &ModelSpec, _: &Path) -> EngineResult<Arc<dyn LoadedModel>> {
        Ok(Arc::new(SleepModel))
    }
}

impl LoadedModel for SleepModel {
    fn create_instance(&self, _: Device, _: usize) -> EngineResult<Instance> {
        Ok(Instance::Batched(Box::new(SleepInstance)))
    }
}

impl BatchedInstance for SleepInstance {
    fn execute(&mut self, batch: &ExecBatch) -> EngineResult<Vec<Tensor>> {
        let ms = batch.require("MS")?;
        let total: u32 = ms.to_vec::<u32>()?.iter().sum();
        std::thread::sleep(Duration::from_millis(total.into()));
        Ok(vec![Tensor::new("OUT", DataType::Uint32, ms.shape.clone(), ms.data.clone())])
    }
}

/// A running server; dropping it shuts the frontend down.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts with default flags.
    pub async fn start() -> Self {
        Self::start_with(GrpcArgs::default()).await
    }

    /// Starts with the given flags.
    pub async fn start_with(args: GrpcArgs) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let engine = tokio::task::spawn_blocking(move || {
            write_repository(&root, BUILTIN_MODELS).unwrap();
            write_repository(&root, TEST_MODELS).unwrap();
            let mut backends = BackendRegistry::with_builtins();
            backends.register("sleep", Arc::new(Sleep));
            Engine::start(
                EngineOptions { repository: Some(root), strict_readiness: true, ..Default::default() },
                backends,
            )
            .unwrap()
        })
        .await
        .unwrap();
        assert!(engine.is_ready(), "every test model loads: {:?}", engine.repository_index(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(nereid_grpc::serve(engine.clone(), listener, args, async {
            let _ = stopped.await;
        }));
        Self { addr, engine, _dir: dir, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The generated client over a fresh connection.
    pub async fn raw(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::connect(self.url()).await.unwrap()
    }

    /// The typed client.
    pub async fn client(&self) -> GrpcClient {
        GrpcClient::connect(self.url()).await.unwrap()
    }

    /// A plain channel, for the health and reflection clients.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.unwrap()
    }

    /// Stops the frontend and waits for it to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }

    /// Waits up to `within` for the engine to have no request in flight.
    pub async fn wait_idle(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.engine.inflight() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.engine.inflight() == 0
    }

    /// Executions of a model so far.
    pub fn executions(&self, model: &str) -> u64 {
        self.engine.model_statistics(Some(model), None).unwrap()[0].execution_count
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// INPUT0 = 0..16 and INPUT1 = 1s, the request of Triton's simple example.
pub fn simple_request(batch: usize) -> InferRequest {
    let a: Vec<i32> = (0..16).cycle().take(16 * batch).collect();
    let b = vec![1i32; 16 * batch];
    InferRequest::new(
        "simple",
        vec![
            Tensor::from_vec("INPUT0", DataType::Int32, vec![batch as i64, 16], a),
            Tensor::from_vec("INPUT1", DataType::Int32, vec![batch as i64, 16], b),
        ],
    )
}

/// A `sleep` request holding the instance for `ms` milliseconds.
pub fn sleep_request(ms: u32) -> InferRequest {
    InferRequest::new("sleep", vec![Tensor::from_vec("MS", DataType::Uint32, vec![1], vec![ms])])
}

/// A `repeat_int32` request for `values`, with optional per-response delays in µs.
pub fn repeat_request(id: &str, values: Vec<i32>, delays_us: Option<Vec<u32>>) -> InferRequest {
    let n = values.len() as i64;
    let mut inputs = vec![Tensor::from_vec("IN", DataType::Int32, vec![n], values)];
    if let Some(d) = delays_us {
        let m = d.len() as i64;
        inputs.push(Tensor::from_vec("DELAY", DataType::Uint32, vec![m], d));
    }
    let mut req = InferRequest::new("repeat_int32", inputs);
    req.id = id.into();
    req
}
