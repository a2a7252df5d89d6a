//! Ensembles and the server's own limits: a request accepted before the server started
//! draining (or while it was under `--max-inflight`) finishes every step, though each step
//! is a request of its own.

use std::time::Duration;

use nereid_engine::builtin::demo::{write_repository, SLEEP};
use nereid_engine::{
    BackendRegistry, DataType, Engine, EngineError, EngineOptions, InferRequest, Tensor,
};

/// Two `sleep` steps one after the other.
const TWO_NAPS: &str = r#"name: "two_naps"
platform: "ensemble"
max_batch_size: 0
input [ { name: "MS" data_type: TYPE_UINT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_UINT32 dims: [ 1 ] } ]
ensemble_scheduling { step [
  { model_name: "sleep" model_version: -1 input_map { key: "MS" value: "MS" } output_map { key: "OUT" value: "first" } },
  { model_name: "sleep" model_version: -1 input_map { key: "MS" value: "first" } output_map { key: "OUT" value: "OUT" } }
] }
"#;

fn engine(max_inflight: Option<usize>) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_repository(dir.path(), [("sleep", SLEEP), ("two_naps", TWO_NAPS)]).unwrap();
    let options = EngineOptions {
        repository: Some(dir.path().into()),
        max_inflight,
        ..Default::default()
    };
    let engine = Engine::start(options, BackendRegistry::with_builtins()).unwrap();
    (engine, dir)
}

fn naps(ms: u32) -> InferRequest {
    InferRequest::new(
        "two_naps",
        vec![Tensor::from_vec("MS", DataType::Uint32, vec![1], vec![ms])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ensemble_accepted_before_the_drain_runs_all_its_steps() {
    let (engine, _dir) = engine(None);
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.infer(naps(150)).await }
    });
    // The first step is computing when the drain starts; the second starts after it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let drained = tokio::spawn({
        let engine = engine.clone();
        async move { engine.drain(Duration::from_secs(10)).await }
    });
    let response = running
        .await
        .unwrap()
        .expect("the accepted ensemble finishes");
    assert_eq!(
        response.output("OUT").unwrap().to_vec::<u32>().unwrap(),
        [150]
    );
    assert!(drained.await.unwrap(), "the drain waited for it and ended");
    // A new request is refused.
    let refused = engine.infer(naps(1)).await.unwrap_err();
    assert!(matches!(refused, EngineError::Unavailable(_)), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_do_not_count_against_the_inflight_limit() {
    // One request in flight at most: the ensemble's own, not its steps.
    let (engine, _dir) = engine(Some(1));
    let response = engine
        .infer(naps(5))
        .await
        .expect("its steps are part of it");
    assert_eq!(
        response.output("OUT").unwrap().to_vec::<u32>().unwrap(),
        [5]
    );
    let busy = tokio::spawn({
        let engine = engine.clone();
        async move { engine.infer(naps(200)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = engine.infer(naps(1)).await.unwrap_err();
    assert!(
        matches!(second, EngineError::ResourceExhausted(_)),
        "{second}"
    );
    busy.await.unwrap().unwrap();
}
