//! Sentence-transformers pooling (`1_Pooling/config.json`) and normalisation (a
//! `Normalize` module in `modules.json`): token states to one vector per sequence, counting
//! real tokens only.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use serde::Deserialize;

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pooling {
    /// The first token's state (`[CLS]`).
    Cls,
    /// Mean over real tokens.
    Mean,
    /// Element-wise maximum over real tokens.
    Max,
    /// Sum over real tokens divided by the square root of their count.
    MeanSqrtLen,
}

#[derive(Debug, Default, Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Debug, Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type", default)]
    kind: String,
}

impl Pooling {
    /// The name the `pooling` config parameter (and TEI's `/info`) uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Cls => "cls",
            Self::Mean => "mean",
            Self::Max => "max",
            Self::MeanSqrtLen => "mean_sqrt_len",
        }
    }

    /// Parses a name as used by the `pooling` config parameter.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "cls" => Self::Cls,
            "mean" => Self::Mean,
            "max" => Self::Max,
            "mean_sqrt_len" => Self::MeanSqrtLen,
            _ => return None,
        })
    }

    /// Reads `1_Pooling/config.json` under `dir`; without it, mean pooling (the
    /// sentence-transformers default).
    pub(crate) fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("1_Pooling").join("config.json");
        let file: PoolingFile = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(_) => return Ok(Self::Mean),
        };
        let modes = [
            (file.pooling_mode_cls_token, Self::Cls),
            (file.pooling_mode_mean_tokens, Self::Mean),
            (file.pooling_mode_max_tokens, Self::Max),
            (file.pooling_mode_mean_sqrt_len_tokens, Self::MeanSqrtLen),
        ];
        let chosen: Vec<Pooling> = modes
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, m)| *m)
            .collect();
        match chosen.as_slice() {
            [] => Ok(Self::Mean),
            [one] => Ok(*one),
            more => anyhow::bail!(
                "{}: several pooling modes at once ({more:?}) are not supported",
                path.display()
            ),
        }
    }

    /// Pools `(batch, seq, hidden)` states under a `(batch, seq)` mask of 1 (real) and 0
    /// (padding) into `(batch, hidden)` FP32 vectors.
    pub(crate) fn apply(self, states: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let states = states.to_dtype(DType::F32)?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?; // (b, s, 1)
        match self {
            Self::Cls => states.narrow(1, 0, 1)?.squeeze(1),
            Self::Mean | Self::MeanSqrtLen => {
                let sum = states.broadcast_mul(&mask)?.sum(1)?;
                let count = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                let count = if self == Self::Mean {
                    count
                } else {
                    count.sqrt()?
                };
                sum.broadcast_div(&count)
            }
            Self::Max => {
                // Padding gets a large negative value so it never wins.
                let penalty = ((mask.clone() - 1.0)? * 1e9)?;
                states.broadcast_add(&penalty)?.max(1)
            }
        }
    }
}

/// Whether `modules.json` under `dir` lists a `Normalize` module.
pub(crate) fn normalizes(dir: &Path) -> anyhow::Result<bool> {
    let path = dir.join("modules.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let modules: Vec<ModuleEntry> =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(modules
        .iter()
        .any(|m| m.kind.ends_with(".Normalize") || m.kind == "Normalize"))
}

/// Scales each row of `(batch, hidden)` to unit L2 length.
pub(crate) fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

/// The cosine similarity of two vectors, accumulated in f64 (0 when either is zero).
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (dot / (aa.sqrt() * bb.sqrt())) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn states() -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let s = Tensor::new(&[[[1f32, 2.], [3., 4.], [100., -100.]]], &dev).unwrap();
        let m = Tensor::new(&[[1u32, 1, 0]], &dev).unwrap();
        (s, m)
    }

    #[test]
    fn pooling_counts_real_tokens_only() {
        let (s, m) = states();
        let get = |p: Pooling| p.apply(&s, &m).unwrap().to_vec2::<f32>().unwrap()[0].clone();
        assert_eq!(get(Pooling::Mean), vec![2., 3.]);
        assert_eq!(get(Pooling::Cls), vec![1., 2.]);
        assert_eq!(get(Pooling::Max), vec![3., 4.]);
        let r = get(Pooling::MeanSqrtLen);
        assert!((r[0] - 4. / 2f32.sqrt()).abs() < 1e-6);
        let n = l2_normalize(&Tensor::new(&[[3f32, 4.]], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(n.to_vec2::<f32>().unwrap(), vec![vec![0.6, 0.8]]);
    }

    #[test]
    fn reads_sentence_transformers_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Pooling::from_dir(dir.path()).unwrap(), Pooling::Mean);
        assert!(!normalizes(dir.path()).unwrap());
        std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.json"),
            r#"[{"type": "sentence_transformers.models.Normalize"}]"#,
        )
        .unwrap();
        assert_eq!(Pooling::from_dir(dir.path()).unwrap(), Pooling::Cls);
        assert!(normalizes(dir.path()).unwrap());
        assert_eq!(Pooling::parse("MEAN"), Some(Pooling::Mean));
    }
}
