//! `POST /v1/embeddings`: texts in, one vector per text out, as floats or base64 of
//! little-endian FP32 (what the `openai` Python SDK asks for by default).
//!
//! Any ready model with a BYTES input and an FP32 output serves: the texts go in chunks of
//! the model's `max_batch_size`, all chunks at once, so the engine's dynamic batcher packs
//! them (and other clients' requests) into full batches.

use std::time::Instant;

use axum::extract::State;
use axum::{Extension, Json};
use base64::Engine as _;
use bytes::Bytes;
use nereid_engine::{DataType, Engine, InferRequest, Origin, RequestedOutput, Tensor, TensorSpec};
use serde::{Deserialize, Serialize};

use super::{parse_body, ModelInfo};
use crate::error::{ApiError, ApiResult};

/// The request body.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingRequest {
    model: String,
    input: EmbeddingInput,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
}

/// `input`: a string, a list of strings, or token ids (which this server cannot take: its
/// models tokenize for themselves).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    /// Token ids, or lists of them.
    Tokens(Vec<serde_json::Value>),
}

#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingList {
    object: &'static str,
    data: Vec<Embedding>,
    model: String,
    usage: EmbeddingUsage,
}

#[derive(Debug, Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Which tensors of the model carry what.
struct Roles<'a> {
    text: &'a TensorSpec,
    embedding: &'a TensorSpec,
    /// An integer output counting each text's tokens, for `usage`, when the model has one.
    tokens: Option<&'a TensorSpec>,
}

impl<'a> Roles<'a> {
    fn of(model: &'a ModelInfo) -> ApiResult<Self> {
        let not_embedder = || {
            ApiError::invalid_param(
                "model",
                format!("model '{}' does not produce embeddings (it needs one BYTES input and an FP32 output)", model.name),
            )
        };
        let spec = &model.facts.spec;
        if spec.decoupled {
            return Err(not_embedder());
        }
        // One text in: a model that needs more (a re-ranker's query and passage) is no
        // embedder.
        let required: Vec<&TensorSpec> = spec.inputs.iter().filter(|t| !t.optional).collect();
        let [text] = required.as_slice() else {
            return Err(not_embedder());
        };
        if text.dtype != DataType::Bytes {
            return Err(not_embedder());
        }
        let embedding = spec
            .outputs
            .iter()
            .find(|t| t.dtype == DataType::Fp32 && t.dims.len() == 1)
            .ok_or_else(not_embedder)?;
        let tokens = spec.outputs.iter().find(|t| {
            matches!(
                t.dtype,
                DataType::Int32 | DataType::Int64 | DataType::Uint32 | DataType::Uint64
            ) && t.name.to_ascii_lowercase().contains("token")
        });
        Ok(Self {
            text,
            embedding,
            tokens,
        })
    }
}

/// The handler.
pub(crate) async fn create(
    State(engine): State<Engine>,
    origin: Option<Extension<Origin>>,
    body: Bytes,
) -> ApiResult<Json<EmbeddingList>> {
    let origin = origin.map(|o| o.0).unwrap_or_default();
    let started = Instant::now();
    let request: EmbeddingRequest = parse_body(&body)?;
    let texts = match request.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) if !v.is_empty() => v,
        EmbeddingInput::Many(_) => {
            return Err(ApiError::invalid_param(
                "input",
                "'input' must not be an empty list",
            ))
        }
        EmbeddingInput::Tokens(items) => {
            return Err(ApiError::unsupported(
                "input",
                format!(
                    "token-id input ({} items) is not supported: send the text",
                    items.len()
                ),
            ))
        }
    };
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("'encoding_format' must be 'float' or 'base64', not '{other}'"),
            ))
        }
    };
    let model = ModelInfo::resolve(&engine, &request.model)?;
    let roles = Roles::of(&model)?;
    let native = roles.embedding.dims.last().copied().filter(|d| *d > 0);
    if let (Some(asked), Some(native)) = (request.dimensions, native) {
        if asked != native as u64 {
            return Err(ApiError::unsupported(
                "dimensions",
                format!(
                    "model '{}' makes {native}-dimensional embeddings and cannot shorten them",
                    model.name
                ),
            ));
        }
    }

    // One engine request per chunk, all in flight together: the batcher does the packing.
    // Dropping this future (the client went away) drops every pending request with it.
    let chunk = model.facts.spec.max_batch_size.max(1);
    let calls = texts.chunks(chunk).map(|part| {
        let mut request = embed_request(&model, &roles, part);
        request.origin = origin.clone();
        engine.infer(request)
    });
    let responses = futures::future::try_join_all(calls).await?;

    let mut data = Vec::with_capacity(texts.len());
    let mut prompt_tokens = 0u64;
    for (response, part) in responses.iter().zip(texts.chunks(chunk)) {
        let output = response.output(&roles.embedding.name).ok_or_else(|| {
            ApiError::internal(format!(
                "model '{}' returned no '{}'",
                model.name, roles.embedding.name
            ))
        })?;
        let rows = split_rows(output, part.len()).ok_or_else(|| {
            ApiError::internal(format!(
                "model '{}' returned a malformed embedding",
                model.name
            ))
        })?;
        for row in rows {
            let embedding = if base64 {
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(&row))
            } else {
                Vector::Float(bytemuck::pod_collect_to_vec(&row))
            };
            data.push(Embedding {
                object: "embedding",
                index: data.len(),
                embedding,
            });
        }
        if let Some(t) = roles.tokens.and_then(|t| response.output(&t.name)) {
            prompt_tokens += sum_integers(t);
        }
    }
    tracing::debug!(model = %model.name, texts = texts.len(), elapsed_ms = started.elapsed().as_millis() as u64, "embeddings");
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: model.name,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    }))
}

/// An engine request embedding `texts` (at most `max_batch_size` of them).
fn embed_request(model: &ModelInfo, roles: &Roles<'_>, texts: &[String]) -> InferRequest {
    let mut shape = model.shape(roles.text, texts.len(), 1);
    if !model.facts.batches() {
        // A non-batching model gets one text per request (chunks are then of one).
        shape = if roles.text.dims.is_empty() {
            Vec::new()
        } else {
            vec![1]
        };
    }
    let input = Tensor::from_strings(roles.text.name.clone(), shape, texts);
    let mut request = InferRequest::new(model.name.clone(), vec![input]);
    request.outputs = std::iter::once(roles.embedding)
        .chain(roles.tokens)
        .map(|t| RequestedOutput {
            name: t.name.clone(),
            parameters: Default::default(),
        })
        .collect();
    request
}

/// The raw little-endian FP32 bytes of each of `rows` equal rows.
fn split_rows(output: &Tensor, rows: usize) -> Option<Vec<Bytes>> {
    if output.dtype != DataType::Fp32 || rows == 0 || !output.data.len().is_multiple_of(rows * 4) {
        return None;
    }
    let width = output.data.len() / rows;
    Some(
        (0..rows)
            .map(|i| output.data.slice(i * width..(i + 1) * width))
            .collect(),
    )
}

/// The sum of an integer tensor's elements (token counts of a batch).
fn sum_integers(t: &Tensor) -> u64 {
    let sum = match t.dtype {
        DataType::Int32 => t
            .to_vec::<i32>()
            .map(|v| v.iter().map(|&x| x.max(0) as u64).sum()),
        DataType::Int64 => t
            .to_vec::<i64>()
            .map(|v| v.iter().map(|&x| x.max(0) as u64).sum()),
        DataType::Uint32 => t.to_vec::<u32>().map(|v| v.iter().map(|&x| x as u64).sum()),
        DataType::Uint64 => t.to_vec::<u64>().map(|v| v.iter().sum()),
        _ => Ok(0),
    };
    sum.unwrap_or(0)
}
