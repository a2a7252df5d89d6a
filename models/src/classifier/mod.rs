//! The `bert_classifier` backend: a BERT-family encoder with Hugging Face's sequence
//! classification head (`*ForSequenceClassification`), for sequence classifiers and
//! cross-encoder rerankers alike (a reranker is a classifier of one label fed
//! `[CLS] query [SEP] passage [SEP]`).
//!
//! Config: one BYTES input (the text), or two (text and pair: query and passage), each
//! `dims: [1]`; one FP32 output of `num_labels` raw scores (logits), and optionally an INT32
//! `[1]` output counting each item's tokens. The `labels` parameter (the engine's
//! [`LABELS_PARAMETER`]) is filled from `config.json`'s `id2label` when the config leaves it
//! out. Files and the other parameters are the `sentence_transformer` backend's
//! (`max_seq_length`, `matmul_weights`, `intra_op_threads`, `dtype`, the weight sources); requests take the
//! options of [`crate::text`] (`truncate`, `truncation_direction`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Tensor as CTensor};
use candle_nn::VarBuilder;
use nereid_engine::{
    Backend, BatchedInstance, DataType, Device, ExecBatch, InferRequest, Instance, LoadedModel,
    ModelSpec, Result, Tensor, LABELS_PARAMETER,
};
use nereid_proto::inference::{ModelConfig, ModelParameter};

use crate::bert::{BertConfig, BertModel};

mod head;

use crate::bert_folder::{
    complete_text_config, dense_weights, load_tokenizer, read_config, Padded,
};
use crate::options::{
    candle_device, compute_dtype, internal, intra_op_threads, load_error, model_error,
};
use crate::quant::DenseFormat;
use crate::text::{TextIo, TextModel, TextOptions, TextTokenizer};
use crate::threads::IntraOp;
use crate::weights::{resolve, Wanted};
use head::ClassificationHead;

/// The backend's name in `config.pbtxt`.
pub(crate) const BACKEND: &str = "bert_classifier";
const REQUIRED: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];

/// The `bert_classifier` backend.
pub(crate) struct BertClassifier;

/// `config.json`'s classification fields.
#[derive(Debug, Default, serde::Deserialize)]
struct LabelsConfig {
    #[serde(default)]
    id2label: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    num_labels: Option<usize>,
}

impl LabelsConfig {
    fn read(dir: &Path) -> std::result::Result<Self, String> {
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| format!("config.json: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("config.json: {e}"))
    }

    /// The labels in id order (`id2label` keys are decimal strings).
    fn labels(&self) -> std::result::Result<Vec<String>, String> {
        let mut by_id = self
            .id2label
            .iter()
            .map(|(id, label)| {
                id.parse::<usize>()
                    .map(|id| (id, label.clone()))
                    .map_err(|_| format!("config.json: id2label key '{id}' is not a number"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        by_id.sort();
        if by_id.iter().enumerate().any(|(i, (id, _))| *id != i) {
            return Err("config.json: id2label ids are not 0..n".into());
        }
        Ok(by_id.into_iter().map(|(_, label)| label).collect())
    }

    /// How many scores the head makes: `id2label`'s size, else `num_labels`, else 2
    /// (Hugging Face's default).
    fn count(&self) -> usize {
        match (self.id2label.len(), self.num_labels) {
            (0, Some(n)) => n,
            (0, None) => 2,
            (n, _) => n,
        }
    }
}

impl Backend for BertClassifier {
    fn load(&self, spec: &ModelSpec, version_dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        Ok(Arc::new(Loaded(Arc::new(Classifier::load(
            spec,
            version_dir,
        )?))))
    }

    /// Names the scores after `id2label` and records `max_seq_length` when the config
    /// does not.
    fn complete_config(&self, config: &mut ModelConfig, version_dir: &Path) -> Result<()> {
        complete_text_config(config, version_dir, BACKEND, REQUIRED, false)?;
        if config.parameters.contains_key(LABELS_PARAMETER) {
            return Ok(());
        }
        let bad = |e: &dyn std::fmt::Display| model_error(&config.name, BACKEND, e);
        let dir = resolve(
            config,
            version_dir,
            Wanted::Folder {
                required: REQUIRED,
                optional: &[],
            },
        )
        .map_err(|e| bad(&format!("{e:#}")))?;
        let labels = LabelsConfig::read(&dir)
            .and_then(|c| c.labels())
            .map_err(|e| bad(&e))?;
        if !labels.is_empty() {
            let json = serde_json::to_string(&labels).map_err(|e| bad(&e))?;
            config.parameters.insert(
                LABELS_PARAMETER.to_string(),
                ModelParameter { string_value: json },
            );
        }
        Ok(())
    }
}

/// The encoder and its head, on one device in one dtype.
struct Weights {
    encoder: BertModel,
    head: ClassificationHead,
}

/// What a classifier's instances share: all but the weights.
struct Classifier {
    dir: PathBuf,
    config: BertConfig,
    tokenizer: Arc<TextTokenizer>,
    /// How many scores the head makes.
    labels: usize,
    io: TextIo,
    spec: ModelSpec,
    threads: usize,
    /// Dense layers packed for our CPU kernels (`matmul_weights`, as `sentence_transformer`).
    packed: Option<DenseFormat>,
}

impl Classifier {
    fn load(spec: &ModelSpec, version_dir: &Path) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| load_error(spec, BACKEND, e);
        let io = TextIo::of(spec, TextModel::Classifier).map_err(|e| bad(&e))?;
        let dir = resolve(
            spec,
            version_dir,
            Wanted::Folder {
                required: REQUIRED,
                optional: &[],
            },
        )
        .map_err(|e| bad(&format!("{e:#}")))?;
        let config = read_config(&dir).map_err(|e| bad(&e))?;
        let labels = LabelsConfig::read(&dir).map_err(|e| bad(&e))?.count();
        if let Some(&d) = io.output.dims.last().filter(|&&d| d >= 0) {
            if d as usize != labels {
                return Err(bad(&format!(
                    "output '{}' holds {d} scores but the model has {labels} labels",
                    io.output.name
                )));
            }
        }
        let (tokenizer, max_len) = load_tokenizer(spec, &dir, &config).map_err(|e| bad(&e))?;
        let tokenizer = Arc::new(TextTokenizer::new(tokenizer, max_len).map_err(|e| bad(&e))?);
        let threads = intra_op_threads(spec).map_err(|e| bad(&e))?;
        let packed = dense_weights(spec).map_err(|e| bad(&e))?;
        tracing::info!(
            model = spec.name(),
            dir = %dir.display(),
            labels,
            pairs = io.pair.is_some(),
            max_seq_length = max_len,
            "sequence classifier loaded"
        );
        Ok(Self {
            dir,
            config,
            tokenizer,
            labels,
            io,
            spec: spec.clone(),
            threads,
            packed,
        })
    }

    fn load_weights(&self, device: &candle_core::Device, dtype: DType) -> anyhow::Result<Weights> {
        let path = self.dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only; it must not change while loading.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], dtype, device)? };
        let head = ClassificationHead::load(&self.config, self.labels, &vb)?;
        let encoder = BertModel::load(&self.config, vb)?;
        let encoder = match self.packed {
            Some(format) if device.is_cpu() && dtype == DType::F32 => {
                encoder.into_packed(format)?
            }
            _ => encoder,
        };
        Ok(Weights { encoder, head })
    }

    /// Scores `(rows, labels)` row-major, and each row's token count.
    fn classify(
        &self,
        weights: &Weights,
        texts: &[String],
        pairs: Option<&[String]>,
        options: &[TextOptions],
    ) -> anyhow::Result<(Vec<f32>, Vec<i32>)> {
        let mut encodings = Vec::with_capacity(texts.len());
        for (i, (text, options)) in texts.iter().zip(options).enumerate() {
            encodings.push(match pairs {
                Some(pairs) => self
                    .tokenizer
                    .encode((text.as_str(), pairs[i].as_str()), options)?,
                None => self.tokenizer.encode(text.as_str(), options)?,
            });
        }
        let n = texts.len();
        let padded = Padded::of(&encodings, self.config.pad_token_id);
        let dev = weights.encoder.device();
        let shape = (n, padded.width);
        let ids = CTensor::from_vec(padded.ids, shape, dev)?;
        let types = CTensor::from_vec(padded.types, shape, dev)?;
        let mask = CTensor::from_vec(padded.mask, shape, dev)?;
        let states = weights.encoder.forward(&ids, &types, &mask)?;
        let scores = weights
            .head
            .forward(&states)?
            .to_dtype(DType::F32)?
            .to_device(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let counts = encodings.iter().map(|e| e.len() as i32).collect();
        Ok((scores, counts))
    }
}

/// A loaded classifier, shared by its instances.
struct Loaded(Arc<Classifier>);

impl LoadedModel for Loaded {
    /// One text (and pair) per batch item, UTF-8, and short enough when the request asks
    /// not to cut: checked before queueing, so a bad request fails alone.
    fn check_request(&self, request: &InferRequest) -> Result<()> {
        let this = &self.0;
        let options = TextOptions::of(&request.parameters)?;
        let texts = this.io.of_request(request)?;
        for (i, text) in texts.texts.iter().enumerate() {
            let what = format!("input '{}' text {i}", this.io.text);
            match &texts.pairs {
                Some(pairs) => this.tokenizer.check_length(
                    (text.as_str(), pairs[i].as_str()),
                    text.len() + pairs[i].len(),
                    &options,
                    &what,
                )?,
                None => this
                    .tokenizer
                    .check_length(text.as_str(), text.len(), &options, &what)?,
            }
        }
        Ok(())
    }

    fn text_codec(&self) -> Option<Arc<dyn nereid_engine::TextCodec>> {
        Some(self.0.tokenizer.clone())
    }

    fn create_instance(&self, device: Device, index: usize) -> Result<Instance> {
        let this = &self.0;
        let bad = |err: &dyn std::fmt::Display| load_error(&this.spec, BACKEND, err);
        let cdev = candle_device(device).map_err(|e| bad(&e))?;
        let dtype = compute_dtype(&this.spec, device).map_err(|e| bad(&e))?;
        let weights = this
            .load_weights(&cdev, dtype)
            .map_err(|e| bad(&format!("model.safetensors: {e}")))?;
        let pool = IntraOp::new(this.threads, &format!("{}-{index}", this.spec.name()))
            .map_err(|e| bad(&e))?;
        Ok(Instance::Batched(Box::new(ClassifierInstance {
            shared: this.clone(),
            weights,
            pool,
        })))
    }
}

struct ClassifierInstance {
    shared: Arc<Classifier>,
    weights: Weights,
    pool: IntraOp,
}

impl BatchedInstance for ClassifierInstance {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let c = &self.shared;
        let texts = c.io.of_batch(batch)?;
        let options = batch
            .row_parameters()
            .map(TextOptions::of)
            .collect::<Result<Vec<_>>>()?;
        let weights = &self.weights;
        let (scores, counts) = self
            .pool
            .run(|| c.classify(weights, &texts.texts, texts.pairs.as_deref(), &options))
            .map_err(internal)?;
        let rows = texts.texts.len() as i64;
        let mut outputs = vec![Tensor::from_vec(
            c.io.output.name.clone(),
            DataType::Fp32,
            vec![rows, c.labels as i64],
            scores,
        )];
        if let Some(tokens) = &c.io.tokens {
            outputs.push(Tensor::from_vec(
                tokens.clone(),
                DataType::Int32,
                vec![rows, 1],
                counts,
            ));
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_in_id_order_and_count_defaults_like_hugging_face() {
        let c: LabelsConfig =
            serde_json::from_str(r#"{"id2label": {"1": "POS", "0": "NEG", "2": "MIX"}}"#).unwrap();
        assert_eq!(c.labels().unwrap(), ["NEG", "POS", "MIX"]);
        assert_eq!(c.count(), 3);
        let gap: LabelsConfig =
            serde_json::from_str(r#"{"id2label": {"0": "A", "2": "C"}}"#).unwrap();
        assert!(gap.labels().unwrap_err().contains("not 0..n"));
        assert_eq!(LabelsConfig::default().count(), 2);
        let n: LabelsConfig = serde_json::from_str(r#"{"num_labels": 1}"#).unwrap();
        assert_eq!(n.count(), 1);
    }
}
