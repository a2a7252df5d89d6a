//! Checks and times the candle backends on a CUDA GPU against the CPU (built by
//! `scripts/cuda/build.sh`, run by `scripts/cuda/check-gpu.sh` on the GPU machine).
//!
//! ```text
//! gpu_check --export-f16 DIR   # here, on CPU: minilm's files with FP16 weights (45 MB), to carry
//! gpu_check [MINILM_DIR]       # there: minilm on GPU (FP32, FP16, BF16) vs CPU FP32, timed;
//!                              # the llama path on a tiny GGUF, GPU vs CPU; SMOLLM2_GGUF=path
//!                              # adds smollm2 decode timings
//! ```
//! Exits non-zero when the GPU disagrees with the CPU: cosine below 0.9999 in FP32 or 0.999
//! in FP16 for any sentence.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use nereid_engine::ModelSpec;
use nereid_models::testing::Embedder;
use nereid_models::testing::{argmax, Chunk, KvCache, Llama, MatmulWeights};

const SENTENCES: &[&str] = &[
    "This is an example sentence",
    "Each sentence is converted",
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "GPUs and CPUs should agree on sentence embeddings to within rounding error, whatever the batch.",
    "Paris is the capital of France.",
    "A much longer sentence that goes on and on, about nothing in particular, to make the batch ragged.",
    "ok",
];

/// The demo's minilm with FP32 dense layers: the CPU reference the GPU is checked against.
fn minilm_spec() -> ModelSpec {
    let fp32 = nereid_models::testing::with_parameter(
        nereid_models::demo::MINILM,
        "matmul_weights",
        "fp32",
    );
    let text: String = fp32
        .lines()
        .filter(|l| !l.contains("\"pypi_"))
        .collect::<Vec<_>>()
        .join("\n");
    ModelSpec::from_config(nereid_proto::parse_model_config(&text).expect("parses")).expect("valid")
}

fn default_minilm_dir() -> Result<PathBuf> {
    let spec = ModelSpec::from_config(nereid_proto::parse_model_config(
        nereid_models::demo::MINILM,
    )?)?;
    let source = nereid_models::testing::pypi_source(&spec)?.context("demo names a package")?;
    Ok(source.local_path())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--export-f16") {
        let out = PathBuf::from(args.get(1).context("--export-f16 needs an output folder")?);
        nereid_models::pull(&["minilm".into()])?;
        return export_f16(&default_minilm_dir()?, &out);
    }
    let dir = match args.first() {
        Some(d) => PathBuf::from(d),
        None => default_minilm_dir()?,
    };
    let gpu = Device::new_cuda(0)
        .context("no CUDA device (build with --features cuda, run on the GPU machine)")?;
    let mut failures = Vec::new();
    minilm(&dir, &gpu, &mut failures)?;
    llama_tiny(&gpu, &mut failures)?;
    if let Ok(path) = std::env::var("SMOLLM2_GGUF") {
        smollm2(Path::new(&path), &gpu)?;
    }
    if failures.is_empty() {
        println!("GPU CHECK PASSED");
        Ok(())
    } else {
        bail!("GPU CHECK FAILED: {failures:?}")
    }
}

fn export_f16(from: &Path, to: &Path) -> Result<()> {
    for file in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        let target = to.join(file);
        std::fs::create_dir_all(target.parent().expect("has parent"))?;
        std::fs::copy(from.join(file), &target).with_context(|| format!("copy {file}"))?;
    }
    let tensors = candle_core::safetensors::load(from.join("model.safetensors"), &Device::Cpu)?;
    let halved = tensors
        .into_iter()
        .map(|(k, t)| {
            Ok((
                k,
                if t.dtype() == DType::F32 {
                    t.to_dtype(DType::F16)?
                } else {
                    t
                },
            ))
        })
        .collect::<Result<std::collections::HashMap<String, Tensor>>>()?;
    candle_core::safetensors::save(&halved, to.join("model.safetensors"))?;
    println!("wrote {}", to.display());
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
        * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

fn minilm(dir: &Path, gpu: &Device, failures: &mut Vec<String>) -> Result<()> {
    let embedder = Embedder::load(&minilm_spec(), dir)?;
    let width = embedder.hidden_size();
    let texts: Vec<&str> = SENTENCES.iter().cycle().take(32).copied().collect();
    let cpu = embedder.load_weights(&Device::Cpu, DType::F32)?;
    let reference = embedder.embed(&cpu, &texts)?;
    let row = |v: &[f32], i: usize| v[i * width..(i + 1) * width].to_vec();
    println!("minilm CPU FP32: first values {:?}", &reference[..5]);
    let batch16: Vec<String> = vec![["hello"; 14].join(" "); 32];
    let batch16: Vec<&str> = batch16.iter().map(String::as_str).collect();
    for (dtype, floor) in [
        (DType::F32, 0.9999f32),
        (DType::F16, 0.999),
        (DType::BF16, 0.99),
    ] {
        let model = embedder.load_weights(gpu, dtype)?;
        let got = embedder.embed(&model, &texts)?;
        let worst = (0..texts.len())
            .map(|i| cosine(&row(&got, i), &row(&reference, i)))
            .fold(1f32, f32::min);
        for _ in 0..3 {
            embedder.embed(&model, &batch16)?; // warm-up
        }
        let start = Instant::now();
        let iters = 50;
        for _ in 0..iters {
            embedder.embed(&model, &batch16)?;
        }
        let rate = (iters * 32 * 16) as f64 / start.elapsed().as_secs_f64();
        let verdict = if worst >= floor { "ok" } else { "FAIL" };
        println!("minilm GPU {dtype:?}: min cosine vs CPU {worst:.6} (floor {floor}) {verdict}; 32x16 batch {rate:.0} tok/s");
        if worst < floor && dtype != DType::BF16 {
            failures.push(format!("minilm {dtype:?} cosine {worst}"));
        }
    }
    Ok(())
}

fn llama_tiny(gpu: &Device, failures: &mut Vec<String>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny.gguf");
    nereid_models::testing::write_tiny_gguf(&path)?;
    let load = |device: &Device| -> Result<Llama> {
        let mut f = std::fs::File::open(&path)?;
        let content = candle_core::quantized::gguf_file::Content::read(&mut f)?;
        Llama::load(&content, &mut f, device, 4096, MatmulWeights::Quantized)
    };
    let (cpu, on_gpu) = (load(&Device::Cpu)?, load(gpu)?);
    let prompt = [5u32, 77, 120, 9, 200, 31, 64];
    let (mut c1, mut c2) = (KvCache::new(&cpu), KvCache::new(&on_gpu));
    let mut worst = 0f32;
    let mut tokens = prompt.to_vec();
    for _ in 0..5 {
        let a = cpu.forward(&mut [Chunk {
            cache: &mut c1,
            tokens: &tokens,
        }])?;
        let b = on_gpu
            .forward(&mut [Chunk {
                cache: &mut c2,
                tokens: &tokens,
            }])?
            .to_device(&Device::Cpu)?;
        let diff = (a.clone() - b)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        worst = worst.max(diff);
        tokens = vec![argmax(&a.get(0)?)?];
    }
    // Quantized kernels differ (CPU quantizes activations to Q8_1), so allow a little.
    let verdict = if worst < 0.1 { "ok" } else { "FAIL" };
    println!("tiny llama GPU vs CPU: max logit difference {worst:.5} {verdict}");
    if worst >= 0.1 {
        failures.push(format!("tiny llama logits differ by {worst}"));
    }

    // A GPU cache started from another prompt's prefix (the generator's prefix reuse)
    // continues like a fresh one.
    let second = [5u32, 77, 120, 9, 11, 12, 13];
    let mut fresh = KvCache::new(&on_gpu);
    let want = on_gpu.forward(&mut [Chunk {
        cache: &mut fresh,
        tokens: &second,
    }])?;
    let mut reused = on_gpu.cache_from_prefix(&c2.prefix(4)?, 4)?;
    let got = on_gpu.forward(&mut [Chunk {
        cache: &mut reused,
        tokens: &second[4..],
    }])?;
    let diff = (want - got)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    let verdict = if diff < 1e-3 { "ok" } else { "FAIL" };
    println!("tiny llama GPU prefix reuse vs fresh: max logit difference {diff:.6} {verdict}");
    if diff >= 1e-3 {
        failures.push(format!("GPU prefix reuse changes logits by {diff}"));
    }
    Ok(())
}

fn smollm2(path: &Path, gpu: &Device) -> Result<()> {
    let mut f = std::fs::File::open(path)?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut f)?;
    let model = Llama::load(&content, &mut f, gpu, 4096, MatmulWeights::Quantized)?;
    let prompt: Vec<u32> = (1..40).collect();
    for sequences in [1usize, 8] {
        let mut caches: Vec<KvCache> = (0..sequences).map(|_| KvCache::new(&model)).collect();
        for cache in caches.iter_mut() {
            model.forward(&mut [Chunk {
                cache,
                tokens: &prompt,
            }])?;
        }
        let steps = 64;
        let start = Instant::now();
        for _ in 0..steps {
            let mut chunks: Vec<Chunk> = caches
                .iter_mut()
                .map(|cache| Chunk {
                    cache,
                    tokens: &[42],
                })
                .collect();
            model.forward(&mut chunks)?.to_vec2::<f32>()?;
        }
        let rate = (steps * sequences) as f64 / start.elapsed().as_secs_f64();
        println!("smollm2 GPU decode, {sequences} sequences: {rate:.1} tok/s");
    }
    Ok(())
}
