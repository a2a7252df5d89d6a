//! What completions and chat share: turning sampling options into a generator model's
//! inputs, and reading its stream of text pieces back with token counts, finish reasons
//! and metrics.
//!
//! A generator keeps the engine's generation contract ([`nereid_engine::generation`]): the
//! optional inputs `max_tokens`, `temperature`, `top_p`, `seed` and `stop` are filled when
//! the client sets them (and refused when the model lacks them).

use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use nereid_engine::generation::{self, GenerationIo};
use nereid_engine::{
    DataType, Engine, InferRequest, InferResponse, Origin, ParamValue, Tensor, TensorSpec,
};

use super::params::Sampling;
use super::{ModelInfo, PromptTokensDetails, Usage};
use crate::error::{ApiError, ApiResult};
use crate::metrics::TokenMeter;

/// A prompt: raw text (completions) or a conversation as JSON messages (chat).
#[derive(Debug, Clone)]
pub(crate) enum Prompt {
    Text(String),
    Chat(String),
}

/// Builds a generator's request for one choice.
pub(crate) fn request(
    model: &ModelInfo,
    io: &GenerationIo,
    id: &str,
    prompt: &Prompt,
    sampling: &Sampling,
) -> ApiResult<InferRequest> {
    let (prompt, chat) = match prompt {
        Prompt::Text(t) => (t, false),
        Prompt::Chat(messages) => (messages, true),
    };
    let text = &io.text_input;
    let mut inputs = vec![Tensor::from_strings(
        text.name.clone(),
        model.shape(text, 1, 1),
        [prompt],
    )];
    if let Some(v) = sampling.max_tokens {
        inputs.push(model.number(
            optional(model, &io.max_tokens, "max_tokens")?,
            "max_tokens",
            v as f64,
        )?);
    }
    if let Some(v) = sampling.temperature {
        inputs.push(model.number(
            optional(model, &io.temperature, "temperature")?,
            "temperature",
            v,
        )?);
    }
    if let Some(v) = sampling.top_p {
        inputs.push(model.number(optional(model, &io.top_p, "top_p")?, "top_p", v)?);
    }
    if let Some(seed) = sampling.seed {
        let spec = optional(model, &io.seed, "seed")?;
        let shape = model.shape(spec, 1, 1);
        let name = spec.name.clone();
        inputs.push(match spec.dtype {
            DataType::Uint64 => Tensor::from_vec(name, spec.dtype, shape, vec![seed]),
            DataType::Int64 => Tensor::from_vec(name, spec.dtype, shape, vec![seed as i64]),
            _ => model.number(spec, "seed", seed as f64)?,
        });
    }
    if !sampling.stop.is_empty() {
        let spec = optional(model, &io.stop, "stop")?;
        let fixed_one = spec.dims.last() == Some(&1);
        if fixed_one && sampling.stop.len() > 1 {
            return Err(ApiError::unsupported(
                "stop",
                format!("model '{}' takes one stop string", model.name),
            ));
        }
        let shape = model.shape(spec, 1, sampling.stop.len());
        inputs.push(Tensor::from_strings(
            spec.name.clone(),
            shape,
            &sampling.stop,
        ));
    }
    let mut request = InferRequest::new(model.name.clone(), inputs);
    request.id = id.to_string();
    // Said both ways: a raw prompt that happens to look like JSON stays a raw prompt.
    request
        .parameters
        .insert(generation::PARAM_CHAT.into(), ParamValue::Bool(chat));
    Ok(request)
}

/// An optional input of the contract the client set, or the error saying the model lacks it.
fn optional<'a>(
    model: &ModelInfo,
    spec: &'a Option<TensorSpec>,
    param: &str,
) -> ApiResult<&'a TensorSpec> {
    spec.as_ref().ok_or_else(|| {
        ApiError::unsupported(
            param,
            format!("model '{}' does not take '{param}'", model.name),
        )
    })
}

/// One piece of generated text; the last also says why generation stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub text: String,
    pub finish: Option<String>,
}

/// A running generation: owns the engine stream, so dropping it (the client went away)
/// cancels the sequence in the engine at once.
pub(crate) struct Generation {
    rx: nereid_engine::ResponseStream,
    meter: TokenMeter,
    /// Bytes of a UTF-8 character split across pieces, held until it is whole.
    pending: Vec<u8>,
    prompt_tokens: Option<u64>,
    completion_tokens: u64,
    cached_tokens: Option<u64>,
    finish: Option<String>,
    max_tokens: Option<u64>,
    done: bool,
}

impl Generation {
    /// Submits the request.
    pub(crate) fn start(
        engine: &Engine,
        request: InferRequest,
        max_tokens: Option<u64>,
        started: Instant,
    ) -> ApiResult<Self> {
        let meter = TokenMeter::new(&request.model_name, started);
        let rx = engine.infer_stream(request)?;
        Ok(Self {
            rx,
            meter,
            pending: Vec::new(),
            prompt_tokens: None,
            completion_tokens: 0,
            cached_tokens: None,
            finish: None,
            max_tokens,
            done: false,
        })
    }

    /// The next piece of text, `None` after the last one. Pieces of only whitespace are
    /// passed on; empty ones (a token that ends mid-character) are not.
    pub(crate) async fn next(&mut self) -> Option<ApiResult<Piece>> {
        while !self.done {
            let response = match self.rx.recv().await {
                Some(Ok(response)) => response,
                Some(Err(e)) => return Some(Err(self.fail(e.into()))),
                None => {
                    return Some(Err(self.fail(ApiError::internal(
                        "the model ended the stream without a final response",
                    ))))
                }
            };
            let text = self.absorb(&response);
            if response.is_final {
                self.done = true;
                self.meter.finish();
                return Some(Ok(Piece {
                    text,
                    finish: Some(self.finish_reason()),
                }));
            }
            if !text.is_empty() {
                return Some(Ok(Piece { text, finish: None }));
            }
        }
        None
    }

    /// Token counts so far (final once the last piece was read).
    pub(crate) fn usage(&self) -> Usage {
        let prompt = self.prompt_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: self.completion_tokens,
            total_tokens: prompt + self.completion_tokens,
            prompt_tokens_details: self
                .cached_tokens
                .map(|cached_tokens| PromptTokensDetails { cached_tokens }),
        }
    }

    /// The pieces as a stream, each tagged with `index`, ending with the usage.
    pub(crate) fn into_stream(self, index: usize) -> impl Stream<Item = Event> + Send {
        futures::stream::unfold(Some(self), move |state| async move {
            let mut generation = state?;
            match generation.next().await {
                Some(Ok(piece)) => Some((Event::Piece(index, piece), Some(generation))),
                Some(Err(e)) => Some((Event::Failed(e), None)),
                None => Some((Event::Done(generation.usage()), None)),
            }
        })
    }

    /// Reads every piece and returns the whole text and the finish reason.
    pub(crate) async fn collect(mut self) -> ApiResult<(String, String, Usage)> {
        let mut text = String::new();
        let mut finish = String::from("stop");
        while let Some(piece) = self.next().await {
            let piece = piece?;
            text.push_str(&piece.text);
            if let Some(f) = piece.finish {
                finish = f;
            }
        }
        Ok((text, finish, self.usage()))
    }

    fn fail(&mut self, error: ApiError) -> ApiError {
        self.done = true;
        self.meter.finish();
        error
    }

    /// Takes a response's text, counts and reason in; returns the whole characters ready.
    fn absorb(&mut self, response: &InferResponse) -> String {
        let mut bytes = std::mem::take(&mut self.pending);
        if let Some(out) = response.output(generation::TEXT_OUTPUT) {
            for piece in out.string_elements().unwrap_or_default() {
                bytes.extend_from_slice(&piece);
            }
        }
        // A model that reports its running total is believed; otherwise each response
        // with text counts as one token (one decode step each).
        let tokens = match count(response, generation::COMPLETION_TOKENS) {
            Some(total) => total.saturating_sub(self.completion_tokens),
            None => u64::from(!bytes.is_empty()),
        };
        self.meter.tokens(tokens);
        self.completion_tokens += tokens;
        if let Some(prompt) = count(response, generation::PROMPT_TOKENS) {
            if self.prompt_tokens.is_none() {
                self.meter.prompt_tokens(prompt);
            }
            self.prompt_tokens = Some(prompt);
        }
        if let Some(cached) = count(response, generation::CACHED_TOKENS) {
            if self.cached_tokens.is_none() {
                self.meter.cached_prompt_tokens(cached);
            }
            self.cached_tokens = Some(cached);
        }
        if let Some(reason) = text(response, generation::FINISH_REASON) {
            self.finish = Some(reason);
        }
        let whole = if response.is_final {
            bytes.len()
        } else {
            complete_utf8_prefix(&bytes)
        };
        self.pending = bytes.split_off(whole);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The model's reason, else `length` when the budget was used up, else `stop`.
    fn finish_reason(&self) -> String {
        if let Some(reason) = &self.finish {
            return reason.clone();
        }
        match self.max_tokens {
            Some(max) if self.completion_tokens >= max => "length".into(),
            _ => "stop".into(),
        }
    }
}

/// Starts `n` choices for each prompt (choice `i * n + j` is prompt `i`'s `j`-th), all
/// submitted before anything is answered, so a refusal is an HTTP status, not a stream
/// error. If one is refused the ones already started are dropped, which cancels them.
#[allow(clippy::too_many_arguments)] // each is one fact of the request, all used once
pub(crate) fn start_all(
    engine: &Engine,
    model: &ModelInfo,
    id: &str,
    prompts: &[Prompt],
    n: u64,
    sampling: &Sampling,
    origin: &Origin,
    started: Instant,
) -> ApiResult<Vec<Generation>> {
    let io = model.generator()?;
    let mut generations = Vec::with_capacity(prompts.len() * n as usize);
    for prompt in prompts {
        for j in 0..n {
            let choice = sampling.for_choice(j);
            let mut request = request(
                model,
                &io,
                &format!("{id}-{}", generations.len()),
                prompt,
                &choice,
            )?;
            request.origin = origin.clone();
            generations.push(Generation::start(
                engine,
                request,
                choice.max_tokens,
                started,
            )?);
        }
    }
    Ok(generations)
}

/// Every choice's pieces as they come, in one stream that owns the generations.
pub(crate) fn merge(generations: Vec<Generation>) -> impl Stream<Item = Event> + Send + Unpin {
    futures::stream::select_all(
        generations
            .into_iter()
            .enumerate()
            .map(|(i, g)| Box::pin(g.into_stream(i))),
    )
}

/// What a tagged generation stream yields.
pub(crate) enum Event {
    /// A piece of choice `index`.
    Piece(usize, Piece),
    /// A choice ended normally with this usage.
    Done(Usage),
    /// A choice failed.
    Failed(ApiError),
}

/// Length of the longest prefix of `bytes` that does not end inside a UTF-8 character.
fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        // An incomplete character at the end: hold it back. Invalid bytes elsewhere are
        // passed on (and shown as U+FFFD) rather than stalling the stream.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

/// A count output of the contract, when the response carries it.
fn count(response: &InferResponse, name: &str) -> Option<u64> {
    response.output(name).and_then(generation::read_count)
}

/// The first string of a BYTES output, when the response carries a non-empty one.
fn text(response: &InferResponse, name: &str) -> Option<String> {
    let first: Bytes = response
        .output(name)?
        .string_elements()
        .ok()?
        .into_iter()
        .next()?;
    Some(String::from_utf8_lossy(&first).into_owned()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_held_until_whole() {
        let euro = "€".as_bytes();
        assert_eq!(complete_utf8_prefix(&euro[..2]), 0);
        assert_eq!(complete_utf8_prefix(&[b'a', euro[0]]), 1);
        assert_eq!(complete_utf8_prefix(euro), 3);
        assert_eq!(complete_utf8_prefix(&[0xff, b'a']), 2);
    }
}
