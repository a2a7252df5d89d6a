//! Hugging Face text-embeddings-inference (TEI) routes over the engine, so TEI's clients
//! work unchanged: `/embed`, `/embed_all`, `/similarity`, `/rerank`, `/predict` (and
//! `/classify`), `/tokenize`, `/decode`, `/info`, `/health`, TEI's compat route `POST /`,
//! and `/v1/rerank` in the Cohere/Jina shape that vLLM and llama.cpp also serve.
//!
//! TEI serves one model; Nereid serves many. A route finds its model in this order: the
//! path (`/tei/{model}/embed`, and `POST /tei/{model}`, the compat route of one model, for
//! clients such as `huggingface_hub`'s `InferenceClient` that post to a base URL), the
//! body's `model` field, `--tei-model`, else the one ready model of the kind the route
//! needs (an error lists them when there are several). What a model is comes from its
//! typed facts ([`TeiModel`]): an embedder has one BYTES input and an FP32 output; a
//! classifier has `labels` ([`nereid_engine::LABELS_PARAMETER`]); a re-ranker is a
//! classifier of one label fed pairs, or a model of two texts and one score. Every request
//! becomes ordinary engine requests, so the batcher packs them with the KServe and OpenAI
//! traffic, and request options travel as request parameters (`truncate`,
//! `truncation_direction`, `prompt_name`, `normalize`) that the model reads.

mod classify;
mod embed;
mod error;
mod info;
mod rerank;
mod tokenize;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use nereid_engine::{
    DataType, Engine, EngineError, InferRequest, InferResponse, ModelFacts, ParamValue, Parameters,
    RequestedOutput, Tensor, TensorSpec,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;

pub(crate) use error::{TeiError, TeiResult};

/// Most texts (or pairs) one request may carry, as TEI's `--max-client-batch-size`.
pub(crate) const MAX_CLIENT_BATCH_SIZE: usize = 512;

/// What the TEI handlers share: the engine, and the models the root routes serve by
/// default (`--tei-model`).
#[derive(Clone)]
pub(crate) struct Tei {
    pub(crate) engine: Engine,
    defaults: Arc<[String]>,
}

impl Tei {
    /// Reads a request body and finds the model it goes to: the path's, else the body's
    /// `model`, else the default of `kinds` ([`TeiModel::find`]).
    pub(crate) fn route<T: TeiRequest>(
        &self,
        path_model: Option<String>,
        body: &[u8],
        kinds: &[Kind],
    ) -> TeiResult<(T, TeiModel)> {
        let request: T = parse(body)?;
        let model = TeiModel::find(self, path_model.as_deref().or(request.model()), kinds)?;
        Ok((request, model))
    }
}

/// A TEI request body, which may name its model (a Nereid extension: TEI serves one).
pub(crate) trait TeiRequest: DeserializeOwned {
    /// The `model` field.
    fn model(&self) -> Option<&str>;
}

/// Implements [`TeiRequest`] for request types with an `Option<String>` field `model`.
macro_rules! tei_request {
    ($($request:ty),* $(,)?) => {
        $(impl $crate::tei::TeiRequest for $request {
            fn model(&self) -> Option<&str> {
                self.model.as_deref()
            }
        })*
    };
}
pub(crate) use tei_request;

/// The TEI routes, at the root (model from the body, `--tei-model`, or the only one of
/// its kind) and under `/tei/{model}`.
pub fn router(engine: Engine, default_models: &[String]) -> Router {
    let state = Tei {
        engine,
        defaults: default_models.into(),
    };
    Router::new()
        .route("/embed", post(|s, b| embed::embed(s, None, b)))
        .route("/embed_all", post(|s, b| embed::embed_all(s, None, b)))
        .route("/similarity", post(|s, b| embed::similarity(s, None, b)))
        .route("/rerank", post(|s, b| rerank::rerank(s, None, b)))
        .route("/predict", post(|s, b| classify::predict(s, None, b)))
        .route("/classify", post(|s, b| classify::predict(s, None, b)))
        .route("/tokenize", post(|s, b| tokenize::tokenize(s, None, b)))
        .route("/decode", post(|s, b| tokenize::decode(s, None, b)))
        .route("/info", get(|s| info::info(s, None)))
        .route("/health", get(health))
        .route("/", post(root))
        .route("/v1/rerank", post(rerank::v1_rerank))
        .route("/tei/{model}", post(compat))
        .route("/tei/{model}/embed", post(at(embed::embed)))
        .route("/tei/{model}/embed_all", post(at(embed::embed_all)))
        .route("/tei/{model}/similarity", post(at(embed::similarity)))
        .route("/tei/{model}/rerank", post(at(rerank::rerank)))
        .route("/tei/{model}/predict", post(at(classify::predict)))
        .route("/tei/{model}/classify", post(at(classify::predict)))
        .route("/tei/{model}/tokenize", post(at(tokenize::tokenize)))
        .route("/tei/{model}/decode", post(at(tokenize::decode)))
        .route(
            "/tei/{model}/info",
            get(|s, Path(model): Path<String>| info::info(s, Some(model))),
        )
        .with_state(state)
}

/// A handler of a route under `/tei/{model}`: the model comes from the path.
fn at<F, Fut>(
    handler: F,
) -> impl Fn(State<Tei>, Path<String>, Bytes) -> Fut + Clone + Send + Sync + 'static
where
    F: Fn(State<Tei>, Option<String>, Bytes) -> Fut + Clone + Send + Sync + 'static,
{
    move |state, Path(model), body| handler(state, Some(model), body)
}

/// `POST /tei/{model}`: TEI's compat route, by what the model is and what the body holds:
/// a classifier predicts, a re-ranker re-ranks, an embedder answers `/similarity` when the
/// body has `inputs.source_sentence` (TEI decides that at startup with `TASK`), else
/// `/embed`.
async fn compat(
    State(tei): State<Tei>,
    Path(model): Path<String>,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match TeiModel::named(&tei.engine, &model) {
        Ok(target) => dispatch(tei, target, body).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /`: the compat route of the model TEI's clients reach at the server's base URL:
/// the body's `model`, else `--tei-model`'s first, else the one ready TEI model.
async fn root(State(tei): State<Tei>, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        model: Option<String>,
    }
    let named = serde_json::from_slice::<Named>(&body)
        .ok()
        .and_then(|n| n.model);
    let kinds = [Kind::Embedder, Kind::Classifier, Kind::Reranker];
    match TeiModel::find(&tei, named.as_deref(), &kinds) {
        Ok(target) => dispatch(tei, target, body).await,
        Err(e) => e.into_response(),
    }
}

/// Answers a compat request with the route the model's kind and the body call for.
async fn dispatch(tei: Tei, target: TeiModel, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (state, model) = (State(tei), Some(target.name));
    match target.kind {
        Kind::Classifier => classify::predict(state, model, body).await.into_response(),
        Kind::Reranker => rerank::rerank(state, model, body).await.into_response(),
        Kind::Embedder if asks_similarity(&body) => {
            embed::similarity(state, model, body).await.into_response()
        }
        Kind::Embedder => embed::embed(state, model, body).await.into_response(),
    }
}

/// `GET /health`: 200 with an empty body while the server is ready, else TEI's 503.
async fn health(State(tei): State<Tei>) -> TeiResult<()> {
    if tei.engine.is_ready() {
        Ok(())
    } else {
        Err(TeiError::new(error::ErrorType::Unhealthy, "unhealthy"))
    }
}

/// Whether a body is a `/similarity` request (`{"inputs": {"source_sentence": ...}}`).
fn asks_similarity(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        inputs: serde_json::Value,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.inputs.get("source_sentence").is_some())
}

/// Parses a request body, answering a malformed one with TEI's 422 naming the field.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> TeiResult<T> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            TeiError::unreadable(format!("invalid request body: {inner}"))
        } else {
            TeiError::unreadable(format!("invalid '{path}': {inner}"))
        }
    })?;
    json.end()
        .map_err(|e| TeiError::unreadable(format!("invalid request body: {e}")))?;
    Ok(parsed)
}

/// What a model can do for the TEI routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Texts in, one FP32 vector per text out.
    Embedder,
    /// Texts (or pairs) in, one score per label out.
    Classifier,
    /// Pairs in, one score out.
    Reranker,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Self::Embedder => "an embedding model",
            Self::Classifier => "a classifier model",
            Self::Reranker => "a re-ranker model",
        }
    }
}

/// A ready model seen through the TEI routes: its kind and the tensors that carry what.
pub(crate) struct TeiModel {
    pub(crate) name: String,
    pub(crate) facts: ModelFacts,
    pub(crate) kind: Kind,
    /// The text (for a pair model, the query or first text).
    pub(crate) text: TensorSpec,
    /// The second text of a pair model.
    pub(crate) pair: Option<TensorSpec>,
    /// The FP32 output: vectors or scores.
    pub(crate) output: TensorSpec,
    /// An FP32 `[-1, hidden]` output of every token's state (TEI's `/embed_all`).
    pub(crate) states: Option<TensorSpec>,
    /// An integer output counting each item's tokens, when the model has one.
    pub(crate) tokens: Option<TensorSpec>,
}

impl TeiModel {
    /// Sees a model's facts as a TEI model, or says why it is none.
    fn of(name: &str, facts: ModelFacts) -> Result<Self, String> {
        let spec = &facts.spec;
        let none = |why: &str| Err(format!("model '{name}' {why}"));
        if spec.decoupled {
            return none("is decoupled (it streams)");
        }
        let texts: Vec<&TensorSpec> = spec.inputs.iter().collect();
        if texts.is_empty() || texts.len() > 2 || texts.iter().any(|t| t.dtype != DataType::Bytes) {
            return none("does not take one or two texts (BYTES inputs)");
        }
        let float = |rank: usize| {
            spec.outputs
                .iter()
                .find(|t| t.dtype == DataType::Fp32 && t.dims.len() == rank)
        };
        let Some(output) = float(1) else {
            return none("has no FP32 output of one dimension");
        };
        let tokens = spec
            .outputs
            .iter()
            .find(|t| t.dtype == DataType::Int32 && t.name.to_ascii_lowercase().contains("token"))
            .cloned();
        let kind = match (&spec.labels, texts.len()) {
            (Some(labels), 2) if labels.len() == 1 => Kind::Reranker,
            (Some(_), _) => Kind::Classifier,
            (None, 2) if output.dims == [1] => Kind::Reranker,
            (None, 1) => Kind::Embedder,
            (None, _) => return none("takes two texts but is not a re-ranker (one score)"),
        };
        Ok(Self {
            name: name.to_string(),
            kind,
            text: texts[0].clone(),
            pair: texts.get(1).map(|t| (*t).clone()),
            output: output.clone(),
            states: float(2).cloned(),
            tokens,
            facts,
        })
    }

    /// The ready model `name`, whatever it is.
    fn named(engine: &Engine, name: &str) -> TeiResult<Self> {
        let facts = engine.model(name, None).map_err(|e| match e {
            EngineError::NotFound(_) => TeiError::model_not_found(name),
            other => other.into(),
        })?;
        Self::of(name, facts).map_err(TeiError::backend)
    }

    /// The model a route serves: `named` when the request names one (it must be of a
    /// kind in `kinds`), else the first default model of those kinds, else the one ready
    /// model of those kinds.
    pub(crate) fn find(tei: &Tei, named: Option<&str>, kinds: &[Kind]) -> TeiResult<Self> {
        let engine = &tei.engine;
        let wanted = || {
            kinds
                .iter()
                .map(|k| k.noun())
                .collect::<Vec<_>>()
                .join(" or ")
        };
        if let Some(name) = named {
            let model = Self::named(engine, name)?;
            if !kinds.contains(&model.kind) {
                return Err(TeiError::backend(format!(
                    "Model is not {} ('{name}' is {})",
                    wanted(),
                    model.kind.noun()
                )));
            }
            return Ok(model);
        }
        if let Some(model) = tei
            .defaults
            .iter()
            .filter_map(|name| Self::named(engine, name).ok())
            .find(|m| kinds.contains(&m.kind))
        {
            return Ok(model);
        }
        let mut fitting: Vec<Self> = engine
            .repository_index(true)
            .into_iter()
            .filter_map(|entry| {
                let facts = engine.model(&entry.name, None).ok()?;
                Self::of(&entry.name, facts).ok()
            })
            .filter(|m| kinds.contains(&m.kind))
            .collect();
        match fitting.len() {
            1 => Ok(fitting.remove(0)),
            0 => Err(TeiError::backend(format!("no ready model is {}", wanted()))),
            _ => Err(TeiError::ambiguous(format!(
                "several ready models are {}: name one in `model`, start the server with \
                 --tei-model, or use /tei/{{model}}/...: {:?}",
                wanted(),
                fitting.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()
            ))),
        }
    }

    /// Requests for `items` (texts, or pairs when `pairs` is given), in chunks of the
    /// model's `max_batch_size`, asking for the FP32 output and the token counts.
    pub(crate) fn requests(
        &self,
        texts: &[&str],
        pairs: Option<&[&str]>,
        parameters: &Parameters,
    ) -> TeiResult<Vec<InferRequest>> {
        self.requests_for(texts, pairs, parameters, &self.output)
    }

    /// [`requests`](Self::requests) asking for `output` (and the token counts).
    pub(crate) fn requests_for(
        &self,
        texts: &[&str],
        pairs: Option<&[&str]>,
        parameters: &Parameters,
        output: &TensorSpec,
    ) -> TeiResult<Vec<InferRequest>> {
        if pairs.is_some() && self.pair.is_none() {
            return Err(TeiError::validation(format!(
                "model '{}' takes single texts, not pairs",
                self.name
            )));
        }
        if pairs.is_none() {
            if let Some(pair) = &self.pair {
                if !pair.optional {
                    return Err(TeiError::validation(format!(
                        "model '{}' takes pairs of texts",
                        self.name
                    )));
                }
            }
        }
        let chunk = if self.facts.batches() {
            self.facts.spec.max_batch_size.max(1)
        } else {
            1
        };
        let shape = |n: usize| -> Vec<i64> {
            if self.facts.batches() {
                vec![n as i64, 1]
            } else {
                vec![1]
            }
        };
        let outputs: Vec<RequestedOutput> = std::iter::once(output)
            .chain(&self.tokens)
            .map(|t| RequestedOutput {
                name: t.name.clone(),
                parameters: Default::default(),
            })
            .collect();
        Ok(texts
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let mut inputs = vec![Tensor::from_strings(
                    self.text.name.clone(),
                    shape(part.len()),
                    part,
                )];
                if let (Some(pair), Some(pairs)) = (&self.pair, pairs) {
                    let from = i * chunk;
                    inputs.push(Tensor::from_strings(
                        pair.name.clone(),
                        shape(part.len()),
                        &pairs[from..from + part.len()],
                    ));
                }
                let mut request = InferRequest::new(self.name.clone(), inputs);
                request.outputs = outputs.clone();
                request.parameters = parameters.clone();
                request
            })
            .collect())
    }

    /// Runs `requests` together (the batcher packs them) and returns each item's row of
    /// the FP32 output, in order, and the tokens they counted.
    pub(crate) async fn run(
        &self,
        engine: &Engine,
        requests: Vec<InferRequest>,
        items: usize,
    ) -> TeiResult<(Vec<Vec<f32>>, u64)> {
        let responses =
            futures::future::try_join_all(requests.into_iter().map(|r| engine.infer(r))).await?;
        let mut rows = Vec::with_capacity(items);
        let mut tokens = 0u64;
        for response in &responses {
            let (part, counted) = self.rows_of(response)?;
            rows.extend(part);
            tokens += counted;
        }
        if rows.len() != items {
            return Err(TeiError::backend(format!(
                "model '{}' answered {} rows for {items} items",
                self.name,
                rows.len()
            )));
        }
        Ok((rows, tokens))
    }

    fn rows_of(&self, response: &InferResponse) -> TeiResult<(Vec<Vec<f32>>, u64)> {
        let malformed = || {
            TeiError::backend(format!(
                "model '{}' returned a malformed '{}'",
                self.name, self.output.name
            ))
        };
        let output = response.output(&self.output.name).ok_or_else(malformed)?;
        let values: Vec<f32> = output.to_vec().map_err(|_| malformed())?;
        let rows = if self.facts.batches() {
            output.shape.first().copied().unwrap_or(1).max(1) as usize
        } else {
            1
        };
        if values.is_empty() || !values.len().is_multiple_of(rows) {
            return Err(malformed());
        }
        let width = values.len() / rows;
        let tokens = self
            .tokens
            .as_ref()
            .and_then(|t| response.output(&t.name))
            .and_then(|t| t.to_vec::<i32>().ok())
            .map_or(0, |v| v.iter().map(|&n| n.max(0) as u64).sum());
        Ok((values.chunks(width).map(<[f32]>::to_vec).collect(), tokens))
    }
}

/// TEI's `truncate` and `truncation_direction`, shared by the routes that take them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Truncation {
    /// Cut texts that are too long (TEI's default: refuse them).
    #[serde(default)]
    truncate: Option<bool>,
    /// `Left`/`Right` (either case).
    #[serde(default)]
    truncation_direction: Option<String>,
}

impl Truncation {
    /// The request parameters the models read.
    pub(crate) fn parameters(&self) -> TeiResult<Parameters> {
        let mut parameters = Parameters::new();
        parameters.insert(
            "truncate".into(),
            ParamValue::Bool(self.truncate.unwrap_or(false)),
        );
        if let Some(direction) = &self.truncation_direction {
            let lower = direction.to_ascii_lowercase();
            if lower != "left" && lower != "right" {
                return Err(TeiError::unreadable(format!(
                    "invalid 'truncation_direction': '{direction}' is not Left or Right"
                )));
            }
            parameters.insert("truncation_direction".into(), ParamValue::String(lower));
        }
        Ok(parameters)
    }
}

/// Refuses an empty list and one over [`MAX_CLIENT_BATCH_SIZE`].
pub(crate) fn check_batch(len: usize, field: &str) -> TeiResult<()> {
    if len == 0 {
        return Err(TeiError::empty(field));
    }
    if len > MAX_CLIENT_BATCH_SIZE {
        return Err(TeiError::validation(format!(
            "batch size {len} > maximum allowed batch size {MAX_CLIENT_BATCH_SIZE}"
        )));
    }
    Ok(())
}

/// The logistic function, TEI's score for a one-label model.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
