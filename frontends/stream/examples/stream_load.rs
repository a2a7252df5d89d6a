//! Streaming load against a running server: aggregate generated tokens per second and time
//! to first token at several concurrency levels, through `/v1/chat/completions` with
//! `stream: true`.
//!
//! ```text
//! cargo run --release -p nereid-stream --example stream_load -- \
//!     [URL=http://127.0.0.1:8000] [MODEL=smollm2] [--levels 1,4,8] [--requests 2] [--max-tokens 64]
//! ```
//!
//! Each level runs `level` clients at once, each sending `--requests` requests one after
//! another; tokens are the `usage.completion_tokens` the server reports (chunks with text
//! when it reports none). Tokens/s is all tokens over the level's wall time.
//!
//! Every request's message starts with its own seed ("Story 1001: ..."), so a server's
//! prefix cache can reuse only what different users' chats share, the chat template's
//! system prompt and role header, never a whole earlier prompt.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Options {
    url: String,
    model: String,
    levels: Vec<usize>,
    requests: usize,
    max_tokens: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut positional = Vec::new();
    let mut o = Options {
        url: "http://127.0.0.1:8000".into(),
        model: "smollm2".into(),
        levels: vec![1, 4, 8],
        requests: 2,
        max_tokens: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--levels" => {
                o.levels = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--requests" => o.requests = value()?.parse()?,
            "--max-tokens" => o.max_tokens = value()?.parse()?,
            _ => positional.push(arg),
        }
    }
    if let Some(url) = positional.first() {
        o.url = url.trim_end_matches('/').to_string();
    }
    if let Some(model) = positional.get(1) {
        o.model = model.clone();
    }
    Ok(o)
}

/// What one streamed request measured.
struct Sample {
    first_token: Option<Duration>,
    tokens: u64,
}

async fn one_request(client: &HttpClient, o: &Options, seed: u64) -> anyhow::Result<Sample> {
    let body = json!({
        "model": o.model,
        "messages": [{"role": "user", "content": format!("Story {seed}: tell me a long story about a lighthouse keeper and the sea.")}],
        "max_tokens": o.max_tokens,
        "temperature": 0.7,
        "seed": seed,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let request = Request::post(format!("{}/v1/chat/completions", o.url))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let started = Instant::now();
    let response = client.request(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let mut body = response.into_body();
    let mut buffer = String::new();
    let (mut first_token, mut chunks, mut usage) = (None, 0u64, None);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buffer.push_str(std::str::from_utf8(&data)?);
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(payload) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if payload == "[DONE]" {
                continue;
            }
            let chunk: Value = serde_json::from_str(payload)?;
            anyhow::ensure!(chunk.get("error").is_none(), "stream error: {chunk}");
            if let Some(tokens) = chunk["usage"]["completion_tokens"].as_u64() {
                usage = Some(tokens);
            }
            if chunk["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
            {
                first_token.get_or_insert_with(|| started.elapsed());
                chunks += 1;
            }
        }
    }
    Ok(Sample {
        first_token,
        tokens: usage.unwrap_or(chunks),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = std::sync::Arc::new(options()?);
    // A connection per request: llama.cpp's server closes idle keep-alive connections, and a
    // pooled one reused just then fails the request, so no server gets pooled ones.
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    // One warm-up request: first use may load weights or warm caches.
    one_request(&client, &o, 0).await?;
    println!(
        "model {} at {}, {} requests per client, max_tokens {}",
        o.model, o.url, o.requests, o.max_tokens
    );
    println!(
        "{:>7} {:>9} {:>10} {:>12} {:>12} {:>12}",
        "streams", "requests", "tokens", "tokens/s", "ttft p50", "ttft p90"
    );
    for &level in &o.levels {
        let started = Instant::now();
        let clients: Vec<_> = (0..level)
            .map(|c| {
                let (client, o) = (client.clone(), o.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    for r in 0..o.requests {
                        samples.push(one_request(&client, &o, (c * 1000 + r) as u64 + 1).await?);
                    }
                    anyhow::Ok(samples)
                })
            })
            .collect();
        let mut samples = Vec::new();
        for c in clients {
            samples.extend(c.await??);
        }
        let wall = started.elapsed();
        let tokens: u64 = samples.iter().map(|s| s.tokens).sum();
        let mut ttft: Vec<Duration> = samples.iter().filter_map(|s| s.first_token).collect();
        ttft.sort();
        println!(
            "{:>7} {:>9} {:>10} {:>12.1} {:>10.1}ms {:>10.1}ms",
            level,
            samples.len(),
            tokens,
            tokens as f64 / wall.as_secs_f64(),
            percentile(&ttft, 0.5).as_secs_f64() * 1e3,
            percentile(&ttft, 0.9).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
