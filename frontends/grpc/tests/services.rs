//! What shares the port with the inference service: health (Check and Watch), reflection
//! (v1 and v1alpha), gRPC-Web over HTTP/1.1 with CORS, and a graceful shutdown that is not
//! held up by open streams.

mod common;

use std::time::Duration;

use common::TestServer;
use prost::Message;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test]
async fn health_check_follows_server_and_model_readiness() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "",
        "inference.GRPCInferenceService",
        "simple",
        "repeat_int32",
    ] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    let err = health.check(check("nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("'nope'"));
}

#[tokio::test]
async fn health_watch_reports_and_ends_at_shutdown() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut unknown = health.watch(check("nope")).await.unwrap().into_inner();
    assert_eq!(
        unknown.message().await.unwrap().unwrap().status,
        ServingStatus::ServiceUnknown as i32
    );
    drop(unknown);

    // A stream left open by its client must not hold the shutdown up either.
    let (_tx, rx) = tokio::sync::mpsc::channel::<nereid_proto::ModelInferRequest>(1);
    let mut infer = server.raw().await;
    let mut open_stream = infer
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let stopped = tokio::spawn(server.stop());
    let last = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(last.status, ServingStatus::NotServing as i32);
    assert!(
        watch.message().await.unwrap().is_none(),
        "the watch ends at shutdown"
    );
    assert!(
        open_stream.message().await.unwrap().is_none(),
        "the idle stream ends at shutdown"
    );
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn reflection_lists_every_service_in_both_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;
    let want = [
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ];

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let requests = vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "inference.ModelInferRequest".into(),
                ),
            ),
        },
    ];
    let mut answers = client
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for w in want {
        assert!(names.contains(&w), "{w} missing from {names:?}");
    }
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a file descriptor")
    };
    assert!(!files.file_descriptor_proto.is_empty());

    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "inference.GRPCInferenceService"));
}

#[tokio::test]
async fn grpc_web_over_http1_with_cors() {
    let server = TestServer::start().await;
    let request = nereid_grpc::convert::request_to_wire(common::simple_request(1)).encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(request.len() as u32).to_be_bytes());
    framed.extend_from_slice(&request);
    let head = format!(
        "POST /inference.GRPCInferenceService/ModelInfer HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nOrigin: http://example.com\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        framed.len()
    );
    let (head, body) = common::http1(server.addr, &head, &framed).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/grpc-web+proto"),
        "{head}"
    );
    assert!(
        lower.contains("access-control-allow-origin: http://example.com"),
        "{head}"
    );

    // A data frame with the response, then a trailer frame with grpc-status 0.
    assert_eq!(body[0], 0);
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let resp = nereid_proto::ModelInferResponse::decode(&body[5..5 + len]).unwrap();
    assert_eq!(resp.outputs[0].name, "OUTPUT0");
    let trailers = &body[5 + len..];
    assert_eq!(trailers[0], 0x80);
    let trailers = String::from_utf8_lossy(&trailers[5..]).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // The browser's CORS preflight.
    let preflight = format!(
        "OPTIONS /inference.GRPCInferenceService/ModelInfer HTTP/1.1\r\nHost: {}\r\n\
         Origin: http://example.com\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type,x-grpc-web,authorization\r\n\
         Connection: close\r\n\r\n",
        server.addr
    );
    let (head, _) = common::http1(server.addr, &preflight, &[]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("access-control-allow-origin: http://example.com"),
        "{head}"
    );
    // Named, not `*`: a wildcard does not cover Authorization in every browser.
    assert!(
        head.contains("access-control-allow-headers: content-type,x-grpc-web,authorization"),
        "{head}"
    );
}
