//! `POST /embed` (pooled vectors, as the model normalises them unless `normalize: false`),
//! `POST /embed_all` (every token's final state) and `POST /similarity` (the cosine of
//! each sentence to a source sentence).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use nereid_engine::ParamValue;
use serde::Deserialize;

use super::{check_batch, Kind, Tei, TeiError, TeiResult, Truncation};

super::tei_request!(EmbedRequest, EmbedAllRequest, SimilarityRequest);

/// TEI's `inputs` of `/embed`: a text or a list of texts. (TEI also takes token ids,
/// which a model that tokenises for itself cannot.)
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Many(Vec<serde_json::Value>),
}

impl Inputs {
    /// The texts, checked: strings, none empty, as many as a request may carry.
    fn texts(self) -> TeiResult<Vec<String>> {
        let texts = match self {
            Self::One(text) => vec![text],
            Self::Many(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    serde_json::Value::String(s) => Ok(s),
                    _ => Err(TeiError::validation(format!(
                        "`inputs[{i}]` is not a string: this server takes texts, not token ids"
                    ))),
                })
                .collect::<TeiResult<_>>()?,
        };
        check_batch(texts.len(), "inputs")?;
        if let Some(i) = texts.iter().position(String::is_empty) {
            return Err(TeiError::validation(format!(
                "Input validation error: `inputs[{i}]` cannot be empty"
            )));
        }
        Ok(texts)
    }
}

#[derive(Debug, Deserialize)]
struct EmbedRequest {
    inputs: Inputs,
    #[serde(default)]
    model: Option<String>,
    #[serde(flatten)]
    truncation: Truncation,
    #[serde(default)]
    prompt_name: Option<String>,
    #[serde(default)]
    normalize: Option<bool>,
    #[serde(default)]
    dimensions: Option<usize>,
}

/// `POST /embed`: `[[f32, ...], ...]`, one vector per text.
pub(super) async fn embed(
    State(tei): State<Tei>,
    model: Option<String>,
    body: Bytes,
) -> TeiResult<Response> {
    let started = std::time::Instant::now();
    let (request, model) = tei.route::<EmbedRequest>(model, &body, &[Kind::Embedder])?;
    let texts = request.inputs.texts()?;
    let width = model.output.dims.last().copied().filter(|&d| d > 0);
    if let (Some(asked), Some(width)) = (request.dimensions, width) {
        if asked == 0 || asked as i64 > width {
            return Err(TeiError::validation(format!(
                "`dimensions` must be between 1 and {width}, not {asked}"
            )));
        }
    }
    let mut parameters = request.truncation.parameters()?;
    parameters.insert(
        "normalize".into(),
        ParamValue::Bool(request.normalize.unwrap_or(true)),
    );
    if let Some(prompt) = request.prompt_name {
        parameters.insert("prompt_name".into(), ParamValue::String(prompt));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let requests = model.requests(&refs, None, &parameters)?;
    let computing = std::time::Instant::now();
    let (mut vectors, tokens) = model.run(&tei.engine, requests, texts.len()).await?;
    if let Some(d) = request.dimensions {
        // Matryoshka: the first `d` values, normalised again when the request asked for
        // unit vectors.
        for v in &mut vectors {
            v.truncate(d);
            if request.normalize.unwrap_or(true) {
                let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                if norm > 0.0 {
                    v.iter_mut()
                        .for_each(|x| *x = (f64::from(*x) / norm) as f32);
                }
            }
        }
    }
    Ok(timed(
        Json(vectors),
        started,
        computing,
        chars(&texts),
        model.tokens.as_ref().map(|_| tokens),
    ))
}

#[derive(Debug, Deserialize)]
struct EmbedAllRequest {
    inputs: Inputs,
    #[serde(default)]
    model: Option<String>,
    #[serde(flatten)]
    truncation: Truncation,
    #[serde(default)]
    prompt_name: Option<String>,
}

/// `POST /embed_all`: `[[[f32, ...] per token] per text]`, every token's final state, from
/// a model whose config has a token-states output (FP32 `[-1, hidden]`) and token counts.
pub(super) async fn embed_all(
    State(tei): State<Tei>,
    model: Option<String>,
    body: Bytes,
) -> TeiResult<Response> {
    let started = std::time::Instant::now();
    let (request, model) = tei.route::<EmbedAllRequest>(model, &body, &[Kind::Embedder])?;
    let (Some(states), Some(counts)) = (model.states.clone(), model.tokens.clone()) else {
        return Err(TeiError::backend(format!(
            "model '{}' has no output of token states (FP32 dims [-1, hidden_size]) with one \
             of token counts: /embed_all needs both",
            model.name
        )));
    };
    let texts = request.inputs.texts()?;
    let mut parameters = request.truncation.parameters()?;
    if let Some(prompt) = request.prompt_name {
        parameters.insert("prompt_name".into(), ParamValue::String(prompt));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let requests = model.requests_for(&refs, None, &parameters, &states)?;
    let computing = std::time::Instant::now();
    let responses =
        futures::future::try_join_all(requests.into_iter().map(|r| tei.engine.infer(r))).await?;
    let malformed = || {
        TeiError::backend(format!(
            "model '{}' returned malformed token states",
            model.name
        ))
    };
    let mut all: Vec<Vec<Vec<f32>>> = Vec::with_capacity(texts.len());
    let mut tokens = 0u64;
    for response in &responses {
        let values = response.output(&states.name).ok_or_else(malformed)?;
        let lengths: Vec<i32> = response
            .output(&counts.name)
            .and_then(|t| t.to_vec().ok())
            .ok_or_else(malformed)?;
        let (&[rows, width, hidden], Ok(values)) =
            (values.shape.as_slice(), values.to_vec::<f32>())
        else {
            return Err(malformed());
        };
        let (rows, width, hidden) = (rows as usize, width as usize, hidden as usize);
        if lengths.len() != rows || values.len() != rows * width * hidden {
            return Err(malformed());
        }
        for (row, &length) in lengths.iter().enumerate() {
            let length = (length.max(0) as usize).min(width);
            tokens += length as u64;
            let text = &values[row * width * hidden..(row * width + length) * hidden];
            all.push(text.chunks(hidden).map(<[f32]>::to_vec).collect());
        }
    }
    if all.len() != texts.len() {
        return Err(malformed());
    }
    Ok(timed(
        Json(all),
        started,
        computing,
        chars(&texts),
        Some(tokens),
    ))
}

#[derive(Debug, Deserialize)]
struct SimilarityRequest {
    inputs: SimilarityInputs,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    parameters: Option<SimilarityParameters>,
}

#[derive(Debug, Deserialize)]
struct SimilarityInputs {
    source_sentence: String,
    sentences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct SimilarityParameters {
    #[serde(flatten)]
    truncation: Truncation,
    #[serde(default)]
    prompt_name: Option<String>,
}

/// `POST /similarity`: `[f32, ...]`, the cosine similarity of each sentence to the source,
/// in the sentences' order.
pub(super) async fn similarity(
    State(tei): State<Tei>,
    model: Option<String>,
    body: Bytes,
) -> TeiResult<Response> {
    let started = std::time::Instant::now();
    let (request, model) = tei.route::<SimilarityRequest>(model, &body, &[Kind::Embedder])?;
    let SimilarityInputs {
        source_sentence,
        sentences,
    } = request.inputs;
    if sentences.is_empty() {
        return Err(TeiError::empty("inputs.sentences"));
    }
    check_batch(sentences.len() + 1, "inputs.sentences")?;
    let options = request.parameters.unwrap_or_default();
    let mut parameters = options.truncation.parameters()?;
    parameters.insert("normalize".into(), ParamValue::Bool(false));
    if let Some(prompt) = options.prompt_name {
        parameters.insert("prompt_name".into(), ParamValue::String(prompt));
    }
    let texts: Vec<&str> = std::iter::once(source_sentence.as_str())
        .chain(sentences.iter().map(String::as_str))
        .collect();
    let requests = model.requests(&texts, None, &parameters)?;
    let computing = std::time::Instant::now();
    let (vectors, tokens) = model.run(&tei.engine, requests, texts.len()).await?;
    let (source, others) = vectors.split_first().expect("one row per text");
    let scores: Vec<f32> = others.iter().map(|v| cosine(source, v)).collect();
    let all: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    Ok(timed(
        Json(scores),
        started,
        computing,
        chars(&all),
        model.tokens.as_ref().map(|_| tokens),
    ))
}

/// Cosine similarity in f64 (0 when either vector is zero).
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())) as f32
    }
}

/// Characters of the inputs, for `x-compute-characters`.
pub(super) fn chars(texts: &[String]) -> usize {
    texts.iter().map(|t| t.chars().count()).sum()
}

/// A response with TEI's timing and size headers (`x-compute-tokens` when the model
/// counts its tokens).
pub(super) fn timed(
    body: impl IntoResponse,
    started: std::time::Instant,
    computing: std::time::Instant,
    characters: usize,
    tokens: Option<u64>,
) -> Response {
    let mut response = body.into_response();
    let ms = |since: std::time::Instant| since.elapsed().as_millis().to_string();
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-compute-time", ms(computing)),
        ("x-total-time", ms(started)),
        ("x-compute-characters", characters.to_string()),
    ] {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    if let Some(tokens) = tokens {
        headers.insert("x-compute-tokens", axum::http::HeaderValue::from(tokens));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_exact_and_zero_safe() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-7);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-7);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn token_ids_are_refused_by_position() {
        let inputs: Inputs = serde_json::from_str(r#"["a", [101, 102]]"#).unwrap();
        let e = inputs.texts().unwrap_err();
        assert!(format!("{e:?}").contains("inputs[1]"), "{e:?}");
    }
}
