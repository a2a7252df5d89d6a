//! For tests and examples only (cargo feature `testing`): tiny random-weight models written
//! to disk, so tests exercise the real loading code in milliseconds (a BERT sentence
//! transformer with safetensors, a WordPiece `tokenizer.json` and sentence-transformers
//! files; a quantized llama GGUF with a byte-level BPE tokenizer and a ChatML template in
//! its metadata), and the backends' building blocks that benchmarks and GPU checks drive
//! directly.

pub use crate::embedder::Embedder;
pub use crate::fetch::PypiSource;
pub use crate::generator::Generator;
pub use crate::llama::{argmax, Chunk, KvCache, Llama, MatmulWeights};
pub use crate::quant::{DenseFormat, Isa, PackedLinear, PackedMatrix};
pub use crate::skinny::matmul_rows;
pub use crate::weights::pypi_source;

/// `config` (a `config.pbtxt` text with a `parameters [` list) with the string parameter
/// `key` = `value` first, in place of any entry `key` had (written
/// `{ key: "..." value: { string_value: "..." } }`, as the demo configs are).
pub fn with_parameter(config: &str, key: &str, value: &str) -> String {
    assert!(
        config.contains("parameters ["),
        "the config has no parameters list"
    );
    let mut config = config.to_owned();
    if let Some(start) = config.find(&format!("{{ key: \"{key}\"")) {
        let end = start + config[start..].find("} }").expect("a string parameter") + 3;
        let rest = &config[end..];
        let (start, end) = match rest.trim_start().strip_prefix(',') {
            Some(after) => (start, config.len() - after.len()),
            // The last entry: drop the comma before it instead.
            None => (config[..start].rfind(',').unwrap_or(start), end),
        };
        config.replace_range(start..end, "");
    }
    config.replacen(
        "parameters [",
        &format!("parameters [\n  {{ key: \"{key}\" value: {{ string_value: \"{value}\" }} }},"),
        1,
    )
}

/// `n` deterministic pseudo-random values in [-1, 1) (xorshift), for kernel tests and
/// benchmarks.
pub fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Deterministic pseudo-random weights in [-scale, scale).
fn random(shape: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Words of the tiny WordPiece vocabulary (after the five special tokens).
pub const TINY_WORDS: &[&str] = &[
    "this", "is", "an", "example", "sentence", "each", "one", "gets", "a", "vector", "short",
    "longer", "text", "##s", ".", ",", "the", "cat", "sat", "on", "mat",
];

/// Writes a tiny sentence transformer (hidden size 32, 2 layers, mean pooling, normalised)
/// into `dir`: config.json, model.safetensors, tokenizer.json, 1_Pooling/config.json,
/// modules.json, sentence_bert_config.json (max_seq_length 12).
pub fn write_tiny_sentence_transformer(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("1_Pooling"))?;
    let mut vocab: Vec<&str> = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    vocab.extend_from_slice(TINY_WORDS);
    let (h, inter, layers, positions) = (32usize, 64usize, 2usize, 64usize);
    let config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab.len(), "hidden_size": h,
        "num_hidden_layers": layers, "num_attention_heads": 4, "intermediate_size": inter, "hidden_act": "gelu",
        "max_position_embeddings": positions, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let mut w: HashMap<String, Tensor> = HashMap::new();
    let mut seed = 0;
    let mut add = |name: String, shape: &[usize], scale: f32| -> Result<()> {
        seed += 1;
        w.insert(name, random(shape, seed, scale)?);
        Ok(())
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        &[vocab.len(), h],
        1.0,
    )?;
    add(
        "embeddings.position_embeddings.weight".into(),
        &[positions, h],
        0.5,
    )?;
    add(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, h],
        0.1,
    )?;
    let norm = |prefix: &str, w: &mut HashMap<String, Tensor>| -> Result<()> {
        w.insert(
            format!("{prefix}.weight"),
            Tensor::ones(h, candle_core::DType::F32, &Device::Cpu)?,
        );
        w.insert(
            format!("{prefix}.bias"),
            Tensor::zeros(h, candle_core::DType::F32, &Device::Cpu)?,
        );
        Ok(())
    };
    let mut norms = vec!["embeddings.LayerNorm".to_string()];
    for i in 0..layers {
        let p = format!("encoder.layer.{i}");
        for n in ["query", "key", "value"] {
            add(format!("{p}.attention.self.{n}.weight"), &[h, h], 0.3)?;
            add(format!("{p}.attention.self.{n}.bias"), &[h], 0.1)?;
        }
        add(format!("{p}.attention.output.dense.weight"), &[h, h], 0.3)?;
        add(format!("{p}.attention.output.dense.bias"), &[h], 0.1)?;
        add(format!("{p}.intermediate.dense.weight"), &[inter, h], 0.3)?;
        add(format!("{p}.intermediate.dense.bias"), &[inter], 0.1)?;
        add(format!("{p}.output.dense.weight"), &[h, inter], 0.3)?;
        add(format!("{p}.output.dense.bias"), &[h], 0.1)?;
        norms.push(format!("{p}.attention.output.LayerNorm"));
        norms.push(format!("{p}.output.LayerNorm"));
    }
    for n in norms {
        norm(&n, &mut w)?;
    }
    candle_core::safetensors::save(&w, dir.join("model.safetensors"))?;
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
        .collect();
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": true})
    };
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab_map}
    });
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_string(&tokenizer)?,
    )?;
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}"#,
    )?;
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
    )?;
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 12, "do_lower_case": false}"#,
    )?;
    Ok(())
}

/// Writes a tiny quantized llama GGUF (Q4_1 projections like SmolLM2's: hidden 64, 2 layers,
/// 4 query and 2 KV heads) whose byte-level BPE vocabulary covers all 256 bytes plus
/// `<|endoftext|>` (id 0, EOS), `<|im_start|>` (1) and `<|im_end|>` (2), with a ChatML
/// template. Random weights: the output is gibberish, but every code path runs.
pub fn write_tiny_gguf(path: &Path) -> Result<()> {
    write_tiny_gguf_typed(path, GgmlDType::Q4_1, GgmlDType::Q8_0)
}

/// [`write_tiny_gguf`] with the projections quantized to `projections` and the token
/// embedding (the output head too) to `embedding`; the K types' 256-value blocks make the
/// model 256 wide instead of 64.
pub fn write_tiny_gguf_typed(
    path: &Path,
    projections: GgmlDType,
    embedding: GgmlDType,
) -> Result<()> {
    let k_blocks = [projections, embedding]
        .iter()
        .any(|t| t.block_size() == 256);
    let (h, ffn) = if k_blocks {
        (256, 512)
    } else {
        (64usize, 128usize)
    };
    let (layers, heads, kv_heads, context) = (2usize, 4u32, 2u32, 256u32);
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let decoder_chars: Vec<char> = byte_level_chars();
    tokens.extend(decoder_chars.iter().map(|c| c.to_string()));
    let merges = ["Ġ t", "h e", "Ġt he"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    types[..3].fill(3);
    let vocab = tokens.len();
    let s = |v: &str| Value::String(v.to_string());
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), s("llama")),
        ("llama.block_count".into(), Value::U32(layers as u32)),
        ("llama.context_length".into(), Value::U32(context)),
        ("llama.embedding_length".into(), Value::U32(h as u32)),
        ("llama.feed_forward_length".into(), Value::U32(ffn as u32)),
        ("llama.attention.head_count".into(), Value::U32(heads)),
        ("llama.attention.head_count_kv".into(), Value::U32(kv_heads)),
        (
            "llama.rope.dimension_count".into(),
            Value::U32(h as u32 / heads),
        ),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), s(crate::chat::CHATML)),
    ];
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    meta.extend(crate::gguf_tokenizer::metadata(
        &token_refs,
        &merges,
        &types,
        "smollm",
    ));
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut seed = 100;
    let mut add = |name: String, shape: &[usize], dtype: GgmlDType, scale: f32| -> Result<()> {
        seed += 1;
        let t = random(shape, seed, scale)?;
        tensors.push((name, QTensor::quantize(&t, dtype)?));
        Ok(())
    };
    let kv = h / heads as usize * kv_heads as usize;
    add("token_embd.weight".into(), &[vocab, h], embedding, 1.0)?;
    for i in 0..layers {
        let p = format!("blk.{i}");
        add(format!("{p}.attn_q.weight"), &[h, h], projections, 0.4)?;
        add(format!("{p}.attn_k.weight"), &[kv, h], projections, 0.4)?;
        add(format!("{p}.attn_v.weight"), &[kv, h], projections, 0.4)?;
        add(format!("{p}.attn_output.weight"), &[h, h], projections, 0.2)?;
        add(format!("{p}.ffn_gate.weight"), &[ffn, h], projections, 0.3)?;
        add(format!("{p}.ffn_up.weight"), &[ffn, h], projections, 0.3)?;
        add(format!("{p}.ffn_down.weight"), &[h, ffn], projections, 0.2)?;
    }
    let ones = Tensor::ones(h, candle_core::DType::F32, &Device::Cpu)?;
    for i in 0..layers {
        for n in ["attn_norm", "ffn_norm"] {
            tensors.push((
                format!("blk.{i}.{n}.weight"),
                QTensor::quantize(&ones, GgmlDType::F32)?,
            ));
        }
    }
    tensors.push((
        "output_norm.weight".into(),
        QTensor::quantize(&ones, GgmlDType::F32)?,
    ));
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path)?;
    gguf_file::write(&mut file, &meta_refs, &tensor_refs)?;
    Ok(())
}

/// The 256 characters GPT-2's byte-level BPE uses for bytes 0..=255, in byte order.
fn byte_level_chars() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut extra = 0;
    (0..=255u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("valid")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("valid")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::with_parameter;

    #[test]
    fn with_parameter_replaces_an_entry_wherever_it_stands() {
        let config = r#"name: "m"
parameters [
  { key: "a" value: { string_value: "1" } },
  { key: "b" value: { string_value: "2" } }
]
"#;
        for key in ["a", "b", "c"] {
            let text = with_parameter(config, key, "9");
            let parsed = nereid_proto::parse_model_config(&text).unwrap();
            assert_eq!(parsed.parameters[key].string_value, "9", "{text}");
            assert_eq!(parsed.parameters.len(), if key == "c" { 3 } else { 2 });
        }
    }
}
