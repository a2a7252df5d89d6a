//! `execution_timeout_ms`: a batch that computes past the bound fails with an error naming
//! the model and the parameter, the instance is replaced, and the model keeps serving (the
//! built-in `sleep` model holds its instance for as long as asked).

use std::time::{Duration, Instant};

use nereid_engine::{
    BackendRegistry, DataType, Engine, EngineError, EngineOptions, InferRequest, Tensor,
};

/// A sleep model with the given instance count and batch size, and extra config text.
fn sleep_model(instances: usize, max_batch_size: usize, extra: &str) -> String {
    format!(
        r#"name: "sleep"
backend: "sleep"
max_batch_size: {max_batch_size}
input [ {{ name: "MS" data_type: TYPE_UINT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_UINT32 dims: [ 1 ] }} ]
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters {{ key: "execution_timeout_ms" value: {{ string_value: "300" }} }}
{extra}
"#
    )
}

fn start(config: &str) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    nereid_engine::builtin::demo::write_repository(dir.path(), [("sleep", config)]).unwrap();
    let options = EngineOptions {
        repository: Some(dir.path().into()),
        control_mode: nereid_engine::ModelControlMode::Explicit,
        startup_models: vec!["sleep".into()],
        ..Default::default()
    };
    let engine = Engine::start(options, BackendRegistry::with_builtins()).unwrap();
    assert!(
        engine.model_ready("sleep", None),
        "{:?}",
        engine.repository_index(false)
    );
    (engine, dir)
}

fn sleep_for(ms: u32) -> InferRequest {
    InferRequest::new(
        "sleep",
        vec![Tensor::from_vec("MS", DataType::Uint32, vec![1], vec![ms])],
    )
}

/// The same for a batching model: one batch element.
fn sleep_batched(ms: u32) -> InferRequest {
    InferRequest::new(
        "sleep",
        vec![Tensor::from_vec(
            "MS",
            DataType::Uint32,
            vec![1, 1],
            vec![ms],
        )],
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The timeout error: INTERNAL (the model failed), naming the model and the parameter.
fn assert_timed_out(outcome: Result<nereid_engine::InferResponse, EngineError>) {
    match outcome {
        Err(EngineError::Internal(message)) => {
            assert!(message.contains("'sleep'"), "{message}");
            assert!(message.contains("execution_timeout_ms"), "{message}");
            assert!(message.contains("300 ms"), "{message}");
        }
        other => panic!("expected the execution timeout error, got {other:?}"),
    }
}

#[test]
fn an_overrun_fails_its_batch_and_a_fresh_instance_serves_the_next_request() {
    let (engine, _dir) = start(&sleep_model(1, 0, ""));
    runtime().block_on(async {
        let started = Instant::now();
        assert_timed_out(engine.infer(sleep_for(10_000)).await);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "answered after {waited:?}"
        );
        // The stuck thread still sleeps; the replacement answers at once.
        let started = Instant::now();
        let response = engine
            .infer(sleep_for(1))
            .await
            .expect("the replacement serves");
        assert_eq!(
            response.output("OUT").unwrap().to_vec::<u32>().unwrap(),
            vec![1]
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(engine.model_ready("sleep", None));
        let stats = engine.model_statistics(Some("sleep"), None).unwrap();
        let inference = &stats[0].inference_stats;
        assert_eq!(inference.fail.count, 1, "{stats:?}");
        assert_eq!(inference.success.count, 1, "{stats:?}");
    });
}

#[test]
fn requests_queued_behind_an_overrun_are_computed_by_the_replacement() {
    let (engine, _dir) = start(&sleep_model(1, 0, ""));
    runtime().block_on(async {
        let stuck = tokio::spawn({
            let engine = engine.clone();
            async move { engine.infer(sleep_for(10_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting: Vec<_> = (0..4)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.infer(sleep_for(5)).await })
            })
            .collect();
        assert_timed_out(stuck.await.unwrap());
        for handle in waiting {
            handle
                .await
                .unwrap()
                .expect("a queued request is served after the overrun");
        }
    });
}

#[test]
fn preserved_ordering_releases_the_batches_behind_an_overrun() {
    let config = sleep_model(2, 4, "dynamic_batching { preserve_ordering: true }");
    let (engine, _dir) = start(&config);
    runtime().block_on(async {
        let stuck = tokio::spawn({
            let engine = engine.clone();
            async move { engine.infer(sleep_batched(10_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Dispatched after the stuck batch to the other instance: held for ordering until
        // the watchdog answers the stuck one, then released.
        let quick = engine.infer(sleep_batched(1)).await;
        assert!(quick.is_ok(), "{quick:?}");
        assert_timed_out(stuck.await.unwrap());
    });
}

#[test]
fn unloading_does_not_wait_for_a_stuck_instance() {
    let (engine, _dir) = start(&sleep_model(1, 0, ""));
    runtime().block_on(async {
        let stuck = tokio::spawn({
            let engine = engine.clone();
            async move { engine.infer(sleep_for(20_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        engine.unload_model("sleep").await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "unload waited {:?}",
            started.elapsed()
        );
        assert_timed_out(stuck.await.unwrap());
    });
}
