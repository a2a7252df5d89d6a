//! Shared helpers of the integration tests: an engine over a temporary repository, and
//! requests and stream readers for the two backends.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use nereid_engine::{
    BackendRegistry, DataType, Engine, EngineOptions, InferRequest, ParamValue, ResponseStream,
    Tensor,
};

/// Starts an engine over `root` with the built-in and candle backends.
pub(crate) fn engine(root: &Path) -> Engine {
    let mut registry = BackendRegistry::with_builtins();
    nereid_models::register(&mut registry);
    let options = EngineOptions {
        repository: Some(root.to_path_buf()),
        ..Default::default()
    };
    Engine::start(options, registry).expect("engine starts")
}

/// Panics with the repository index when a model did not load.
pub(crate) fn assert_ready(engine: &Engine, model: &str) {
    if !engine.model_ready(model, None) {
        panic!(
            "model '{model}' is not ready: {:?}",
            engine.repository_index(false)
        );
    }
}

/// An embedding request for one text.
pub(crate) fn embed_request(model: &str, texts: &[&str]) -> InferRequest {
    InferRequest::new(
        model,
        vec![Tensor::from_strings(
            "TEXT",
            vec![texts.len() as i64, 1],
            texts,
        )],
    )
}

/// Embeds texts one request each, concurrently (so the dynamic batcher may batch them), or
/// all in one request.
pub(crate) async fn embed(engine: &Engine, model: &str, texts: &[&str]) -> Vec<Vec<f32>> {
    let response = engine
        .infer(embed_request(model, texts))
        .await
        .expect("embedding succeeds");
    let out = response.output("EMBEDDING").expect("EMBEDDING output");
    let width = out.shape[1] as usize;
    out.to_vec::<f32>()
        .unwrap()
        .chunks(width)
        .map(|c| c.to_vec())
        .collect()
}

/// Cosine distance between two vectors.
pub(crate) fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    1.0 - dot / (na * nb)
}

/// A generation request.
pub(crate) fn generate_request(
    model: &str,
    prompt: &str,
    max_tokens: i32,
    chat: bool,
) -> InferRequest {
    let mut req = InferRequest::new(
        model,
        vec![
            Tensor::from_strings("text_input", vec![1, 1], [prompt]),
            Tensor::from_vec("max_tokens", DataType::Int32, vec![1, 1], vec![max_tokens]),
        ],
    );
    req.parameters.insert("chat".into(), ParamValue::Bool(chat));
    req
}

/// What a finished stream said.
#[derive(Debug, Default)]
pub(crate) struct Generated {
    pub text: String,
    pub pieces: usize,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub cached_tokens: i32,
    pub finish_reason: String,
}

/// Sends `generate_request(model, prompt, max_tokens, chat)` and reads its whole stream.
pub(crate) async fn generate(
    engine: &Engine,
    model: &str,
    prompt: &str,
    max_tokens: i32,
    chat: bool,
) -> Generated {
    let request = generate_request(model, prompt, max_tokens, chat);
    collect(engine.infer_stream(request).unwrap()).await
}

/// Reads a stream to its final response.
pub(crate) async fn collect(mut stream: ResponseStream) -> Generated {
    let mut g = Generated::default();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(120), stream.recv())
            .await
            .expect("a response in time");
        let response = next
            .expect("stream ends with a final response")
            .expect("no error");
        if let Some(t) = response.output("text_output") {
            let piece = t.string_elements().unwrap();
            g.text
                .push_str(std::str::from_utf8(&piece[0]).expect("pieces are UTF-8"));
            g.pieces += 1;
        }
        if response.is_final {
            let int = |name: &str| {
                response
                    .output(name)
                    .map(|t| t.to_vec::<i32>().unwrap()[0])
                    .unwrap_or(-1)
            };
            g.prompt_tokens = int("prompt_tokens");
            g.completion_tokens = int("completion_tokens");
            g.cached_tokens = int("cached_tokens");
            g.finish_reason = response
                .output("finish_reason")
                .map(|t| String::from_utf8(t.string_elements().unwrap()[0].to_vec()).unwrap())
                .unwrap_or_default();
            return g;
        }
    }
}
