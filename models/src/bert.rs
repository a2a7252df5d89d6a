//! A BERT-family encoder (BERT, MiniLM, the sentence-transformers models built on them) on
//! candle, computing in any float dtype. Padded positions are masked out of attention with a
//! finite large negative bias, so every dtype stays NaN-free and a sequence's vectors do not
//! depend on what it was batched with.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::activation::Activation;
use crate::quant::{DenseFormat, PackedLinear};

/// The fields of a Hugging Face BERT `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state (DistilBERT's `dim`).
    #[serde(alias = "dim")]
    pub hidden_size: usize,
    /// Number of encoder layers (DistilBERT's `n_layers`).
    #[serde(alias = "n_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer (DistilBERT's `n_heads`).
    #[serde(alias = "n_heads")]
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer (DistilBERT's `hidden_dim`).
    #[serde(alias = "hidden_dim")]
    pub intermediate_size: usize,
    /// Feed-forward activation (`gelu`, `gelu_new`, `gelu_pytorch_tanh`, `relu`;
    /// DistilBERT's `activation`).
    #[serde(default = "default_act", alias = "activation")]
    pub hidden_act: String,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// `bert`, or a family laid out like it: `roberta`, `xlm-roberta` and `camembert`
    /// number positions after the padding id ([`BertConfig::position_offset`]);
    /// `distilbert` names its weights its own way and has no token types.
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// The first position id. RoBERTa-family models count positions from `pad_token_id
    /// + 1` (their embedding table reserves the rows up to the padding id), BERT from 0.
    pub fn position_offset(&self) -> usize {
        match self.model_type.as_deref() {
            Some("roberta" | "xlm-roberta" | "camembert") => self.pad_token_id as usize + 1,
            _ => 0,
        }
    }

    /// Whether the weights follow DistilBERT's names (`transformer.layer.N.attention.q_lin`).
    fn distilbert(&self) -> bool {
        self.model_type.as_deref() == Some("distilbert")
    }

    /// The most tokens one text may have: the positions the table holds after the offset.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }

    /// Checks that the encoder can run this config.
    pub fn validate(&self) -> candle_core::Result<()> {
        if self.max_tokens() < 2 {
            candle_core::bail!(
                "max_position_embeddings {} leaves no room for a text after position {}",
                self.max_position_embeddings,
                self.position_offset()
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if let Some(kind) = self
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            candle_core::bail!(
                "position_embedding_type '{kind}' is not supported (only 'absolute')"
            );
        }
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }
}

fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<LayerNorm> {
    // Old checkpoints name the parameters gamma/beta.
    let (weight, bias) = if vb.contains_tensor("weight") {
        (vb.get(size, "weight")?, vb.get(size, "bias")?)
    } else {
        (vb.get(size, "gamma")?, vb.get(size, "beta")?)
    };
    Ok(LayerNorm::new(weight, bias, eps))
}

fn linear(inputs: usize, outputs: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    Ok(Linear::new(
        vb.get((outputs, inputs), "weight")?,
        Some(vb.get(outputs, "bias")?),
    ))
}

/// A dense layer: candle's `Linear` in the model's dtype, or INT8 per output channel on
/// CPU, packed for our kernels ([`PackedLinear`]: INT8 or BF16).
enum Dense {
    Float(Linear),
    Packed(PackedLinear),
}

impl Dense {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Float(linear) => linear.forward(x),
            Self::Packed(linear) => {
                let mut dims = x.dims().to_vec();
                let k = *dims
                    .last()
                    .expect("a dense layer's input has a last dimension");
                let rows = x.elem_count() / k.max(1);
                let y = x
                    .reshape((rows, k))?
                    .contiguous()?
                    .apply_op1_no_bwd(linear)?;
                *dims.last_mut().expect("checked above") = linear.out();
                y.reshape(dims)
            }
        }
    }

    /// The same layer packed in `format` (from FP32 CPU weights).
    fn packed(&self, format: DenseFormat) -> candle_core::Result<Self> {
        let linear = match self {
            Self::Packed(_) => candle_core::bail!("the layer is packed already"),
            Self::Float(linear) => linear,
        };
        let (out, k) = linear.weight().dims2()?;
        let weight: Vec<f32> = linear.weight().flatten_all()?.to_vec1()?;
        let bias: Option<Vec<f32>> = linear.bias().map(|b| b.to_vec1()).transpose()?;
        let bias = bias.as_deref();
        Ok(Self::Packed(PackedLinear::new(
            format, &weight, out, k, bias,
        )))
    }
}

struct Layer {
    /// Query, key and value projections fused into one matmul.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    inter: Dense,
    out: Dense,
    out_norm: LayerNorm,
}

impl Layer {
    fn load(cfg: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        // (query, key, value, attention output, attention norm, up, down, output norm)
        let names: [VarBuilder; 8] = if cfg.distilbert() {
            let att = vb.pp("attention");
            [
                att.pp("q_lin"),
                att.pp("k_lin"),
                att.pp("v_lin"),
                att.pp("out_lin"),
                vb.pp("sa_layer_norm"),
                vb.pp("ffn").pp("lin1"),
                vb.pp("ffn").pp("lin2"),
                vb.pp("output_layer_norm"),
            ]
        } else {
            let att = vb.pp("attention");
            [
                att.pp("self").pp("query"),
                att.pp("self").pp("key"),
                att.pp("self").pp("value"),
                att.pp("output").pp("dense"),
                att.pp("output").pp("LayerNorm"),
                vb.pp("intermediate").pp("dense"),
                vb.pp("output").pp("dense"),
                vb.pp("output").pp("LayerNorm"),
            ]
        };
        let [q, k, v, attn_out, attn_norm, up, down, out_norm] = names;
        let (q, k, v) = (linear(h, h, q)?, linear(h, h, k)?, linear(h, h, v)?);
        let weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
        let bias = Tensor::cat(
            &[
                q.bias().expect("bias"),
                k.bias().expect("bias"),
                v.bias().expect("bias"),
            ],
            0,
        )?;
        Ok(Self {
            qkv: Dense::Float(Linear::new(weight, Some(bias))),
            attn_out: Dense::Float(linear(h, h, attn_out)?),
            attn_norm: layer_norm(h, eps, attn_norm)?,
            inter: Dense::Float(linear(h, cfg.intermediate_size, up)?),
            out: Dense::Float(linear(cfg.intermediate_size, h, down)?),
            out_norm: layer_norm(h, eps, out_norm)?,
        })
    }
}

/// A loaded encoder: embeddings and layers on one device in one dtype.
pub struct BertModel {
    word: Embedding,
    position: Embedding,
    /// None for DistilBERT, which has no token types.
    token_type: Option<Embedding>,
    position_offset: u32,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    act: Activation,
    dtype: DType,
    device: Device,
}

impl BertModel {
    /// Loads the weights (`embeddings.*`, `encoder.layer.N.*`, optionally under `bert.` or
    /// `roberta.`, as classification checkpoints keep them).
    pub fn load(cfg: &BertConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        cfg.validate()?;
        let vb = match ["bert", "roberta", "distilbert"]
            .into_iter()
            .find(|prefix| {
                vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight"))
            }) {
            Some(prefix) => vb.pp(prefix),
            None => vb,
        };
        let emb = vb.pp("embeddings");
        let h = cfg.hidden_size;
        let embedding = |n: usize, name: &str| -> candle_core::Result<Embedding> {
            Ok(Embedding::new(emb.pp(name).get((n, h), "weight")?, h))
        };
        let stack = if cfg.distilbert() {
            vb.pp("transformer")
        } else {
            vb.pp("encoder")
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(cfg, stack.pp("layer").pp(i.to_string())))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            word: embedding(cfg.vocab_size, "word_embeddings")?,
            position: embedding(cfg.max_position_embeddings, "position_embeddings")?,
            token_type: if cfg.distilbert() {
                None
            } else {
                Some(embedding(cfg.type_vocab_size, "token_type_embeddings")?)
            },
            position_offset: cfg.position_offset() as u32,
            embed_norm: layer_norm(h, cfg.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
            heads: cfg.num_attention_heads,
            act: Activation::parse(&cfg.hidden_act)?,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// The same model with every dense layer packed in `format` for our CPU kernels
    /// ([`PackedLinear`]): FP32 weights on CPU only.
    pub fn into_packed(mut self, format: DenseFormat) -> candle_core::Result<Self> {
        if !self.device.is_cpu() || self.dtype != DType::F32 {
            candle_core::bail!("packed dense layers take FP32 weights on CPU");
        }
        for l in &mut self.layers {
            for dense in [&mut l.qkv, &mut l.attn_out, &mut l.inter, &mut l.out] {
                *dense = dense.packed(format)?;
            }
        }
        Ok(self)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Hidden states `(batch, seq, hidden)` for token ids `(batch, seq)` (u32), token types
    /// `(batch, seq)` (u32), and a mask `(batch, seq)` holding 1 for real tokens, 0 for padding.
    pub fn forward(
        &self,
        ids: &Tensor,
        types: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        // Padded tokens get positions too; the mask keeps them out of every real token.
        let first = self.position_offset;
        let positions = Tensor::arange(first, first + seq as u32, &self.device)?;
        let x = self.word.forward(ids)?;
        let x = match &self.token_type {
            Some(token_type) => (x + token_type.forward(types)?)?,
            None => x,
        };
        let x = x.broadcast_add(&self.position.forward(&positions)?)?;
        let mut x = self.embed_norm.forward(&x)?;
        // Additive bias (batch, 1, 1, seq): 0 where real, a large finite negative where padded.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 30_000.0)?
            .to_dtype(self.dtype)?
            .reshape((batch, 1, 1, seq))?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &bias)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let hd = h / self.heads;
        let qkv = l.qkv.forward(x)?.reshape((b, s, 3, self.heads, hd))?;
        let head = |i: usize| {
            qkv.narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let q = (q * (1.0 / (hd as f64).sqrt()))?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        let x = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + x)?)?;
        let inter = self.act.apply(&l.inter.forward(&x)?)?;
        l.out_norm.forward(&(l.out.forward(&inter)? + x)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tiny random BERT config for tests.
    pub(crate) fn tiny_config(vocab: usize) -> BertConfig {
        serde_json::from_value(serde_json::json!({
            "vocab_size": vocab, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 32, "max_position_embeddings": 64, "hidden_act": "gelu",
            "layer_norm_eps": 1e-12, "pad_token_id": 0
        }))
        .unwrap()
    }

    /// Random weights for `tiny_config`, as a safetensors map.
    pub(crate) fn tiny_weights(cfg: &BertConfig, seed: u64) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let mut w = HashMap::new();
        let mut n = seed;
        let mut rand = |shape: &[usize]| {
            n += 1;
            let count: usize = shape.iter().product();
            let vals: Vec<f32> = (0..count)
                .map(|i| {
                    let x = ((i as u64 + 1) * 2654435761 + n * 40503) % 10007;
                    (x as f32 / 10007.0 - 0.5) * 0.4
                })
                .collect();
            Tensor::from_vec(vals, shape, &dev).unwrap()
        };
        let h = cfg.hidden_size;
        w.insert(
            "embeddings.word_embeddings.weight".into(),
            rand(&[cfg.vocab_size, h]),
        );
        w.insert(
            "embeddings.position_embeddings.weight".into(),
            rand(&[cfg.max_position_embeddings, h]),
        );
        w.insert(
            "embeddings.token_type_embeddings.weight".into(),
            rand(&[cfg.type_vocab_size, h]),
        );
        let ones = |n: usize| Tensor::ones(n, DType::F32, &dev).unwrap();
        let zeros = |n: usize| Tensor::zeros(n, DType::F32, &dev).unwrap();
        w.insert("embeddings.LayerNorm.weight".into(), ones(h));
        w.insert("embeddings.LayerNorm.bias".into(), zeros(h));
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}.");
            for name in ["query", "key", "value"] {
                w.insert(format!("{p}attention.self.{name}.weight"), rand(&[h, h]));
                w.insert(format!("{p}attention.self.{name}.bias"), rand(&[h]));
            }
            w.insert(format!("{p}attention.output.dense.weight"), rand(&[h, h]));
            w.insert(format!("{p}attention.output.dense.bias"), rand(&[h]));
            w.insert(format!("{p}attention.output.LayerNorm.weight"), ones(h));
            w.insert(format!("{p}attention.output.LayerNorm.bias"), zeros(h));
            w.insert(
                format!("{p}intermediate.dense.weight"),
                rand(&[cfg.intermediate_size, h]),
            );
            w.insert(
                format!("{p}intermediate.dense.bias"),
                rand(&[cfg.intermediate_size]),
            );
            w.insert(
                format!("{p}output.dense.weight"),
                rand(&[h, cfg.intermediate_size]),
            );
            w.insert(format!("{p}output.dense.bias"), rand(&[h]));
            w.insert(format!("{p}output.LayerNorm.weight"), ones(h));
            w.insert(format!("{p}output.LayerNorm.bias"), zeros(h));
        }
        w
    }

    #[test]
    fn padding_does_not_change_real_positions() {
        let cfg = tiny_config(50);
        let vb = VarBuilder::from_tensors(tiny_weights(&cfg, 1), DType::F32, &Device::Cpu);
        let model = BertModel::load(&cfg, vb).unwrap();
        let dev = Device::Cpu;
        let alone_ids = Tensor::new(&[[2u32, 7, 9]], &dev).unwrap();
        let alone = model
            .forward(
                &alone_ids,
                &alone_ids.zeros_like().unwrap(),
                &alone_ids.ones_like().unwrap(),
            )
            .unwrap();
        let ids = Tensor::new(&[[2u32, 7, 9, 0, 0], [3, 4, 5, 6, 8]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 0, 0], [1, 1, 1, 1, 1]], &dev).unwrap();
        let batched = model
            .forward(&ids, &ids.zeros_like().unwrap(), &mask)
            .unwrap();
        let a: Vec<Vec<f32>> = alone.squeeze(0).unwrap().to_vec2().unwrap();
        let b: Vec<Vec<f32>> = batched
            .get(0)
            .unwrap()
            .narrow(0, 0, 3)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    /// The hidden states of one unpadded text of token `ids`, flattened.
    fn hidden(model: &BertModel, ids: &[u32]) -> Vec<f32> {
        let ids = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        model
            .forward(&ids, &ids.zeros_like().unwrap(), &ids.ones_like().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn roberta_positions_start_after_the_padding_id() {
        // A RoBERTa with padding id 1 reads position rows 2.. where a BERT reads 0..: the
        // same weights with the table shifted by two rows give the same hidden states.
        let bert = tiny_config(50);
        let mut roberta = bert.clone();
        roberta.model_type = Some("roberta".into());
        roberta.pad_token_id = 1;
        assert_eq!(roberta.position_offset(), 2);
        assert_eq!(roberta.max_tokens(), 62);
        let mut weights = tiny_weights(&roberta, 3);
        let table = "embeddings.position_embeddings.weight";
        let full = weights[table].clone();
        let mut shifted = weights.clone();
        let rows = full.narrow(0, 2, 62).unwrap();
        let pad = full.narrow(0, 0, 2).unwrap();
        shifted.insert(table.into(), Tensor::cat(&[&rows, &pad], 0).unwrap());
        // Classification checkpoints keep the encoder under `roberta.`.
        weights = weights
            .into_iter()
            .map(|(k, v)| (format!("roberta.{k}"), v))
            .collect();
        let dev = Device::Cpu;
        let as_roberta = BertModel::load(
            &roberta,
            VarBuilder::from_tensors(weights, DType::F32, &dev),
        )
        .unwrap();
        let as_bert =
            BertModel::load(&bert, VarBuilder::from_tensors(shifted, DType::F32, &dev)).unwrap();
        let run = |m: &BertModel| hidden(m, &[0, 7, 9, 2]);
        let (a, b) = (run(&as_roberta), run(&as_bert));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // And a BERT reading the unshifted table differs: the offset matters.
        let plain = BertModel::load(
            &bert,
            VarBuilder::from_tensors(tiny_weights(&roberta, 3), DType::F32, &dev),
        )
        .unwrap();
        assert!(run(&plain)
            .iter()
            .zip(&a)
            .any(|(x, y)| (x - y).abs() > 1e-3));
    }

    #[test]
    fn distilbert_reads_its_own_names_and_matches_bert_without_token_types() {
        let bert = tiny_config(50);
        let distil: BertConfig = serde_json::from_value(serde_json::json!({
            "model_type": "distilbert", "vocab_size": 50, "dim": 16, "n_layers": 2,
            "n_heads": 4, "hidden_dim": 32, "max_position_embeddings": 64,
            "activation": "gelu", "pad_token_id": 0
        }))
        .unwrap();
        let mut weights = tiny_weights(&bert, 5);
        // BERT adds token type 0's row; with it zero the two encoders compute the same.
        let types = "embeddings.token_type_embeddings.weight";
        weights.insert(types.into(), weights[types].zeros_like().unwrap());
        let renamed: HashMap<String, Tensor> = weights
            .iter()
            .filter(|(k, _)| k.as_str() != types)
            .map(|(k, v)| {
                let k = k
                    .replace("encoder.layer", "transformer.layer")
                    .replace("attention.self.query", "attention.q_lin")
                    .replace("attention.self.key", "attention.k_lin")
                    .replace("attention.self.value", "attention.v_lin")
                    .replace("attention.output.dense", "attention.out_lin")
                    .replace("attention.output.LayerNorm", "sa_layer_norm")
                    .replace("intermediate.dense", "ffn.lin1")
                    .replace("output.dense", "ffn.lin2")
                    .replace("output.LayerNorm", "output_layer_norm");
                (format!("distilbert.{k}"), v.clone())
            })
            .collect();
        let dev = Device::Cpu;
        let as_bert =
            BertModel::load(&bert, VarBuilder::from_tensors(weights, DType::F32, &dev)).unwrap();
        let as_distil =
            BertModel::load(&distil, VarBuilder::from_tensors(renamed, DType::F32, &dev)).unwrap();
        let run = |m: &BertModel| hidden(m, &[2, 7, 9, 4]);
        for (x, y) in run(&as_bert).iter().zip(&run(&as_distil)) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn unsupported_configs_are_refused() {
        let mut cfg = tiny_config(10);
        cfg.hidden_act = "swish".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("swish"));
        let mut cfg = tiny_config(10);
        cfg.num_attention_heads = 3;
        assert!(cfg.validate().is_err());
    }
}
