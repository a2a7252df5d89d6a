//! The exporter: spans of finished requests wait in a bounded queue (past it they are
//! dropped and counted in `nereid_trace_spans_dropped_total`, so a slow or absent collector
//! costs the server nothing but the spans), and one task sends them in batches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nereid_engine::trace::{SpanData, SpanExporter};
use prost::Message;
use tokio::sync::mpsc;

use crate::config::{ExporterConfig, Protocol};
use crate::proto;

/// Spans dropped because the queue was full or the collector refused them.
pub const SPANS_DROPPED: &str = "nereid_trace_spans_dropped_total";

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP gRPC method spans are sent to.
const EXPORT_METHOD: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends spans to an OTLP collector. [`OtlpExporter::start`] spawns its task on the
/// current Tokio runtime; the task ends when the exporter is dropped, after sending what is
/// queued.
pub struct OtlpExporter {
    tx: mpsc::Sender<Vec<SpanData>>,
    /// Spans queued and not yet taken by the task, against `max_queue_size`.
    queued: Arc<AtomicUsize>,
    max_queue_size: usize,
}

impl OtlpExporter {
    /// Starts the exporter's task. Fails on an endpoint that is not a URL.
    pub fn start(config: ExporterConfig) -> Result<Self, String> {
        let transport = Transport::new(&config)?;
        // Each message holds one request's spans (a handful): the span count is the bound.
        let (tx, rx) = mpsc::channel(config.max_queue_size.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let resource = proto::Resource {
            attributes: config
                .resource
                .iter()
                .map(|(k, v)| proto::string_attribute(k, v))
                .collect(),
        };
        tokio::spawn(run(rx, queued.clone(), transport, resource, config.clone()));
        Ok(Self {
            tx,
            queued,
            max_queue_size: config.max_queue_size,
        })
    }
}

impl SpanExporter for OtlpExporter {
    fn export(&self, spans: Vec<SpanData>) {
        let n = spans.len();
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max_queue_size || self.tx.try_send(spans).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            metrics::counter!(SPANS_DROPPED).increment(n as u64);
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Vec<SpanData>>,
    queued: Arc<AtomicUsize>,
    transport: Transport,
    resource: proto::Resource,
    config: ExporterConfig,
) {
    let mut batch: Vec<proto::Span> = Vec::new();
    let mut open = true;
    // A collector that is down is said once, not on every batch.
    let mut failing = false;
    while open {
        // Wait for the first spans of a batch, then up to the delay for more.
        match rx.recv().await {
            Some(spans) => take(&mut batch, spans, &queued),
            None => break,
        }
        let deadline = tokio::time::Instant::now() + config.schedule_delay;
        while batch.len() < config.max_export_batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(spans)) => take(&mut batch, spans, &queued),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(config.max_export_batch_size));
            let sending = std::mem::replace(&mut batch, rest);
            let n = sending.len();
            let request = proto::ExportTraceServiceRequest {
                resource_spans: vec![proto::ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![proto::ScopeSpans {
                        scope: Some(proto::InstrumentationScope {
                            name: "nereid".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                        }),
                        spans: sending,
                    }],
                }],
            };
            match transport.send(request).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(endpoint = %config.endpoint, "trace export works again");
                }
                Ok(()) => {}
                Err(e) => {
                    metrics::counter!(SPANS_DROPPED).increment(n as u64);
                    if failing {
                        tracing::debug!(endpoint = %config.endpoint, "trace export failed, {n} spans dropped: {e}");
                    } else {
                        failing = true;
                        tracing::warn!(endpoint = %config.endpoint, "trace export failed, {n} spans dropped (said once until it works again): {e}");
                    }
                }
            }
        }
    }
}

fn take(batch: &mut Vec<proto::Span>, spans: Vec<SpanData>, queued: &AtomicUsize) {
    queued.fetch_sub(spans.len(), Ordering::AcqRel);
    batch.extend(spans.iter().map(proto::span));
}

/// One way to the collector.
enum Transport {
    Http {
        client: Box<Client<HttpConnector, Full<Bytes>>>,
        uri: http::Uri,
    },
    Grpc {
        channel: tonic::transport::Channel,
    },
}

impl Transport {
    fn new(config: &ExporterConfig) -> Result<Self, String> {
        let bad = |e: &dyn std::fmt::Display| format!("OTLP endpoint '{}': {e}", config.endpoint);
        Ok(match config.protocol {
            Protocol::HttpProtobuf => Self::Http {
                client: Box::new(Client::builder(TokioExecutor::new()).build_http()),
                uri: config.endpoint.parse().map_err(|e| bad(&e))?,
            },
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| bad(&e))?
                    .timeout(EXPORT_TIMEOUT);
                if config.endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())
                        .map_err(|e| bad(&e))?;
                }
                Self::Grpc {
                    channel: endpoint.connect_lazy(),
                }
            }
        })
    }

    async fn send(&self, request: proto::ExportTraceServiceRequest) -> Result<(), String> {
        match self {
            Self::Http { client, uri } => {
                let body = Bytes::from(request.encode_to_vec());
                let post = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(body))
                    .map_err(|e| e.to_string())?;
                let response = tokio::time::timeout(EXPORT_TIMEOUT, client.request(post))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                // Read the answer whole so the connection can be reused.
                let _ = response.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the collector answered {status}"))
                }
            }
            Self::Grpc { channel } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|e| e.to_string())?;
                let codec: tonic_prost::ProstCodec<
                    proto::ExportTraceServiceRequest,
                    proto::ExportTraceServiceResponse,
                > = tonic_prost::ProstCodec::default();
                let path = http::uri::PathAndQuery::from_static(EXPORT_METHOD);
                grpc.unary(tonic::Request::new(request), path, codec)
                    .await
                    .map(|_| ())
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
        }
    }
}
