//! `POST /v1/completions`: text completion of one or many prompts, `n` choices each, whole
//! or streamed as `text_completion` chunks.

use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use futures::StreamExt;
use nereid_engine::{Engine, Origin};
use serde::{Deserialize, Serialize};

use super::generate::{self, Event, Prompt};
use super::params::Common;
use super::{new_id, parse_generation, unix_now, ModelInfo, OneOrMany, Usage};
use crate::error::{ApiError, ApiResult};
use crate::sse;

/// The request body.
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    prompt: Option<OneOrMany>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    logprobs: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
    #[serde(default)]
    suffix: Option<String>,
}

#[derive(Debug, Serialize)]
struct Choice {
    index: usize,
    text: String,
    /// Log probabilities are not produced.
    logprobs: Option<()>,
    finish_reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// The handler.
pub(crate) async fn create(
    State(engine): State<Engine>,
    origin: Option<Extension<Origin>>,
    body: Bytes,
) -> ApiResult<Response> {
    let origin = origin.map(|o| o.0).unwrap_or_default();
    let started = Instant::now();
    let (common, request): (Common, CompletionRequest) = parse_generation(&body)?;
    let prompts = match request.prompt {
        Some(p) => p.into_vec(),
        None => return Err(ApiError::invalid_param("prompt", "'prompt' is required")),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "'prompt' must not be an empty list",
        ));
    }
    if request.logprobs.is_some_and(|l| l > 0) {
        return Err(ApiError::unsupported(
            "logprobs",
            "'logprobs' is not supported by this server",
        ));
    }
    if request.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported(
            "suffix",
            "'suffix' is not supported by this server",
        ));
    }
    let n = common.choices()?;
    if request.best_of.is_some_and(|b| b != n) {
        return Err(ApiError::unsupported(
            "best_of",
            "'best_of' other than 'n' is not supported by this server",
        ));
    }
    let sampling = common.sampling(None)?;
    let model = ModelInfo::resolve(&engine, &common.model)?;
    let id = new_id("cmpl");
    let requests: Vec<Prompt> = prompts.iter().cloned().map(Prompt::Text).collect();
    let generations = generate::start_all(
        &engine, &model, &id, &requests, n, &sampling, &origin, started,
    )?;
    // Echo prefixes each choice with its prompt.
    let echoes: Vec<String> = if request.echo.unwrap_or(false) {
        prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.clone(), n as usize))
            .collect()
    } else {
        Vec::new()
    };
    let meta = Meta {
        id,
        created: unix_now(),
        model: model.name,
    };

    if !common.streaming() {
        let outcomes =
            futures::future::try_join_all(generations.into_iter().map(|g| g.collect())).await?;
        let mut usage = Usage::default();
        let choices = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, (text, finish, u))| {
                usage += u;
                let text = match echoes.get(index) {
                    Some(prompt) => format!("{prompt}{text}"),
                    None => text,
                };
                Choice {
                    index,
                    text,
                    logprobs: None,
                    finish_reason: Some(finish),
                }
            })
            .collect();
        return Ok(Json(meta.completion(choices, Some(usage))).into_response());
    }

    let include_usage = common.include_usage();
    let events = async_stream::stream! {
        for (index, prompt) in echoes.into_iter().enumerate() {
            yield sse::json(&meta.completion(vec![Choice { index, text: prompt, logprobs: None, finish_reason: None }], None));
        }
        let mut merged = generate::merge(generations);
        let mut usage = Usage::default();
        while let Some(event) = merged.next().await {
            match event {
                Event::Piece(index, piece) => {
                    let choice = Choice { index, text: piece.text, logprobs: None, finish_reason: piece.finish };
                    yield sse::json(&meta.completion(vec![choice], None));
                }
                Event::Done(u) => usage += u,
                Event::Failed(e) => {
                    yield sse::error(&e);
                    return;
                }
            }
        }
        if include_usage {
            yield sse::json(&meta.completion(Vec::new(), Some(usage)));
        }
        yield sse::done();
    };
    Ok(sse::respond(events))
}

/// What every chunk of one completion repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn completion(&self, choices: Vec<Choice>, usage: Option<Usage>) -> Completion<'_> {
        Completion {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        }
    }
}
