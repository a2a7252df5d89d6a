//! `grpc-timeout` as the engine deadline, and unary cancellation: a request whose client
//! gave up is never computed. The `sleep` test model holds its single instance so that
//! later requests wait in the queue.
//!
//! tonic's channel enforces `grpc-timeout` itself (answering CANCELLED "Timeout expired"
//! locally), so the server's own DEADLINE_EXCEEDED is checked through a raw gRPC-Web
//! client, which waits for whatever the server says.

mod common;

use std::time::{Duration, Instant};

use common::{grpc_web_infer, simple_request, sleep_request, TestServer};
use nereid_engine::EngineError;
use nereid_grpc::convert::request_to_wire;
use tonic::Code;

const DEADLINE_EXCEEDED: u32 = 4;

/// Starts a 700 ms `sleep` request and returns once it is computing.
async fn hold_the_instance(server: &TestServer) -> tokio::task::JoinHandle<()> {
    let mut client = server.raw().await;
    let holder = tokio::spawn(async move {
        client
            .model_infer(request_to_wire(sleep_request(700)))
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    holder
}

#[tokio::test]
async fn a_deadline_shorter_than_the_queue_is_deadline_exceeded_and_never_computed() {
    let server = TestServer::start().await;
    let holder = hold_the_instance(&server).await;

    let started = Instant::now();
    let (code, _) = grpc_web_infer(server.addr, sleep_request(1), "grpc-timeout: 100m\r\n").await;
    assert_eq!(code, DEADLINE_EXCEEDED);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "answered after {:?}",
        started.elapsed()
    );

    // Through tonic's channel: its own timer or the server's answer, whichever comes first.
    let mut req = tonic::Request::new(request_to_wire(sleep_request(1)));
    req.set_timeout(Duration::from_millis(100));
    let err = server.raw().await.model_infer(req).await.unwrap_err();
    assert!(
        err.code() == Code::DeadlineExceeded
            || (err.code() == Code::Cancelled && err.message() == "Timeout expired"),
        "{err:?}"
    );

    holder.await.unwrap();
    assert!(server.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(
        server.executions("sleep"),
        1,
        "the timed-out requests must not run"
    );
    let stats = server.engine.model_statistics(Some("sleep"), None).unwrap();
    assert_eq!(stats[0].inference_stats.fail.count, 2);
    assert_eq!(stats[0].inference_stats.success.count, 1);
}

#[tokio::test]
async fn a_deadline_already_past_is_deadline_exceeded() {
    let server = TestServer::start().await;
    let (code, _) = grpc_web_infer(server.addr, simple_request(1), "grpc-timeout: 1n\r\n").await;
    assert_eq!(code, DEADLINE_EXCEEDED);
    let (code, _) = grpc_web_infer(server.addr, simple_request(1), "grpc-timeout: 10S\r\n").await;
    assert_eq!(code, 0);

    // The typed client sends InferRequest.deadline as grpc-timeout.
    let typed = server.client().await;
    let mut req = simple_request(1);
    req.deadline = Some(Instant::now());
    let err = typed.infer(req).await.unwrap_err();
    assert!(
        matches!(err.to_engine_error(), EngineError::DeadlineExceeded(_)),
        "{err}"
    );
    let mut req = simple_request(1);
    req.deadline = Some(Instant::now() + Duration::from_secs(10));
    typed.infer(req).await.unwrap();
}

#[tokio::test]
async fn a_dropped_call_leaves_the_queue_without_running() {
    let server = TestServer::start().await;
    let holder = hold_the_instance(&server).await;

    // The client gives up on the queued call: dropping its future resets the HTTP/2 stream.
    let mut waiting = server.raw().await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        waiting.model_infer(request_to_wire(sleep_request(1))),
    )
    .await;
    assert!(gave_up.is_err(), "the call should still be queued");

    holder.await.unwrap();
    assert!(
        server.wait_idle(Duration::from_secs(2)).await,
        "inflight stays at {}",
        server.engine.inflight()
    );
    assert_eq!(
        server.executions("sleep"),
        1,
        "the dropped request must not run"
    );
}
