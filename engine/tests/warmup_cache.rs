//! Model warmup and the response cache against a recording fake model: what runs on which
//! instance before a model is ready, and which requests reach the model at all.

use std::path::Path;
use std::sync::Arc;

use nereid_engine::{
    Backend, BackendRegistry, BatchedInstance, CacheSettings, DataType, Device, Engine,
    EngineError, EngineOptions, ExecBatch, InferRequest, Instance, LoadedModel, ModelSpec, Result,
    Tensor,
};
use parking_lot::Mutex;

/// Every batch each instance computed: (instance index, X values).
type Log = Arc<Mutex<Vec<(usize, Vec<i32>)>>>;

struct Fake(Log);
struct FakeModel(Log);
struct FakeInstance(Log, usize);

impl Backend for Fake {
    fn load(&self, _spec: &ModelSpec, _dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        Ok(Arc::new(FakeModel(self.0.clone())))
    }
}

impl LoadedModel for FakeModel {
    fn create_instance(&self, _device: Device, index: usize) -> Result<Instance> {
        Ok(Instance::Batched(Box::new(FakeInstance(
            self.0.clone(),
            index,
        ))))
    }
}

impl BatchedInstance for FakeInstance {
    /// Y = X + 1, logged; a batch holding 13 fails.
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let x = batch.require("X")?;
        let values: Vec<i32> = x.to_vec()?;
        self.0.lock().push((self.1, values.clone()));
        if values.contains(&13) {
            return Err(EngineError::internal("13 is unlucky"));
        }
        let y: Vec<i32> = values.iter().map(|v| v + 1).collect();
        Ok(vec![Tensor::from_vec(
            "Y",
            DataType::Int32,
            x.shape.clone(),
            y,
        )])
    }
}

/// A repository holding model "m" on the fake backend (two instances) with `extra` config.
fn repository(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"name: "m" backend: "fake" max_batch_size: 4
        input {{ name: "X" data_type: TYPE_INT32 dims: [2] }}
        output {{ name: "Y" data_type: TYPE_INT32 dims: [2] }}
        instance_group {{ count: 2 kind: KIND_CPU }}
        {extra}"#
    );
    nereid_engine::builtin::demo::write_repository(dir.path(), [("m", config.as_str())]).unwrap();
    dir
}

/// Writes `x` as model "m"'s warmup data file `x.bin`.
fn write_warmup_file(dir: &Path, x: [i32; 2]) {
    let warmup = dir.join("m").join(nereid_engine::WARMUP_FOLDER);
    std::fs::create_dir_all(&warmup).unwrap();
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(warmup.join("x.bin"), bytes).unwrap();
}

fn start(dir: &Path, cache: Option<usize>) -> (Engine, Log) {
    let log = Log::default();
    let mut registry = BackendRegistry::new();
    registry.register("fake", Arc::new(Fake(log.clone())));
    let options = EngineOptions {
        repository: Some(dir.into()),
        response_cache: cache.map(|size| CacheSettings { size }),
        ..Default::default()
    };
    (Engine::start(options, registry).unwrap(), log)
}

fn engine(extra: &str, cache: Option<usize>) -> (Engine, Log, tempfile::TempDir) {
    let dir = repository(extra);
    let (engine, log) = start(dir.path(), cache);
    (engine, log, dir)
}

fn request(x: [i32; 2]) -> InferRequest {
    InferRequest::new(
        "m",
        vec![Tensor::from_vec(
            "X",
            DataType::Int32,
            vec![1, 2],
            x.to_vec(),
        )],
    )
}

fn reason(engine: &Engine) -> String {
    engine
        .repository_index(false)
        .into_iter()
        .find(|e| e.name == "m")
        .unwrap()
        .reason
}

const WITH_FILE: &str = r#"model_warmup [ { name: "file" batch_size: 1
    inputs { key: "X" value: { data_type: TYPE_INT32 dims: [ 2 ] input_data_file: "x.bin" } } } ]"#;

#[tokio::test]
async fn every_instance_runs_every_sample_before_ready_and_warmup_is_not_counted() {
    let samples = WITH_FILE.replace(
        "model_warmup [",
        r#"model_warmup [ { name: "zeros" batch_size: 3 count: 2
            inputs { key: "X" value: { data_type: TYPE_INT32 dims: [ 2 ] zero_data: true } } },"#,
    );
    let dir = repository(&samples);
    // The data file is missing: the load fails, naming the sample, before anything runs.
    let (engine, log) = start(dir.path(), None);
    assert!(!engine.model_ready("m", None));
    assert!(
        reason(&engine).contains("warmup sample 'file'"),
        "{}",
        reason(&engine)
    );
    assert!(log.lock().is_empty(), "samples are checked before any runs");

    write_warmup_file(dir.path(), [7, 8]);
    let (engine, log) = start(dir.path(), None);
    assert!(engine.model_ready("m", None), "{}", reason(&engine));
    let zeros = vec![0; 6];
    for instance in 0..2 {
        let runs: Vec<Vec<i32>> = log
            .lock()
            .iter()
            .filter(|(i, _)| *i == instance)
            .map(|(_, x)| x.clone())
            .collect();
        assert_eq!(
            runs,
            [zeros.clone(), zeros.clone(), vec![7, 8]],
            "instance {instance}: the first sample (batch 3) twice, then the file's"
        );
    }
    let stats = &engine.model_statistics(Some("m"), None).unwrap()[0];
    assert_eq!((stats.execution_count, stats.inference_count), (0, 0));
    assert_eq!(stats.inference_stats.success.count, 0);
    engine.infer(request([1, 2])).await.unwrap();
    let stats = &engine.model_statistics(Some("m"), None).unwrap()[0];
    assert_eq!(stats.execution_count, 1);
}

#[test]
fn a_sample_the_model_fails_on_fails_the_load() {
    let dir = repository(WITH_FILE);
    write_warmup_file(dir.path(), [13, 0]);
    let (engine, log) = start(dir.path(), None);
    assert!(!engine.model_ready("m", None));
    let why = reason(&engine);
    assert!(
        why.contains("warmup sample 'file' failed: 13 is unlucky"),
        "{why}"
    );
    assert_eq!(
        log.lock().len(),
        1,
        "the first instance failed; no other ran"
    );
}

#[tokio::test]
async fn identical_requests_are_answered_from_the_cache_without_running_the_model() {
    let (engine, log, _dir) = engine("response_cache { enable: true }", Some(1 << 20));
    assert!(engine.model_ready("m", None), "{}", reason(&engine));
    let mut first = request([1, 2]);
    first.id = "first".into();
    let answer = engine.infer(first).await.unwrap();
    let mut again = request([1, 2]);
    again.id = "again".into();
    let cached = engine.infer(again).await.unwrap();
    assert_eq!(
        cached.id, "again",
        "a hit answers with its own request's id"
    );
    assert_eq!(
        cached.output("Y").unwrap().to_vec::<i32>().unwrap(),
        answer.output("Y").unwrap().to_vec::<i32>().unwrap()
    );
    assert_eq!(log.lock().len(), 1, "the hit did not run the model");
    engine.infer(request([2, 2])).await.unwrap();
    assert_eq!(log.lock().len(), 2, "other inputs are a miss");

    // A failed request leaves nothing behind: the same request runs again.
    assert!(engine.infer(request([13, 0])).await.is_err());
    assert!(engine.infer(request([13, 0])).await.is_err());
    assert_eq!(log.lock().len(), 4);

    let stats = &engine.model_statistics(Some("m"), None).unwrap()[0].inference_stats;
    assert_eq!((stats.cache_hit.count, stats.cache_miss.count), (1, 4));
    assert_eq!(stats.success.count, 3, "a hit is a success");
}

#[test]
fn a_model_that_enables_the_cache_needs_one_on_the_server() {
    let (refused, log, _dir) = engine("response_cache { enable: true }", None);
    assert!(!refused.model_ready("m", None));
    assert!(
        reason(&refused).contains("start it with --cache-config local,size=BYTES"),
        "{}",
        reason(&refused)
    );
    assert!(log.lock().is_empty());
    // Without the config field, the server's cache is not used.
    let (uncached, log, _dir) = engine("", Some(1 << 20));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for _ in 0..2 {
        rt.block_on(uncached.infer(request([1, 1]))).unwrap();
    }
    assert_eq!(log.lock().len(), 2);
}
