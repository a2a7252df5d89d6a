//! The `sentence_transformer` backend: BYTES text in, one pooled (and, as the model says,
//! normalised) FP32 vector per text out, batched dynamically. Given two text inputs and an
//! FP32 output of `dims: [1]`, it scores each pair instead: the cosine similarity of the
//! two texts' vectors (a bi-encoder re-ranker, as sentence-transformers' semantic search
//! scores query and passage).
//!
//! Files (version folder, or fetched): `config.json`, `model.safetensors` (memory-mapped),
//! `tokenizer.json`, and when present `1_Pooling/config.json`, `modules.json`,
//! `sentence_bert_config.json`. Config parameters: `max_seq_length`, `pooling`
//! (cls/mean/max/mean_sqrt_len), `normalize` (true/false) override what the files say;
//! `dtype` (GPU only), `matmul_weights` (`fp32`, the default; `int16` or `bf16`: every dense
//! layer packed for our CPU kernels, [`crate::quant::PackedLinear`]; `auto`: the fastest of
//! the three on this CPU), `intra_op_threads`, and the weight sources of [`crate::weights`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor as CTensor};
use nereid_engine::{
    Backend, BatchedInstance, DataType, Device, EngineError, ExecBatch, InferRequest, Instance,
    LoadedModel, ModelSpec, Result, Tensor,
};

use crate::bert::{BertConfig, BertModel};
use crate::bert_folder::{
    complete_text_config, dense_weights, load_tokenizer, load_weights, pooling_of, read_config,
    Padded,
};
use crate::options::{candle_device, compute_dtype, internal, intra_op_threads, load_error};
use crate::pooling::{l2_normalize, Pooling};
use crate::quant::DenseFormat;
use crate::text::{Prompts, TextIo, TextModel, TextOptions, TextTokenizer, PROMPTS_FILE};
use crate::threads::IntraOp;
use crate::weights::{resolve, Wanted};

const BACKEND: &str = "sentence_transformer";
const REQUIRED: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];
const OPTIONAL: &[&str] = &[
    "1_Pooling/config.json",
    "modules.json",
    "sentence_bert_config.json",
    PROMPTS_FILE,
];

/// The `sentence_transformer` backend.
pub(crate) struct SentenceTransformer;

/// Everything an instance needs that does not depend on its device.
pub struct Embedder {
    dir: PathBuf,
    config: BertConfig,
    tokenizer: Arc<TextTokenizer>,
    prompts: Prompts,
    pooling: Pooling,
    normalize: bool,
    io: TextIo,
    spec: ModelSpec,
    threads: usize,
    /// Dense layers packed for our CPU kernels (`matmul_weights: int16` or `bf16`).
    packed: Option<DenseFormat>,
}

/// What [`Embedder::embed_counting`] computes for a batch of texts.
#[derive(Default)]
pub(crate) struct Embedded {
    /// One vector per text, row-major.
    pub(crate) vectors: Vec<f32>,
    /// Each text's tokens.
    pub(crate) counts: Vec<i32>,
    /// Every token's final state, `(texts, width, hidden)` row-major, and the width (the
    /// longest text's tokens; shorter texts' rows are padding).
    pub(crate) states: Option<(Vec<f32>, usize)>,
}

/// A loaded model: the shared [`Embedder`] and its weights per (device, dtype), shared by
/// the instances on that device.
struct EmbedderModel {
    embedder: Arc<Embedder>,
    weights: Mutex<HashMap<(String, DType), Arc<BertModel>>>,
}

impl Backend for SentenceTransformer {
    fn load(&self, spec: &ModelSpec, version_dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        let embedder = Arc::new(Embedder::load(spec, version_dir)?);
        Ok(Arc::new(EmbedderModel {
            embedder,
            weights: Mutex::default(),
        }))
    }

    /// Writes what the model's files decide into the parameters the config leaves out
    /// (`pooling`, `max_seq_length`), so the config APIs and TEI's `/info` tell them.
    fn complete_config(
        &self,
        config: &mut nereid_proto::inference::ModelConfig,
        version_dir: &Path,
    ) -> Result<()> {
        complete_text_config(config, version_dir, BACKEND, REQUIRED, true)
    }
}

impl Embedder {
    /// Reads the model's files (fetching them if the config says where) and checks the
    /// config's inputs and outputs fit.
    pub fn load(spec: &ModelSpec, version_dir: &Path) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| load_error(spec, BACKEND, e);
        let io = TextIo::of(spec, TextModel::Embedder).map_err(|e| bad(&e))?;
        let dir = resolve(
            spec,
            version_dir,
            Wanted::Folder {
                required: REQUIRED,
                optional: OPTIONAL,
            },
        )
        .map_err(|e| bad(&format!("{e:#}")))?;
        let config = read_config(&dir).map_err(|e| bad(&e))?;
        let width = io.output.dims.first().copied().filter(|&d| d != -1);
        match (&io.pair, width) {
            (Some(_), Some(d)) if d != 1 => {
                return Err(bad(&format!(
                    "output '{}' dims [{d}]: a model of two texts makes one score per pair, \
                     dims [1]",
                    io.output.name
                )))
            }
            (None, Some(d)) if d as usize != config.hidden_size => {
                return Err(bad(&format!(
                    "output dims [{d}] but the model's vectors have {}",
                    config.hidden_size
                )))
            }
            _ => {}
        }
        let (tokenizer, max_len) = load_tokenizer(spec, &dir, &config).map_err(|e| bad(&e))?;
        let tokenizer = Arc::new(TextTokenizer::new(tokenizer, max_len).map_err(|e| bad(&e))?);
        let prompts = Prompts::from_dir(&dir).map_err(|e| bad(&e))?;
        let (pooling, normalize) = pooling_of(spec, &dir).map_err(|e| bad(&e))?;
        let threads = intra_op_threads(spec).map_err(|e| bad(&e))?;
        let packed = dense_weights(spec).map_err(|e| bad(&e))?;
        tracing::info!(
            model = spec.name(),
            dir = %dir.display(),
            ?pooling,
            normalize,
            max_seq_length = max_len,
            prompts = ?prompts.names(),
            dense_layers_on_cpu = %packed.map_or_else(|| "FP32".into(), |f| format!("{f:?}")),
            "sentence transformer loaded"
        );
        Ok(Self {
            dir,
            config,
            tokenizer,
            prompts,
            pooling,
            normalize,
            io,
            spec: spec.clone(),
            threads,
            packed,
        })
    }

    /// Loads the weights (memory-mapped `model.safetensors`) onto `device` in `dtype`; with
    /// `matmul_weights: int16`/`bf16`, FP32 ones on CPU get packed dense layers (other
    /// devices and dtypes keep float ones).
    pub fn load_weights(
        &self,
        device: &candle_core::Device,
        dtype: DType,
    ) -> anyhow::Result<BertModel> {
        load_weights(&self.dir, &self.config, self.packed, device, dtype)
    }

    /// Tokenises `texts` and embeds them: one row of `hidden_size` per text (the examples'
    /// entry; the served instance also counts tokens).
    #[cfg(feature = "testing")]
    pub fn embed(&self, model: &BertModel, texts: &[&str]) -> anyhow::Result<Vec<f32>> {
        let options = vec![TextOptions::default(); texts.len()];
        Ok(self.embed_counting(model, texts, &options, false)?.vectors)
    }

    /// [`embed`](Self::embed) with each text's own options (`options[i]` for `texts[i]`),
    /// how many tokens each text became (after truncation), and, when `states`, every
    /// token's final state.
    pub(crate) fn embed_counting(
        &self,
        model: &BertModel,
        texts: &[&str],
        options: &[TextOptions],
        states: bool,
    ) -> anyhow::Result<Embedded> {
        if texts.is_empty() {
            return Ok(Embedded::default());
        }
        let mut encodings = Vec::with_capacity(texts.len());
        for (text, options) in texts.iter().zip(options) {
            let prompt = self.prompts.text(options)?;
            let encoding = if prompt.is_empty() {
                self.tokenizer.encode(*text, options)?
            } else {
                self.tokenizer.encode(format!("{prompt}{text}"), options)?
            };
            encodings.push(encoding);
        }
        let n = texts.len();
        let Padded {
            width,
            ids,
            types,
            mask,
        } = Padded::of(&encodings, self.config.pad_token_id);
        let dev = model.device();
        let ids = CTensor::from_vec(ids, (n, width), dev)?;
        let types = CTensor::from_vec(types, (n, width), dev)?;
        let mask = CTensor::from_vec(mask, (n, width), dev)?;
        let hidden = model.forward(&ids, &types, &mask)?;
        let pooled = self.pooling.apply(&hidden, &mask)?;
        let normalized = |o: &TextOptions| o.normalize.unwrap_or(self.normalize);
        let rows = |t: &CTensor| -> anyhow::Result<Vec<f32>> {
            Ok(t.to_device(&candle_core::Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let vectors = match (
            options.iter().all(normalized),
            options.iter().any(normalized),
        ) {
            (true, _) => rows(&l2_normalize(&pooled)?)?,
            (false, false) => rows(&pooled)?,
            (false, true) => {
                // Requests that differ share a batch: each row as its own request asks.
                let (plain, unit) = (rows(&pooled)?, rows(&l2_normalize(&pooled)?)?);
                let width = plain.len() / n;
                let mut mixed = plain;
                for (row, _) in options.iter().enumerate().filter(|(_, o)| normalized(o)) {
                    let at = row * width..(row + 1) * width;
                    mixed[at.clone()].copy_from_slice(&unit[at]);
                }
                mixed
            }
        };
        let counts = encodings.iter().map(|e| e.get_ids().len() as i32).collect();
        let states = match states {
            true => Some((rows(&hidden.to_dtype(DType::F32)?)?, width)),
            false => None,
        };
        Ok(Embedded {
            vectors,
            counts,
            states,
        })
    }

    /// Width of the vectors.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
}

impl EmbedderModel {
    fn weights(
        &self,
        device: &candle_core::Device,
        dtype: DType,
    ) -> anyhow::Result<Arc<BertModel>> {
        let key = (format!("{:?}", device.location()), dtype);
        let mut cache = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(model) = cache.get(&key) {
            return Ok(model.clone());
        }
        let model = Arc::new(self.embedder.load_weights(device, dtype)?);
        cache.insert(key, model.clone());
        Ok(model)
    }
}

impl LoadedModel for EmbedderModel {
    /// One text (and pair) per batch item, each UTF-8, short enough when the request
    /// asks not to cut: checked per request, so one bad text fails its own request and
    /// not the batch it would have joined.
    fn check_request(&self, request: &InferRequest) -> Result<()> {
        let e = &self.embedder;
        let texts = e.io.of_request(request)?;
        if let (Some(pair), None) = (&e.io.pair, &texts.pairs) {
            if !texts.texts.is_empty() {
                return Err(EngineError::invalid(format!(
                    "model '{}' scores pairs of texts: input '{pair}' is needed",
                    e.spec.name()
                )));
            }
        }
        let options = TextOptions::of(&request.parameters)?;
        let prompt = e.prompts.text(&options)?;
        let seconds = texts.pairs.iter().flatten().map(|p| (p, "")).enumerate();
        let firsts = texts.texts.iter().map(|t| (t, prompt)).enumerate();
        for (i, (text, prompt)) in firsts.chain(seconds) {
            let what = format!("input '{}' text {i}", e.io.text);
            let bytes = prompt.len() + text.len();
            if prompt.is_empty() {
                e.tokenizer
                    .check_length(text.as_str(), bytes, &options, &what)?;
            } else {
                e.tokenizer
                    .check_length(format!("{prompt}{text}"), bytes, &options, &what)?;
            }
        }
        Ok(())
    }

    fn text_codec(&self) -> Option<Arc<dyn nereid_engine::TextCodec>> {
        Some(self.embedder.tokenizer.clone())
    }

    fn create_instance(&self, device: Device, index: usize) -> Result<Instance> {
        let e = &self.embedder;
        let bad = |err: &dyn std::fmt::Display| load_error(&e.spec, BACKEND, err);
        let cdev = candle_device(device).map_err(|e| bad(&e))?;
        let dtype = compute_dtype(&e.spec, device).map_err(|e| bad(&e))?;
        let model = self
            .weights(&cdev, dtype)
            .map_err(|e| bad(&format!("model.safetensors: {e}")))?;
        let pool =
            IntraOp::new(e.threads, &format!("{}-{index}", e.spec.name())).map_err(|e| bad(&e))?;
        let embedder = EmbedderInstance {
            shared: e.clone(),
            model,
            pool,
        };
        Ok(Instance::Batched(Box::new(embedder)))
    }
}

struct EmbedderInstance {
    shared: Arc<Embedder>,
    model: Arc<BertModel>,
    pool: IntraOp,
}

impl BatchedInstance for EmbedderInstance {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let e = &self.shared;
        let texts = e.io.of_batch(batch)?;
        let n = texts.texts.len();
        let mut options = batch
            .row_parameters()
            .map(TextOptions::of)
            .collect::<Result<Vec<_>>>()?;
        let model = &self.model;
        let h = e.hidden_size();
        let mut outputs = Vec::with_capacity(3);
        let counts = match &texts.pairs {
            None => {
                let all: Vec<&str> = texts.texts.iter().map(String::as_str).collect();
                // Token states are copied out only when a request of the batch reads them.
                let states = e.io.states.as_ref().filter(|s| batch.wants(s));
                let embedded = self
                    .pool
                    .run(|| e.embed_counting(model, &all, &options, states.is_some()))
                    .map_err(internal)?;
                outputs.push(Tensor::from_vec(
                    e.io.output.name.clone(),
                    DataType::Fp32,
                    vec![n as i64, h as i64],
                    embedded.vectors,
                ));
                if let (Some(name), Some((values, width))) = (states, embedded.states) {
                    outputs.push(Tensor::from_vec(
                        name.clone(),
                        DataType::Fp32,
                        vec![n as i64, width as i64, h as i64],
                        values,
                    ));
                }
                embedded.counts
            }
            Some(pairs) => {
                // Queries and passages embedded in one pass; the prompt is the query's.
                let all: Vec<&str> = texts
                    .texts
                    .iter()
                    .chain(pairs)
                    .map(String::as_str)
                    .collect();
                let passages = options.iter().map(|o| TextOptions {
                    prompt_name: None,
                    ..o.clone()
                });
                options = options.iter().cloned().chain(passages).collect();
                let embedded = self
                    .pool
                    .run(|| e.embed_counting(model, &all, &options, false))
                    .map_err(internal)?;
                let (queries, passages) = embedded.vectors.split_at(n * h);
                let scores = queries
                    .chunks(h)
                    .zip(passages.chunks(h))
                    .map(|(q, p)| crate::pooling::cosine(q, p))
                    .collect();
                outputs.push(Tensor::from_vec(
                    e.io.output.name.clone(),
                    DataType::Fp32,
                    vec![n as i64, 1],
                    scores,
                ));
                let counts = &embedded.counts;
                counts[..n]
                    .iter()
                    .zip(&counts[n..])
                    .map(|(a, b)| a + b)
                    .collect()
            }
        };
        if let Some(tokens) = &e.io.tokens {
            outputs.push(Tensor::from_vec(
                tokens.clone(),
                DataType::Int32,
                vec![n as i64, 1],
                counts,
            ));
        }
        Ok(outputs)
    }
}
