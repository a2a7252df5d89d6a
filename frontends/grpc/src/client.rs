//! A typed async client of `inference.GRPCInferenceService` (Nereid's or Triton's), used
//! by `nereid infer` and `nereid bench`. It speaks engine types: an [`InferRequest`] goes
//! out with raw contents (its tensor bytes shared, not copied) and an [`InferResponse`]
//! comes back.

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use nereid_engine::trace::{REQUEST_ID, TRACEPARENT};
use nereid_engine::{EngineError, InferRequest, InferResponse, ModelConfig, ModelMetadata, Origin};
use nereid_proto::inference::{
    ModelConfigRequest, ModelMetadataRequest, ModelReadyRequest, ServerLiveRequest,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
};
use nereid_proto::GrpcInferenceServiceClient;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::convert;

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached, or the address or TLS setup is wrong.
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// The address tried.
        url: String,
        /// Why.
        message: String,
    },
    /// A call failed with a gRPC status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// One request of a stream failed (the stream goes on).
    #[error("request '{id}' failed: {message}")]
    Stream {
        /// The failed request's id.
        id: String,
        /// The server's `error_message`.
        message: String,
    },
    /// The server's answer could not be decoded.
    #[error("bad response: {0}")]
    Decode(EngineError),
}

impl ClientError {
    /// The error as the engine's error type, so callers can match one set of variants.
    pub fn to_engine_error(&self) -> EngineError {
        match self {
            Self::Connect { .. } => EngineError::unavailable(self.to_string()),
            Self::Status(s) => crate::status::from_status(s),
            Self::Stream { message, .. } => EngineError::internal(message.clone()),
            Self::Decode(e) => e.clone(),
        }
    }
}

/// Result of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TLS (server CA, optionally a client identity for mutual TLS); `None` is plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// Largest message sent or received, in bytes.
    pub max_message_size: usize,
    /// Compress requests with gzip and accept gzip responses.
    pub gzip: bool,
    /// Time allowed to establish the connection.
    pub connect_timeout: Duration,
    /// An API key sent with every call as `authorization: Bearer <key>` (printable
    /// ASCII; a key that cannot be a header value is not sent).
    pub api_key: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            tls: None,
            max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
            gzip: false,
            connect_timeout: Duration::from_secs(10),
            api_key: None,
        }
    }
}

/// A connected client; cheap to clone (clones share one HTTP/2 connection).
#[derive(Debug, Clone)]
pub struct GrpcClient {
    inner: GrpcInferenceServiceClient<Channel>,
    authorization: Option<MetadataValue<Ascii>>,
}

impl GrpcClient {
    /// Connects in plaintext to `url` (`http://host:port`, or just `host:port`).
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connects with options; `host:port` gets `https://` when TLS is set, else `http://`.
    pub async fn connect_with(url: impl Into<String>, options: ClientOptions) -> Result<Self> {
        let mut url = url.into();
        if !url.contains("://") {
            url = format!(
                "{}://{url}",
                if options.tls.is_some() {
                    "https"
                } else {
                    "http"
                }
            );
        }
        let fail = |e: &(dyn std::error::Error + 'static)| ClientError::Connect {
            url: url.clone(),
            message: error_chain(e),
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| fail(&e))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = options.tls.clone() {
            endpoint = endpoint.tls_config(tls).map_err(|e| fail(&e))?;
        }
        let channel = endpoint.connect().await.map_err(|e| fail(&e))?;
        Ok(Self::from_channel(channel, &options))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel, options: &ClientOptions) -> Self {
        let mut inner = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(options.max_message_size)
            .max_encoding_message_size(options.max_message_size);
        if options.gzip {
            inner = inner
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        let authorization = options
            .api_key
            .as_ref()
            .and_then(|key| MetadataValue::try_from(format!("Bearer {key}")).ok());
        Self {
            inner,
            authorization,
        }
    }

    /// A call's request carrying this client's credentials, for RPCs through [`Self::raw`].
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    /// A call's request carrying this client's credentials and what `origin` says: its
    /// request id and trace context, as metadata.
    fn request_from<T>(&self, message: T, origin: &Origin) -> tonic::Request<T> {
        let mut request = self.request(message);
        let metadata = request.metadata_mut();
        if let Ok(id) = MetadataValue::try_from(origin.request_id.as_str()) {
            if !origin.request_id.is_empty() {
                metadata.insert(REQUEST_ID, id);
            }
        }
        if let Some(parent) = &origin.trace_parent {
            if let Ok(value) = MetadataValue::try_from(parent.to_string()) {
                metadata.insert(TRACEPARENT, value);
            }
        }
        request
    }

    /// The generated client, for RPCs this type does not wrap.
    pub fn raw(&self) -> GrpcInferenceServiceClient<Channel> {
        self.inner.clone()
    }

    /// Whether the server is live.
    pub async fn server_live(&self) -> Result<bool> {
        Ok(self
            .raw()
            .server_live(self.request(ServerLiveRequest {}))
            .await?
            .into_inner()
            .live)
    }

    /// Whether the server is ready.
    pub async fn server_ready(&self) -> Result<bool> {
        Ok(self
            .raw()
            .server_ready(self.request(ServerReadyRequest {}))
            .await?
            .into_inner()
            .ready)
    }

    /// Whether a model (newest or given version) is ready.
    pub async fn model_ready(&self, name: &str, version: Option<i64>) -> Result<bool> {
        let req = ModelReadyRequest {
            name: name.into(),
            version: version_string(version),
        };
        Ok(self
            .raw()
            .model_ready(self.request(req))
            .await?
            .into_inner()
            .ready)
    }

    /// Server name, version and extensions.
    pub async fn server_metadata(&self) -> Result<ServerMetadataResponse> {
        Ok(self
            .raw()
            .server_metadata(self.request(ServerMetadataRequest {}))
            .await?
            .into_inner())
    }

    /// A model's metadata.
    pub async fn model_metadata(&self, name: &str, version: Option<i64>) -> Result<ModelMetadata> {
        let req = ModelMetadataRequest {
            name: name.into(),
            version: version_string(version),
        };
        Ok(convert::metadata_from_wire(
            self.raw()
                .model_metadata(self.request(req))
                .await?
                .into_inner(),
        ))
    }

    /// A model's configuration.
    pub async fn model_config(&self, name: &str, version: Option<i64>) -> Result<ModelConfig> {
        let req = ModelConfigRequest {
            name: name.into(),
            version: version_string(version),
        };
        let resp = self
            .raw()
            .model_config(self.request(req))
            .await?
            .into_inner();
        resp.config.ok_or_else(|| {
            ClientError::Decode(EngineError::internal("the server sent no model config"))
        })
    }

    /// Runs one request. Its `deadline`, if any, travels as `grpc-timeout`, its request id
    /// and trace context as `x-request-id` and `traceparent`.
    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse> {
        let deadline = request.deadline;
        let origin = request.origin.clone();
        let mut call = self.request_from(convert::request_to_wire(request), &origin);
        if let Some(d) = deadline {
            call.set_timeout(d.saturating_duration_since(Instant::now()));
        }
        let resp = self
            .raw()
            .model_infer(call)
            .await
            .map_err(|status| match deadline {
                // tonic's channel enforces grpc-timeout itself and reports its own expiry as
                // CANCELLED "Timeout expired"; to the caller that is the deadline passing.
                Some(_)
                    if status.code() == tonic::Code::Cancelled
                        && status.message() == "Timeout expired" =>
                {
                    tonic::Status::deadline_exceeded(
                        "the request's deadline passed before its response arrived",
                    )
                }
                _ => status,
            })?;
        convert::response_from_wire(resp.into_inner()).map_err(ClientError::Decode)
    }

    /// Runs a stream of requests over one `ModelStreamInfer` call and yields every response
    /// as it arrives (many per request for decoupled models; [`InferResponse::is_final`]
    /// marks each request's last). A failed request yields [`ClientError::Stream`] and the
    /// stream goes on; a failed call yields [`ClientError::Status`] and ends it. Dropping
    /// the returned stream cancels the call, which carries `origin`'s request id and trace
    /// context.
    pub async fn stream_infer<S>(
        &self,
        origin: &Origin,
        requests: S,
    ) -> Result<impl Stream<Item = Result<InferResponse>> + Send + 'static>
    where
        S: Stream<Item = InferRequest> + Send + 'static,
    {
        let outbound = requests.map(convert::request_to_wire);
        let inbound = self
            .raw()
            .model_stream_infer(self.request_from(outbound, origin))
            .await?
            .into_inner();
        Ok(inbound.map(|item| {
            let msg = item?;
            if !msg.error_message.is_empty() {
                let id = msg.infer_response.map(|r| r.id).unwrap_or_default();
                return Err(ClientError::Stream {
                    id,
                    message: msg.error_message,
                });
            }
            let resp = msg.infer_response.ok_or_else(|| {
                ClientError::Decode(EngineError::internal(
                    "stream response without infer_response",
                ))
            })?;
            convert::response_from_wire(resp).map_err(ClientError::Decode)
        }))
    }
}

fn version_string(version: Option<i64>) -> String {
    version.map(|v| v.to_string()).unwrap_or_default()
}

/// An error with its sources, since tonic's transport errors say little at the top.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
