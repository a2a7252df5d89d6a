//! Hugging Face's sequence classification heads on the encoder's first token, by
//! `model_type`: BERT's pooler, RoBERTa's `classifier.dense`/`out_proj`, DistilBERT's
//! `pre_classifier`.

use candle_core::Tensor as CTensor;
use candle_nn::{Linear, Module, VarBuilder};

use crate::bert::BertConfig;

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
    pub(crate) fn load(
        config: &BertConfig,
        labels: usize,
        vb: &VarBuilder,
    ) -> candle_core::Result<Self> {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;
    use crate::bert::tests::{tiny_config, tiny_weights};
    use crate::bert::BertModel;
    use candle_core::DType;

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
}
