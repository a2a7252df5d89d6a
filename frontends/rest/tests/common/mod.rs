//! A REST server over the built-in demo models on port 0, and a small HTTP client.
#![allow(dead_code)] // each test binary uses part of this

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nereid_engine::builtin::demo::{write_repository, BUILTIN_MODELS};
use nereid_engine::{BackendRegistry, Engine, EngineOptions, ModelControlMode};
use nereid_rest::RestArgs;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Identity over one input of every datatype (no batching), for datatype round trips.
pub(crate) const IDENTITY_ALL: &str = r#"name: "identity_all"
backend: "identity"
max_batch_size: 0
input [
  { name: "BOOL" data_type: TYPE_BOOL dims: [ -1 ] optional: true },
  { name: "UINT8" data_type: TYPE_UINT8 dims: [ -1 ] optional: true },
  { name: "UINT16" data_type: TYPE_UINT16 dims: [ -1 ] optional: true },
  { name: "UINT32" data_type: TYPE_UINT32 dims: [ -1 ] optional: true },
  { name: "UINT64" data_type: TYPE_UINT64 dims: [ -1 ] optional: true },
  { name: "INT8" data_type: TYPE_INT8 dims: [ -1 ] optional: true },
  { name: "INT16" data_type: TYPE_INT16 dims: [ -1 ] optional: true },
  { name: "INT32" data_type: TYPE_INT32 dims: [ -1 ] optional: true },
  { name: "INT64" data_type: TYPE_INT64 dims: [ -1 ] optional: true },
  { name: "FP16" data_type: TYPE_FP16 dims: [ -1 ] optional: true },
  { name: "BF16" data_type: TYPE_BF16 dims: [ -1 ] optional: true },
  { name: "FP32" data_type: TYPE_FP32 dims: [ -1 ] optional: true },
  { name: "FP64" data_type: TYPE_FP64 dims: [ -1 ] optional: true },
  { name: "BYTES" data_type: TYPE_STRING dims: [ -1 ] optional: true }
]
output [
  { name: "BOOL_OUT" data_type: TYPE_BOOL dims: [ -1 ] },
  { name: "UINT8_OUT" data_type: TYPE_UINT8 dims: [ -1 ] },
  { name: "UINT16_OUT" data_type: TYPE_UINT16 dims: [ -1 ] },
  { name: "UINT32_OUT" data_type: TYPE_UINT32 dims: [ -1 ] },
  { name: "UINT64_OUT" data_type: TYPE_UINT64 dims: [ -1 ] },
  { name: "INT8_OUT" data_type: TYPE_INT8 dims: [ -1 ] },
  { name: "INT16_OUT" data_type: TYPE_INT16 dims: [ -1 ] },
  { name: "INT32_OUT" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "INT64_OUT" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "FP16_OUT" data_type: TYPE_FP16 dims: [ -1 ] },
  { name: "BF16_OUT" data_type: TYPE_BF16 dims: [ -1 ] },
  { name: "FP32_OUT" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "FP64_OUT" data_type: TYPE_FP64 dims: [ -1 ] },
  { name: "BYTES_OUT" data_type: TYPE_STRING dims: [ -1 ] }
]
"#;

/// A text "model" for the generate extension: text_output is text_input.
pub(crate) const ECHO_TEXT: &str = r#"name: "echo_text"
backend: "identity"
max_batch_size: 4
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
"#;

/// A running engine + REST server.
pub(crate) struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its engine.
    pub engine: Engine,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Starts a server over the demo models plus `identity_all`, `echo_text` and `sleep`.
pub(crate) async fn start(mode: ModelControlMode, args: RestArgs) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        ("identity_all", IDENTITY_ALL),
        ("echo_text", ECHO_TEXT),
        ("sleep", nereid_engine::builtin::demo::SLEEP),
    ];
    write_repository(dir.path(), BUILTIN_MODELS.into_iter().chain(extra)).unwrap();
    let options = EngineOptions {
        repository: Some(dir.path().to_path_buf()),
        strict_readiness: true,
        control_mode: mode,
        startup_models: vec!["*".into()],
        ..Default::default()
    };
    let engine = tokio::task::spawn_blocking(move || {
        Engine::start(options, BackendRegistry::with_builtins())
    })
    .await
    .unwrap()
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = nereid_rest::router(engine.clone(), &args);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        nereid_rest::serve(router, listener, &args, async move {
            let _ = rx.await;
        })
        .await
    });
    TestServer {
        addr,
        engine,
        shutdown: Some(tx),
        task: Some(task),
        _dir: dir,
    }
}

/// Starts the default server (control mode none, default limits).
pub(crate) async fn start_default() -> TestServer {
    start(ModelControlMode::None, RestArgs::default()).await
}

impl TestServer {
    /// `http://addr` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting and waits for the serve loop to return.
    pub(crate) async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` message of an error body.
    pub(crate) fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.text()))
            .to_string()
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// A plain HTTP/1.1 client.
pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole answer.
pub(crate) async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// GET `path` on `server`.
pub(crate) async fn get(server: &TestServer, path: &str) -> Reply {
    send(&client(), "GET", &server.url(path), &[], Bytes::new()).await
}

/// POST JSON `body` to `path` on `server`.
pub(crate) async fn post_json(server: &TestServer, path: &str, body: &Value) -> Reply {
    let headers = [("content-type", "application/json")];
    send(
        &client(),
        "POST",
        &server.url(path),
        &headers,
        body.to_string(),
    )
    .await
}

/// POST raw bytes to `path` on `server` with extra headers.
pub(crate) async fn post_raw(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    send(&client(), "POST", &server.url(path), headers, body).await
}

/// A JSON infer request for `simple` with INPUT0 = 0..16 and INPUT1 = 1s.
pub(crate) fn simple_request() -> Value {
    serde_json::json!({
        "id": "req-1",
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": (0..16).collect::<Vec<i32>>()},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": vec![1; 16]}
        ]
    })
}

/// Checks a `simple` JSON answer to [`simple_request`].
pub(crate) fn assert_simple_answer(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["model_name"], "simple");
    assert_eq!(v["model_version"], "1");
    let outputs = v["outputs"].as_array().unwrap();
    let out = |name: &str| outputs.iter().find(|o| o["name"] == name).unwrap()["data"].clone();
    assert_eq!(
        out("OUTPUT0"),
        serde_json::json!((1..17).collect::<Vec<i32>>())
    );
    assert_eq!(
        out("OUTPUT1"),
        serde_json::json!((-1..15).collect::<Vec<i32>>())
    );
}

/// Asserts that a good request still works (the server survived whatever came before).
pub(crate) async fn assert_still_serves(server: &TestServer) {
    assert_simple_answer(&post_json(server, "/v2/models/simple/infer", &simple_request()).await);
}
