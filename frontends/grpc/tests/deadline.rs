//! `grpc-timeout` as the engine deadline, and unary cancellation: a request whose client
//! gave up is never computed. The `sleep` test model holds its single instance so that
//! later requests wait in the queue.

mod common;

use std::time::Duration;

use common::{sleep_request, TestServer};
use nereid_grpc::convert::request_to_wire;
use tonic::Code;

#[tokio::test]
async fn a_deadline_shorter_than_the_queue_is_deadline_exceeded_and_never_computed() {
    let server = TestServer::start().await;
    let client = server.raw().await;
    let mut busy = client.clone();
    let holder = tokio::spawn(async move { busy.model_infer(request_to_wire(sleep_request(700))).await });
    tokio::time::sleep(Duration::from_millis(150)).await; // the holder is computing now

    let mut req = tonic::Request::new(request_to_wire(sleep_request(1)));
    req.set_timeout(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let err = client.clone().model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(started.elapsed() < Duration::from_millis(400), "answered after {:?}", started.elapsed());

    holder.await.unwrap().unwrap();
    assert!(server.wait_idle(Duration::from_secs(2)).await);
    assert_eq!(server.executions("sleep"), 1, "the timed-out request must not run");
    let stats = server.engine.model_statistics(Some("sleep"), None).unwrap();
    assert_eq!(stats[0].inference_stats.fail.count, 1);
}

#[tokio::test]
async fn a_deadline_already_past_is_deadline_exceeded() {
    let server = TestServer::start().await;
    let mut client = server.raw().await;
    let mut req = tonic::Request::new(request_to_wire(common::simple_request(1)));
    req.set_timeout(Duration::from_nanos(1));
    let err = client.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());

    // The typed client sends InferRequest.deadline as grpc-timeout.
    let typed = server.client().await;
    let mut req = common::simple_request(1);
    req.deadline = Some(std::time::Instant::now());
    let err = typed.infer(req).await.unwrap_err();
    assert!(matches!(err.to_engine_error(), nereid_engine::EngineError::DeadlineExceeded(_)), "{err}");

    let mut req = common::simple_request(1);
    req.deadline = Some(std::time::Instant::now() + Duration::from_secs(10));
    typed.infer(req).await.unwrap();
}

#[tokio::test]
async fn a_dropped_call_leaves_the_queue_without_running() {
    let server = TestServer::start().await;
    let client = server.raw().await;
    let mut busy = client.clone();
    let holder = tokio::spawn(async move { busy.model_infer(request_to_wire(sleep_request(700))).await });
    tokio::time::sleep(Duration::from_millis(150)).await;

    // The client gives up on the queued call: dropping its future resets the HTTP/2 stream.
    let mut waiting = client.clone();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), waiting.model_infer(request_to_wire(sleep_request(1)))).await;
    assert!(gave_up.is_err(), "the call should still be queued");

    holder.await.unwrap().unwrap();
    assert!(server.wait_idle(Duration::from_secs(2)).await, "inflight stays at {}", server.engine.inflight());
    assert_eq!(server.executions("sleep"), 1, "the dropped request must not run");
}
