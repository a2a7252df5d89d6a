//! `POST /v1/chat/completions`: a conversation in, the assistant's reply out, whole or
//! streamed as `chat.completion.chunk` deltas.

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
use super::{messages, new_id, parse_generation, unix_now, ModelInfo, Usage};
use crate::error::{ApiError, ApiResult};
use crate::sse;

/// The request body.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    messages: Vec<messages::Message>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    response_format: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct Reply {
    role: &'static str,
    content: String,
}

#[derive(Debug, Serialize)]
struct Choice {
    index: usize,
    message: Reply,
    logprobs: Option<()>,
    finish_reason: String,
}

#[derive(Debug, Default, Serialize)]
struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

#[derive(Debug, Serialize)]
struct ChunkChoice {
    index: usize,
    delta: Delta,
    logprobs: Option<()>,
    finish_reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Completion<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<C>,
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
    let (common, request): (Common, ChatRequest) = parse_generation(&body)?;
    if request.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "'messages' must not be empty",
        ));
    }
    if request.logprobs.unwrap_or(false) {
        return Err(ApiError::unsupported(
            "logprobs",
            "'logprobs' is not supported by this server",
        ));
    }
    if request.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::unsupported(
            "tools",
            "tool calling is not supported by this server",
        ));
    }
    if let Some(format) = &request.response_format {
        if format
            .get("type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| t != "text")
        {
            return Err(ApiError::unsupported(
                "response_format",
                "only the 'text' response format is supported",
            ));
        }
    }
    let n = common.choices()?;
    let sampling = common.sampling(request.max_completion_tokens)?;
    let model = ModelInfo::resolve(&engine, &common.model)?;
    let prompt = Prompt::Chat(messages::to_json(&request.messages)?);
    let id = new_id("chatcmpl");
    let generations = generate::start_all(
        &engine,
        &model,
        &id,
        &[prompt],
        n,
        &sampling,
        &origin,
        started,
    )?;
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
            .map(|(index, (content, finish_reason, u))| {
                usage += u;
                Choice {
                    index,
                    message: Reply {
                        role: "assistant",
                        content,
                    },
                    logprobs: None,
                    finish_reason,
                }
            })
            .collect();
        return Ok(Json(meta.completion("chat.completion", choices, Some(usage))).into_response());
    }

    let include_usage = common.include_usage();
    let events = async_stream::stream! {
        // OpenAI opens every choice with a delta naming the role.
        for index in 0..n as usize {
            let delta = Delta { role: Some("assistant"), content: Some(String::new()) };
            yield sse::json(&meta.chunk(ChunkChoice { index, delta, logprobs: None, finish_reason: None }));
        }
        let mut merged = generate::merge(generations);
        let mut usage = Usage::default();
        while let Some(event) = merged.next().await {
            match event {
                Event::Piece(index, piece) => {
                    if !piece.text.is_empty() {
                        let delta = Delta { role: None, content: Some(piece.text) };
                        yield sse::json(&meta.chunk(ChunkChoice { index, delta, logprobs: None, finish_reason: None }));
                    }
                    if let Some(finish) = piece.finish {
                        let choice = ChunkChoice { index, delta: Delta::default(), logprobs: None, finish_reason: Some(finish) };
                        yield sse::json(&meta.chunk(choice));
                    }
                }
                Event::Done(u) => usage += u,
                Event::Failed(e) => {
                    yield sse::error(&e);
                    return;
                }
            }
        }
        if include_usage {
            yield sse::json(&meta.completion::<ChunkChoice>("chat.completion.chunk", Vec::new(), Some(usage)));
        }
        yield sse::done();
    };
    Ok(sse::respond(events))
}

/// What every chunk of one chat completion repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn completion<C>(
        &self,
        object: &'static str,
        choices: Vec<C>,
        usage: Option<Usage>,
    ) -> Completion<'_, C> {
        Completion {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            choices,
            usage,
        }
    }

    fn chunk(&self, choice: ChunkChoice) -> Completion<'_, ChunkChoice> {
        self.completion("chat.completion.chunk", vec![choice], None)
    }
}
