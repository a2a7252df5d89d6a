//! A gateway over engines in this process, each behind its real gRPC frontend: load is
//! shared, an engine that stops is routed around with no request lost, a client that
//! leaves cancels the engine's work, and bad requests fail as an engine fails them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid_engine::builtin::demo::{write_repository, BUILTIN_MODELS};
use nereid_engine::{
    BackendRegistry, DataType, Engine, EngineError, EngineOptions, InferRequest, Tensor,
};
use nereid_gateway::{Gateway, GatewayOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An engine over the built-in demo models, served on a free port.
struct TestEngine {
    address: String,
    engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TestEngine {
    async fn start() -> Self {
        Self::start_with(Default::default()).await
    }

    async fn start_with(args: nereid_grpc::GrpcArgs) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let engine = tokio::task::spawn_blocking(move || {
            write_repository(&root, BUILTIN_MODELS).unwrap();
            let options = EngineOptions {
                repository: Some(root),
                strict_readiness: true,
                ..Default::default()
            };
            Engine::start(options, BackendRegistry::with_builtins()).unwrap()
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(nereid_grpc::serve(engine.clone(), listener, args, async {
            let _ = stopped.await;
        }));
        Self {
            address,
            engine,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// Requests this engine answered successfully.
    fn successes(&self) -> u64 {
        self.engine.model_statistics(Some("simple"), None).unwrap()[0]
            .inference_stats
            .success
            .count
    }

    /// Stops serving at once: open connections are cut, as when the process dies.
    async fn kill(mut self) {
        let _ = self.stop.take();
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn gateway(engines: &[&TestEngine]) -> (Gateway, Engine) {
    let options = GatewayOptions {
        backends: engines.iter().map(|e| e.address.clone()).collect(),
        health_interval: Duration::from_millis(100),
        discovery_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let gateway = Gateway::start(options).await.unwrap();
    let engine = Engine::with_upstream(EngineOptions::default(), Arc::new(gateway.clone()));
    assert!(engine.is_ready(), "{:?}", gateway.backends());
    (gateway, engine)
}

fn simple(a: i32) -> InferRequest {
    let input = |name: &str, value: i32| {
        Tensor::from_vec(name, DataType::Int32, vec![1, 16], vec![value; 16])
    };
    InferRequest::new("simple", vec![input("INPUT0", a), input("INPUT1", 1)])
}

async fn check_simple(engine: &Engine, a: i32) {
    let response = engine.infer(simple(a)).await.unwrap();
    let sum = response.output("OUTPUT0").unwrap().to_vec::<i32>().unwrap();
    assert_eq!(sum, vec![a + 1; 16]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_shared_and_a_dead_engine_loses_no_request() {
    let (a, b) = (TestEngine::start().await, TestEngine::start().await);
    let (gateway, front) = gateway(&[&a, &b]).await;
    for i in 0..40 {
        check_simple(&front, i).await;
    }
    let (from_a, from_b) = (a.successes(), b.successes());
    assert_eq!(from_a + from_b, 40);
    assert!(from_a > 0 && from_b > 0, "a {from_a}, b {from_b}");

    let dead = a.address.clone();
    a.kill().await;
    // Concurrent requests, some of which go to the dead engine first and are retried.
    let calls = (0..64).map(|i| {
        let front = front.clone();
        tokio::spawn(async move { check_simple(&front, i).await })
    });
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(b.successes(), from_b + 64);
    let ejected = gateway
        .backends()
        .into_iter()
        .any(|(address, healthy)| address == dead && !healthy);
    assert!(ejected, "{:?}", gateway.backends());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_the_engines_work() {
    let a = TestEngine::start().await;
    let (_gateway, front) = gateway(&[&a]).await;
    // Five responses a second apart; the client reads one and goes away.
    let inputs = vec![
        Tensor::from_vec("IN", DataType::Int32, vec![5], vec![1i32, 2, 3, 4, 5]),
        Tensor::from_vec(
            "DELAY",
            DataType::Uint32,
            vec![5],
            vec![0u32, 1_000_000, 1_000_000, 1_000_000, 1_000_000],
        ),
    ];
    let mut stream = front
        .infer_stream(InferRequest::new("repeat_int32", inputs))
        .unwrap();
    let first = stream.recv().await.unwrap().unwrap();
    assert_eq!(first.output("OUT").unwrap().to_vec::<i32>().unwrap(), [1]);
    assert_eq!(a.engine.inflight(), 1);
    drop(stream);
    let left = Instant::now();
    while a.engine.inflight() > 0 {
        assert!(
            left.elapsed() < Duration::from_millis(1500),
            "the engine still runs the abandoned request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(front.inflight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_at_the_gateway_as_at_an_engine() {
    let a = TestEngine::start().await;
    let (_gateway, front) = gateway(&[&a]).await;
    let unknown = front
        .infer(InferRequest::new("nope", Vec::new()))
        .await
        .unwrap_err();
    let direct = a
        .engine
        .infer(InferRequest::new("nope", Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(unknown.to_string(), direct.to_string());

    let mut wrong = simple(1);
    wrong.inputs[0] = Tensor::from_vec("INPUT0", DataType::Fp32, vec![1, 16], vec![0f32; 16]);
    let at_gateway = front.infer(wrong.clone()).await.unwrap_err();
    let at_engine = a.engine.infer(wrong).await.unwrap_err();
    assert!(matches!(at_gateway, EngineError::InvalidArgument(_)));
    assert_eq!(at_gateway.to_string(), at_engine.to_string());
    assert_eq!(a.successes(), 0);

    // Version pinning and the repository index read the engines' own.
    assert!(front.model_ready("simple", Some(1)));
    assert!(!front.model_ready("simple", Some(2)));
    assert_eq!(
        front.repository_index(true),
        a.engine.repository_index(true)
    );
}

/// A CA and a server certificate for `localhost`, written as PEM files.
fn tls_files(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_behind_tls_are_reached_with_the_backend_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let args = nereid_grpc::GrpcArgs {
        grpc_use_ssl: true,
        grpc_server_cert: Some(cert),
        grpc_server_key: Some(key),
        ..Default::default()
    };
    let engine = TestEngine::start_with(args).await;
    let tls = nereid_gateway::BackendTls {
        ca_cert: ca,
        identity: None,
        // Dialled by IP, the certificate names localhost.
        domain: Some("localhost".into()),
    };
    let mut options = GatewayOptions {
        backends: vec![engine.address.clone()],
        ..Default::default()
    };
    options.client.tls = Some(tls.client_config().unwrap());
    let gateway = Gateway::start(options).await.unwrap();
    let front = Engine::with_upstream(EngineOptions::default(), Arc::new(gateway));
    assert!(front.is_ready());
    check_simple(&front, 7).await;
    assert_eq!(engine.successes(), 1);

    // In plaintext the engine is never healthy, and a request says why it failed.
    let plain = Gateway::start(GatewayOptions {
        backends: vec![engine.address.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(plain.backends().iter().all(|(_, healthy)| !healthy));

    let missing = nereid_gateway::BackendTls {
        ca_cert: dir.path().join("nope.pem"),
        ..Default::default()
    };
    assert!(missing.client_config().unwrap_err().contains("nope.pem"));
}
