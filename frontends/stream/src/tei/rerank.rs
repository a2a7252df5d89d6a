//! `POST /rerank` (TEI: `{query, texts}` to `[{index, score, text?}]`, best first) and
//! `POST /v1/rerank` (Cohere/Jina, as vLLM and llama.cpp serve it: `{model, query,
//! documents, top_n}` to `{results: [{index, relevance_score, document?}]}`), both scoring
//! each (query, text) pair with a cross-encoder.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use nereid_engine::{Engine, Parameters};
use serde::{Deserialize, Serialize};

use super::embed::timed;
use super::{check_batch, sigmoid, Kind, Tei, TeiError, TeiModel, TeiResult, Truncation};
use crate::error::ApiError;

super::tei_request!(RerankRequest);

#[derive(Debug, Deserialize)]
struct RerankRequest {
    query: String,
    texts: Vec<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(flatten)]
    truncation: Truncation,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
}

#[derive(Debug, Serialize)]
struct Rank {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    score: f32,
}

/// Each text's score against `query`, in the texts' order, and the tokens counted.
async fn score(
    engine: &Engine,
    model: &TeiModel,
    query: &str,
    texts: &[String],
    parameters: &Parameters,
) -> TeiResult<(Vec<f32>, u64)> {
    let queries = vec![query; texts.len()];
    let passages: Vec<&str> = texts.iter().map(String::as_str).collect();
    let requests = model.requests(&queries, Some(&passages), parameters)?;
    let (rows, tokens) = model.run(engine, requests, texts.len()).await?;
    let scores = rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [score] => Ok(*score),
            other => Err(TeiError::backend(format!(
                "model '{}' made {} scores per pair; a re-ranker makes one",
                model.name,
                other.len()
            ))),
        })
        .collect::<TeiResult<_>>()?;
    Ok((scores, tokens))
}

/// `POST /rerank`.
pub(super) async fn rerank(
    State(tei): State<Tei>,
    model: Option<String>,
    body: Bytes,
) -> TeiResult<Response> {
    let started = std::time::Instant::now();
    let (request, model) = tei.route::<RerankRequest>(model, &body, &[Kind::Reranker])?;
    check_batch(request.texts.len(), "texts")?;
    if request.query.is_empty() && request.texts.iter().any(String::is_empty) {
        return Err(TeiError::validation(
            "Input validation error: `inputs` cannot be empty",
        ));
    }
    let parameters = request.truncation.parameters()?;
    let computing = std::time::Instant::now();
    let (scores, tokens) = score(
        &tei.engine,
        &model,
        &request.query,
        &request.texts,
        &parameters,
    )
    .await?;
    let query_chars = request.query.chars().count();
    let characters = request
        .texts
        .iter()
        .map(|t| query_chars + t.chars().count())
        .sum();
    let mut ranks: Vec<Rank> = scores
        .into_iter()
        .enumerate()
        .map(|(index, s)| Rank {
            index,
            text: None,
            score: if request.raw_scores { s } else { sigmoid(s) },
        })
        .collect();
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
    if request.return_text {
        for rank in &mut ranks {
            rank.text = Some(request.texts[rank.index].clone());
        }
    }
    Ok(timed(
        Json(ranks),
        started,
        computing,
        characters,
        model.tokens.as_ref().map(|_| tokens),
    ))
}

/// A document of `/v1/rerank`: a string, or an object with `text`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Document {
    Text(String),
    Object { text: String },
}

#[derive(Debug, Deserialize)]
struct CohereRequest {
    #[serde(default)]
    model: Option<String>,
    query: String,
    documents: Vec<Document>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: Option<bool>,
    #[serde(default)]
    truncate: Option<bool>,
}

#[derive(Debug, Serialize)]
struct CohereResponse {
    id: String,
    model: String,
    results: Vec<CohereResult>,
    usage: CohereUsage,
}

#[derive(Debug, Serialize)]
struct CohereResult {
    index: usize,
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<CohereDocument>,
}

#[derive(Debug, Serialize)]
struct CohereDocument {
    text: String,
}

#[derive(Debug, Serialize)]
struct CohereUsage {
    total_tokens: u64,
}

impl From<TeiError> for ApiError {
    fn from(e: TeiError) -> Self {
        let status = e.http_status();
        if status.is_server_error() || status.as_u16() == 424 {
            ApiError::internal(e.message().to_string())
        } else {
            ApiError {
                status,
                ..ApiError::invalid(e.message().to_string())
            }
        }
    }
}

/// `POST /v1/rerank`: relevance scores are probabilities (the sigmoid of the logit), the
/// best first, `top_n` of them (all by default); documents come back only when asked.
pub(crate) async fn v1_rerank(State(tei): State<Tei>, body: Bytes) -> Response {
    match cohere(tei, body).await {
        Ok(response) => Json(response).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn cohere(tei: Tei, body: Bytes) -> Result<CohereResponse, ApiError> {
    let request: CohereRequest = crate::openai::parse_body(&body)?;
    let model = TeiModel::find(&tei, request.model.as_deref(), &[Kind::Reranker]).map_err(|e| {
        match e.http_status().as_u16() {
            404 => ApiError::model_not_found(request.model.as_deref().unwrap_or_default()),
            _ => ApiError::invalid_param("model", e.message().to_string()),
        }
    })?;
    if request.documents.is_empty() {
        return Err(ApiError::invalid_param(
            "documents",
            "'documents' must not be empty",
        ));
    }
    check_batch(request.documents.len(), "documents")?;
    let texts: Vec<String> = request
        .documents
        .into_iter()
        .map(|d| match d {
            Document::Text(text) | Document::Object { text } => text,
        })
        .collect();
    let truncation = Truncation {
        truncate: Some(request.truncate.unwrap_or(true)),
        truncation_direction: None,
    };
    let parameters = truncation.parameters()?;
    let (scores, tokens) = score(&tei.engine, &model, &request.query, &texts, &parameters).await?;
    let mut results: Vec<CohereResult> = scores
        .into_iter()
        .enumerate()
        .map(|(index, s)| CohereResult {
            index,
            relevance_score: sigmoid(s),
            document: None,
        })
        .collect();
    results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    results.truncate(request.top_n.unwrap_or(results.len()));
    if request.return_documents.unwrap_or(false) {
        for r in &mut results {
            r.document = Some(CohereDocument {
                text: texts[r.index].clone(),
            });
        }
    }
    Ok(CohereResponse {
        id: crate::openai::new_id("rerank"),
        model: model.name,
        results,
        usage: CohereUsage {
            total_tokens: tokens,
        },
    })
}
