//! A server over the built-in and fake models on port 0, and a small HTTP client.

#![allow(dead_code)] // each test file uses part of this

pub(crate) mod fake;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nereid_engine::builtin::demo::{write_repository, BUILTIN_MODELS};
use nereid_engine::{BackendRegistry, Engine, EngineOptions};
use serde_json::Value;

/// A running server.
pub(crate) struct Server {
    pub addr: SocketAddr,
    pub engine: Engine,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `http://addr` + path.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://addr` + path.
    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

/// Starts the engine over the built-in and fake models (plus `extra` configs, with
/// `register` adding their backends) and serves the stream router on a free port.
pub(crate) async fn start_with(
    extra: Vec<(&'static str, &'static str)>,
    register: fn(&mut BackendRegistry),
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut models: Vec<(&str, &str)> = BUILTIN_MODELS.to_vec();
    models.extend(fake::FAKE_MODELS);
    models.extend(extra);
    write_repository(dir.path(), models).unwrap();
    let repository = dir.path().to_path_buf();
    let engine = tokio::task::spawn_blocking(move || {
        let mut backends = BackendRegistry::with_builtins();
        fake::register(&mut backends);
        register(&mut backends);
        Engine::start(
            EngineOptions {
                repository: Some(repository),
                ..Default::default()
            },
            backends,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = nereid_stream::router(engine.clone(), &Default::default());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server {
        addr,
        engine,
        _dir: dir,
    }
}

/// [`start_with`] with no extra models.
pub(crate) async fn start() -> Server {
    start_with(Vec::new(), |_| {}).await
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and returns the response with its body unread.
pub(crate) async fn send(method: &str, url: &str, body: Option<&Value>) -> Response<Incoming> {
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    client().request(request).await.unwrap()
}

/// Sends a request and returns the status and JSON body.
pub(crate) async fn json(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let response = send(method, url, body).await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        );
    });
    (status, value)
}

/// The floats of an embedding sent with `encoding_format: "base64"` (little-endian FP32).
pub(crate) fn base64_embedding(embedding: &Value) -> Vec<f32> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(embedding.as_str().expect("a base64 string"))
        .unwrap();
    raw.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Reads server-sent events off a response body one `data:` payload at a time.
pub(crate) struct Events {
    body: Incoming,
    buffer: String,
}

impl Events {
    /// Starts reading a response's events.
    pub(crate) fn new(response: Response<Incoming>) -> Self {
        Self {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next `data:` payload, or `None` at the end of the body.
    pub(crate) async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(data.join("\n"));
            }
            let frame = tokio::time::timeout(Duration::from_secs(30), self.body.frame())
                .await
                .expect("event in time")?;
            if let Ok(data) = frame.unwrap().into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// Every remaining payload.
    pub(crate) async fn all(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}
