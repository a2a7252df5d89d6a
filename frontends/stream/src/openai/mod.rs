//! OpenAI-compatible routes over the engine. The `model` field of a request names the
//! engine model; what a model can do is read from its typed spec (a BYTES input and an FP32
//! output make an embedder; a model keeping the engine's generation contract, see
//! [`nereid_engine::generation`], a generator).
//! Chat sends the conversation to the generator as JSON messages with the request
//! parameter `chat: true`, so the model applies its own chat template.

mod chat;
mod completions;
mod embeddings;
mod generate;
mod messages;
mod models;
mod params;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use nereid_engine::generation::GenerationIo;
use nereid_engine::{DataType, Engine, EngineError, ModelFacts, Tensor, TensorSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use params::Common;

/// The OpenAI routes: `GET /v1/models`, `GET /v1/models/{model}`, `POST /v1/embeddings`,
/// `POST /v1/completions`, `POST /v1/chat/completions`.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{model}", get(models::retrieve))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/completions", post(completions::create))
        .route("/v1/chat/completions", post(chat::create))
        .with_state(engine)
}

/// Parses a JSON request body whatever its content type (curl users forget the header),
/// answering malformed bodies in OpenAI's error shape rather than axum's plain text, with
/// the path of a wrongly typed field (`max_tokens`, `messages[0].content`) as `param`.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(&mut json).map_err(field_error)?;
    json.end()
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?;
    Ok(parsed)
}

/// Parses a generation request body into the fields completions and chat share and the
/// route's own. (Two passes over one parsed document rather than `#[serde(flatten)]`, which
/// hides the path of a field that fails.)
pub(crate) fn parse_generation<T: DeserializeOwned>(body: &Bytes) -> ApiResult<(Common, T)> {
    let document: serde_json::Value = parse_body(body)?;
    let common = serde_path_to_error::deserialize(&document).map_err(field_error)?;
    let own = serde_path_to_error::deserialize(&document).map_err(field_error)?;
    Ok((common, own))
}

fn field_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let error = e.into_inner();
    // Not JSON at all, a missing field (the message names it), or a syntax error where
    // the reader could not tell which field it was in (serde_path_to_error says `?`).
    if path.is_empty() || path == "." || path.split(['.', '[']).any(|segment| segment == "?") {
        return ApiError::invalid(format!("invalid request body: {error}"));
    }
    ApiError::invalid_param(&path, format!("invalid '{path}': {error}"))
}

/// Seconds since the Unix epoch, for the `created` fields.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh response id like `chatcmpl-65a1b2c3-0000002a`: unique within the process and,
/// through the start time, across restarts.
pub(crate) fn new_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(unix_now);
    format!(
        "{prefix}-{start:x}-{:08x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A string or a list of strings (`stop`, `input`, `prompt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    /// A single string.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Token counts of a request (`usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Present when the model reports how much of the prompt it reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// OpenAI's breakdown of the prompt tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct PromptTokensDetails {
    /// Prompt tokens served from the model's prefix cache rather than computed.
    pub cached_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.prompt_tokens_details = match (self.prompt_tokens_details, other.prompt_tokens_details)
        {
            (None, None) => None,
            (a, b) => Some(PromptTokensDetails {
                cached_tokens: a.unwrap_or_default().cached_tokens
                    + b.unwrap_or_default().cached_tokens,
            }),
        };
    }
}

/// What the OpenAI routes need to know about an engine model: its typed facts.
pub(crate) struct ModelInfo {
    /// Model name.
    pub name: String,
    /// The resolved version's spec: tensors with their datatypes, batching, decoupled.
    pub facts: ModelFacts,
}

impl ModelInfo {
    /// Looks a ready model up; an unknown one is OpenAI's 404 `model_not_found`.
    pub(crate) fn resolve(engine: &Engine, name: &str) -> ApiResult<Self> {
        let facts = engine.model(name, None).map_err(|e| match e {
            EngineError::NotFound(_) => ApiError::model_not_found(name),
            other => other.into(),
        })?;
        Ok(Self {
            name: name.to_string(),
            facts,
        })
    }

    /// The model's tensors of the generation contract; a model that is no generator is the
    /// client's mistake, reported against `model`.
    pub(crate) fn generator(&self) -> ApiResult<GenerationIo> {
        self.facts
            .generation()
            .map_err(|e| ApiError::invalid_param("model", e.to_string()))
    }

    /// The full shape of a request tensor holding `count` elements of `spec`, one batch
    /// item (or `batch` items of one element each for a batching model's `[1]` input).
    pub(crate) fn shape(&self, spec: &TensorSpec, batch: usize, count: usize) -> Vec<i64> {
        let item: Vec<i64> = if spec.dims.is_empty() {
            Vec::new()
        } else {
            vec![count as i64]
        };
        if self.facts.batches() {
            std::iter::once(batch as i64).chain(item).collect()
        } else {
            item
        }
    }

    /// A one-element tensor holding `value` in the input's declared datatype, so a model may
    /// declare `max_tokens` as INT32 or INT64, `temperature` as FP32 or FP64, and so on.
    pub(crate) fn number(&self, spec: &TensorSpec, param: &str, value: f64) -> ApiResult<Tensor> {
        let dtype = spec.dtype;
        let shape = self.shape(spec, 1, 1);
        let name = spec.name.clone();
        let out_of_range = || {
            ApiError::invalid_param(
                param,
                format!("'{param}' = {value} is out of range for this model"),
            )
        };
        let integral = value.fract() == 0.0;
        Ok(match dtype {
            DataType::Fp32 => Tensor::from_vec(name, dtype, shape, vec![value as f32]),
            DataType::Fp64 => Tensor::from_vec(name, dtype, shape, vec![value]),
            DataType::Int32 if integral && value >= i32::MIN as f64 && value <= i32::MAX as f64 => {
                Tensor::from_vec(name, dtype, shape, vec![value as i32])
            }
            DataType::Int64 if integral => Tensor::from_vec(name, dtype, shape, vec![value as i64]),
            DataType::Uint32 if integral && value >= 0.0 && value <= u32::MAX as f64 => {
                Tensor::from_vec(name, dtype, shape, vec![value as u32])
            }
            DataType::Int32 | DataType::Int64 | DataType::Uint32 => return Err(out_of_range()),
            other => {
                return Err(ApiError::internal(format!(
                    "model '{}' declares input '{}' as {other}, which cannot carry '{param}'",
                    self.name, spec.name
                )))
            }
        })
    }
}
