//! Token metrics of the generation routes, measured here around the engine stream (what a
//! client sees, queueing included), through the `metrics` facade; the binary installs the
//! Prometheus recorder, with [`LATENCY_BUCKETS`] for every metric named [`LLM_PREFIX`]...
//! (the exporter renders histograms without buckets as summaries).

use std::sync::Once;
use std::time::{Duration, Instant};

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};

/// The prefix every token metric's name starts with.
pub const LLM_PREFIX: &str = "nv_llm_";
/// Histogram: seconds from the request reaching this frontend to its first generated token.
pub const TIME_TO_FIRST_TOKEN: &str = "nv_llm_time_to_first_token_seconds";
/// Histogram: seconds between consecutive generated tokens of one request.
pub const INTER_TOKEN_LATENCY: &str = "nv_llm_inter_token_latency_seconds";
/// Counter: tokens generated and sent to clients.
pub const GENERATED_TOKENS: &str = "nv_llm_generated_tokens_total";
/// Counter: prompt tokens of generation requests (when the model reports them).
pub const PROMPT_TOKENS: &str = "nv_llm_prompt_tokens_total";
/// Counter: prompt tokens the model did not compute, their KV cache reused from an earlier
/// prompt (when the model reports them).
pub const CACHED_PROMPT_TOKENS: &str = "nv_llm_cached_prompt_tokens_total";
/// Counter: generation requests whose client went away before the last token.
pub const CANCELLED_REQUESTS: &str = "nv_llm_cancelled_requests_total";

/// Buckets (seconds) suited to both histograms: sub-millisecond steps up to half a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// Registers help texts once (the recorder must be installed first for them to show).
pub fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        describe_histogram!(
            TIME_TO_FIRST_TOKEN,
            Unit::Seconds,
            "Time from a generation request's arrival to its first token"
        );
        describe_histogram!(
            INTER_TOKEN_LATENCY,
            Unit::Seconds,
            "Time between consecutive tokens of one request"
        );
        describe_counter!(
            GENERATED_TOKENS,
            Unit::Count,
            "Generated tokens sent to clients"
        );
        describe_counter!(
            PROMPT_TOKENS,
            Unit::Count,
            "Prompt tokens of generation requests"
        );
        describe_counter!(
            CACHED_PROMPT_TOKENS,
            Unit::Count,
            "Prompt tokens whose KV cache the model reused instead of computing"
        );
        describe_counter!(
            CANCELLED_REQUESTS,
            Unit::Count,
            "Generation requests whose client went away mid-stream"
        );
    });
}

/// Measures one generation request: feed it every response's token count as it arrives.
pub struct TokenMeter {
    started: Instant,
    last: Option<Instant>,
    first_token: Option<Duration>,
    tokens: u64,
    ttft: Histogram,
    itl: Histogram,
    generated: Counter,
    cancelled: Counter,
    prompt: Counter,
    cached: Counter,
    finished: bool,
}

impl TokenMeter {
    /// A meter for a request to `model` that arrived at `started`.
    pub fn new(model: &str, started: Instant) -> Self {
        let label = model.to_string();
        Self {
            started,
            last: None,
            first_token: None,
            tokens: 0,
            ttft: histogram!(TIME_TO_FIRST_TOKEN, "model" => label.clone()),
            itl: histogram!(INTER_TOKEN_LATENCY, "model" => label.clone()),
            generated: counter!(GENERATED_TOKENS, "model" => label.clone()),
            cancelled: counter!(CANCELLED_REQUESTS, "model" => label.clone()),
            prompt: counter!(PROMPT_TOKENS, "model" => label.clone()),
            cached: counter!(CACHED_PROMPT_TOKENS, "model" => label),
            finished: false,
        }
    }

    /// Records a response that carried `tokens` tokens (zero-token responses, like an empty
    /// final one, record nothing). A response carrying several tokens spreads the gap since
    /// the previous one evenly over them.
    pub fn tokens(&mut self, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let now = Instant::now();
        match self.last {
            None => {
                let first = now - self.started;
                self.first_token = Some(first);
                self.ttft.record(first);
                // The rest of a multi-token first response arrived together with it.
                if tokens > 1 {
                    self.itl.record_many(0.0, (tokens - 1) as usize);
                }
            }
            Some(previous) => {
                let gap = (now - previous).as_secs_f64() / tokens as f64;
                self.itl.record_many(gap, tokens as usize);
            }
        }
        self.last = Some(now);
        self.tokens += tokens;
        self.generated.increment(tokens);
    }

    /// Counts the prompt's tokens.
    pub fn prompt_tokens(&mut self, tokens: u64) {
        self.prompt.increment(tokens);
    }

    /// Counts the prompt's tokens that came from the model's prefix cache.
    pub fn cached_prompt_tokens(&mut self, tokens: u64) {
        self.cached.increment(tokens);
    }

    /// Marks the request complete: a meter dropped before this counts as cancelled.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Tokens seen so far.
    pub fn generated(&self) -> u64 {
        self.tokens
    }

    /// Time to the first token, once there was one.
    pub fn time_to_first_token(&self) -> Option<Duration> {
        self.first_token
    }
}

impl Drop for TokenMeter {
    fn drop(&mut self) {
        if !self.finished {
            self.cancelled.increment(1);
        }
    }
}
