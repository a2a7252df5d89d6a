//! A server in the test process: the engine over the demo models plus a few test models,
//! and the gRPC frontend on a free port.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nereid_engine::builtin::demo::{write_repository, BUILTIN_MODELS};
use nereid_engine::{BackendRegistry, DataType, Engine, EngineOptions, InferRequest, Tensor};
use nereid_grpc::client::GrpcClient;
use nereid_grpc::GrpcArgs;
use nereid_proto::GrpcInferenceServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Test models on top of the demo ones: identities over BYTES, FP16 and BF16, and the
/// built-in `sleep`, which holds its single instance for MS milliseconds (to fill a queue).
pub(crate) const TEST_MODELS: [(&str, &str); 4] = [
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
    ("sleep", nereid_engine::builtin::demo::SLEEP),
];

/// A running server; dropping it shuts the frontend down.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub engine: Engine,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts with default flags.
    pub(crate) async fn start() -> Self {
        Self::start_with(GrpcArgs::default()).await
    }

    /// Starts with the given flags.
    pub(crate) async fn start_with(args: GrpcArgs) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let engine = tokio::task::spawn_blocking(move || {
            write_repository(&root, BUILTIN_MODELS).unwrap();
            write_repository(&root, TEST_MODELS).unwrap();
            let backends = BackendRegistry::with_builtins();
            Engine::start(
                EngineOptions {
                    repository: Some(root),
                    strict_readiness: true,
                    ..Default::default()
                },
                backends,
            )
            .unwrap()
        })
        .await
        .unwrap();
        assert!(
            engine.is_ready(),
            "every test model loads: {:?}",
            engine.repository_index(false)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(nereid_grpc::serve(engine.clone(), listener, args, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            engine,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The generated client over a fresh connection.
    pub(crate) async fn raw(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::connect(self.url())
            .await
            .unwrap()
    }

    /// The typed client.
    pub(crate) async fn client(&self) -> GrpcClient {
        GrpcClient::connect(self.url()).await.unwrap()
    }

    /// A plain channel, for the health and reflection clients.
    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Stops the frontend and waits for it to return.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }

    /// Waits up to `within` for the engine to have no request in flight.
    pub(crate) async fn wait_idle(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.engine.inflight() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.engine.inflight() == 0
    }

    /// Executions of a model so far.
    pub(crate) fn executions(&self, model: &str) -> u64 {
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
pub(crate) fn simple_request(batch: usize) -> InferRequest {
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
pub(crate) fn sleep_request(ms: u32) -> InferRequest {
    InferRequest::new(
        "sleep",
        vec![Tensor::from_vec("MS", DataType::Uint32, vec![1], vec![ms])],
    )
}

/// A `repeat_int32` request for `values`, with optional per-response delays in µs.
pub(crate) fn repeat_request(
    id: &str,
    values: Vec<i32>,
    delays_us: Option<Vec<u32>>,
) -> InferRequest {
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

/// Sends one HTTP/1.1 request and returns (head, body) of the answer, de-chunked.
pub(crate) async fn http1(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
) -> (String, Vec<u8>) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8(answer[..split].to_vec()).unwrap();
    let mut rest = &answer[split + 4..];
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (head, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (head, body);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Calls ModelInfer through gRPC-Web over a raw HTTP/1.1 connection (a client that does
/// not enforce `grpc-timeout` itself, unlike tonic's channel) and returns the grpc-status
/// the server answered with, from the headers or the trailer frame.
pub(crate) async fn grpc_web_infer(
    addr: SocketAddr,
    request: InferRequest,
    extra_headers: &str,
) -> (u32, Vec<u8>) {
    use prost::Message;
    let message = nereid_grpc::convert::request_to_wire(request).encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let head = format!(
        "POST /inference.GRPCInferenceService/ModelInfer HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n{extra_headers}\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        framed.len()
    );
    let (head, body) = http1(addr, &head, &framed).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = format!("{head}\n{}", String::from_utf8_lossy(&body))
        .to_ascii_lowercase()
        .replace(' ', "");
    let at = text
        .find("grpc-status:")
        .unwrap_or_else(|| panic!("no grpc-status in {text}"));
    let code: String = text[at + 12..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (code.parse().unwrap(), body)
}
