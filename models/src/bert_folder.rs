//! A BERT-family model folder as the text backends read it (`sentence_transformer`,
//! `bert_classifier`, the ensemble stages): `config.json`, the tokenizer and its length
//! limit, sentence-transformers pooling, the weights (packed for our CPU kernels when
//! asked), what the config records of them, and token batches padded for the encoder.

use std::path::Path;

use candle_core::DType;
use candle_nn::VarBuilder;
use nereid_engine::{ModelSpec, Result};
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{BertConfig, BertModel};
use crate::options::param;
use crate::pooling::{normalizes, Pooling};
use crate::quant::DenseFormat;
use crate::weights::{resolve, Wanted};

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

#[derive(serde::Deserialize, Default)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
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
