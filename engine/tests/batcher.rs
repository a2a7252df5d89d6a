//! The dynamic batcher against a recording fake model: what batches form, in what order,
//! and what happens to requests that time out, overflow or are cancelled.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid_engine::{
    Backend, BackendRegistry, BatchedInstance, DataType, Device, Engine, EngineError,
    EngineOptions, ExecBatch, InferRequest, Instance, LoadedModel, ModelSpec, ParamValue, Result,
    Tensor,
};
use parking_lot::{Condvar, Mutex};

/// Shared by the test and every instance of the fake model.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<i32>>>,
    /// Each batch's row parameters: the `tag` parameter of the request each row came from.
    row_tags: Mutex<Vec<Vec<Option<i64>>>>,
    /// Set when a slow batch (one holding -1) has finished computing.
    slow_finished: AtomicBool,
    paused: Mutex<bool>,
    resumed: Condvar,
}

impl Recorder {
    fn pause(&self) {
        *self.paused.lock() = true;
    }
    fn resume(&self) {
        *self.paused.lock() = false;
        self.resumed.notify_all();
    }
    fn batches(&self) -> Vec<Vec<i32>> {
        self.batches.lock().clone()
    }
}

struct Fake(Arc<Recorder>);
struct FakeModel(Arc<Recorder>);
struct FakeInstance(Arc<Recorder>);

impl Backend for Fake {
    fn load(&self, _spec: &ModelSpec, _dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        Ok(Arc::new(FakeModel(self.0.clone())))
    }
}

impl LoadedModel for FakeModel {
    fn create_instance(&self, _device: Device, _index: usize) -> Result<Instance> {
        Ok(Instance::Batched(Box::new(FakeInstance(self.0.clone()))))
    }

    /// Values below -1 are refused, one request at a time.
    fn check_request(&self, request: &InferRequest) -> Result<()> {
        let x: Vec<i32> = request.input("X").map_or(Ok(Vec::new()), |t| t.to_vec())?;
        match x.iter().find(|&&v| v < -1) {
            Some(v) => Err(EngineError::invalid(format!(
                "input 'X' holds {v}; the fake takes -1 and up"
            ))),
            None => Ok(()),
        }
    }
}

impl BatchedInstance for FakeInstance {
    /// Y = X; records the batch; waits while paused; X = -1 makes the batch slow.
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let x = batch.require("X")?;
        let values: Vec<i32> = x.to_vec()?;
        self.0.batches.lock().push(values.clone());
        let tags = batch
            .row_parameters()
            .map(|p| match p.get("tag") {
                Some(ParamValue::Int(t)) => Some(*t),
                _ => None,
            })
            .collect();
        self.0.row_tags.lock().push(tags);
        assert_eq!(
            batch.shares.iter().map(|s| s.rows).sum::<usize>(),
            batch.batch_size,
            "the shares cover the batch"
        );
        {
            let mut paused = self.0.paused.lock();
            while *paused {
                self.0.resumed.wait(&mut paused);
            }
        }
        if values.contains(&-1) {
            std::thread::sleep(Duration::from_millis(300));
            self.0.slow_finished.store(true, Ordering::SeqCst);
        }
        Ok(vec![Tensor::new(
            "Y",
            DataType::Int32,
            x.shape.clone(),
            x.data.clone(),
        )])
    }
}

/// An engine serving one fake model named "m" with the given dynamic_batching block.
fn engine(
    batching: &str,
    max_batch: usize,
    instances: usize,
) -> (Engine, Arc<Recorder>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"name: "m" backend: "fake" max_batch_size: {max_batch}
        input {{ name: "X" data_type: TYPE_INT32 dims: [1] }}
        output {{ name: "Y" data_type: TYPE_INT32 dims: [1] }}
        {batching}
        instance_group {{ count: {instances} kind: KIND_CPU }}"#
    );
    nereid_engine::builtin::demo::write_repository(dir.path(), [("m", config.as_str())]).unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut registry = BackendRegistry::new();
    registry.register("fake", Arc::new(Fake(recorder.clone())));
    let options = EngineOptions {
        repository: Some(dir.path().into()),
        ..Default::default()
    };
    let engine = Engine::start(options, registry).unwrap();
    assert!(
        engine.model_ready("m", None),
        "{:?}",
        engine.repository_index(false)
    );
    (engine, recorder, dir)
}

fn request(x: i32) -> InferRequest {
    InferRequest::new(
        "m",
        vec![Tensor::from_vec("X", DataType::Int32, vec![1, 1], vec![x])],
    )
}

fn with_priority(x: i32, level: i64) -> InferRequest {
    let mut r = request(x);
    r.parameters
        .insert("priority".into(), ParamValue::Int(level));
    r
}

fn value(r: &nereid_engine::InferResponse) -> i32 {
    r.output("Y").unwrap().to_vec::<i32>().unwrap()[0]
}

/// Spawns `infer` for each request, returning handles in submission order.
fn spawn_all(
    engine: &Engine,
    requests: Vec<InferRequest>,
) -> Vec<tokio::task::JoinHandle<Result<nereid_engine::InferResponse>>> {
    requests
        .into_iter()
        .map(|r| {
            let e = engine.clone();
            tokio::spawn(async move { e.infer(r).await })
        })
        .collect()
}

/// Waits until the fake has recorded `n` batches.
async fn wait_batches(rec: &Recorder, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rec.batches().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {:?} batches ran",
            rec.batches()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_form_under_concurrency() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { max_queue_delay_microseconds: 2000 }",
        8,
        1,
    );
    let handles = spawn_all(&engine, (0..256).map(request).collect());
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(value(&h.await.unwrap().unwrap()), i as i32);
    }
    let batches = rec.batches();
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 256);
    assert!(batches.iter().all(|b| b.len() <= 8), "{batches:?}");
    assert!(
        batches.len() < 128,
        "256 requests ran in {} executions",
        batches.len()
    );
    let stats = &engine.model_statistics(Some("m"), None).unwrap()[0];
    assert_eq!(stats.inference_count, 256);
    assert_eq!(stats.execution_count, batches.len() as u64);
    assert_eq!(stats.inference_stats.success.count, 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_row_of_a_batch_carries_its_own_requests_parameters() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { max_queue_delay_microseconds: 300000 preferred_batch_size: [4] }",
        8,
        1,
    );
    let tagged = |x: &[i32], tag: Option<i64>| {
        let mut r = InferRequest::new(
            "m",
            vec![Tensor::from_vec(
                "X",
                DataType::Int32,
                vec![x.len() as i64, 1],
                x.to_vec(),
            )],
        );
        if let Some(tag) = tag {
            r.parameters.insert("tag".into(), ParamValue::Int(tag));
        }
        r
    };
    // One request at a time, so they queue in this order: rows 1, 2 3, 4.
    for (x, tag) in [
        (&[1][..], Some(7)),
        (&[2, 3][..], None),
        (&[4][..], Some(9)),
    ] {
        spawn_all(&engine, vec![tagged(x, tag)]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_batches(&rec, 1).await;
    assert_eq!(rec.batches(), vec![vec![1, 2, 3, 4]]);
    assert_eq!(
        rec.row_tags.lock().clone(),
        vec![vec![Some(7), None, None, Some(9)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delay_gathers_requests_into_one_batch() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { max_queue_delay_microseconds: 300000 }",
        8,
        1,
    );
    let start = Instant::now();
    let first = spawn_all(&engine, vec![request(1)]);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let second = spawn_all(&engine, vec![request(2)]);
    for h in first.into_iter().chain(second) {
        h.await.unwrap().unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "dispatched before the delay"
    );
    assert_eq!(rec.batches(), vec![vec![1, 2]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_fails_alone_and_the_rest_of_its_batch_runs() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { max_queue_delay_microseconds: 300000 }",
        8,
        1,
    );
    let handles = spawn_all(&engine, vec![request(1), request(-5), request(2)]);
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.unwrap());
    }
    assert_eq!(outcomes[0].as_ref().map(value), Ok(1));
    assert_eq!(outcomes[2].as_ref().map(value), Ok(2));
    let err = outcomes[1].as_ref().unwrap_err();
    assert!(
        matches!(err, EngineError::InvalidArgument(m) if m.contains("input 'X' holds -5")),
        "{err:?}"
    );
    let mut batches = rec.batches();
    assert_eq!(batches.len(), 1, "the good requests share one batch");
    batches[0].sort();
    assert_eq!(batches[0], vec![1, 2]);
    let stats = &engine.model_statistics(Some("m"), None).unwrap()[0];
    assert_eq!(stats.inference_stats.success.count, 2);
    assert_eq!(stats.inference_stats.fail.count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_batch_size_dispatches_without_waiting() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { preferred_batch_size: [4] max_queue_delay_microseconds: 30000000 }",
        8,
        1,
    );
    let start = Instant::now();
    for h in spawn_all(&engine, (1..5).map(request).collect()) {
        h.await.unwrap().unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "waited for the 30 s delay"
    );
    let mut batch = rec.batches().concat();
    batch.sort();
    assert_eq!((rec.batches().len(), batch), (1, vec![1, 2, 3, 4]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { priority_levels: 2 default_priority_level: 2 }",
        1,
        1,
    );
    rec.pause();
    let blocker = spawn_all(&engine, vec![request(0)]);
    wait_batches(&rec, 1).await;
    let mut handles = blocker;
    for r in [
        with_priority(10, 2),
        request(11),
        with_priority(20, 1),
        with_priority(21, 1),
    ] {
        handles.extend(spawn_all(&engine, vec![r]));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    rec.resume();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(
        rec.batches(),
        vec![vec![0], vec![20], vec![21], vec![10], vec![11]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_rejects_at_once() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { default_queue_policy { max_queue_size: 2 } }",
        1,
        1,
    );
    rec.pause();
    let running = spawn_all(&engine, vec![request(0)]);
    wait_batches(&rec, 1).await;
    let queued = spawn_all(&engine, vec![request(1), request(2)]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = engine.infer(request(3)).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Unavailable(m) if m.contains("full")),
        "{err:?}"
    );
    rec.resume();
    for h in running.into_iter().chain(queued) {
        h.await.unwrap().unwrap();
    }
    assert_eq!(engine.infer(request(4)).await.map(|r| value(&r)), Ok(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_reject_answers_unavailable() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 20000 } }",
        1,
        1,
    );
    rec.pause();
    let running = spawn_all(&engine, vec![request(0)]);
    wait_batches(&rec, 1).await;
    let err = engine.infer(request(1)).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Unavailable(m) if m.contains("timed out")),
        "{err:?}"
    );
    rec.resume();
    running.into_iter().next().unwrap().await.unwrap().unwrap();
    assert_eq!(rec.batches(), vec![vec![0]]);
    let stats = &engine.model_statistics(Some("m"), None).unwrap()[0];
    assert_eq!(stats.inference_stats.fail.count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_delay_runs_behind_the_rest() {
    let (engine, rec, _dir) = engine(
        "dynamic_batching { default_queue_policy { timeout_action: DELAY allow_timeout_override: true } }",
        1,
        1,
    );
    rec.pause();
    let running = spawn_all(&engine, vec![request(0)]);
    wait_batches(&rec, 1).await;
    let mut late = request(1);
    late.parameters
        .insert("timeout".into(), ParamValue::Int(10_000));
    let delayed = spawn_all(&engine, vec![late]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let on_time = spawn_all(&engine, vec![request(2)]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    rec.resume();
    for h in running.into_iter().chain(delayed).chain(on_time) {
        h.await.unwrap().unwrap();
    }
    assert_eq!(rec.batches(), vec![vec![0], vec![2], vec![1]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_are_not_computed() {
    let (engine, rec, _dir) = engine("dynamic_batching { }", 1, 1);
    rec.pause();
    let running = spawn_all(&engine, vec![request(0)]);
    wait_batches(&rec, 1).await;
    let abandoned = spawn_all(&engine, vec![request(1), request(2)]);
    let kept = spawn_all(&engine, vec![request(3)]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    for h in &abandoned {
        h.abort();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    rec.resume();
    for h in running.into_iter().chain(kept) {
        h.await.unwrap().unwrap();
    }
    assert_eq!(rec.batches(), vec![vec![0], vec![3]]);
    let mut past = request(4);
    past.deadline = Some(Instant::now());
    let err = engine.infer(past).await.unwrap_err();
    assert!(matches!(err, EngineError::DeadlineExceeded(_)), "{err:?}");
    assert_eq!(engine.inflight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_ordering_holds_back_faster_batches() {
    for preserve in [true, false] {
        let (engine, rec, _dir) = engine(
            &format!("dynamic_batching {{ preserve_ordering: {preserve} }}"),
            1,
            2,
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, x) in [-1, 7].into_iter().enumerate() {
            let (e, tx, recorder) = (engine.clone(), tx.clone(), rec.clone());
            tokio::spawn(async move {
                let r = e.infer(request(x)).await.unwrap();
                // Both responses may be released at once and their tasks woken in either
                // order, so what is checked is whether the slow batch had finished when
                // the fast one's response arrived, not the order the tasks ran in.
                let slow_done = recorder.slow_finished.load(Ordering::SeqCst);
                tx.send((value(&r), slow_done)).unwrap();
            });
            // The slow request must be dispatched first, however late its task runs.
            wait_batches(&rec, i + 1).await;
        }
        let answers = [rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        let fast = answers.iter().find(|(v, _)| *v == 7).unwrap();
        assert_eq!(
            fast.1, preserve,
            "preserve_ordering: {preserve}; whether the slow batch had finished when the fast response arrived"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_accepted_work_then_refuses() {
    let (engine, rec, _dir) = engine("dynamic_batching { }", 1, 1);
    rec.pause();
    let running = spawn_all(&engine, vec![request(0), request(1)]);
    wait_batches(&rec, 1).await;
    let e = engine.clone();
    let shutdown = tokio::spawn(async move { e.shutdown(Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!engine.is_ready());
    assert!(matches!(
        engine.infer(request(2)).await,
        Err(EngineError::Unavailable(_))
    ));
    rec.resume();
    for h in running {
        h.await.unwrap().unwrap();
    }
    assert!(
        shutdown.await.unwrap(),
        "in-flight requests were not drained"
    );
}
