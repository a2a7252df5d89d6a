//! Assembles the gRPC server: the inference service, health, reflection, gRPC-Web and
//! CORS on one port, with TLS, keepalive, compression and message limits from the flags.

use std::future::Future;

use anyhow::Context;
use nereid_engine::Engine;
use nereid_kserve::Restrictions;
use nereid_proto::GrpcInferenceServiceServer;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::header::HeaderName;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::pb::health_server::HealthServer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::args::CompressionLevel;
use crate::deadline::DeadlineLayer;
use crate::guard::Guarded;
use crate::health::HealthService;
use crate::service::InferenceService;
use crate::stop::{self, Stop};
use crate::GrpcArgs;

/// HTTP/2 streams (calls) one connection may have open at once; a client past it waits
/// (its HTTP/2 stack queues the call) instead of the server holding unbounded state.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Largest header block (metadata) of one call, in bytes.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 << 10;

/// Headers a browser's gRPC-Web client must be allowed to read from a cross-origin answer.
const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Serves gRPC on `listener` until `shutdown` completes, then stops accepting, lets open
/// calls finish (streams stop taking new requests) and returns. [`server`] and then its
/// future, in one call.
pub async fn serve(
    engine: Engine,
    listener: tokio::net::TcpListener,
    args: GrpcArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    server(engine, listener, args, shutdown)?.await
}

/// Builds the gRPC server on `listener` and returns the future that runs it until
/// `shutdown` completes. Everything that can be wrong with the configuration (TLS files,
/// certificates) fails here, before the server is announced; the future fails only if
/// serving itself does.
///
/// One port carries `inference.GRPCInferenceService`, `grpc.health.v1.Health`, server
/// reflection v1 and v1alpha, and gRPC-Web (HTTP/1.1 and HTTP/2, with CORS) for browsers.
/// The listener may be bound to port 0: the caller knows the port it got.
pub fn server(
    engine: Engine,
    listener: tokio::net::TcpListener,
    args: GrpcArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + Send> {
    let (stop, signal) = stop::split(shutdown);
    let builder = Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .http2_keepalive_interval(args.keepalive_interval())
        .http2_keepalive_timeout(Some(std::time::Duration::from_millis(
            args.grpc_keepalive_timeout,
        )))
        // Large tensors: let hyper grow the flow-control windows with the link's
        // bandwidth-delay product instead of stalling on the 1 MiB default.
        .http2_adaptive_window(Some(true));
    let tls = crate::tls::server_tls(&args)?;
    let mut router = builder
        .layer(cors())
        .layer(tonic_web::GrpcWebLayer::new())
        // Innermost, so gRPC-Web translates its DEADLINE_EXCEEDED answers too.
        .layer(DeadlineLayer)
        .add_service(inference_server(engine.clone(), &args, stop.clone())?)
        .add_service(HealthServer::new(HealthService::with_stop(engine, stop)));
    let (v1, v1alpha) = reflection()?;
    router = router.add_service(v1).add_service(v1alpha);
    Ok(async move {
        let served = match tls {
            None => {
                // Nagle's algorithm would hold small responses back for a delayed ACK.
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            Some(tls) => {
                // Ends once the server drops its connections' `ServerTls`.
                let _reloading = tls.reload_on_change();
                let incoming = crate::tls::incoming(listener, tls);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        };
        served.context("the gRPC server failed")
    })
}

/// The inference service as tonic serves it: gzip or deflate in, gzip out when configured,
/// message limits, the API keys and the restricted groups when set.
fn inference_server(
    engine: Engine,
    args: &GrpcArgs,
    stop: Stop,
) -> anyhow::Result<Guarded<GrpcInferenceServiceServer<InferenceService>>> {
    let mut server = GrpcInferenceServiceServer::new(InferenceService::for_server(
        engine,
        stop,
        args.access_log,
    ))
    .accept_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Deflate)
    .max_decoding_message_size(args.grpc_max_message_size)
    .max_encoding_message_size(args.grpc_max_message_size);
    if args.grpc_infer_response_compression_level != CompressionLevel::None {
        server = server.send_compressed(CompressionEncoding::Gzip);
    }
    let restrictions: Restrictions = args.grpc_restricted_protocol.iter().cloned().collect();
    restrictions
        .validate()
        .map_err(anyhow::Error::msg)
        .context("--grpc-restricted-protocol")?;
    Ok(Guarded {
        inner: server,
        keys: args.api_keys.clone(),
        restrictions,
        access_log: args.access_log,
    })
}

/// Reflection over the inference and health schemas, in both protocol versions (grpcurl
/// asks v1 first, older tools only know v1alpha).
fn reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(nereid_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .context("cannot build gRPC reflection (v1)")?;
    let v1alpha = builder()
        .build_v1alpha()
        .context("cannot build gRPC reflection (v1alpha)")?;
    Ok((v1, v1alpha))
}

/// CORS for gRPC-Web from any origin: the server holds no cookies or ambient credentials,
/// so mirroring the origin grants nothing a direct client could not do anyway.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([
            tonic::codegen::http::Method::POST,
            tonic::codegen::http::Method::OPTIONS,
        ])
        // Mirrored rather than `*`: the wildcard does not cover `Authorization` (the Fetch
        // standard), so browsers other than Chromium would refuse a call with an API key.
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(std::time::Duration::from_secs(24 * 60 * 60))
}
