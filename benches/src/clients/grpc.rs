//! The gRPC client: the generated tonic client for metadata and statistics, and for
//! inference a tonic `Grpc` with a prost codec that times its own encoding and decoding,
//! so the client's send and receive time are measured, not guessed.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nereid_proto::inference::{
    infer_parameter::ParameterChoice, InferParameter, ModelConfigRequest, ModelInferRequest,
    ModelInferResponse, ModelMetadataRequest, ModelStatisticsRequest, ModelStreamInferResponse,
};
use nereid_proto::GrpcInferenceServiceClient;
use prost::Message;
use tokio::sync::mpsc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::transport::Channel;
use tonic::Status;

use super::{CallTiming, CountingConnector, Endpoint, WireCounter};
use crate::codec::{decode_grpc_response, grpc_request};
use crate::inputs::{InputSet, ModelInfo, TensorInfo};
use crate::server_stats::ServerStats;

const INFER_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";
const STREAM_PATH: &str = "/inference.GRPCInferenceService/ModelStreamInfer";

/// Nanoseconds a [`TimedCodec`] spent encoding and decoding.
#[derive(Debug, Default)]
pub struct CodecTime {
    encode_ns: AtomicU64,
    decode_ns: AtomicU64,
}

impl CodecTime {
    /// Takes the encode and decode time so far, leaving zero.
    pub fn take(&self) -> (Duration, Duration) {
        (
            Duration::from_nanos(self.encode_ns.swap(0, Relaxed)),
            Duration::from_nanos(self.decode_ns.swap(0, Relaxed)),
        )
    }
}

/// tonic-prost's codec, plus a clock around `encode` and `decode`.
pub struct TimedCodec<T, U> {
    time: Arc<CodecTime>,
    _types: PhantomData<fn(T) -> U>,
}

impl<T, U> TimedCodec<T, U> {
    /// A codec that adds its time to `time`.
    pub fn new(time: Arc<CodecTime>) -> Self {
        Self {
            time,
            _types: PhantomData,
        }
    }
}

/// The encoding half of [`TimedCodec`].
pub struct TimedEncoder<T>(Arc<CodecTime>, PhantomData<fn(T)>);
/// The decoding half of [`TimedCodec`].
pub struct TimedDecoder<U>(Arc<CodecTime>, PhantomData<fn() -> U>);

impl<T: Message + Send + 'static, U: Message + Default + Send + 'static> Codec
    for TimedCodec<T, U>
{
    type Encode = T;
    type Decode = U;
    type Encoder = TimedEncoder<T>;
    type Decoder = TimedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        TimedEncoder(self.time.clone(), PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        TimedDecoder(self.time.clone(), PhantomData)
    }
}

impl<T: Message> Encoder for TimedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let start = Instant::now();
        item.encode(buf)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.0
            .encode_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Relaxed);
        Ok(())
    }
}

impl<U: Message + Default> Decoder for TimedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let start = Instant::now();
        let item = U::decode(buf).map_err(|e| Status::internal(e.to_string()))?;
        self.0
            .decode_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Relaxed);
        Ok(Some(item))
    }
}

/// A gRPC client over one or more multiplexed HTTP/2 connections; clones share them.
#[derive(Clone)]
pub struct GrpcClient {
    channels: Arc<Vec<Channel>>,
    next: Arc<AtomicUsize>,
}

fn status_error(status: Status) -> anyhow::Error {
    anyhow!("gRPC {:?}: {}", status.code(), status.message())
}

impl GrpcClient {
    /// Opens `endpoint.connections` HTTP/2 connections (at least one).
    pub async fn connect(endpoint: &Endpoint, counter: Arc<WireCounter>) -> anyhow::Result<Self> {
        let mut channels = Vec::new();
        for _ in 0..endpoint.connections.max(1) {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.url.clone())
                .with_context(|| format!("bad URL {}", endpoint.url))?
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector(CountingConnector::new(counter.clone()))
                .await
                .with_context(|| format!("cannot connect to {}", endpoint.url))?;
            channels.push(channel);
        }
        Ok(Self {
            channels: Arc::new(channels),
            next: Arc::default(),
        })
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Relaxed) % self.channels.len();
        self.channels[i].clone()
    }

    fn service(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::new(self.channel())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    fn grpc(&self) -> tonic::client::Grpc<Channel> {
        tonic::client::Grpc::new(self.channel())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// Reads the model's signature from ModelMetadata and ModelConfig.
    pub async fn model_info(&self, name: &str, version: &str) -> anyhow::Result<ModelInfo> {
        let mut service = self.service();
        let request = ModelMetadataRequest {
            name: name.into(),
            version: version.into(),
        };
        let metadata = service
            .model_metadata(request)
            .await
            .map_err(status_error)?
            .into_inner();
        let request = ModelConfigRequest {
            name: name.into(),
            version: version.into(),
        };
        let config = service
            .model_config(request)
            .await
            .map_err(status_error)?
            .into_inner()
            .config
            .unwrap_or_default();
        let max_batch_size = config.max_batch_size as i64;
        let strip = |t: &nereid_proto::inference::model_metadata_response::TensorMetadata| {
            TensorInfo::from_metadata(&t.name, &t.datatype, &t.shape, max_batch_size > 0)
        };
        Ok(ModelInfo {
            name: name.into(),
            version: version.into(),
            max_batch_size,
            decoupled: config.model_transaction_policy.is_some_and(|p| p.decoupled),
            inputs: metadata.inputs.iter().map(strip).collect(),
            outputs: metadata.outputs.iter().map(strip).collect(),
        })
    }

    /// Reads the model's statistics (summed over versions when none is named).
    pub async fn statistics(&self, name: &str, version: &str) -> anyhow::Result<ServerStats> {
        let request = ModelStatisticsRequest {
            name: name.into(),
            version: version.into(),
        };
        let response = self
            .service()
            .model_statistics(request)
            .await
            .map_err(status_error)?
            .into_inner();
        Ok(ServerStats::sum_proto(&response.model_stats))
    }

    /// One unary ModelInfer.
    pub async fn infer(&self, model: &ModelInfo, inputs: &InputSet) -> anyhow::Result<CallTiming> {
        let mut grpc = self.grpc();
        grpc.ready()
            .await
            .map_err(|e| anyhow!("gRPC connection: {e}"))?;
        let time = Arc::new(CodecTime::default());
        let start = Instant::now();
        let request = grpc_request(model, inputs);
        let build = start.elapsed();
        let path = http::uri::PathAndQuery::from_static(INFER_PATH);
        let codec = TimedCodec::<ModelInferRequest, ModelInferResponse>::new(time.clone());
        let response = grpc
            .unary(tonic::Request::new(request), path, codec)
            .await
            .map_err(status_error)?;
        let read = Instant::now();
        let decoded = decode_grpc_response(response.get_ref())?;
        if decoded.outputs.is_empty() && !model.outputs.is_empty() {
            bail!("response without outputs");
        }
        let (encode, decode) = time.take();
        Ok(CallTiming {
            send: build + encode,
            recv: decode + read.elapsed(),
        })
    }

    /// Opens a ModelStreamInfer stream for one request at a time.
    pub async fn stream(&self) -> anyhow::Result<GrpcStream> {
        let mut grpc = self.grpc();
        grpc.ready()
            .await
            .map_err(|e| anyhow!("gRPC connection: {e}"))?;
        let time = Arc::new(CodecTime::default());
        let (tx, rx) = mpsc::channel::<ModelInferRequest>(4);
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
        let path = http::uri::PathAndQuery::from_static(STREAM_PATH);
        let codec = TimedCodec::<ModelInferRequest, ModelStreamInferResponse>::new(time.clone());
        let responses = grpc
            .streaming(tonic::Request::new(requests), path, codec)
            .await
            .map_err(status_error)?;
        Ok(GrpcStream {
            tx,
            responses: responses.into_inner(),
            time,
            next_id: 0,
        })
    }
}

/// A bidirectional ModelStreamInfer stream with one request in flight at a time.
pub struct GrpcStream {
    tx: mpsc::Sender<ModelInferRequest>,
    responses: Streaming<ModelStreamInferResponse>,
    time: Arc<CodecTime>,
    next_id: u64,
}

impl GrpcStream {
    /// Sends one request and reads its responses up to the final one; returns the
    /// timing and how many responses came.
    pub async fn infer(
        &mut self,
        model: &ModelInfo,
        inputs: &InputSet,
    ) -> anyhow::Result<(CallTiming, usize)> {
        let start = Instant::now();
        let mut request = grpc_request(model, inputs);
        self.next_id += 1;
        request.id = self.next_id.to_string();
        if model.decoupled {
            let yes = InferParameter {
                parameter_choice: Some(ParameterChoice::BoolParam(true)),
            };
            request
                .parameters
                .insert("triton_enable_empty_final_response".into(), yes);
        }
        let build = start.elapsed();
        self.tx
            .send(request)
            .await
            .map_err(|_| anyhow!("the stream closed"))?;
        let mut read = Duration::ZERO;
        let mut responses = 0;
        loop {
            let message = self.responses.message().await.map_err(status_error)?;
            let message = message.ok_or_else(|| anyhow!("the server ended the stream"))?;
            if !message.error_message.is_empty() {
                bail!("stream error: {}", message.error_message);
            }
            let t = Instant::now();
            let response = message.infer_response.unwrap_or_default();
            let decoded = decode_grpc_response(&response)?;
            read += t.elapsed();
            responses += 1;
            if !model.decoupled || decoded.is_final {
                break;
            }
        }
        let (encode, decode) = self.time.take();
        Ok((
            CallTiming {
                send: build + encode,
                recv: read + decode,
            },
            responses,
        ))
    }
}
