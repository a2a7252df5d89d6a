//! `POST /predict` (and `/classify`): every label's score for a text or a pair, as
//! probabilities (softmax over several labels, sigmoid for one) unless `raw_scores`.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::embed::timed;
use super::{check_batch, sigmoid, Kind, Tei, TeiError, TeiModel, TeiResult, Truncation};

super::tei_request!(PredictRequest);

/// TEI's `inputs` of `/predict`: a text, a pair `[a, b]`, or a batch of texts and pairs
/// `[[a], [a, b], ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Pair(Vec<String>),
    Batch(Vec<Vec<String>>),
}

#[derive(Debug, Deserialize)]
struct PredictRequest {
    inputs: Inputs,
    #[serde(default)]
    model: Option<String>,
    #[serde(flatten)]
    truncation: Truncation,
    #[serde(default)]
    raw_scores: bool,
}

/// One label's score.
#[derive(Debug, Serialize, PartialEq)]
struct Prediction {
    score: f32,
    label: String,
}

/// The answer: one list of predictions, or one per batch item.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Predictions {
    One(Vec<Prediction>),
    Batch(Vec<Vec<Prediction>>),
}

/// `POST /predict`.
pub(super) async fn predict(
    State(tei): State<Tei>,
    model: Option<String>,
    body: Bytes,
) -> TeiResult<Response> {
    let started = std::time::Instant::now();
    let (request, model) =
        tei.route::<PredictRequest>(model, &body, &[Kind::Classifier, Kind::Reranker])?;
    let (items, batch) = match request.inputs {
        Inputs::One(text) => (vec![vec![text]], false),
        Inputs::Pair(pair) if pair.len() == 1 || pair.len() == 2 => (vec![pair], false),
        Inputs::Pair(texts) => {
            return Err(TeiError::unreadable(format!(
                "invalid 'inputs': a list of {} strings is neither a pair [a, b] nor a batch \
                 [[a], [a, b], ...]",
                texts.len()
            )))
        }
        Inputs::Batch(items) => (items, true),
    };
    check_batch(items.len(), "inputs")?;
    if let Some(i) = items.iter().position(|t| t.is_empty() || t.len() > 2) {
        return Err(TeiError::unreadable(format!(
            "invalid 'inputs[{i}]': give one text or a pair of two"
        )));
    }
    if items.iter().any(|t| t.iter().all(String::is_empty)) {
        return Err(TeiError::validation(
            "Input validation error: `inputs` cannot be empty",
        ));
    }
    // The engine batches requests of one input set: single texts and pairs go apart.
    let singles: Vec<usize> = (0..items.len()).filter(|&i| items[i].len() == 1).collect();
    let pairs: Vec<usize> = (0..items.len()).filter(|&i| items[i].len() == 2).collect();
    let parameters = request.truncation.parameters()?;
    let mut scores: Vec<Vec<f32>> = vec![Vec::new(); items.len()];
    let mut tokens = 0;
    let computing = std::time::Instant::now();
    for (group, paired) in [(&singles, false), (&pairs, true)] {
        if group.is_empty() {
            continue;
        }
        let first: Vec<&str> = group.iter().map(|&i| items[i][0].as_str()).collect();
        let second: Vec<&str> = group
            .iter()
            .filter(|_| paired)
            .map(|&i| items[i][1].as_str())
            .collect();
        let requests = model.requests(&first, paired.then_some(&second[..]), &parameters)?;
        let (rows, counted) = model.run(&tei.engine, requests, group.len()).await?;
        tokens += counted;
        for (&i, row) in group.iter().zip(rows) {
            scores[i] = row;
        }
    }
    let labels = labels(&model);
    let predictions: Vec<Vec<Prediction>> = scores
        .into_iter()
        .map(|row| ranked(&row, &labels, request.raw_scores))
        .collect::<TeiResult<_>>()?;
    let characters = items.iter().flatten().map(|t| t.chars().count()).sum();
    let body = if batch {
        Predictions::Batch(predictions)
    } else {
        Predictions::One(predictions.into_iter().next().unwrap_or_default())
    };
    Ok(timed(
        Json(body),
        started,
        computing,
        characters,
        model.tokens.as_ref().map(|_| tokens),
    ))
}

/// The model's labels, else Hugging Face's default names `LABEL_i`.
fn labels(model: &TeiModel) -> Vec<String> {
    match &model.facts.spec.labels {
        Some(labels) => labels.clone(),
        None => {
            let n = model.output.dims.last().copied().unwrap_or(1).max(1) as usize;
            (0..n).map(|i| format!("LABEL_{i}")).collect()
        }
    }
}

/// Each label's score, highest first: softmax over several labels, sigmoid for one, or
/// the raw logits.
fn ranked(row: &[f32], labels: &[String], raw: bool) -> TeiResult<Vec<Prediction>> {
    if row.len() != labels.len() {
        return Err(TeiError::backend(format!(
            "the model returned {} scores for {} labels",
            row.len(),
            labels.len()
        )));
    }
    let scores: Vec<f32> = if raw {
        row.to_vec()
    } else if row.len() == 1 {
        vec![sigmoid(row[0])]
    } else {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f64> = row.iter().map(|&x| f64::from(x - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        exp.iter().map(|e| (e / sum) as f32).collect()
    };
    if scores.iter().any(|s| s.is_nan()) {
        return Err(TeiError::backend("score is NaN"));
    }
    let mut predictions: Vec<Prediction> = scores
        .into_iter()
        .zip(labels)
        .map(|(score, label)| Prediction {
            score,
            label: label.clone(),
        })
        .collect();
    predictions.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(predictions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_softmax_sigmoid_or_raw_and_ranked() {
        let labels = vec!["NEG".to_string(), "POS".to_string()];
        let p = ranked(&[0.0, (3f32).ln()], &labels, false).unwrap();
        assert_eq!(p[0].label, "POS");
        assert!((p[0].score - 0.75).abs() < 1e-6 && (p[1].score - 0.25).abs() < 1e-6);
        let raw = ranked(&[2.0, -1.0], &labels, true).unwrap();
        assert_eq!((raw[0].score, raw[0].label.as_str()), (2.0, "NEG"));
        let one = ranked(&[0.0], &["LABEL_0".to_string()], false).unwrap();
        assert_eq!(one[0].score, 0.5);
        assert!(ranked(&[1.0], &labels, false).is_err());
    }

    #[test]
    fn inputs_take_a_text_a_pair_or_a_batch() {
        let parse = |s: &str| serde_json::from_str::<Inputs>(s).unwrap();
        assert!(matches!(parse(r#""a""#), Inputs::One(_)));
        assert!(matches!(parse(r#"["a", "b"]"#), Inputs::Pair(p) if p.len() == 2));
        assert!(matches!(parse(r#"[["a"], ["a", "b"]]"#), Inputs::Batch(b) if b.len() == 2));
    }
}
