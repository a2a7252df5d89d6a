//! Decoupled models: how many requests an instance keeps live at once.

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nereid_engine::builtin::demo::{write_repository, REPEAT_INT32};
use nereid_engine::{
    BackendRegistry, DataType, Engine, EngineOptions, InferRequest, ModelControlMode, Tensor,
};

fn start(config: &str) -> (tempfile::TempDir, Engine) {
    start_limited(config, None)
}

fn start_limited(config: &str, max_inflight: Option<usize>) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    write_repository(dir.path(), [("repeat_int32", config)]).unwrap();
    let options = EngineOptions {
        repository: Some(dir.path().into()),
        control_mode: ModelControlMode::None,
        startup_models: Vec::new(),
        poll_interval: Duration::from_secs(1),
        strict_readiness: true,
        max_inflight,
        trace: Default::default(),
        response_cache: None,
    };
    let engine = Engine::start(options, BackendRegistry::with_builtins()).unwrap();
    (dir, engine)
}

/// `values` streamed back, waiting `delay_ms` before each.
fn repeat(values: &[i32], delay_ms: u32) -> InferRequest {
    let n = values.len() as i64;
    InferRequest::new(
        "repeat_int32",
        vec![
            Tensor::from_vec("IN", DataType::Int32, vec![n], values.to_vec()),
            Tensor::from_vec(
                "DELAY",
                DataType::Uint32,
                vec![n],
                vec![delay_ms * 1000; values.len()],
            ),
        ],
    )
}

/// Starts a long request, then a short one; returns whether the short one answered before
/// the long one finished.
async fn short_overtakes_long(engine: &Engine) -> bool {
    let mut long = engine.infer_stream(repeat(&[1, 2, 3, 4], 100)).unwrap();
    // The long request is live once its first response arrives.
    long.recv().await.unwrap().unwrap();
    let mut short = engine.infer_stream(repeat(&[9], 0)).unwrap();
    let mut long_done = false;
    loop {
        tokio::select! {
            biased;
            answer = short.recv() => {
                assert_eq!(answer.unwrap().unwrap().output("OUT").unwrap().to_vec::<i32>().unwrap(), vec![9]);
                // The instance sends the long request's final response before it admits the
                // short one, so whatever the long one sent first is already queued: read it
                // without waiting, since this task may have been scheduled late.
                let mut cx = Context::from_waker(Waker::noop());
                while !long_done {
                    match long.poll_recv(&mut cx) {
                        Poll::Ready(answer) => long_done = answer.unwrap().unwrap().is_final,
                        Poll::Pending => break,
                    }
                }
                return !long_done;
            }
            answer = long.recv(), if !long_done => {
                long_done = answer.unwrap().unwrap().is_final;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_request_per_instance_by_default() {
    let (_dir, engine) = start(REPEAT_INT32);
    assert!(
        !short_overtakes_long(&engine).await,
        "waits for the free slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sequences_lets_an_instance_interleave_requests() {
    let config = REPEAT_INT32.replace(
        "instance_group",
        "parameters [ { key: \"max_sequences\" value: { string_value: \"2\" } } ]\ninstance_group",
    );
    let (_dir, engine) = start(&config);
    assert!(
        short_overtakes_long(&engine).await,
        "admitted beside the long one"
    );
}

#[tokio::test]
async fn the_server_wide_limit_refuses_what_is_over_it_and_admits_again_once_below() {
    let (_dir, engine) = start_limited(REPEAT_INT32, Some(2));
    let mut first = engine.infer_stream(repeat(&[1, 2, 3], 50)).unwrap();
    let mut second = engine.infer_stream(repeat(&[4], 50)).unwrap();
    let refused = engine.infer_stream(repeat(&[7], 0)).unwrap_err();
    assert!(
        matches!(&refused, nereid_engine::EngineError::ResourceExhausted(m) if m.contains("2 requests")),
        "{refused}"
    );
    assert_eq!(engine.inflight(), 2, "a refused request is not counted");
    // Unary requests meet the same limit.
    let unary = InferRequest::new("nope", Vec::new());
    assert!(matches!(
        engine.infer(unary).await,
        Err(nereid_engine::EngineError::ResourceExhausted(_))
    ));
    for stream in [&mut second, &mut first] {
        while !stream.recv().await.unwrap().unwrap().is_final {}
    }
    let mut again = engine.infer_stream(repeat(&[7], 0)).unwrap();
    let out = again.recv().await.unwrap().unwrap();
    assert_eq!(out.output("OUT").unwrap().to_vec::<i32>().unwrap(), vec![7]);
}
