//! A sentence-transformers model split into the three stages an ensemble chains, each a
//! backend of its own over the same model folder as `sentence_transformer`:
//!
//! - `bert_tokenizer`: BYTES text in; `input_ids`, `attention_mask` and (when the config
//!   declares it) `token_type_ids` out, INT64, padded to the batch's longest text;
//! - `bert_encoder`: those in, `token_embeddings` (FP32 `[-1, hidden_size]`) out;
//! - `sentence_pooling`: `token_embeddings` and `attention_mask` in, one pooled (and, as
//!   the model says, normalised) FP32 vector per text out.
//!
//! Chained, they compute what `sentence_transformer` computes in one model (the demo's
//! `minilm_ensemble` against `minilm`). Output and input names are fixed as above.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Tensor as CTensor;
use nereid_engine::{
    Backend, BatchedInstance, DataType, Device, EngineError, ExecBatch, InferRequest, Instance,
    LoadedModel, ModelSpec, Result, Tensor,
};
use tokenizers::Tokenizer;

use crate::bert::{BertConfig, BertModel};
use crate::bert_folder::{
    dense_weights, load_tokenizer, load_weights, pooling_of, read_config, Padded,
};
use crate::options::{candle_device, compute_dtype, internal, intra_op_threads, load_error};
use crate::pooling::{l2_normalize, Pooling};
use crate::quant::DenseFormat;
use crate::threads::IntraOp;
use crate::weights::{resolve, Wanted};

const IDS: &str = "input_ids";
const MASK: &str = "attention_mask";
const TYPES: &str = "token_type_ids";
const STATES: &str = "token_embeddings";

/// The three backends, by name.
pub(crate) fn register(registry: &mut nereid_engine::BackendRegistry) {
    registry.register("bert_tokenizer", Arc::new(Stage::Tokenizer));
    registry.register("bert_encoder", Arc::new(Stage::Encoder));
    registry.register("sentence_pooling", Arc::new(Stage::Pooling));
}

#[derive(Clone, Copy)]
enum Stage {
    Tokenizer,
    Encoder,
    Pooling,
}

impl Stage {
    fn backend(self) -> &'static str {
        match self {
            Self::Tokenizer => "bert_tokenizer",
            Self::Encoder => "bert_encoder",
            Self::Pooling => "sentence_pooling",
        }
    }

    /// The files of the model folder this stage reads.
    fn files(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Self::Tokenizer => (
                &["config.json", "tokenizer.json"],
                &["sentence_bert_config.json"],
            ),
            Self::Encoder => (&["config.json", "model.safetensors"], &[]),
            Self::Pooling => (&["config.json"], &["1_Pooling/config.json", "modules.json"]),
        }
    }
}

/// Checks a tensor of the config: its datatype and dims.
fn declared<'a>(
    specs: &'a [nereid_engine::TensorSpec],
    name: &str,
    dtype: DataType,
    dims: &[i64],
    required: bool,
) -> std::result::Result<Option<&'a nereid_engine::TensorSpec>, String> {
    match specs.iter().find(|t| t.name == name) {
        Some(t) if t.dtype == dtype && t.dims == dims => Ok(Some(t)),
        Some(t) => Err(format!(
            "'{name}' must be {dtype} with dims {dims:?}, not {} {:?}",
            t.dtype, t.dims
        )),
        None if required => Err(format!("needs '{name}' ({dtype}, dims {dims:?})")),
        None => Ok(None),
    }
}

struct StageModel {
    stage: Stage,
    spec: ModelSpec,
    dir: PathBuf,
    config: BertConfig,
    tokenizer: Option<Tokenizer>,
    /// The text input (tokenizer), and whether token types are an output (tokenizer) or
    /// an input (encoder).
    text: String,
    types: bool,
    pooling: Option<(Pooling, bool)>,
    packed: Option<DenseFormat>,
    threads: usize,
}

impl Backend for Stage {
    fn load(&self, spec: &ModelSpec, version_dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        let bad = |e: &dyn std::fmt::Display| load_error(spec, self.backend(), e);
        if spec.max_batch_size == 0 || spec.decoupled {
            return Err(bad(&"needs max_batch_size > 0 and no decoupled policy"));
        }
        let (required, optional) = self.files();
        let dir = resolve(spec, version_dir, Wanted::Folder { required, optional })
            .map_err(|e| bad(&format!("{e:#}")))?;
        let config = read_config(&dir).map_err(|e| bad(&e))?;
        let hidden = config.hidden_size as i64;
        fn ints<'a>(
            specs: &'a [nereid_engine::TensorSpec],
            name: &str,
            required: bool,
        ) -> std::result::Result<Option<&'a nereid_engine::TensorSpec>, String> {
            declared(specs, name, DataType::Int64, &[-1], required)
        }
        let mut model = StageModel {
            stage: *self,
            spec: spec.clone(),
            dir: dir.clone(),
            config,
            tokenizer: None,
            text: String::new(),
            types: false,
            pooling: None,
            packed: None,
            threads: intra_op_threads(spec).map_err(|e| bad(&e))?,
        };
        match self {
            Stage::Tokenizer => {
                let [text] = spec.inputs.as_slice() else {
                    return Err(bad(&"needs exactly one input (BYTES text, dims [1])"));
                };
                if text.dtype != DataType::Bytes || text.dims != [1] {
                    return Err(bad(&format!(
                        "input '{}' must be TYPE_STRING with dims [1]",
                        text.name
                    )));
                }
                ints(&spec.outputs, IDS, true).map_err(|e| bad(&e))?;
                ints(&spec.outputs, MASK, true).map_err(|e| bad(&e))?;
                model.types = ints(&spec.outputs, TYPES, false)
                    .map_err(|e| bad(&e))?
                    .is_some();
                model.text = text.name.clone();
                let (tokenizer, _) =
                    load_tokenizer(spec, &dir, &model.config).map_err(|e| bad(&e))?;
                model.tokenizer = Some(tokenizer);
            }
            Stage::Encoder => {
                ints(&spec.inputs, IDS, true).map_err(|e| bad(&e))?;
                ints(&spec.inputs, MASK, true).map_err(|e| bad(&e))?;
                model.types = ints(&spec.inputs, TYPES, false)
                    .map_err(|e| bad(&e))?
                    .is_some();
                declared(&spec.outputs, STATES, DataType::Fp32, &[-1, hidden], true)
                    .map_err(|e| bad(&e))?;
                model.packed = dense_weights(spec).map_err(|e| bad(&e))?;
            }
            Stage::Pooling => {
                declared(&spec.inputs, STATES, DataType::Fp32, &[-1, hidden], true)
                    .map_err(|e| bad(&e))?;
                ints(&spec.inputs, MASK, true).map_err(|e| bad(&e))?;
                let [output] = spec.outputs.as_slice() else {
                    return Err(bad(&"needs exactly one output (FP32, dims [hidden_size])"));
                };
                if output.dtype != DataType::Fp32 || output.dims != [hidden] {
                    return Err(bad(&format!(
                        "output '{}' must be TYPE_FP32 with dims [{hidden}]",
                        output.name
                    )));
                }
                model.pooling = Some(pooling_of(spec, &dir).map_err(|e| bad(&e))?);
            }
        }
        Ok(Arc::new(model))
    }
}

impl LoadedModel for StageModel {
    fn check_request(&self, request: &InferRequest) -> Result<()> {
        if let (Stage::Tokenizer, Some(input)) = (self.stage, request.input(&self.text)) {
            for (i, text) in input.string_elements()?.iter().enumerate() {
                std::str::from_utf8(text).map_err(|err| {
                    EngineError::invalid(format!(
                        "input '{}': text {i} is not UTF-8: {err}",
                        self.text
                    ))
                })?;
            }
        }
        Ok(())
    }

    fn create_instance(&self, device: Device, index: usize) -> Result<Instance> {
        let bad = |e: &dyn std::fmt::Display| load_error(&self.spec, self.stage.backend(), e);
        let pool = IntraOp::new(self.threads, &format!("{}-{index}", self.spec.name()))
            .map_err(|e| bad(&e))?;
        let encoder = match self.stage {
            Stage::Encoder => {
                let cdev = candle_device(device).map_err(|e| bad(&e))?;
                let dtype = compute_dtype(&self.spec, device).map_err(|e| bad(&e))?;
                Some(
                    load_weights(&self.dir, &self.config, self.packed, &cdev, dtype)
                        .map_err(|e| bad(&format!("model.safetensors: {e}")))?,
                )
            }
            _ => None,
        };
        Ok(Instance::Batched(Box::new(StageInstance {
            model: StageParts {
                stage: self.stage,
                text: self.text.clone(),
                types: self.types,
                pad: self.config.pad_token_id,
                tokenizer: self.tokenizer.clone(),
                pooling: self.pooling,
                output: self.spec.outputs[0].name.clone(),
            },
            encoder,
            pool,
        })))
    }
}

/// What an instance needs of its model.
struct StageParts {
    stage: Stage,
    text: String,
    types: bool,
    pad: u32,
    tokenizer: Option<Tokenizer>,
    pooling: Option<(Pooling, bool)>,
    output: String,
}

struct StageInstance {
    model: StageParts,
    encoder: Option<BertModel>,
    pool: IntraOp,
}

/// An INT64 `[batch, width]` input as u32 candle tensor.
fn ids_tensor(batch: &ExecBatch, name: &str, device: &candle_core::Device) -> Result<CTensor> {
    let t = batch.require(name)?;
    let [rows, width] = t.shape[..] else {
        return Err(EngineError::invalid(format!(
            "'{name}' must be [batch, tokens]"
        )));
    };
    let values: Vec<u32> = t
        .to_vec::<i64>()?
        .into_iter()
        .map(|v| u32::try_from(v).map_err(|_| EngineError::invalid(format!("'{name}' holds {v}"))))
        .collect::<Result<_>>()?;
    CTensor::from_vec(values, (rows as usize, width as usize), device).map_err(internal)
}

impl StageParts {
    fn tokenize(&self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let tokenizer = self
            .tokenizer
            .as_ref()
            .expect("the tokenizer stage has one");
        let texts = batch.require(&self.text)?.string_elements()?;
        let mut encodings = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let text = std::str::from_utf8(text).map_err(|e| {
                EngineError::invalid(format!("input '{}': text {i} is not UTF-8: {e}", self.text))
            })?;
            encodings.push(
                tokenizer
                    .encode(text, true)
                    .map_err(|e| EngineError::invalid(format!("tokenizer: {e}")))?,
            );
        }
        let n = encodings.len();
        let padded = Padded::of(&encodings, self.pad);
        let width = padded.width;
        let wide = |v: Vec<u32>| v.into_iter().map(i64::from).collect::<Vec<i64>>();
        let (ids, types, mask) = (wide(padded.ids), wide(padded.types), wide(padded.mask));
        let shape = vec![n as i64, width as i64];
        let mut out = vec![
            Tensor::from_vec(IDS, DataType::Int64, shape.clone(), ids),
            Tensor::from_vec(MASK, DataType::Int64, shape.clone(), mask),
        ];
        if self.types {
            out.push(Tensor::from_vec(TYPES, DataType::Int64, shape, types));
        }
        Ok(out)
    }

    fn encode(&self, encoder: &BertModel, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let device = encoder.device();
        let ids = ids_tensor(batch, IDS, device)?;
        let mask = ids_tensor(batch, MASK, device)?;
        let types = match self.types {
            true => ids_tensor(batch, TYPES, device)?,
            false => ids.zeros_like().map_err(internal)?,
        };
        let states = encoder.forward(&ids, &types, &mask).map_err(internal)?;
        let (rows, width, hidden) = states.dims3().map_err(internal)?;
        let values = states
            .to_dtype(candle_core::DType::F32)
            .and_then(|s| s.to_device(&candle_core::Device::Cpu))
            .and_then(|s| s.flatten_all())
            .and_then(|s| s.to_vec1::<f32>())
            .map_err(internal)?;
        Ok(vec![Tensor::from_vec(
            STATES,
            DataType::Fp32,
            vec![rows as i64, width as i64, hidden as i64],
            values,
        )])
    }

    fn pool(&self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let (pooling, normalize) = self.pooling.expect("the pooling stage has one");
        let cpu = candle_core::Device::Cpu;
        let states = batch.require(STATES)?;
        let [rows, width, hidden] = states.shape[..] else {
            return Err(EngineError::invalid(format!(
                "'{STATES}' must be [batch, tokens, hidden]"
            )));
        };
        let shape = (rows as usize, width as usize, hidden as usize);
        let states = CTensor::from_vec(states.to_vec::<f32>()?, shape, &cpu).map_err(internal)?;
        let mask = ids_tensor(batch, MASK, &cpu)?;
        if mask.dims() != [shape.0, shape.1] {
            return Err(EngineError::invalid(format!(
                "'{MASK}' is {:?}, but '{STATES}' is {:?}",
                mask.dims(),
                states.dims()
            )));
        }
        let mut pooled = pooling.apply(&states, &mask).map_err(internal)?;
        if normalize {
            pooled = l2_normalize(&pooled).map_err(internal)?;
        }
        let values = pooled
            .flatten_all()
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(internal)?;
        Ok(vec![Tensor::from_vec(
            self.output.clone(),
            DataType::Fp32,
            vec![rows, hidden],
            values,
        )])
    }
}

impl BatchedInstance for StageInstance {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let (model, encoder) = (&self.model, self.encoder.as_ref());
        self.pool.run(|| match model.stage {
            Stage::Tokenizer => model.tokenize(batch),
            Stage::Encoder => model.encode(encoder.expect("the encoder stage has one"), batch),
            Stage::Pooling => model.pool(batch),
        })
    }
}
