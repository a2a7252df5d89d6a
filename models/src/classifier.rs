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
//! (`max_seq_length`, `intra_op_threads`, `dtype`, the weight sources); requests take the
//! options of [`crate::text`] (`truncate`, `truncation_direction`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Tensor as CTensor};
use candle_nn::{Linear, Module, VarBuilder};
use nereid_engine::{
    Backend, BatchedInstance, DataType, Device, EngineError, ExecBatch, InferRequest, Instance,
    LoadedModel, ModelSpec, Result, Tensor, TensorSpec, LABELS_PARAMETER,
};
use nereid_proto::inference::{ModelConfig, ModelParameter};

use crate::bert::{BertConfig, BertModel};
use crate::embedder::{complete_text_config, load_tokenizer, read_config, Padded};
use crate::options::{
    candle_device, compute_dtype, internal, intra_op_threads, load_error, model_error,
};
use crate::text::{TextOptions, TextTokenizer};
use crate::threads::IntraOp;
use crate::weights::{resolve, Wanted};

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

/// How the head sits on the encoder, by `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadLayout {
    /// BERT: the pooler (`bert.pooler.dense`, tanh) on `[CLS]`, then `classifier`.
    Bert,
    /// RoBERTa, XLM-R, CamemBERT: `classifier.dense` (tanh), then `classifier.out_proj`.
    Roberta,
    /// DistilBERT: `pre_classifier` (ReLU), then `classifier`.
    DistilBert,
}

impl HeadLayout {
    fn of(config: &BertConfig) -> Self {
        match config.model_type.as_deref() {
            Some("roberta" | "xlm-roberta" | "camembert") => Self::Roberta,
            Some("distilbert") => Self::DistilBert,
            _ => Self::Bert,
        }
    }
}

/// The classification head: the first token's state through a dense layer and its
/// activation, then the projection to the scores.
pub(crate) struct ClassificationHead {
    dense: Linear,
    layout: HeadLayout,
    out: Linear,
}

impl ClassificationHead {
    fn load(config: &BertConfig, labels: usize, vb: &VarBuilder) -> candle_core::Result<Self> {
        let h = config.hidden_size;
        let linear = |vb: VarBuilder, outputs: usize| -> candle_core::Result<Linear> {
            Ok(Linear::new(
                vb.get((outputs, h), "weight")?,
                Some(vb.get(outputs, "bias")?),
            ))
        };
        let layout = HeadLayout::of(config);
        let (dense, out) = match layout {
            HeadLayout::Bert => {
                let pooler = ["bert.pooler.dense", "pooler.dense"]
                    .into_iter()
                    .find(|p| vb.contains_tensor(&format!("{p}.weight")))
                    .unwrap_or("bert.pooler.dense");
                (vb.pp(pooler), vb.pp("classifier"))
            }
            HeadLayout::Roberta => (vb.pp("classifier.dense"), vb.pp("classifier.out_proj")),
            HeadLayout::DistilBert => (vb.pp("pre_classifier"), vb.pp("classifier")),
        };
        Ok(Self {
            dense: linear(dense, h)?,
            layout,
            out: linear(out, labels)?,
        })
    }

    /// Scores `(batch, labels)` from hidden states `(batch, seq, hidden)`.
    pub(crate) fn forward(&self, states: &CTensor) -> candle_core::Result<CTensor> {
        let first = states.narrow(1, 0, 1)?.squeeze(1)?;
        let x = self.dense.forward(&first)?;
        let x = match self.layout {
            HeadLayout::DistilBert => x.relu()?,
            HeadLayout::Bert | HeadLayout::Roberta => x.tanh()?,
        };
        self.out.forward(&x)
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
    text: String,
    pair: Option<String>,
    scores: String,
    tokens: Option<String>,
    spec: ModelSpec,
    threads: usize,
}

impl Classifier {
    fn load(spec: &ModelSpec, version_dir: &Path) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| load_error(spec, BACKEND, e);
        let io = check_io(spec).map_err(|e| bad(&e))?;
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
        if let Some(&d) = io.scores.dims.last().filter(|&&d| d >= 0) {
            if d as usize != labels {
                return Err(bad(&format!(
                    "output '{}' holds {d} scores but the model has {labels} labels",
                    io.scores.name
                )));
            }
        }
        let (tokenizer, max_len) = load_tokenizer(spec, &dir, &config).map_err(|e| bad(&e))?;
        let tokenizer = Arc::new(TextTokenizer::new(tokenizer, max_len).map_err(|e| bad(&e))?);
        let threads = intra_op_threads(spec).map_err(|e| bad(&e))?;
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
            text: io.text.name.clone(),
            pair: io.pair.map(|p| p.name.clone()),
            scores: io.scores.name.clone(),
            tokens: io.tokens.map(|t| t.name.clone()),
            spec: spec.clone(),
            threads,
        })
    }

    fn load_weights(&self, device: &candle_core::Device, dtype: DType) -> anyhow::Result<Weights> {
        let path = self.dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only; it must not change while loading.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], dtype, device)? };
        let head = ClassificationHead::load(&self.config, self.labels, &vb)?;
        let encoder = BertModel::load(&self.config, vb)?;
        Ok(Weights { encoder, head })
    }

    /// The texts of input `name` in a request or batch, checked to be UTF-8.
    fn texts(tensor: &Tensor, name: &str) -> Result<Vec<String>> {
        tensor
            .string_elements()?
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                String::from_utf8(b.to_vec()).map_err(|err| {
                    EngineError::invalid(format!("input '{name}': text {i} is not UTF-8: {err}"))
                })
            })
            .collect()
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

/// The tensors of a classifier's config.
struct Io<'a> {
    text: &'a TensorSpec,
    pair: Option<&'a TensorSpec>,
    scores: &'a TensorSpec,
    tokens: Option<&'a TensorSpec>,
}

fn check_io(spec: &ModelSpec) -> std::result::Result<Io<'_>, String> {
    let texts = match spec.inputs.as_slice() {
        [text] => (text, None),
        [text, pair] => (text, Some(pair)),
        _ => return Err("needs one BYTES input (text), or two (text and pair)".into()),
    };
    for input in std::iter::once(texts.0).chain(texts.1) {
        if input.dtype != DataType::Bytes || !(input.dims == [1] || input.dims == [-1]) {
            return Err(format!(
                "input '{}' must be TYPE_STRING with dims [1]",
                input.name
            ));
        }
    }
    let scores = |t: &&TensorSpec| t.dtype == DataType::Fp32;
    let (scores, tokens) = match spec.outputs.as_slice() {
        [s] => (s, None),
        [a, b] if scores(&a) && !scores(&b) => (a, Some(b)),
        [a, b] if scores(&b) && !scores(&a) => (b, Some(a)),
        _ => {
            return Err(
                "needs one output of FP32 scores, and optionally one of INT32 token counts".into(),
            )
        }
    };
    if scores.dtype != DataType::Fp32 || scores.dims.len() != 1 {
        return Err(format!(
            "output '{}' must be TYPE_FP32 with dims [num_labels]",
            scores.name
        ));
    }
    if let Some(t) = tokens.filter(|t| t.dtype != DataType::Int32 || t.dims != [1]) {
        return Err(format!(
            "output '{}' (token counts) must be TYPE_INT32 with dims [1]",
            t.name
        ));
    }
    if spec.decoupled {
        return Err("cannot be decoupled".into());
    }
    Ok(Io {
        text: texts.0,
        pair: texts.1,
        scores,
        tokens,
    })
}

/// A loaded classifier, shared by its instances.
struct Loaded(Arc<Classifier>);

impl LoadedModel for Loaded {
    /// One text (and pair) per batch item, UTF-8, and short enough when the request asks
    /// not to cut: checked before queueing, so a bad request fails alone.
    fn check_request(&self, request: &InferRequest) -> Result<()> {
        let this = &self.0;
        let options = TextOptions::of(&request.parameters)?;
        let batch = |t: &Tensor| match t.shape.first() {
            Some(&b) if this.spec.max_batch_size > 0 => b.max(0) as usize,
            _ => 1,
        };
        let Some(text) = request.input(&this.text) else {
            return Ok(()); // the engine's validation names a missing input
        };
        let texts = Classifier::texts(text, &this.text)?;
        if texts.len() != batch(text) {
            return Err(EngineError::invalid(format!(
                "input '{}' must hold one text per batch item ({} texts for batch {})",
                this.text,
                texts.len(),
                batch(text)
            )));
        }
        let pairs = match (
            &this.pair,
            this.pair.as_ref().and_then(|p| request.input(p)),
        ) {
            (Some(name), Some(pair)) => {
                let pairs = Classifier::texts(pair, name)?;
                if pairs.len() != texts.len() {
                    return Err(EngineError::invalid(format!(
                        "input '{name}' holds {} texts but '{}' holds {}: one pair per text",
                        pairs.len(),
                        this.text,
                        texts.len()
                    )));
                }
                Some(pairs)
            }
            _ => None,
        };
        for (i, text) in texts.iter().enumerate() {
            let what = format!("input '{}' text {i}", this.text);
            match &pairs {
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
        let texts = Classifier::texts(batch.require(&c.text)?, &c.text)?;
        // An optional pair input may be left out: the batch then holds single texts.
        let pairs = match c
            .pair
            .as_ref()
            .and_then(|name| Some((name, batch.input(name)?)))
        {
            Some((name, pair)) => Some(Classifier::texts(pair, name)?),
            None => None,
        };
        if texts.len() != batch.batch_size || pairs.as_ref().is_some_and(|p| p.len() != texts.len())
        {
            return Err(EngineError::invalid(format!(
                "inputs must hold one text (and pair) per batch item (batch {})",
                batch.batch_size
            )));
        }
        let options = batch
            .row_parameters()
            .map(TextOptions::of)
            .collect::<Result<Vec<_>>>()?;
        let weights = &self.weights;
        let (scores, counts) = self
            .pool
            .run(|| c.classify(weights, &texts, pairs.as_deref(), &options))
            .map_err(internal)?;
        let rows = texts.len() as i64;
        let mut outputs = vec![Tensor::from_vec(
            c.scores.clone(),
            DataType::Fp32,
            vec![rows, c.labels as i64],
            scores,
        )];
        if let Some(tokens) = &c.tokens {
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
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;
    use crate::bert::tests::{tiny_config, tiny_weights};

    /// A checkpoint laid out as `model_type` stores it: the encoder under its prefix and
    /// the head's tensors under their names, with 3 labels.
    fn checkpoint(model_type: &str) -> (BertConfig, HashMap<String, CTensor>) {
        let mut config = tiny_config(40);
        config.model_type = Some(model_type.into());
        let h = config.hidden_size;
        let prefix = match model_type {
            "roberta" => "roberta.",
            _ => "bert.",
        };
        let mut w: HashMap<String, CTensor> = tiny_weights(&config, 3)
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect();
        let values = |n: usize, seed: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 * 0.37 + seed).sin()) * 0.3)
                .collect()
        };
        let (dense, out) = match model_type {
            "roberta" => ("classifier.dense", "classifier.out_proj"),
            _ => ("bert.pooler.dense", "classifier"),
        };
        let dev = Device::Cpu;
        w.insert(
            format!("{dense}.weight"),
            CTensor::from_vec(values(h * h, 1.0), (h, h), &dev).unwrap(),
        );
        w.insert(
            format!("{dense}.bias"),
            CTensor::from_vec(values(h, 2.0), h, &dev).unwrap(),
        );
        w.insert(
            format!("{out}.weight"),
            CTensor::from_vec(values(3 * h, 3.0), (3, h), &dev).unwrap(),
        );
        w.insert(
            format!("{out}.bias"),
            CTensor::from_vec(values(3, 4.0), 3, &dev).unwrap(),
        );
        (config, w)
    }

    /// The head by hand: `out(tanh(dense(first token)))` with plain loops.
    fn by_hand(w: &HashMap<String, CTensor>, dense: &str, out: &str, first: &[f32]) -> Vec<f32> {
        let get = |name: &str| -> Vec<f32> { w[name].flatten_all().unwrap().to_vec1().unwrap() };
        let affine = |weight: &[f32], bias: &[f32], x: &[f32]| -> Vec<f32> {
            bias.iter()
                .enumerate()
                .map(|(o, b)| {
                    b + (0..x.len())
                        .map(|i| weight[o * x.len() + i] * x[i])
                        .sum::<f32>()
                })
                .collect()
        };
        let hidden: Vec<f32> = affine(
            &get(&format!("{dense}.weight")),
            &get(&format!("{dense}.bias")),
            first,
        )
        .into_iter()
        .map(f32::tanh)
        .collect();
        affine(
            &get(&format!("{out}.weight")),
            &get(&format!("{out}.bias")),
            &hidden,
        )
    }

    #[test]
    fn bert_and_roberta_heads_score_the_first_token_through_their_own_layers() {
        for (model_type, dense, out) in [
            ("bert", "bert.pooler.dense", "classifier"),
            ("roberta", "classifier.dense", "classifier.out_proj"),
        ] {
            let (config, w) = checkpoint(model_type);
            let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
            let head = ClassificationHead::load(&config, 3, &vb).unwrap();
            let encoder = BertModel::load(&config, vb).unwrap();
            let ids = CTensor::new(&[[2u32, 7, 9, 3]], &Device::Cpu).unwrap();
            let states = encoder
                .forward(&ids, &ids.zeros_like().unwrap(), &ids.ones_like().unwrap())
                .unwrap();
            let got: Vec<f32> = head
                .forward(&states)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let first: Vec<f32> = states.get(0).unwrap().get(0).unwrap().to_vec1().unwrap();
            let want = by_hand(&w, dense, out, &first);
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 1e-5, "{model_type}: {got:?} vs {want:?}");
            }
        }
    }

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
