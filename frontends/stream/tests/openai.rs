//! The OpenAI routes against the fake generator and embedder: shapes of whole and streamed
//! answers, usage, stop, n, errors, and cancellation when an SSE client goes away.

mod common;

use std::time::{Duration, Instant};

use common::{json, send, start, Events};
use serde_json::{json, Value};

#[tokio::test]
async fn models_lists_ready_models_and_retrieves_one() {
    let server = start().await;
    let (status, body) = json("GET", &server.url("/v1/models"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for name in ["fake_llm", "fake_embedder", "repeat_int32", "simple"] {
        assert!(ids.contains(&name), "{ids:?}");
    }
    assert_eq!(body["data"][0]["object"], "model");
    let (status, body) = json("GET", &server.url("/v1/models/simple"), None).await;
    assert_eq!((status, body["id"].as_str()), (200, Some("simple")));
    let (status, body) = json("GET", &server.url("/v1/models/nope"), None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn completion_whole_with_usage_and_length_finish() {
    let server = start().await;
    let request = json!({"model": "fake_llm", "prompt": "one two three four", "max_tokens": 3, "temperature": 0.5, "seed": 1});
    let (status, body) = json("POST", &server.url("/v1/completions"), Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(body["model"], "fake_llm");
    assert_eq!(body["choices"][0]["text"], "one two three ");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["prompt_tokens"], 4, "the model's own count");
    assert_eq!(body["usage"]["total_tokens"], 7);
}

#[tokio::test]
async fn completion_stop_echo_and_several_choices() {
    let server = start().await;
    let request =
        json!({"model": "fake_llm", "prompt": "a b c d", "stop": ["c"], "max_tokens": 10});
    let (_, body) = json("POST", &server.url("/v1/completions"), Some(&request)).await;
    assert_eq!(body["choices"][0]["text"], "a b ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    let request = json!({"model": "fake_llm", "prompt": ["x y", "p q"], "n": 2, "max_tokens": 2, "echo": true});
    let (status, body) = json("POST", &server.url("/v1/completions"), Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<&str> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["x yx y ", "x yx y ", "p qp q ", "p qp q "]);
    assert_eq!(body["usage"]["completion_tokens"], 8);
}

#[tokio::test]
async fn completion_streams_chunks_then_usage_then_done() {
    let server = start().await;
    let request = json!({"model": "fake_llm", "prompt": "alpha beta gamma", "max_tokens": 3, "stream": true,
                         "stream_options": {"include_usage": true}});
    let response = send("POST", &server.url("/v1/completions"), Some(&request)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = Events::new(response).all().await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "alpha beta gamma ");
    let with_text = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(with_text, 3, "one chunk per token: {chunks:?}");
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("length")]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["usage"]["prompt_tokens"], 3);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "text_completion" && c["id"] == chunks[0]["id"]));
}

#[tokio::test]
async fn chat_whole_and_streamed() {
    let server = start().await;
    let messages = json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi there"}]}]);
    let request = json!({"model": "fake_llm", "messages": messages, "max_completion_tokens": 4});
    let (status, body) = json("POST", &server.url("/v1/chat/completions"), Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    // The fake echoes the contents of the JSON messages it was sent with `chat: true`.
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "be brief hi there "
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 4);

    let request =
        json!({"model": "fake_llm", "messages": messages, "max_tokens": 2, "stream": true});
    let events =
        Events::new(send("POST", &server.url("/v1/chat/completions"), Some(&request)).await)
            .all()
            .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "be brief ");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["choices"][0]["delta"], json!({}));
}

#[tokio::test]
async fn embeddings_float_and_base64_in_chunks() {
    let server = start().await;
    let inputs: Vec<String> = (0..6)
        .map(|i| "w ".repeat(i + 1).trim().to_string())
        .collect();
    let request = json!({"model": "fake_embedder", "input": inputs});
    let (status, body) = json("POST", &server.url("/v1/embeddings"), Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 6);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["object"], "embedding");
        let words = (i + 1) as f64;
        assert_eq!(
            item["embedding"],
            json!([inputs[i].len() as f64, words, 1.0, 0.5])
        );
    }
    assert_eq!(body["usage"]["prompt_tokens"], 21);

    let request = json!({"model": "fake_embedder", "input": "a b c", "encoding_format": "base64"});
    let (_, body) = json("POST", &server.url("/v1/embeddings"), Some(&request)).await;
    let values = common::base64_embedding(&body["data"][0]["embedding"]);
    assert_eq!(values, [5.0, 3.0, 1.0, 0.5]);
}

#[tokio::test]
async fn errors_have_openai_shape_and_status() {
    let server = start().await;
    let cases = [
        (
            "/v1/completions",
            json!({"model": "nope", "prompt": "x"}),
            404,
            Some("model"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
            Some("model"),
        ),
        (
            "/v1/embeddings",
            json!({"model": "nope", "input": "x"}),
            404,
            Some("model"),
        ),
        (
            "/v1/completions",
            json!({"model": "simple", "prompt": "x"}),
            400,
            Some("model"),
        ),
        (
            "/v1/embeddings",
            json!({"model": "fake_llm", "input": "x"}),
            400,
            Some("model"),
        ),
        (
            "/v1/completions",
            json!({"model": "fake_llm", "prompt": "x", "presence_penalty": 1}),
            400,
            Some("presence_penalty"),
        ),
        (
            "/v1/completions",
            json!({"model": "fake_llm", "prompt": "x", "top_p": 3}),
            400,
            Some("top_p"),
        ),
        (
            "/v1/completions",
            json!({"model": "slow_llm", "prompt": "x", "seed": 3}),
            400,
            Some("seed"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake_llm", "messages": []}),
            400,
            Some("messages"),
        ),
        (
            "/v1/embeddings",
            json!({"model": "fake_embedder", "input": "x", "encoding_format": "hex"}),
            400,
            Some("encoding_format"),
        ),
        (
            "/v1/embeddings",
            json!({"model": "fake_embedder", "input": "x", "dimensions": 2}),
            400,
            Some("dimensions"),
        ),
        ("/v1/completions", json!({"prompt": "x"}), 400, None),
        // Wrongly typed fields are named, nested ones by their path.
        (
            "/v1/completions",
            json!({"model": "fake_llm", "prompt": "x", "max_tokens": -1}),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake_llm", "messages": [{"role": "user", "content": 5}]}),
            400,
            Some("messages[0].content"),
        ),
    ];
    for (path, request, status, param) in cases {
        let (got, body) = json("POST", &server.url(path), Some(&request)).await;
        assert_eq!(got, status, "{path} {request}: {body}");
        let error = &body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(error["type"].is_string(), "{body}");
        assert_eq!(error["param"].as_str(), param, "{path} {request}: {body}");
        assert!(error.as_object().unwrap().contains_key("code"), "{body}");
    }
    let response = send("POST", &server.url("/v1/completions"), None).await;
    assert_eq!(response.status(), 400);
}

/// slow_llm runs one sequence at a time, 200 ms per token: a client that leaves a long
/// stream must free the slot at once, or the next request waits the whole stream out.
#[tokio::test]
async fn sse_disconnect_cancels_the_sequence_and_frees_its_slot() {
    let server = start().await;
    let long =
        json!({"model": "slow_llm", "prompt": "w ".repeat(50), "max_tokens": 50, "stream": true});
    let response = send("POST", &server.url("/v1/completions"), Some(&long)).await;
    let mut events = Events::new(response);
    let first: Value = serde_json::from_str(&events.next().await.unwrap()).unwrap();
    assert_eq!(first["choices"][0]["text"], "w ");
    drop(events); // the client goes away after the first token

    let started = Instant::now();
    let short = json!({"model": "slow_llm", "prompt": "a b", "max_tokens": 2});
    let (status, body) = json("POST", &server.url("/v1/completions"), Some(&short)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], "a b ");
    assert_eq!(
        body["usage"]["completion_tokens"], 2,
        "counted from the pieces: slow_llm reports none"
    );
    // Two tokens take 400 ms; the abandoned stream would have taken ~10 s more.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
}

/// A client that stops reading only holds back its own sequence.
#[tokio::test]
async fn a_stalled_sse_reader_does_not_stall_other_streams() {
    let server = start().await;
    let hog = json!({"model": "fake_llm", "prompt": "x ".repeat(2000), "max_tokens": 2000, "stream": true});
    let stalled = send("POST", &server.url("/v1/completions"), Some(&hog)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let request =
        json!({"model": "fake_llm", "prompt": "a b c d e", "max_tokens": 20, "stream": true});
    let events = Events::new(send("POST", &server.url("/v1/completions"), Some(&request)).await)
        .all()
        .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    drop(stalled);
}

/// The same for a whole (non-streamed) completion: the handler is dropped with the
/// connection, and its engine stream with it.
#[tokio::test]
async fn an_abandoned_whole_completion_is_cancelled() {
    let server = start().await;
    let long = json!({"model": "slow_llm", "prompt": "w ".repeat(50), "max_tokens": 50});
    let url = server.url("/v1/completions");
    let abandoned =
        tokio::time::timeout(Duration::from_millis(500), json("POST", &url, Some(&long))).await;
    assert!(
        abandoned.is_err(),
        "the long completion cannot finish in 500 ms"
    );

    let started = Instant::now();
    let short = json!({"model": "slow_llm", "prompt": "a b", "max_tokens": 2});
    let (status, body) = json("POST", &server.url("/v1/completions"), Some(&short)).await;
    assert_eq!(
        (status, body["choices"][0]["text"].as_str()),
        (200, Some("a b ")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
}
