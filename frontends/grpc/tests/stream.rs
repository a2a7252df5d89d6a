//! ModelStreamInfer: decoupled and plain models, many requests in flight, errors that keep
//! the stream open, and cancellation when the client goes away.

mod common;

use std::time::Duration;

use common::{repeat_request, simple_request, TestServer};
use futures::StreamExt;
use nereid_grpc::convert::{request_to_wire, FINAL_RESPONSE};
use nereid_proto::inference::infer_parameter::ParameterChoice;
use nereid_proto::{InferParameter, ModelInferRequest, ModelStreamInferResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn final_flag(msg: &ModelStreamInferResponse) -> Option<bool> {
    match msg
        .infer_response
        .as_ref()?
        .parameters
        .get(FINAL_RESPONSE)?
        .parameter_choice
    {
        Some(ParameterChoice::BoolParam(b)) => Some(b),
        _ => None,
    }
}

/// Opens a stream fed by the returned sender.
async fn open(
    server: &TestServer,
) -> (
    mpsc::Sender<ModelInferRequest>,
    tonic::Streaming<ModelStreamInferResponse>,
) {
    let (tx, rx) = mpsc::channel(16);
    let mut client = server.raw().await;
    let inbound = client
        .model_stream_infer(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, inbound)
}

async fn next(
    inbound: &mut tonic::Streaming<ModelStreamInferResponse>,
) -> ModelStreamInferResponse {
    tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("a response in time")
        .expect("no stream error")
        .expect("the stream is open")
}

#[tokio::test]
async fn decoupled_responses_stream_with_ids_and_final_flags() {
    let server = TestServer::start().await;
    let (tx, mut inbound) = open(&server).await;
    tx.send(request_to_wire(repeat_request(
        "r1",
        vec![10, 20, 30],
        None,
    )))
    .await
    .unwrap();
    for i in 0..3 {
        let msg = next(&mut inbound).await;
        assert_eq!(msg.error_message, "");
        let resp = msg.infer_response.as_ref().unwrap();
        assert_eq!(resp.id, "r1");
        assert_eq!(resp.model_name, "repeat_int32");
        let out = i32::from_le_bytes(resp.raw_output_contents[0][..4].try_into().unwrap());
        let idx = u32::from_le_bytes(resp.raw_output_contents[1][..4].try_into().unwrap());
        assert_eq!((out, idx), (10 * (i + 1), i as u32));
        assert_eq!(final_flag(&msg), Some(i == 2));
    }

    // A plain model answers exactly once, final, on the same stream.
    let mut req = request_to_wire(simple_request(1));
    req.id = "s1".into();
    tx.send(req).await.unwrap();
    let msg = next(&mut inbound).await;
    assert_eq!(msg.infer_response.as_ref().unwrap().id, "s1");
    assert_eq!(
        msg.infer_response
            .as_ref()
            .unwrap()
            .raw_output_contents
            .len(),
        2
    );
    assert_eq!(final_flag(&msg), Some(true));

    // An empty final response is sent only when asked for, as Triton does.
    tx.send(request_to_wire(repeat_request("empty", vec![], None)))
        .await
        .unwrap();
    let mut asked = request_to_wire(repeat_request("empty-asked", vec![], None));
    asked.parameters.insert(
        "triton_enable_empty_final_response".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::BoolParam(true)),
        },
    );
    tx.send(asked).await.unwrap();
    let msg = next(&mut inbound).await;
    assert_eq!(msg.infer_response.as_ref().unwrap().id, "empty-asked");
    assert!(msg.infer_response.as_ref().unwrap().outputs.is_empty());
    assert_eq!(final_flag(&msg), Some(true));

    drop(tx);
    assert!(
        inbound.message().await.unwrap().is_none(),
        "the stream ends after the client half-closes"
    );
    assert!(server.wait_idle(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn errors_come_back_in_band_and_the_stream_stays_open() {
    let server = TestServer::start().await;
    let (tx, mut inbound) = open(&server).await;
    let mut bad = request_to_wire(simple_request(1));
    bad.id = "bad".into();
    bad.inputs[0].datatype = "NOPE".into();
    tx.send(bad).await.unwrap();
    let msg = next(&mut inbound).await;
    assert!(
        msg.error_message.contains("'INPUT0'"),
        "{}",
        msg.error_message
    );
    assert_eq!(msg.infer_response.as_ref().unwrap().id, "bad");

    let mut unknown = request_to_wire(simple_request(1));
    unknown.model_name = "nope".into();
    unknown.id = "unknown".into();
    tx.send(unknown).await.unwrap();
    let msg = next(&mut inbound).await;
    assert!(
        msg.error_message
            .contains("Request for unknown model: 'nope' is not found"),
        "{}",
        msg.error_message
    );

    let mut good = request_to_wire(simple_request(2));
    good.id = "good".into();
    tx.send(good).await.unwrap();
    let msg = next(&mut inbound).await;
    assert_eq!(msg.error_message, "");
    assert_eq!(msg.infer_response.as_ref().unwrap().id, "good");
}

#[tokio::test]
async fn a_slow_request_does_not_hold_up_the_others() {
    let server = TestServer::start().await;
    let (tx, mut inbound) = open(&server).await;
    // Two responses 1.5 s apart, then quick requests behind it on the same stream. (The
    // fast ones go to another model: repeat_int32 runs one sequence at a time.)
    tx.send(request_to_wire(repeat_request(
        "slow",
        vec![1, 2],
        Some(vec![0, 1_500_000]),
    )))
    .await
    .unwrap();
    assert_eq!(next(&mut inbound).await.infer_response.unwrap().id, "slow");
    let started = std::time::Instant::now();
    for i in 0..3 {
        let mut fast = request_to_wire(simple_request(1));
        fast.id = format!("fast{i}");
        tx.send(fast).await.unwrap();
    }
    let mut fast = Vec::new();
    for _ in 0..3 {
        fast.push(next(&mut inbound).await.infer_response.unwrap().id);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "fast requests waited {:?}",
        started.elapsed()
    );
    fast.sort();
    assert_eq!(fast, vec!["fast0", "fast1", "fast2"]);
    let last = next(&mut inbound).await;
    assert_eq!(last.infer_response.as_ref().unwrap().id, "slow");
    assert_eq!(final_flag(&last), Some(true));
}

#[tokio::test]
async fn closing_the_stream_cancels_requests_in_flight() {
    let server = TestServer::start().await;
    let (tx, mut inbound) = open(&server).await;
    tx.send(request_to_wire(repeat_request(
        "long",
        vec![1, 2],
        Some(vec![0, 30_000_000]),
    )))
    .await
    .unwrap();
    assert_eq!(next(&mut inbound).await.infer_response.unwrap().id, "long");
    assert_eq!(server.engine.inflight(), 1);
    drop(inbound);
    drop(tx);
    assert!(
        server.wait_idle(Duration::from_secs(3)).await,
        "the engine still holds {} requests",
        server.engine.inflight()
    );
}

#[tokio::test]
async fn typed_client_streams() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let requests = futures::stream::iter(vec![repeat_request("a", vec![5, 6], None), {
        let mut r = simple_request(1);
        r.id = "b".into();
        r
    }]);
    let responses: Vec<_> = client
        .stream_infer(&Default::default(), requests)
        .await
        .unwrap()
        .collect()
        .await;
    let mut finals: Vec<(String, bool)> = responses
        .into_iter()
        .map(|r| r.unwrap())
        .map(|r| (r.id.clone(), r.is_final))
        .collect();
    finals.sort();
    assert_eq!(
        finals,
        vec![("a".into(), false), ("a".into(), true), ("b".into(), true)]
    );

    let bad = futures::stream::iter(vec![repeat_request("x", vec![1], None)]).map(|mut r| {
        r.model_name = "nope".into();
        r
    });
    let errors: Vec<_> = client
        .stream_infer(&Default::default(), bad)
        .await
        .unwrap()
        .collect()
        .await;
    match &errors[..] {
        [Err(nereid_grpc::client::ClientError::Stream { id, message })] => {
            assert_eq!(id, "x");
            assert!(message.contains("nope"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_call_deadline_bounds_the_whole_stream() {
    let server = TestServer::start().await;
    let (tx, rx) = mpsc::channel(4);
    let mut call = tonic::Request::new(ReceiverStream::new(rx));
    call.set_timeout(Duration::from_millis(300));
    let mut inbound = server
        .raw()
        .await
        .model_stream_infer(call)
        .await
        .unwrap()
        .into_inner();
    tx.send(request_to_wire(repeat_request(
        "slow",
        vec![1, 2],
        Some(vec![0, 5_000_000]),
    )))
    .await
    .unwrap();
    assert_eq!(next(&mut inbound).await.infer_response.unwrap().id, "slow");
    let ended = tokio::time::timeout(Duration::from_secs(3), inbound.message())
        .await
        .expect("the stream ends in time");
    assert_eq!(ended.unwrap_err().code(), tonic::Code::DeadlineExceeded);
    assert!(
        server.wait_idle(Duration::from_secs(2)).await,
        "the slow request is cancelled"
    );
}
