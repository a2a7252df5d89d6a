//! Token metrics reach the Prometheus recorder with the model label. Its own test binary:
//! the recorder is process-global.

mod common;

use common::{json, send, start, Events};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use nereid_stream::metrics::{
    CACHED_PROMPT_TOKENS, CANCELLED_REQUESTS, GENERATED_TOKENS, INTER_TOKEN_LATENCY,
    LATENCY_BUCKETS, LLM_PREFIX, TIME_TO_FIRST_TOKEN,
};
use serde_json::json;

#[tokio::test]
async fn streams_record_first_token_inter_token_and_counts() {
    // The buckets the binary configures (src/metrics_server.rs); that the binary really
    // serves histograms is checked against it in tests/python/test_openai.py.
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Prefix(LLM_PREFIX.into()), LATENCY_BUCKETS)
        .unwrap()
        .install_recorder()
        .unwrap();
    let server = start().await;
    let request =
        json!({"model": "fake_llm", "prompt": "a b c d e", "max_tokens": 5, "stream": true});
    let events = Events::new(send("POST", &server.url("/v1/completions"), Some(&request)).await)
        .all()
        .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    // Shares "a b c" with the previous prompt: the fake reports 3 cached tokens.
    let request = json!({"model": "fake_llm", "prompt": "a b c z", "max_tokens": 2});
    assert_eq!(
        json("POST", &server.url("/v1/completions"), Some(&request))
            .await
            .0,
        200
    );
    // A stream left after its first token counts as cancelled.
    let request =
        json!({"model": "fake_llm", "prompt": "p ".repeat(100), "max_tokens": 100, "stream": true});
    let mut events =
        Events::new(send("POST", &server.url("/v1/completions"), Some(&request)).await);
    events.next().await.unwrap();
    drop(events);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let text = handle.render();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains("model=\"fake_llm\""))
            .map(str::to_string)
    };
    let count = |name: &str| line(name).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(
        count(&format!("{TIME_TO_FIRST_TOKEN}_count")),
        Some(3.0),
        "{text}"
    );
    assert!(
        line(&format!("{TIME_TO_FIRST_TOKEN}_bucket")).is_some(),
        "histogram, not summary: {text}"
    );
    assert!(
        count(&format!("{INTER_TOKEN_LATENCY}_count")).unwrap() >= 5.0,
        "{text}"
    );
    assert!(count(GENERATED_TOKENS).unwrap() >= 8.0, "{text}");
    assert_eq!(count(CANCELLED_REQUESTS), Some(1.0), "{text}");
    assert_eq!(count(CACHED_PROMPT_TOKENS), Some(3.0), "{text}");
}
