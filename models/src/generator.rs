//! The `llama_gguf` backend: a decoupled text generator over a quantized GGUF llama.
//!
//! Each admitted request becomes a live sequence with its own KV cache. Every step feeds
//! all runnable sequences through one forward pass ([`Llama::forward`]): one token per
//! decoding sequence, plus prompt chunks of newly admitted ones (at most `prefill_chunk`
//! prompt tokens per step in all, so a long prompt delays the others by one bounded step).
//! A sequence whose client went away is dropped at the start of the next step, freeing its
//! cache and slot; one whose reader is behind (no response slot to reserve) waits without
//! advancing, so no token it computes is ever dropped.
//! A prompt that starts like one the instance has read before starts from a copy of that
//! prompt's KV cache ([`PrefixCache`]): the shared system prompt of chats is read once.
//!
//! Inputs and outputs are the engine's generation contract ([`nereid_engine::generation`]),
//! checked at load. Responses: one per step with the new `text_output` piece (whole UTF-8
//! characters), the last one final and carrying, when the config declares them,
//! `prompt_tokens`, `completion_tokens` and `cached_tokens` (prompt tokens whose KV cache
//! was reused) and `finish_reason` (`stop` or `length`).
//!
//! Config parameters: `max_tokens` (default for requests naming none, 256), `max_context`
//! (cap on prompt + completion, default 4096), `prefill_chunk` (64 on CPU, where a long
//! prompt read in bigger chunks both stalls the running sequences longer and reaches its
//! first token later; 512 on GPU), `chat_template` (overrides the file's), `intra_op_threads`, `model_file`, `matmul_weights` (`fp32`,
//! `fp16` or `quantized`: how projection weights are held, see [`MatmulWeights`]; default
//! `quantized`, the blocks as stored: on CPU our integer kernels (`crate::quant`), which read
//! a fifth of FP32's bytes and batch rows as well; `fp32`/`fp16` dequantize once at load),
//! `prefix_cache_mb` (memory per instance for
//! reusable prompt caches, default 64; 0 turns reuse off), and the weight sources of
//! [`crate::weights`].

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::quantized::gguf_file::Content;
use nereid_engine::generation::{self, GenerationIo};
use nereid_engine::{
    Backend, DecoupledInstance, Device, EngineError, InferRequest, Instance, LoadedModel,
    ModelSpec, Responder, ResponsePermit, Result, Sequence, Tensor,
};

use crate::chat::{messages_for, ChatTemplate};
use crate::gguf_tokenizer::GgufTokenizer;
use crate::llama::{Chunk, KvCache, KvLayers, Llama, MatmulWeights};
use crate::options::{candle_device, internal, intra_op_threads, load_error, param};
use crate::prefix_cache::PrefixCache;
use crate::request::GenerateRequest;
use crate::sampling::Sampler;
use crate::text_stream::TextStream;
use crate::threads::IntraOp;
use crate::weights::{resolve, Wanted};

const BACKEND: &str = "llama_gguf";

/// Default prompt tokens per step on CPU. On 2 cores, a 2,326-token prompt beside three
/// running streams reached its first token in 9.0 s with chunks of 64, 9.8 s with 128 and
/// 12.8 s with 512, while the longest pause of the running streams grew from 0.49 to 0.81
/// and 4.4 s (docs/BENCHMARKS.md): big chunks' attention matrices outgrow the caches.
const CPU_PREFILL_CHUNK: usize = 64;
/// Default prompt tokens per step on GPU, where a bigger chunk still fills the device.
const GPU_PREFILL_CHUNK: usize = 512;

/// What the final response of a sequence reports.
struct Finish {
    reason: &'static str,
    prompt_tokens: usize,
    completion_tokens: usize,
    cached_tokens: usize,
}

/// The `llama_gguf` backend.
pub(crate) struct LlamaGguf;

/// What every instance of a loaded generator shares.
pub struct Generator {
    spec: ModelSpec,
    path: PathBuf,
    tokenizer: GgufTokenizer,
    template: ChatTemplate,
    max_tokens: usize,
    max_context: usize,
    /// Most prompt tokens per step; `None` picks by device.
    prefill_chunk: Option<usize>,
    /// Bytes of prompt caches each instance keeps for reuse.
    prefix_cache_bytes: usize,
    threads: usize,
    /// How matmul weights are held; `None` picks by device.
    matmul_weights: Option<MatmulWeights>,
    /// The contract's tensors the config declares.
    io: GenerationIo,
    batch_dim: bool,
}

struct GeneratorModel {
    generator: Arc<Generator>,
    weights: Mutex<HashMap<String, Arc<Llama>>>,
}

impl Backend for LlamaGguf {
    fn load(&self, spec: &ModelSpec, version_dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        let generator = Arc::new(Generator::load(spec, version_dir)?);
        Ok(Arc::new(GeneratorModel {
            generator,
            weights: Mutex::default(),
        }))
    }
}

impl Generator {
    /// Finds (fetching if need be) and reads the GGUF file's metadata: tokenizer and chat
    /// template. The weights load per device when instances are created.
    pub fn load(spec: &ModelSpec, version_dir: &Path) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| load_error(spec, BACKEND, e);
        let io = GenerationIo::from_spec(spec)?;
        GenerationIo::check_no_others(spec)?;
        let path = resolve(spec, version_dir, Wanted::File { extension: "gguf" })
            .map_err(|e| bad(&format!("{e:#}")))?;
        let mut file = File::open(&path).map_err(|e| bad(&format!("{}: {e}", path.display())))?;
        let content =
            Content::read(&mut file).map_err(|e| bad(&format!("{}: {e}", path.display())))?;
        let tokenizer = GgufTokenizer::from_gguf(&content).map_err(|e| bad(&e))?;
        let source = spec
            .parameter("chat_template")
            .filter(|t| !t.is_empty())
            .map(String::from);
        let source = source.or_else(|| tokenizer.chat_template.clone());
        let template =
            ChatTemplate::new(source.as_deref(), &tokenizer.bos_text, &tokenizer.eos_text)
                .map_err(|e| bad(&e))?;
        let p = |key: &str, default: usize| -> Result<usize> {
            Ok(param::<usize>(spec, key)
                .map_err(|e| bad(&e))?
                .unwrap_or(default))
        };
        tracing::info!(model = spec.name(), file = %path.display(), vocab = tokenizer.vocab_size(), "GGUF generator loaded");
        Ok(Self {
            max_tokens: p("max_tokens", 256)?,
            max_context: p("max_context", 4096)?.max(16),
            prefill_chunk: param::<usize>(spec, "prefill_chunk")
                .map_err(|e| bad(&e))?
                .map(|n| n.max(1)),
            prefix_cache_bytes: p("prefix_cache_mb", 64)?.saturating_mul(1 << 20),
            threads: intra_op_threads(spec).map_err(|e| bad(&e))?,
            matmul_weights: param::<MatmulWeights>(spec, "matmul_weights").map_err(|e| bad(&e))?,
            io,
            batch_dim: spec.max_batch_size > 0,
            spec: spec.clone(),
            path,
            tokenizer,
            template,
        })
    }

    /// Loads the weights onto `device`.
    pub fn load_weights(&self, device: &candle_core::Device) -> anyhow::Result<Llama> {
        let weights = self.matmul_weights.unwrap_or(MatmulWeights::Quantized);
        let mut file = File::open(&self.path)?;
        let content = Content::read(&mut file)?;
        Llama::load(&content, &mut file, device, self.max_context, weights)
    }

    /// The tokenizer rebuilt from the file (the benchmarks count tokens with it).
    #[cfg(feature = "testing")]
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The prompt tokens for a request: chat-style requests go through the chat template.
    pub fn prompt(&self, req: &GenerateRequest) -> anyhow::Result<Vec<u32>> {
        let text = match messages_for(&req.text, req.chat) {
            Some(messages) => self.template.render(&messages)?,
            None => req.text.clone(),
        };
        self.tokenizer.encode(&text)
    }

    fn shape(&self) -> Vec<i64> {
        if self.batch_dim {
            vec![1, 1]
        } else {
            vec![1]
        }
    }

    fn outputs(&self, text: String, finish: Option<Finish>) -> Vec<Tensor> {
        let io = &self.io;
        let mut out = vec![Tensor::from_strings(
            io.text_output.name.clone(),
            self.shape(),
            [text],
        )];
        if let Some(finish) = finish {
            let counts = [
                (&io.prompt_tokens, finish.prompt_tokens),
                (&io.completion_tokens, finish.completion_tokens),
                (&io.cached_tokens, finish.cached_tokens),
            ];
            for (spec, n) in counts {
                if let Some(spec) = spec {
                    out.push(generation::count_tensor(spec, self.shape(), n));
                }
            }
            if let Some(spec) = &io.finish_reason {
                out.push(Tensor::from_strings(
                    spec.name.clone(),
                    self.shape(),
                    [finish.reason],
                ));
            }
        }
        out
    }
}

impl LoadedModel for GeneratorModel {
    /// Reads the request as admission will (the prompt's UTF-8, sampling settings), so a
    /// bad one is refused before it is queued, with an error naming what is wrong.
    fn check_request(&self, request: &InferRequest) -> Result<()> {
        GenerateRequest::parse(&request.inputs, &request.parameters, 0).map(drop)
    }

    fn create_instance(&self, device: Device, index: usize) -> Result<Instance> {
        let g = &self.generator;
        let bad = |e: &dyn std::fmt::Display| load_error(&g.spec, BACKEND, e);
        let cdev = candle_device(device).map_err(|e| bad(&e))?;
        let key = format!("{:?}", cdev.location());
        let model = {
            let mut cache = self.weights.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&key) {
                Some(m) => m.clone(),
                None => {
                    let m = Arc::new(
                        g.load_weights(&cdev)
                            .map_err(|e| bad(&format!("{}: {e:#}", g.path.display())))?,
                    );
                    cache.insert(key, m.clone());
                    m
                }
            }
        };
        let pool =
            IntraOp::new(g.threads, &format!("{}-{index}", g.spec.name())).map_err(|e| bad(&e))?;
        Ok(Instance::Decoupled(Box::new(GeneratorInstance {
            generator: g.clone(),
            model,
            pool,
            live: Vec::new(),
            prefixes: PrefixCache::new(g.prefix_cache_bytes),
            prefill_chunk: g.prefill_chunk.unwrap_or(if device == Device::Cpu {
                CPU_PREFILL_CHUNK
            } else {
                GPU_PREFILL_CHUNK
            }),
            seeds: index as u64 * 1_000_003,
        })))
    }
}

/// One live sequence: where its responses go, and its decoding state.
struct Live {
    responder: Responder,
    state: Decoding,
}

struct Decoding {
    cache: KvCache,
    /// Tokens to feed next: the rest of the prompt, then the last sampled token.
    pending: Vec<u32>,
    /// The whole prompt while it is being read, for the prefix cache; empty after.
    prompt: Vec<u32>,
    prompt_tokens: usize,
    /// Leading prompt tokens whose KV cache came from the prefix cache.
    cached_tokens: usize,
    generated: usize,
    max_tokens: usize,
    sampler: Sampler,
    text: TextStream,
}

struct GeneratorInstance {
    generator: Arc<Generator>,
    model: Arc<Llama>,
    pool: IntraOp,
    live: Vec<Live>,
    prefixes: PrefixCache<KvLayers>,
    prefill_chunk: usize,
    seeds: u64,
}

impl GeneratorInstance {
    fn start(&mut self, seq: &Sequence) -> Result<(Vec<u32>, GenerateRequest)> {
        self.seeds = self.seeds.wrapping_add(1);
        let req = GenerateRequest::parse(&seq.inputs, &seq.parameters, self.seeds)?;
        let prompt = self
            .generator
            .prompt(&req)
            .map_err(|e| EngineError::invalid(format!("{e:#}")))?;
        let context = self.model.cfg.context;
        if prompt.is_empty() {
            return Err(EngineError::invalid("the prompt is empty"));
        }
        if prompt.len() >= context {
            return Err(EngineError::invalid(format!(
                "the prompt has {} tokens; this model serves at most {} (parameter max_context)",
                prompt.len(),
                context - 1
            )));
        }
        Ok((prompt, req))
    }

    /// A cache for `prompt`, holding as much of it as the prefix cache has: the cache and
    /// how many leading tokens it covers.
    fn cache_for(&mut self, prompt: &[u32]) -> (KvCache, usize) {
        if let Some(hit) = self.prefixes.lookup(prompt) {
            match self.model.cache_from_prefix(hit.value, hit.len) {
                Ok(cache) => return (cache, hit.len),
                Err(e) => tracing::warn!("prompt prefix not reused: {e:#}"),
            }
        }
        (KvCache::new(&self.model), 0)
    }

    /// Keeps the cache of a prompt just read (as much of its start as the budget holds),
    /// for prompts that start the same way.
    fn remember_prompt(model: &Llama, prefixes: &mut PrefixCache<KvLayers>, live: &mut Decoding) {
        let mut prompt = std::mem::take(&mut live.prompt);
        let per_position = model.kv_bytes_per_position();
        prompt.truncate(prefixes.positions(per_position));
        if prompt.is_empty() {
            return;
        }
        let (len, bytes) = (prompt.len(), prompt.len() * per_position);
        if let Err(e) = prefixes.insert_with(prompt, bytes, || live.cache.prefix(len)) {
            tracing::warn!("prompt cache not kept: {e:#}");
        }
    }
}

impl DecoupledInstance for GeneratorInstance {
    fn admit(&mut self, mut seq: Sequence) {
        let (prompt, req) = match self.start(&seq) {
            Ok(v) => v,
            Err(e) => return seq.responder.fail(e),
        };
        let room = self.model.cfg.context - prompt.len();
        let max_tokens = req
            .max_tokens
            .unwrap_or(self.generator.max_tokens)
            .min(room);
        if max_tokens == 0 {
            let finish = Finish {
                reason: "length",
                prompt_tokens: prompt.len(),
                completion_tokens: 0,
                cached_tokens: 0,
            };
            let outputs = self.generator.outputs(String::new(), Some(finish));
            return seq.responder.finish(outputs);
        }
        let (cache, cached_tokens) = self.cache_for(&prompt);
        let state = Decoding {
            cache,
            prompt_tokens: prompt.len(),
            cached_tokens,
            pending: prompt[cached_tokens..].to_vec(),
            prompt,
            generated: 0,
            max_tokens,
            sampler: Sampler::new(req.temperature, req.top_p, req.seed),
            text: TextStream::new(req.stop),
        };
        self.live.push(Live {
            responder: seq.responder,
            state,
        });
    }

    fn step(&mut self) -> Result<()> {
        // A client that left frees its sequence at once.
        self.live.retain(|l| !l.responder.is_cancelled());
        let mut budget = self.prefill_chunk;
        // Each sequence that runs this step holds a response slot from the start, so what
        // it computes always has somewhere to go; one whose reader is behind gets no slot
        // and waits.
        let mut runnable: Vec<(ResponsePermit<'_>, &mut Decoding, usize)> = Vec::new();
        for l in &mut self.live {
            let d = &mut l.state;
            let take = if d.generated > 0 || d.pending.len() == 1 {
                1
            } else {
                if budget == 0 {
                    continue;
                }
                d.pending.len().min(budget)
            };
            let Some(permit) = l.responder.try_reserve() else {
                continue;
            };
            budget = budget.saturating_sub(take);
            runnable.push((permit, d, take));
        }
        if runnable.is_empty() {
            // Every reader is behind: wait a little rather than spin.
            std::thread::sleep(Duration::from_millis(1));
            return Ok(());
        }
        let model = &self.model;
        let logits = {
            let mut chunks: Vec<Chunk> = runnable
                .iter_mut()
                .map(|(_, d, take)| Chunk {
                    cache: &mut d.cache,
                    tokens: &d.pending[..*take],
                })
                .collect();
            self.pool
                .run(|| model.forward(&mut chunks))
                .map_err(internal)?
        };
        let logits: Vec<Vec<f32>> = logits.to_vec2().map_err(internal)?;
        let g = &self.generator;
        for ((permit, d, take), row) in runnable.into_iter().zip(logits) {
            d.pending.drain(..take);
            if !d.pending.is_empty() {
                continue; // still reading the prompt: the slot goes back unused
            }
            if d.generated == 0 {
                Self::remember_prompt(model, &mut self.prefixes, d);
            }
            let token = d.sampler.sample(&row);
            d.generated += 1;
            // EOS is not part of the text; a stop string ends it before the stop.
            let finish = if g.tokenizer.is_eos(token) || d.text.push(g.tokenizer.token_bytes(token))
            {
                Some("stop")
            } else if d.generated >= d.max_tokens {
                Some("length")
            } else {
                d.pending.push(token);
                None
            };
            match finish {
                Some(reason) => {
                    let text = d.text.finish();
                    let finish = Finish {
                        reason,
                        prompt_tokens: d.prompt_tokens,
                        completion_tokens: d.generated,
                        cached_tokens: d.cached_tokens,
                    };
                    permit.send(g.outputs(text, Some(finish)), true);
                }
                None => {
                    let piece = d.text.take_ready();
                    if !piece.is_empty() {
                        permit.send(g.outputs(piece, None), false);
                    }
                }
            }
        }
        self.live
            .retain(|l| !l.responder.is_done() && !l.responder.is_cancelled());
        Ok(())
    }

    fn live(&self) -> usize {
        self.live.len()
    }

    fn kv_cache(&self) -> Option<(usize, usize)> {
        let held = self.live.iter().map(|l| l.state.cache.len()).sum();
        Some((held, self.model.cfg.context))
    }

    fn abort_all(&mut self, error: EngineError) {
        for mut l in self.live.drain(..) {
            l.responder.fail(error.clone());
        }
    }
}
