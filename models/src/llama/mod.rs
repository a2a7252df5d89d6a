//! A quantized llama decoder over candle's GGUF kernels that steps many sequences at once.
//!
//! It loads the same GGUF tensors as `candle_transformers::models::quantized_llama` (and
//! matches its logits, see the tests), but keeps the KV cache outside the model, one
//! [`KvCache`] per sequence, so one forward pass can carry chunks of different sequences at
//! different positions: every projection and MLP matmul runs once over all their rows
//! (continuous batching: a decode step of 8 sequences reads the weights once, not 8 times),
//! and only attention runs per sequence, against that sequence's own cache.

use std::io::{Read, Seek};

use anyhow::{bail, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor};

use crate::decode_attention::{self, DecodeQuery, Heads};

mod kv_cache;
mod projection;

pub use kv_cache::KvCache;
pub(crate) use kv_cache::KvLayers;
pub use projection::MatmulWeights;
use projection::Projection;

/// The hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// Number of decoder blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMS-norm epsilon.
    pub rms_eps: f64,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// Longest sequence (prompt and completion) the model serves.
    pub context: usize,
}

impl LlamaConfig {
    fn from_gguf(content: &Content, max_context: usize) -> Result<Self> {
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let arch = arch.unwrap_or_else(|| "llama".into());
        if arch != "llama" {
            bail!("general.architecture '{arch}' is not supported (only 'llama')");
        }
        let get = |k: &str| -> Result<u32> {
            let v = content
                .metadata
                .get(&format!("llama.{k}"))
                .ok_or_else(|| anyhow::anyhow!("GGUF lacks llama.{k}"))?;
            Ok(v.to_u32()?)
        };
        let n_head = get("attention.head_count")? as usize;
        let hidden = get("embedding_length")? as usize;
        let head_dim = hidden / n_head.max(1);
        let rope_dim = get("rope.dimension_count")
            .map(|d| d as usize)
            .unwrap_or(head_dim);
        if rope_dim != head_dim {
            bail!("partial rotary embeddings (rope dim {rope_dim}, head dim {head_dim}) are not supported");
        }
        if content
            .metadata
            .get("llama.expert_count")
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(0)
            > 1
        {
            bail!("mixture-of-experts llama models are not supported");
        }
        let context = get("context_length").map(|c| c as usize).unwrap_or(4096);
        Ok(Self {
            n_layer: get("block_count")? as usize,
            n_head,
            n_kv_head: get("attention.head_count_kv")
                .map(|v| v as usize)
                .unwrap_or(n_head),
            head_dim,
            rms_eps: content
                .metadata
                .get("llama.attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(1e-5) as f64,
            rope_base: content
                .metadata
                .get("llama.rope.freq_base")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10_000.),
            context: context.min(max_context.max(16)),
        })
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: Projection,
    wk: Projection,
    wv: Projection,
    wo: Projection,
    ffn_norm: Tensor,
    gate: Projection,
    up: Projection,
    down: Projection,
}

/// Some new tokens of one sequence, fed in one forward pass.
pub struct Chunk<'a> {
    /// The sequence's cache; the tokens are appended to it.
    pub cache: &'a mut KvCache,
    /// Token ids at positions `cache.len()..`.
    pub tokens: &'a [u32],
}

/// A loaded quantized llama.
pub struct Llama {
    /// Hyper-parameters.
    pub cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Projection,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl Llama {
    /// Loads the weights from a GGUF file onto `device`, the matmul weights held as
    /// `weights` says; the context is capped at `max_context` positions.
    pub fn load<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        device: &Device,
        max_context: usize,
        weights: MatmulWeights,
    ) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(content, max_context)?;
        let mut get = |name: &str| content.tensor(reader, name, device);
        let embed_q = get("token_embd.weight")?;
        let embed = embed_q.dequantize(device)?;
        let norm = get("output_norm.weight")?.dequantize(device)?;
        let output = match get("output.weight") {
            Ok(t) => weights.matmul(t, device)?,
            Err(_) => weights.matmul(embed_q, device)?,
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let mut mm = |n: &str| -> Result<Projection> {
                weights.matmul(get(&format!("blk.{i}.{n}.weight"))?, device)
            };
            let (wq, wk, wv, wo) = (
                mm("attn_q")?,
                mm("attn_k")?,
                mm("attn_v")?,
                mm("attn_output")?,
            );
            let (gate, up, down) = (mm("ffn_gate")?, mm("ffn_up")?, mm("ffn_down")?);
            let attn_norm = get(&format!("blk.{i}.attn_norm.weight"))?.dequantize(device)?;
            let ffn_norm = get(&format!("blk.{i}.ffn_norm.weight"))?.dequantize(device)?;
            layers.push(Layer {
                attn_norm,
                wq,
                wk,
                wv,
                wo,
                ffn_norm,
                gate,
                up,
                down,
            });
        }
        let (cos, sin) = rope_tables(&cfg, device)?;
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            output,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// Runs the chunks' tokens through the model, appending to their caches, and returns the
    /// FP32 logits `(chunks, vocab)` of each chunk's last token.
    pub fn forward(&self, chunks: &mut [Chunk]) -> Result<Tensor> {
        let cfg = &self.cfg;
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut last_rows = Vec::with_capacity(chunks.len());
        for c in chunks.iter() {
            if c.tokens.is_empty() {
                bail!("a chunk has no tokens");
            }
            let start = c.cache.len();
            if start + c.tokens.len() > cfg.context {
                bail!(
                    "sequence of {} tokens exceeds the context of {}",
                    start + c.tokens.len(),
                    cfg.context
                );
            }
            ids.extend_from_slice(c.tokens);
            positions.extend((start..start + c.tokens.len()).map(|p| p as u32));
            last_rows.push(ids.len() as u32 - 1);
        }
        let n = ids.len();
        let dev = &self.device;
        let pos = Tensor::from_vec(positions, n, dev)?;
        let cos = self
            .cos
            .index_select(&pos, 0)?
            .reshape((n, 1, cfg.head_dim / 2))?;
        let sin = self
            .sin
            .index_select(&pos, 0)?
            .reshape((n, 1, cfg.head_dim / 2))?;
        let mut x = self
            .embed
            .index_select(&Tensor::from_vec(ids, n, dev)?, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps as f32)?;
            let rope = |t: Tensor, heads: usize| -> Result<Tensor> {
                let t = t.reshape((n, heads, 1, cfg.head_dim))?.contiguous()?;
                Ok(candle_nn::rotary_emb::rope_i(&t, &cos, &sin)?.reshape((
                    n,
                    heads,
                    cfg.head_dim,
                ))?)
            };
            let q = rope(layer.wq.forward(&h)?, cfg.n_head)?;
            let k = rope(layer.wk.forward(&h)?, cfg.n_kv_head)?;
            let v = layer
                .wv
                .forward(&h)?
                .reshape((n, cfg.n_kv_head, cfg.head_dim))?;
            let attn = self.attention(li, chunks, &q, &k, &v)?;
            x = (x + layer.wo.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps as f32)?;
            let mlp = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&mlp)?)?;
        }
        for c in chunks.iter_mut() {
            c.cache.len += c.tokens.len();
        }
        let last = x.index_select(&Tensor::from_vec(last_rows, chunks.len(), dev)?, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, cfg.rms_eps as f32)?;
        Ok(self.output.forward(&last)?.to_dtype(DType::F32)?)
    }

    /// Attention of every chunk of a step: `q` `(n, n_head, hd)` and new `k`/`v`
    /// `(n, n_kv, hd)` for all their rows; returns `(n, n_head * hd)`.
    ///
    /// On CPU every row, prompt or decode, meets its own sequence's cache up to its own
    /// position in [`decode_attention`]: a row's result then depends on nothing but that
    /// sequence's tokens, so a prompt read in one chunk, in several, or after a reused
    /// prefix gives the same bits, and a seeded request samples the same tokens however it
    /// was batched (8-bit activation rounding would turn the last-digit differences of two
    /// attention paths into different logits).
    fn attention(
        &self,
        layer: usize,
        chunks: &mut [Chunk],
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Tensor> {
        let together = self.device.is_cpu() && q.dtype() == DType::F32;
        let mut outs = Vec::with_capacity(chunks.len());
        let mut rows = Vec::new(); // (chunk, row in q, positions it sees)
        let mut row = 0;
        for (i, c) in chunks.iter_mut().enumerate() {
            let t = c.tokens.len();
            let (k, v) = (k.narrow(0, row, t)?, v.narrow(0, row, t)?);
            if together {
                let start = c.cache.len;
                self.append(
                    layer,
                    c.cache,
                    &k.transpose(0, 1)?.contiguous()?,
                    &v.transpose(0, 1)?.contiguous()?,
                )?;
                rows.extend((0..t).map(|j| (i, row + j, start + j + 1)));
            } else {
                let q = q.narrow(0, row, t)?;
                outs.push(self.attend(layer, c.cache, &q, &k, &v)?);
            }
            row += t;
        }
        if together {
            return self.decode_attention(layer, chunks, &rows, q);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// The attention of `rows` (chunk, row in `q`, positions of its cache it sees), whose
    /// keys and values are already in their caches: `(rows.len(), n_head * hd)`.
    fn decode_attention(
        &self,
        layer: usize,
        chunks: &[Chunk],
        rows: &[(usize, usize, usize)],
        q: &Tensor,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let width = cfg.n_head * cfg.head_dim;
        let q = q.contiguous()?;
        let (q_storage, q_layout) = q.storage_and_layout();
        let q_rows = decode_attention::cpu_f32(&q_storage, q_layout)?;
        let caches: Vec<_> = rows
            .iter()
            .map(|&(i, _, _)| {
                let (k, v) = chunks[i].cache.layers[layer]
                    .as_ref()
                    .expect("appended before");
                (k.storage_and_layout(), v.storage_and_layout())
            })
            .collect();
        let queries = rows
            .iter()
            .zip(&caches)
            .map(|(&(i, row, len), ((ks, kl), (vs, vl)))| {
                Ok(DecodeQuery {
                    q: &q_rows[row * width..(row + 1) * width],
                    keys: decode_attention::cpu_f32(ks, kl)?,
                    values: decode_attention::cpu_f32(vs, vl)?,
                    capacity: chunks[i].cache.capacity,
                    len,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let heads = Heads {
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
        };
        let out = decode_attention::attend(&queries, heads)?;
        Ok(Tensor::from_vec(out, (rows.len(), width), &self.device)?)
    }

    /// Attention of one chunk: `q` `(t, n_head, hd)`, new `k`/`v` `(t, n_kv, hd)`; returns
    /// `(t, n_head * hd)`. Query heads sharing a KV head are stacked as rows, so grouped
    /// attention needs no copies of the cache.
    fn attend(
        &self,
        layer: usize,
        cache: &mut KvCache,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (t, hd, n_kv) = (q.dim(0)?, cfg.head_dim, cfg.n_kv_head);
        let rep = cfg.n_head / n_kv;
        let start = cache.len;
        let (keys, values) = self.append(
            layer,
            cache,
            &k.transpose(0, 1)?.contiguous()?,
            &v.transpose(0, 1)?.contiguous()?,
        )?;
        let total = start + t;
        // (t, n_kv, rep, hd) -> (n_kv, rep * t, hd)
        let q = q
            .reshape((t, n_kv, rep, hd))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((n_kv, rep * t, hd))?;
        let att = (q.matmul(&keys.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let att = if t > 1 {
            let mask: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..total).map(move |j| {
                        if j > start + i {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (t, total), &self.device)?;
            att.reshape((n_kv, rep, t, total))?
                .broadcast_add(&mask)?
                .reshape((n_kv, rep * t, total))?
        } else {
            att
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let out = att.matmul(&values)?; // (n_kv, rep * t, hd)
        Ok(out
            .reshape((n_kv, rep, t, hd))?
            .permute((2, 0, 1, 3))?
            .reshape((t, cfg.n_head * hd))?)
    }
}

fn rope_tables(cfg: &LlamaConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1f32 / cfg.rope_base.powf(2.0 * i as f32 / cfg.head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let t = Tensor::arange(0u32, cfg.context as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((cfg.context, 1))?;
    let freqs = t.matmul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// The index of the largest logit.
#[cfg(feature = "testing")]
pub fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.argmax(candle_core::D::Minus1)?.to_scalar::<u32>()?)
}
