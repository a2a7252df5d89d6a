//! Weightless stand-ins for the real models, so the OpenAI routes are tested without
//! downloading anything: `fake_llm` streams the words of its prompt back (with the request
//! parameter `chat` true, the words of the JSON messages' contents), one per step,
//! `delay_ms` apart, reporting counts and finish reason like smollm2 (`cached_tokens`: the
//! leading words its prompt shares with the previous prompt, all but its last at most, as a
//! prefix cache would), up to 8 sequences stepped together; `slow_llm` runs ONE live sequence:
//! max_batch_size 0), `fake_embedder` maps a text to a
//! 4-vector `[bytes, words, 1, 0.5]` and counts its words as tokens.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid_engine::{
    Backend, BackendRegistry, BatchedInstance, DataType, DecoupledInstance, Device, EngineError,
    ExecBatch, Instance, LoadedModel, ModelSpec, ParamValue, Responder, Result, Sequence, Tensor,
};

/// A decoupled text generator in the shape of smollm2.
pub(crate) const FAKE_LLM: &str = r#"name: "fake_llm"
backend: "fake_llm"
max_batch_size: 8
model_transaction_policy { decoupled: true }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "top_p" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true },
  { name: "stop" data_type: TYPE_STRING dims: [ -1 ] optional: true }
]
output [
  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "prompt_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "completion_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "cached_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "finish_reason" data_type: TYPE_STRING dims: [ 1 ] }
]
parameters { key: "delay_ms" value: { string_value: "5" } }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// The same generator, slow: 200 ms per token.
pub(crate) const SLOW_LLM: &str = r#"name: "slow_llm"
backend: "fake_llm"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true }
]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
parameters { key: "delay_ms" value: { string_value: "200" } }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// A batching embedder in the shape of minilm.
pub(crate) const FAKE_EMBEDDER: &str = r#"name: "fake_embedder"
backend: "fake_embedder"
max_batch_size: 4
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "TOKENS" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 1000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// Every fake model as (name, config).
pub(crate) const FAKE_MODELS: [(&str, &str); 3] = [
    ("fake_llm", FAKE_LLM),
    ("slow_llm", SLOW_LLM),
    ("fake_embedder", FAKE_EMBEDDER),
];

/// Registers both fake backends.
pub(crate) fn register(registry: &mut BackendRegistry) {
    registry.register("fake_llm", Arc::new(Fake(Kind::Llm)));
    registry.register("fake_embedder", Arc::new(Fake(Kind::Embedder)));
}

#[derive(Clone, Copy)]
enum Kind {
    Llm,
    Embedder,
}

struct Fake(Kind);

struct FakeModel {
    kind: Kind,
    delay: Duration,
    /// Whether the config declares smollm2's count and finish-reason outputs.
    report: bool,
}

impl Backend for Fake {
    fn load(&self, spec: &ModelSpec, _dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        let delay = spec
            .parameter("delay_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let report = spec.outputs.iter().any(|t| t.name == "finish_reason");
        Ok(Arc::new(FakeModel {
            kind: self.0,
            delay: Duration::from_millis(delay),
            report,
        }))
    }
}

impl LoadedModel for FakeModel {
    fn create_instance(&self, _device: Device, _index: usize) -> Result<Instance> {
        Ok(match self.kind {
            Kind::Llm => Instance::Decoupled(Box::new(Llm {
                delay: self.delay,
                report: self.report,
                live: Vec::new(),
                previous: Vec::new(),
            })),
            Kind::Embedder => Instance::Batched(Box::new(Embedder)),
        })
    }
}

struct Live {
    words: Vec<String>,
    cached: usize,
    next: usize,
    max: usize,
    stop: Vec<String>,
    text: String,
    due: Instant,
    responder: Responder,
}

struct Llm {
    delay: Duration,
    report: bool,
    live: Vec<Live>,
    /// The words of the last prompt admitted.
    previous: Vec<String>,
}

impl Llm {
    /// `last`: the final response's prompt, completion and cached token counts and reason.
    fn outputs(&self, piece: String, last: Option<([usize; 3], &str)>) -> Vec<Tensor> {
        let mut out = vec![Tensor::from_strings("text_output", vec![1], [piece])];
        if let (true, Some(([prompt, completion, cached], reason))) = (self.report, last) {
            out.push(Tensor::from_vec(
                "prompt_tokens",
                DataType::Int32,
                vec![1],
                vec![prompt as i32],
            ));
            out.push(Tensor::from_vec(
                "completion_tokens",
                DataType::Int32,
                vec![1],
                vec![completion as i32],
            ));
            out.push(Tensor::from_vec(
                "cached_tokens",
                DataType::Int32,
                vec![1],
                vec![cached as i32],
            ));
            out.push(Tensor::from_strings("finish_reason", vec![1], [reason]));
        }
        out
    }
}

fn strings(t: Option<&Tensor>) -> Vec<String> {
    t.and_then(|t| t.string_elements().ok())
        .unwrap_or_default()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

impl DecoupledInstance for Llm {
    fn admit(&mut self, mut seq: Sequence) {
        let mut prompt = strings(seq.input("text_input")).concat();
        if seq.parameters.get("chat") == Some(&ParamValue::Bool(true)) {
            let messages: Vec<serde_json::Value> = match serde_json::from_str(&prompt) {
                Ok(m) => m,
                Err(e) => {
                    return seq
                        .responder
                        .fail(EngineError::invalid(format!("chat messages: {e}")))
                }
            };
            prompt = messages
                .iter()
                .filter_map(|m| m["content"].as_str())
                .collect::<Vec<_>>()
                .join(" ");
        }
        let words: Vec<String> = prompt.split_whitespace().map(|w| format!("{w} ")).collect();
        if words.is_empty() {
            return seq.responder.fail(EngineError::invalid("empty prompt"));
        }
        let max = match seq.input("max_tokens").map(|t| t.to_vec::<i32>()) {
            Some(Ok(v)) => v.first().copied().unwrap_or(16).max(0) as usize,
            _ => 16,
        };
        let stop = strings(seq.input("stop"));
        if max == 0 {
            return seq.responder.finish(Vec::new());
        }
        let due = Instant::now() + self.delay;
        let shared = words.iter().zip(&self.previous).take_while(|(a, b)| a == b);
        let cached = shared.count().min(words.len() - 1);
        self.previous = words.clone();
        self.live.push(Live {
            words,
            cached,
            next: 0,
            max,
            stop,
            text: String::new(),
            due,
            responder: seq.responder,
        });
    }

    fn step(&mut self) -> Result<()> {
        if let Some(earliest) = self.live.iter().map(|l| l.due).min() {
            let now = Instant::now();
            if earliest > now {
                std::thread::sleep((earliest - now).min(Duration::from_millis(2)));
            }
        }
        let now = Instant::now();
        let mut live = std::mem::take(&mut self.live);
        for l in &mut live {
            if l.due > now {
                continue;
            }
            let Some(permit) = l.responder.try_reserve() else {
                continue;
            };
            let mut piece = l.words[l.next % l.words.len()].clone();
            l.next += 1;
            l.text.push_str(&piece);
            let mut reason = (l.next >= l.max).then_some("length");
            if let Some(stop) = l.stop.iter().find(|s| l.text.contains(s.as_str())) {
                // Cut the piece where the stop string begins, as a real model does.
                let at = l.text.find(stop.as_str()).unwrap_or(l.text.len());
                let cut = l.text.len() - at;
                piece.truncate(piece.len().saturating_sub(cut));
                reason = Some("stop");
            }
            let counts = [l.words.len(), l.next, l.cached];
            let outputs = self.outputs(piece, reason.map(|r| (counts, r)));
            permit.send(outputs, reason.is_some());
            l.due = now + self.delay;
        }
        live.retain(|l| !l.responder.is_done() && !l.responder.is_cancelled());
        self.live = live;
        Ok(())
    }

    fn live(&self) -> usize {
        self.live.len()
    }

    fn abort_all(&mut self, error: EngineError) {
        for mut l in self.live.drain(..) {
            l.responder.fail(error.clone());
        }
    }
}

struct Embedder;

impl BatchedInstance for Embedder {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let texts = strings(Some(batch.require("TEXT")?));
        let mut values = Vec::new();
        let mut tokens = Vec::new();
        for t in &texts {
            let words = t.split_whitespace().count();
            values.extend([t.len() as f32, words as f32, 1.0, 0.5]);
            tokens.push(words as i32);
        }
        let n = texts.len() as i64;
        Ok(vec![
            Tensor::from_vec("EMBEDDING", DataType::Fp32, vec![n, 4], values),
            Tensor::from_vec("TOKENS", DataType::Int32, vec![n, 1], tokens),
        ])
    }
}
