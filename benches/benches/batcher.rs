//! The batcher's overhead per request: `Engine::infer` round trips to the built-in
//! `identity_fp32` model in-process (validation, queue, scheduler thread, instance worker,
//! response channel), one at a time and eight at once.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nereid_engine::builtin::demo::{write_repository, IDENTITY_FP32};
use nereid_engine::{BackendRegistry, DataType, Engine, EngineOptions, InferRequest, Tensor};

fn engine() -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_repository(dir.path(), [("identity_fp32", IDENTITY_FP32)]).expect("repository");
    let options = EngineOptions {
        repository: Some(dir.path().to_path_buf()),
        ..EngineOptions::default()
    };
    (
        Engine::start(options, BackendRegistry::with_builtins()).expect("engine"),
        dir,
    )
}

fn request(elements: usize) -> InferRequest {
    let values: Vec<f32> = (0..elements).map(|i| i as f32 * 0.5).collect();
    let tensor = Tensor::from_vec("INPUT0", DataType::Fp32, vec![1, elements as i64], values);
    InferRequest::new("identity_fp32", vec![tensor])
}

fn batcher(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (engine, _dir) = engine();
    let mut group = c.benchmark_group("engine_infer_identity_fp32");
    group.measurement_time(Duration::from_secs(3));
    for elements in [768usize, 150_528] {
        let req = request(elements);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("one_at_a_time", elements),
            &req,
            |b, req| {
                b.to_async(&runtime)
                    .iter(|| async { engine.infer(req.clone()).await.expect("infer") });
            },
        );
        group.throughput(Throughput::Elements(8));
        group.bench_with_input(
            BenchmarkId::new("eight_concurrent", elements),
            &req,
            |b, req| {
                b.to_async(&runtime).iter(|| async {
                    let calls = (0..8).map(|_| engine.infer(req.clone()));
                    for r in futures::future::join_all(calls).await {
                        r.expect("infer");
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, batcher);
criterion_main!(benches);
