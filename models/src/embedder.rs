//! The `sentence_transformer` backend: BYTES text in, one pooled (and, as the model says,
//! normalised) FP32 vector per text out, batched dynamically.
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
use candle_nn::VarBuilder;
use nereid_engine::{
    Backend, BatchedInstance, DataType, Device, EngineError, ExecBatch, InferRequest, Instance,
    LoadedModel, ModelSpec, Result, Tensor,
};
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{BertConfig, BertModel};
use crate::options::{candle_device, compute_dtype, internal, intra_op_threads, load_error, param};
use crate::pooling::{l2_normalize, normalizes, Pooling};
use crate::quant::DenseFormat;
use crate::text::{Prompts, TextOptions, TextTokenizer, PROMPTS_FILE};
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

/// The `matmul_weights` parameter: FP32 (`None`) or a packed format; `auto` is the fastest
/// on this CPU ([`DenseFormat::fastest`]).
struct DenseWeights(Option<DenseFormat>);

impl std::str::FromStr for DenseWeights {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Self(None)),
            "int16" => Ok(Self(Some(DenseFormat::Int16))),
            "bf16" => Ok(Self(Some(DenseFormat::Bf16))),
            "auto" => Ok(Self(DenseFormat::fastest())),
            _ => Err("use fp32, int16, bf16 or auto".into()),
        }
    }
}

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
    input: String,
    output: String,
    /// The output counting each text's tokens, when the config declares one.
    tokens: Option<String>,
    spec: ModelSpec,
    threads: usize,
    /// Dense layers packed for our CPU kernels (`matmul_weights: int16` or `bf16`).
    packed: Option<DenseFormat>,
}

/// A loaded model: the shared [`Embedder`] and its weights per (device, dtype), shared by
/// the instances on that device.
struct EmbedderModel {
    embedder: Arc<Embedder>,
    weights: Mutex<HashMap<(String, DType), Arc<BertModel>>>,
}

#[derive(serde::Deserialize, Default)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
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

/// [`Backend::complete_config`] of the text models: fills `max_seq_length` (and, for
/// embedders, `pooling`) from the model's files when the config does not set them.
pub(crate) fn complete_text_config(
    config: &mut nereid_proto::inference::ModelConfig,
    version_dir: &Path,
    backend: &str,
    required: &[&str],
    pools: bool,
) -> Result<()> {
    let has = |config: &nereid_proto::inference::ModelConfig, key: &str| {
        config
            .parameters
            .get(key)
            .is_some_and(|p| !p.string_value.trim().is_empty())
    };
    if has(config, "max_seq_length") && (!pools || has(config, "pooling")) {
        return Ok(());
    }
    let bad = |e: &dyn std::fmt::Display| crate::options::model_error(&config.name, backend, e);
    let dir = resolve(
        config,
        version_dir,
        Wanted::Folder {
            required,
            optional: &[],
        },
    )
    .map_err(|e| bad(&format!("{e:#}")))?;
    let bert = read_config(&dir).map_err(|e| bad(&e))?;
    let (want_length, want_pooling) = (
        !has(config, "max_seq_length"),
        pools && !has(config, "pooling"),
    );
    let mut set = |key: &str, value: String| {
        config.parameters.insert(
            key.to_string(),
            nereid_proto::inference::ModelParameter {
                string_value: value,
            },
        );
    };
    if want_length {
        set(
            "max_seq_length",
            max_seq_length(None, &dir, &bert).to_string(),
        );
    }
    if want_pooling {
        let pooling = Pooling::from_dir(&dir).map_err(|e| bad(&e))?;
        set("pooling", pooling.name().to_string());
    }
    Ok(())
}

/// The most tokens a text becomes: `asked` (the parameter), else
/// `sentence_bert_config.json`'s `max_seq_length`, else the model's positions; within
/// what the positions hold.
fn max_seq_length(asked: Option<usize>, dir: &Path, config: &BertConfig) -> usize {
    let st: SentenceBertConfig = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    asked
        .or(st.max_seq_length)
        .unwrap_or(config.max_tokens())
        .clamp(2, config.max_tokens())
}

impl Embedder {
    /// Reads the model's files (fetching them if the config says where) and checks the
    /// config's inputs and outputs fit.
    pub fn load(spec: &ModelSpec, version_dir: &Path) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| load_error(spec, BACKEND, e);
        let (input, output, tokens) = check_io(spec).map_err(|e| bad(&e))?;
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
        if let Some(&d) = spec
            .output(&output)
            .and_then(|o| o.dims.first())
            .filter(|&&d| d != -1 && d as usize != config.hidden_size)
        {
            return Err(bad(&format!(
                "output dims [{d}] but the model's vectors have {}",
                config.hidden_size
            )));
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
            input,
            output,
            tokens,
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
        Ok(self.embed_counting(model, texts, &options)?.0)
    }

    /// [`embed`](Self::embed) with each text's own options (`options[i]` for `texts[i]`),
    /// and how many tokens each text became (after truncation).
    pub(crate) fn embed_counting(
        &self,
        model: &BertModel,
        texts: &[&str],
        options: &[TextOptions],
    ) -> anyhow::Result<(Vec<f32>, Vec<i32>)> {
        if texts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
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
        let states = model.forward(&ids, &types, &mask)?;
        let pooled = self.pooling.apply(&states, &mask)?;
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
        Ok((vectors, counts))
    }

    /// Width of the vectors.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
}

/// Token ids, token types and attention mask of a batch of encodings, row-major, each row
/// padded (ids with the pad token, types and mask with 0) to the longest.
pub(crate) struct Padded {
    pub(crate) width: usize,
    pub(crate) ids: Vec<u32>,
    pub(crate) types: Vec<u32>,
    pub(crate) mask: Vec<u32>,
}

impl Padded {
    pub(crate) fn of(encodings: &[tokenizers::Encoding], pad: u32) -> Self {
        let width = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(1)
            .max(1);
        let n = encodings.len();
        let (mut ids, mut types, mut mask) = (
            vec![pad; n * width],
            vec![0u32; n * width],
            vec![0u32; n * width],
        );
        for (row, e) in encodings.iter().enumerate() {
            let at = row * width;
            let len = e.get_ids().len();
            ids[at..at + len].copy_from_slice(e.get_ids());
            types[at..at + len].copy_from_slice(e.get_type_ids());
            mask[at..at + len].fill(1);
        }
        Self {
            width,
            ids,
            types,
            mask,
        }
    }
}

/// `config.json` of a BERT-family model folder, validated.
pub(crate) fn read_config(dir: &Path) -> std::result::Result<BertConfig, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: BertConfig =
        serde_json::from_str(&text).map_err(|e| format!("config.json: {e}"))?;
    config.validate().map_err(|e| format!("config.json: {e}"))?;
    Ok(config)
}

/// The model's tokenizer, truncating at `max_seq_length` (the parameter, else
/// `sentence_bert_config.json`, else the model's positions), unpadded; and that length.
pub(crate) fn load_tokenizer(
    spec: &ModelSpec,
    dir: &Path,
    config: &BertConfig,
) -> std::result::Result<(Tokenizer, usize), String> {
    let max_len = max_seq_length(param::<usize>(spec, "max_seq_length")?, dir, config);
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| format!("tokenizer.json: {e}"))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(|e| format!("tokenizer truncation: {e}"))?;
    Ok((tokenizer, max_len))
}

/// The pooling and normalisation: the `pooling` and `normalize` parameters, else what the
/// model's sentence-transformers files say.
pub(crate) fn pooling_of(
    spec: &ModelSpec,
    dir: &Path,
) -> std::result::Result<(Pooling, bool), String> {
    let pooling = match spec.parameter("pooling").filter(|p| !p.is_empty()) {
        Some(name) => Pooling::parse(name).ok_or_else(|| {
            format!("parameter 'pooling' = '{name}': use cls, mean, max or mean_sqrt_len")
        })?,
        None => Pooling::from_dir(dir).map_err(|e| e.to_string())?,
    };
    let normalize = match crate::options::bool_param(spec, "normalize")? {
        Some(n) => n,
        None => normalizes(dir).map_err(|e| e.to_string())?,
    };
    Ok((pooling, normalize))
}

/// The `matmul_weights` parameter: `None` for FP32 dense layers; a warning when this CPU
/// lacks the packed format's vector kernels.
pub(crate) fn dense_weights(spec: &ModelSpec) -> std::result::Result<Option<DenseFormat>, String> {
    let packed = param::<DenseWeights>(spec, "matmul_weights")?.and_then(|w| w.0);
    if let Some(format) = packed.filter(|f| f.vector_kernel().is_none()) {
        tracing::warn!(
            model = spec.name(),
            ?format,
            "this CPU lacks the vector instructions of this packed format's kernels \
             (int16: AVX2 or AVX-512 VNNI; bf16: AVX-512 BF16): the portable kernel \
             runs instead, far slower than fp32"
        );
    }
    Ok(packed)
}

/// The encoder's weights (memory-mapped `model.safetensors`) on `device` in `dtype`;
/// FP32 ones on CPU get `packed` dense layers when asked (other devices and dtypes keep
/// float ones).
pub(crate) fn load_weights(
    dir: &Path,
    config: &BertConfig,
    packed: Option<DenseFormat>,
    device: &candle_core::Device,
    dtype: DType,
) -> anyhow::Result<BertModel> {
    let path = dir.join("model.safetensors");
    // SAFETY: the file is memory-mapped read-only; it must not change while loading.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], dtype, device)? };
    let model = BertModel::load(config, vb)?;
    match packed {
        Some(format) if device.is_cpu() && dtype == DType::F32 => Ok(model.into_packed(format)?),
        _ => Ok(model),
    }
}

/// One BYTES input and one FP32 output.
/// The text input, the vectors output and the optional token-count output.
type Io = (String, String, Option<String>);

/// One BYTES input; one FP32 output, and optionally an INT32 `[1]` output that counts each
/// text's tokens (what `/v1/embeddings` reports as usage).
fn check_io(spec: &ModelSpec) -> std::result::Result<Io, String> {
    let [input] = spec.inputs.as_slice() else {
        return Err("needs exactly one input (BYTES text)".into());
    };
    let vectors = |t: &&nereid_engine::TensorSpec| t.dtype == DataType::Fp32;
    let (output, tokens) = match spec.outputs.as_slice() {
        [output] => (output, None),
        [a, b] if vectors(&a) && !vectors(&b) => (a, Some(b)),
        [a, b] if vectors(&b) && !vectors(&a) => (b, Some(a)),
        _ => {
            return Err(
                "needs one output of FP32 vectors, and optionally one of INT32 token counts".into(),
            )
        }
    };
    if let Some(t) = tokens.filter(|t| t.dtype != DataType::Int32 || t.dims != [1]) {
        return Err(format!(
            "output '{}' (token counts) must be TYPE_INT32 with dims [1]",
            t.name
        ));
    }
    if input.dtype != DataType::Bytes || !(input.dims == [1] || input.dims == [-1]) {
        return Err(format!(
            "input '{}' must be TYPE_STRING with dims [1]",
            input.name
        ));
    }
    if output.dtype != DataType::Fp32 || output.dims.len() != 1 {
        return Err(format!(
            "output '{}' must be TYPE_FP32 with dims [hidden_size]",
            output.name
        ));
    }
    if spec.decoupled {
        return Err("cannot be decoupled".into());
    }
    Ok((
        input.name.clone(),
        output.name.clone(),
        tokens.map(|t| t.name.clone()),
    ))
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
    /// One text per batch item, each UTF-8: checked per request, so one bad text fails its
    /// own request and not the batch it would have joined.
    fn check_request(&self, request: &InferRequest) -> Result<()> {
        let e = &self.embedder;
        let Some(input) = request.input(&e.input) else {
            return Ok(()); // the engine's validation names a missing input
        };
        let texts = input.string_elements()?;
        let batch = match input.shape.first() {
            Some(&b) if e.spec.max_batch_size > 0 => b.max(0) as usize,
            _ => 1,
        };
        if texts.len() != batch {
            return Err(EngineError::invalid(format!(
                "input '{}' must hold one text per batch item ({} texts for batch {batch})",
                e.input,
                texts.len()
            )));
        }
        let options = TextOptions::of(&request.parameters)?;
        let prompt = e.prompts.text(&options)?;
        for (i, text) in texts.iter().enumerate() {
            let text = std::str::from_utf8(text).map_err(|err| {
                EngineError::invalid(format!("input '{}': text {i} is not UTF-8: {err}", e.input))
            })?;
            let what = format!("input '{}' text {i}", e.input);
            let bytes = prompt.len() + text.len();
            if prompt.is_empty() {
                e.tokenizer.check_length(text, bytes, &options, &what)?;
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
        let items = batch.require(&e.input)?.string_elements()?;
        if items.len() != batch.batch_size {
            return Err(EngineError::invalid(format!(
                "input '{}' must hold one text per batch item ({} texts for batch {})",
                e.input,
                items.len(),
                batch.batch_size
            )));
        }
        let texts = items
            .iter()
            .map(|b| std::str::from_utf8(b))
            .collect::<std::result::Result<Vec<&str>, _>>()
            .map_err(|err| {
                EngineError::invalid(format!("input '{}' is not UTF-8: {err}", e.input))
            })?;
        let options = batch
            .row_parameters()
            .map(TextOptions::of)
            .collect::<Result<Vec<_>>>()?;
        let model = &self.model;
        let (vectors, counts) = self
            .pool
            .run(|| e.embed_counting(model, &texts, &options))
            .map_err(internal)?;
        let mut outputs = vec![Tensor::from_vec(
            e.output.clone(),
            DataType::Fp32,
            vec![texts.len() as i64, e.hidden_size() as i64],
            vectors,
        )];
        if let Some(tokens) = &e.tokens {
            outputs.push(Tensor::from_vec(
                tokens.clone(),
                DataType::Int32,
                vec![texts.len() as i64, 1],
                counts,
            ));
        }
        Ok(outputs)
    }
}
