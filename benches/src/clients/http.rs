//! The REST client: hyper-util's pooled client over HTTP/1.1 (a connection per in-flight
//! request) or HTTP/2 with prior knowledge (h2c, requests multiplexed), JSON or binary
//! tensors.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Deserialize;

use super::{CallTiming, CountingConnector, Endpoint, WireCounter};
use crate::args::{HttpVersion, TensorFormat};
use crate::codec::{decode_http_response, encode_http_request, HttpBody, HEADER_LENGTH};
use crate::inputs::{InputSet, ModelInfo, TensorInfo};
use crate::server_stats::ServerStats;

type Pool = Client<CountingConnector, Full<Bytes>>;

/// A REST client; clones share its connections.
#[derive(Clone)]
pub struct HttpClient {
    pools: Arc<Vec<Pool>>,
    next: Arc<AtomicUsize>,
    base: String,
    binary_inputs: bool,
    binary_outputs: bool,
    /// Request bodies of the input sets seen so far (held, so no address is reused):
    /// encoded once, like perf_analyzer's prepared inputs, so the load generator does not
    /// spend the CPU it shares with the server on re-encoding the same tensors.
    encoded: Arc<Mutex<Vec<(InputSet, HttpBody)>>>,
}

/// A successful response: its body and the binary header length it announced.
struct Answer {
    body: Bytes,
    header_length: Option<usize>,
}

impl HttpClient {
    /// A client of `endpoint`; connections open on first use.
    pub fn new(endpoint: &Endpoint, counter: Arc<WireCounter>) -> anyhow::Result<Self> {
        let uri: http::Uri = endpoint
            .url
            .parse()
            .with_context(|| format!("bad URL {}", endpoint.url))?;
        if uri.scheme_str() != Some("http") {
            bail!(
                "only cleartext http:// URLs are benchmarked, not {}",
                endpoint.url
            );
        }
        let pools = match endpoint.http_version {
            HttpVersion::Http1 => vec![Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(usize::MAX)
                .build(CountingConnector::new(counter))],
            HttpVersion::Http2 => (0..endpoint.connections.max(1))
                .map(|_| {
                    Client::builder(TokioExecutor::new())
                        .http2_only(true)
                        .http2_adaptive_window(true)
                        .build(CountingConnector::new(counter.clone()))
                })
                .collect(),
        };
        Ok(Self {
            pools: Arc::new(pools),
            next: Arc::default(),
            base: endpoint.url.trim_end_matches('/').to_string(),
            binary_inputs: endpoint.input_format == TensorFormat::Binary,
            binary_outputs: endpoint.output_format == TensorFormat::Binary,
            encoded: Arc::default(),
        })
    }

    fn pool(&self) -> &Pool {
        &self.pools[self.next.fetch_add(1, Relaxed) % self.pools.len()]
    }

    fn model_path(model: &str, version: &str) -> String {
        if version.is_empty() {
            format!("/v2/models/{model}")
        } else {
            format!("/v2/models/{model}/versions/{version}")
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        header_length: Option<usize>,
    ) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(n) = header_length {
            request = request
                .header(HEADER_LENGTH, n)
                .header(header::CONTENT_TYPE, "application/octet-stream");
        }
        let request = request.body(Full::new(body))?;
        let response = self
            .pool()
            .request(request)
            .await
            .map_err(|e| anyhow!("HTTP {path}: {e}"))?;
        let status = response.status();
        let header_length = response
            .headers()
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow!("HTTP {path} body: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            bail!(
                "HTTP {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(Answer {
            body,
            header_length,
        })
    }

    /// Reads the model's signature from its metadata and config routes.
    pub async fn model_info(&self, name: &str, version: &str) -> anyhow::Result<ModelInfo> {
        #[derive(Deserialize)]
        struct Tensor {
            name: String,
            datatype: String,
            shape: Vec<i64>,
        }
        #[derive(Deserialize)]
        struct Metadata {
            inputs: Vec<Tensor>,
            outputs: Vec<Tensor>,
        }
        let path = Self::model_path(name, version);
        let metadata: Metadata = serde_json::from_slice(
            &self
                .call(Method::GET, &path, Bytes::new(), None)
                .await?
                .body,
        )
        .context("model metadata is not KServe JSON")?;
        let config: serde_json::Value = serde_json::from_slice(
            &self
                .call(Method::GET, &format!("{path}/config"), Bytes::new(), None)
                .await?
                .body,
        )
        .context("model config is not JSON")?;
        let max_batch_size = config
            .get("max_batch_size")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let decoupled = config
            .pointer("/model_transaction_policy/decoupled")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let strip = |t: &Tensor| {
            TensorInfo::from_metadata(&t.name, &t.datatype, &t.shape, max_batch_size > 0)
        };
        Ok(ModelInfo {
            name: name.into(),
            version: version.into(),
            max_batch_size,
            decoupled,
            inputs: metadata.inputs.iter().map(strip).collect(),
            outputs: metadata.outputs.iter().map(strip).collect(),
        })
    }

    /// Reads the model's statistics route.
    pub async fn statistics(&self, name: &str, version: &str) -> anyhow::Result<ServerStats> {
        let path = format!("{}/stats", Self::model_path(name, version));
        ServerStats::from_json(
            &self
                .call(Method::GET, &path, Bytes::new(), None)
                .await?
                .body,
        )
    }

    /// The encoded request body of `inputs`, from the cache after the first time.
    fn body(&self, inputs: &InputSet) -> anyhow::Result<HttpBody> {
        let mut seen = self.encoded.lock();
        if let Some((_, body)) = seen.iter().find(|(set, _)| Arc::ptr_eq(set, inputs)) {
            return Ok(body.clone());
        }
        let body = encode_http_request(inputs, self.binary_inputs, self.binary_outputs)?;
        seen.push((inputs.clone(), body.clone()));
        Ok(body)
    }

    /// One POST `.../infer`.
    pub async fn infer(&self, model: &ModelInfo, inputs: &InputSet) -> anyhow::Result<CallTiming> {
        let start = Instant::now();
        let encoded = self.body(inputs)?;
        let send = start.elapsed();
        let path = format!("{}/infer", Self::model_path(&model.name, &model.version));
        let answer = self
            .call(Method::POST, &path, encoded.body, encoded.header_length)
            .await?;
        let read = Instant::now();
        let decoded = decode_http_response(&answer.body, answer.header_length)?;
        if decoded.outputs.is_empty() && !model.outputs.is_empty() {
            bail!("response without outputs");
        }
        Ok(CallTiming {
            send,
            recv: read.elapsed(),
        })
    }
}
