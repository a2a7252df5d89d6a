//! Minimal clients over the raw protocols: gRPC through the tonic client of `nereid-proto`,
//! REST through hyper (HTTP/1.1, or HTTP/2 with prior knowledge), JSON or binary tensors.
//! Every connection counts the bytes it moves, so the report can tell bytes on the wire.

pub mod grpc;
pub mod http;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::args::{HttpVersion, Protocol, TensorFormat};
use crate::inputs::{InputSet, ModelInfo};
use crate::server_stats::ServerStats;

/// Where and how to send requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL, `http://host:port`.
    pub url: String,
    /// Protocol.
    pub protocol: Protocol,
    /// HTTP version (REST only).
    pub http_version: HttpVersion,
    /// How REST requests carry inputs.
    pub input_format: TensorFormat,
    /// How REST responses carry outputs.
    pub output_format: TensorFormat,
    /// Multiplexed connections for gRPC and HTTP/2 (HTTP/1.1 opens one per in-flight request).
    pub connections: usize,
}

impl Endpoint {
    /// A gRPC endpoint with one connection.
    pub fn grpc(url: &str) -> Self {
        Self {
            url: crate::args::normalize_url(url),
            protocol: Protocol::Grpc,
            http_version: HttpVersion::Http2,
            input_format: TensorFormat::Binary,
            output_format: TensorFormat::Binary,
            connections: 1,
        }
    }

    /// A REST endpoint with the given HTTP version and tensor format both ways.
    pub fn http(url: &str, version: HttpVersion, format: TensorFormat) -> Self {
        Self {
            url: crate::args::normalize_url(url),
            protocol: Protocol::Http,
            http_version: version,
            input_format: format,
            output_format: format,
            connections: 1,
        }
    }

    /// A short label: `gRPC`, `REST-JSON h1`, `REST-binary h2`...
    pub fn label(&self) -> String {
        match self.protocol {
            Protocol::Grpc => "gRPC".into(),
            Protocol::Http => {
                let format = match self.input_format {
                    TensorFormat::Json => "JSON",
                    TensorFormat::Binary => "binary",
                };
                let version = match self.http_version {
                    HttpVersion::Http1 => "h1",
                    HttpVersion::Http2 => "h2",
                };
                format!("REST-{format} {version}")
            }
        }
    }
}

/// Client-side time of one request, outside the network and the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallTiming {
    /// Building and serializing the request.
    pub send: Duration,
    /// Deserializing and reading the response once it arrived.
    pub recv: Duration,
}

/// Bytes moved by the connections of one client, both ways, TCP payload only.
#[derive(Debug, Default)]
pub struct WireCounter {
    sent: AtomicU64,
    received: AtomicU64,
}

impl WireCounter {
    /// Bytes written and read so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.sent.load(Relaxed), self.received.load(Relaxed))
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        self.sent.store(0, Relaxed);
        self.received.store(0, Relaxed);
    }
}

/// A TCP stream that adds what it moves to a [`WireCounter`].
pub struct CountingStream {
    inner: TcpStream,
    counter: Arc<WireCounter>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.counter
            .received
            .fetch_add((buf.filled().len() - before) as u64, Relaxed);
        poll
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.counter.sent.fetch_add(*n as u64, Relaxed);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &poll {
            self.counter.sent.fetch_add(*n as u64, Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for CountingStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// A connector (a tower service from URI to connection) of [`CountingStream`]s with
/// TCP_NODELAY, for both hyper and tonic.
#[derive(Clone, Default)]
pub struct CountingConnector {
    counter: Arc<WireCounter>,
}

impl CountingConnector {
    /// A connector adding to `counter`.
    pub fn new(counter: Arc<WireCounter>) -> Self {
        Self { counter }
    }
}

impl tower::Service<::http::Uri> for CountingConnector {
    type Response = hyper_util::rt::TokioIo<CountingStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: ::http::Uri) -> Self::Future {
        let counter = self.counter.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(80);
            let inner = TcpStream::connect((host, port)).await?;
            inner.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(CountingStream {
                inner,
                counter,
            }))
        })
    }
}

/// A client of either protocol; cheap to clone (clones share connections).
#[derive(Clone)]
pub enum Client {
    /// gRPC.
    Grpc(grpc::GrpcClient),
    /// REST.
    Http(http::HttpClient),
}

impl Client {
    /// Connects to `endpoint`, counting bytes into `counter`.
    pub async fn connect(endpoint: &Endpoint, counter: Arc<WireCounter>) -> anyhow::Result<Self> {
        Ok(match endpoint.protocol {
            Protocol::Grpc => Self::Grpc(grpc::GrpcClient::connect(endpoint, counter).await?),
            Protocol::Http => Self::Http(http::HttpClient::new(endpoint, counter)?),
        })
    }

    /// Reads the model's signature from its metadata and config.
    pub async fn model_info(&self, name: &str, version: &str) -> anyhow::Result<ModelInfo> {
        match self {
            Self::Grpc(c) => c.model_info(name, version).await,
            Self::Http(c) => c.model_info(name, version).await,
        }
    }

    /// Reads the model's cumulative statistics from the server.
    pub async fn statistics(&self, name: &str, version: &str) -> anyhow::Result<ServerStats> {
        match self {
            Self::Grpc(c) => c.statistics(name, version).await,
            Self::Http(c) => c.statistics(name, version).await,
        }
    }

    /// Sends one unary inference and reads the whole response.
    pub async fn infer(&self, model: &ModelInfo, inputs: &InputSet) -> anyhow::Result<CallTiming> {
        match self {
            Self::Grpc(c) => c.infer(model, inputs).await,
            Self::Http(c) => c.infer(model, inputs).await,
        }
    }
}
