//! Model control: a model that fails to load is UNAVAILABLE with its reason while the others
//! serve; explicit load/unload; polling picks up changes and keeps the old model when a
//! reload fails.

use std::time::{Duration, Instant};

use nereid_engine::builtin::demo::{write_repository, IDENTITY_FP32, SIMPLE};
use nereid_engine::{
    BackendRegistry, DataType, Engine, EngineError, EngineOptions, InferRequest, ModelControlMode,
    Tensor,
};

fn start(dir: &std::path::Path, mode: ModelControlMode, load: &[&str]) -> Engine {
    let options = EngineOptions {
        repository: Some(dir.into()),
        control_mode: mode,
        startup_models: load.iter().map(|s| s.to_string()).collect(),
        poll_interval: Duration::from_millis(100),
        strict_readiness: true,
        max_inflight: None,
        trace: Default::default(),
        response_cache: None,
    };
    Engine::start(options, BackendRegistry::with_builtins()).unwrap()
}

fn identity_request() -> InferRequest {
    InferRequest::new(
        "identity_fp32",
        vec![Tensor::from_vec(
            "INPUT0",
            DataType::Fp32,
            vec![1, 3],
            vec![1f32, 2., 3.],
        )],
    )
}

fn state(engine: &Engine, name: &str) -> (String, String) {
    let row = engine
        .repository_index(false)
        .into_iter()
        .find(|r| r.name == name)
        .unwrap();
    (row.state, row.reason)
}

#[tokio::test]
async fn broken_model_is_unavailable_and_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    write_repository(
        dir.path(),
        [
            ("identity_fp32", IDENTITY_FP32),
            ("broken", "name: \"broken\" max_batch_size: ["),
        ],
    )
    .unwrap();
    write_repository(
        dir.path(),
        [(
            "nobackend",
            "output { name: \"Y\" data_type: TYPE_FP32 dims: [1] }",
        )],
    )
    .unwrap();
    let engine = start(dir.path(), ModelControlMode::None, &[]);
    let (s, reason) = state(&engine, "broken");
    assert_eq!(s, "UNAVAILABLE");
    assert!(reason.contains("config.pbtxt"), "{reason}");
    let (_, reason) = state(&engine, "nobackend");
    assert!(reason.contains("no backend"), "{reason}");
    assert!(!engine.is_ready(), "strict readiness with a broken model");
    assert!(engine.model_ready("identity_fp32", None));
    let err = engine
        .infer(InferRequest::new("broken", vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Unavailable(m) if m.contains("not ready")),
        "{err:?}"
    );
    let err = engine
        .infer(InferRequest::new("nope", vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)));
    let ok = engine.infer(identity_request()).await.unwrap();
    assert_eq!(
        ok.output("OUTPUT0").unwrap().to_vec::<f32>().unwrap(),
        vec![1., 2., 3.]
    );
    // Load API is refused outside explicit mode.
    assert!(matches!(
        engine.load_model("identity_fp32", None).await,
        Err(EngineError::Unavailable(_))
    ));
}

#[tokio::test]
async fn explicit_mode_loads_and_unloads_on_request() {
    let dir = tempfile::tempdir().unwrap();
    write_repository(
        dir.path(),
        [("identity_fp32", IDENTITY_FP32), ("simple", SIMPLE)],
    )
    .unwrap();
    let engine = start(dir.path(), ModelControlMode::Explicit, &["simple"]);
    assert!(engine.model_ready("simple", None));
    assert!(!engine.model_ready("identity_fp32", None));
    assert_eq!(
        state(&engine, "identity_fp32"),
        ("UNAVAILABLE".into(), "unloaded".into())
    );
    assert!(engine.is_ready(), "unloaded models do not block readiness");

    engine.load_model("identity_fp32", None).await.unwrap();
    engine.infer(identity_request()).await.unwrap();
    assert_eq!(state(&engine, "identity_fp32").0, "READY");

    engine.unload_model("identity_fp32").await.unwrap();
    assert!(!engine.model_ready("identity_fp32", None));
    assert!(engine.infer(identity_request()).await.is_err());
    let err = engine.load_model("missing", None).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::NotFound(m) if m.contains("missing")),
        "{err:?}"
    );

    // A config given with the load request overrides the file.
    let mut cfg = nereid_proto::parse_model_config(IDENTITY_FP32).unwrap();
    cfg.max_batch_size = 2;
    engine.load_model("identity_fp32", Some(cfg)).await.unwrap();
    assert_eq!(
        engine
            .model_config("identity_fp32", None)
            .unwrap()
            .max_batch_size,
        2
    );
}

#[tokio::test]
async fn poll_mode_reloads_and_keeps_old_model_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    write_repository(dir.path(), [("identity_fp32", IDENTITY_FP32)]).unwrap();
    let engine = start(dir.path(), ModelControlMode::Poll, &[]);
    assert!(engine.model_ready("identity_fp32", None));

    let wait_for = |cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "poll did not pick up the change");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // A new model appears.
    write_repository(dir.path(), [("simple", SIMPLE)]).unwrap();
    wait_for(&|| engine.model_ready("simple", None));

    // A broken edit keeps the old version serving.
    std::fs::write(
        dir.path().join("identity_fp32/config.pbtxt"),
        "name: \"identity_fp32\" bogus_field: 1",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(600)); // several polls
    assert!(engine.model_ready("identity_fp32", None));
    engine.infer(identity_request()).await.unwrap();

    // A removed model is unloaded.
    std::fs::remove_dir_all(dir.path().join("simple")).unwrap();
    wait_for(&|| !engine.model_ready("simple", None));
}

#[tokio::test]
async fn a_failed_load_request_leaves_strict_readiness_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_repository(
        dir.path(),
        [
            ("simple", SIMPLE),
            ("broken", "name: \"broken\" max_batch_size: ["),
        ],
    )
    .unwrap();
    let engine = start(dir.path(), ModelControlMode::Explicit, &["simple"]);
    assert!(engine.is_ready());
    assert!(engine.load_model("broken", None).await.is_err());
    // The client was told; the model is UNAVAILABLE with the reason, the server ready.
    let (s, reason) = state(&engine, "broken");
    assert_eq!(s, "UNAVAILABLE");
    assert!(reason.contains("config.pbtxt"), "{reason}");
    assert!(
        engine.is_ready(),
        "a refused load request does not unready the server"
    );

    // A model the server itself was told to load at startup still counts.
    let engine = start(
        dir.path(),
        ModelControlMode::Explicit,
        &["simple", "broken"],
    );
    assert!(!engine.is_ready(), "a startup model that failed to load");
}
