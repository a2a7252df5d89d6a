mod common;
use std::time::{Duration, Instant};
use common::{json, send, start_with, Events};
use serde_json::json;
const GLACIAL: &str = r#"name: "glacial"
backend: "fake_llm"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }, { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
parameters { key: "delay_ms" value: { string_value: "3000" } }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;
#[tokio::test]
async fn probe() {
    let server = start_with(vec![("glacial", GLACIAL)], |_| {}).await;
    let long = json!({"model": "glacial", "prompt": "w ".repeat(50), "max_tokens": 50, "stream": true});
    let mut events = Events::new(send("POST", &server.url("/v1/completions"), Some(&long)).await);
    events.next().await.unwrap();
    drop(events);
    let started = Instant::now();
    let short = json!({"model": "glacial", "prompt": "a", "max_tokens": 1});
    let (status, _) = json("POST", &server.url("/v1/completions"), Some(&short)).await;
    println!("status {status} second request took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_millis(4000));
}
