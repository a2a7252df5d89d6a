//! WebSocket inference: many requests in flight on one socket, JSON and binary frames,
//! errors that leave the socket open, cancel messages, and a client that goes away.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::start;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Socket {
    connect_async(url).await.expect("websocket handshake").0
}

async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::text(value.to_string())).await.unwrap();
}

/// The next frame as (JSON header, binary tail).
async fn recv(socket: &mut Socket) -> (Value, Vec<u8>) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .unwrap();
        match message {
            Message::Text(text) => return (serde_json::from_str(&text).unwrap(), Vec::new()),
            Message::Binary(frame) => {
                let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
                return (
                    serde_json::from_slice(&frame[4..4 + len]).unwrap(),
                    frame[4 + len..].to_vec(),
                );
            }
            _ => continue,
        }
    }
}

fn repeat(id: &str, values: &[i32], delay_us: u32) -> Value {
    json!({"id": id, "model_name": "repeat_int32", "inputs": [
        {"name": "IN", "datatype": "INT32", "shape": [values.len()], "data": values},
        {"name": "DELAY", "datatype": "UINT32", "shape": [values.len()], "data": vec![delay_us; values.len()]}
    ]})
}

fn simple(id: &str, k: i32) -> Value {
    let a: Vec<i32> = (0..16).map(|i| i + k).collect();
    let b: Vec<i32> = vec![1; 16];
    json!({"id": id, "model_name": "simple", "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b}
    ]})
}

#[tokio::test]
async fn many_requests_in_flight_are_answered_as_they_complete() {
    let server = start().await;
    let mut socket = connect(&server.ws_url("/v2/ws")).await;
    for i in 0..8 {
        send(
            &mut socket,
            repeat(&format!("r{i}"), &[i, i + 1, i + 2], 1000),
        )
        .await;
        send(&mut socket, simple(&format!("s{i}"), i)).await;
    }
    let mut streamed: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut finished = 0;
    while finished < 16 {
        let (frame, _) = recv(&mut socket).await;
        let id = frame["id"].as_str().unwrap().to_string();
        assert!(frame.get("error").is_none(), "{frame}");
        if let Some(k) = id.strip_prefix('s') {
            let k: i32 = k.parse().unwrap();
            assert_eq!(frame["model_name"], "simple");
            let sum = frame["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == "OUTPUT0")
                .unwrap();
            assert_eq!(sum["data"][0], k + 1);
            assert_eq!(frame["final"], true);
            finished += 1;
            continue;
        }
        let outputs = frame["outputs"].as_array().unwrap();
        if !outputs.is_empty() {
            let value = |name: &str| {
                outputs.iter().find(|o| o["name"] == name).unwrap()["data"][0]
                    .as_i64()
                    .unwrap()
            };
            streamed
                .entry(id.clone())
                .or_default()
                .push((value("IDX"), value("OUT")));
        }
        if frame["final"] == true {
            finished += 1;
        }
    }
    for i in 0..8i64 {
        let got = &streamed[&format!("r{i}")];
        assert_eq!(
            got,
            &vec![(0, i), (1, i + 1), (2, i + 2)],
            "r{i} streams in order"
        );
    }
}

#[tokio::test]
async fn binary_frames_in_and_out() {
    let server = start().await;
    let mut socket = connect(&server.ws_url("/v2/models/simple/infer/ws")).await;
    let header = json!({"id": "b1", "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": vec![2; 16]}
    ], "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT1", "parameters": {"binary_data": false}}]})
    .to_string();
    let mut frame = (header.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(header.as_bytes());
    for i in 0..16i32 {
        frame.extend_from_slice(&(i * 10).to_le_bytes());
    }
    socket.send(Message::binary(frame)).await.unwrap();
    let (head, tail) = recv(&mut socket).await;
    assert_eq!(head["id"], "b1", "{head}");
    assert_eq!(head["final"], true);
    let out0 = &head["outputs"][0];
    assert_eq!(out0["name"], "OUTPUT0");
    assert_eq!(out0["parameters"]["binary_data_size"], 64);
    let sums: Vec<i32> = tail
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(sums, (0..16).map(|i| i * 10 + 2).collect::<Vec<_>>());
    let diffs = &head["outputs"][1]["data"];
    assert_eq!(diffs[1], 8, "OUTPUT1 asked for as JSON: {head}");
}

#[tokio::test]
async fn errors_are_frames_and_the_socket_stays_open() {
    let server = start().await;
    let mut socket = connect(&server.ws_url("/v2/ws")).await;
    socket.send(Message::text("{not json")).await.unwrap();
    let (frame, _) = recv(&mut socket).await;
    assert_eq!(
        (
            frame["id"].clone(),
            frame["code"].clone(),
            frame["final"].clone()
        ),
        (Value::Null, json!(400), json!(true))
    );
    let mut unknown = simple("u1", 0);
    unknown["model_name"] = json!("nope");
    send(&mut socket, unknown).await;
    let (frame, _) = recv(&mut socket).await;
    assert_eq!(
        (frame["id"].as_str(), frame["code"].as_u64()),
        (Some("u1"), Some(404)),
        "{frame}"
    );
    let mut bad = simple("x1", 0);
    bad["inputs"][0]["shape"] = json!([1, 15]);
    send(&mut socket, bad).await;
    let (frame, _) = recv(&mut socket).await;
    assert_eq!(
        (frame["id"].as_str(), frame["code"].as_u64()),
        (Some("x1"), Some(400)),
        "{frame}"
    );
    send(&mut socket, simple("ok", 1)).await;
    let (frame, _) = recv(&mut socket).await;
    assert_eq!(
        (frame["id"].as_str(), frame["final"].as_bool()),
        (Some("ok"), Some(true)),
        "{frame}"
    );
}

#[tokio::test]
async fn cancel_message_stops_one_request() {
    let server = start().await;
    let mut socket = connect(&server.ws_url("/v2/ws")).await;
    send(&mut socket, repeat("long", &[1; 100], 100_000)).await;
    let (frame, _) = recv(&mut socket).await;
    assert_eq!(frame["id"], "long");
    send(&mut socket, json!({"cancel": "long"})).await;
    loop {
        let (frame, _) = recv(&mut socket).await;
        if frame["final"] == true {
            assert_eq!(frame["code"], 499, "{frame}");
            break;
        }
    }
    // The one slot of repeat_int32 is free again.
    let started = Instant::now();
    send(&mut socket, repeat("next", &[7], 0)).await;
    let (frame, _) = recv(&mut socket).await;
    assert_eq!(frame["id"], "next");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
}

/// repeat_int32 has max_batch_size 0: one live sequence per instance. A long stream holds
/// it; when its client goes away the slot must be freed at once.
#[tokio::test]
async fn disconnect_frees_the_sequence_slot() {
    let server = start().await;
    let mut first = connect(&server.ws_url("/v2/models/repeat_int32/infer/ws")).await;
    send(&mut first, repeat("long", &[1; 20], 500_000)).await; // 10 s in all
    let (frame, _) = recv(&mut first).await;
    assert_eq!(frame["id"], "long");
    drop(first); // no close handshake: the TCP connection just goes away

    let started = Instant::now();
    let mut second = connect(&server.ws_url("/v2/ws")).await;
    send(&mut second, repeat("next", &[1, 2], 0)).await;
    loop {
        let (frame, _) = recv(&mut second).await;
        assert!(frame.get("error").is_none(), "{frame}");
        if frame["final"] == true {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
}

/// A socket holds at most `ws::MAX_INFLIGHT` requests: past it the server stops reading
/// frames until one finishes. `slow_llm` runs one sequence at a time, 200 ms a word, so
/// the first request holds the model for 0.8 s while the rest of the limit waits queued;
/// a request sent after them is read (and answered) only once the first has finished.
#[tokio::test]
async fn past_the_in_flight_limit_the_socket_is_not_read_until_a_request_finishes() {
    let server = start().await;
    let mut socket = connect(&server.ws_url("/v2/ws")).await;
    let slow = |id: String, prompt: &str| {
        json!({"id": id, "model_name": "slow_llm", "inputs": [
            {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [prompt]}
        ]})
    };
    send(&mut socket, slow("slow-0".into(), "a b c d")).await;
    for i in 1..nereid_stream::ws::MAX_INFLIGHT {
        send(&mut socket, slow(format!("slow-{i}"), "e")).await;
    }
    let sent = Instant::now();
    send(&mut socket, simple("probe", 1)).await;
    let mut first_done = None;
    loop {
        let (frame, _) = recv(&mut socket).await;
        assert!(frame.get("error").is_none(), "{frame}");
        let id = frame["id"].as_str().unwrap();
        if id == "slow-0" && frame["final"] == true {
            first_done = Some(sent.elapsed());
        }
        if id == "probe" {
            let waited = sent.elapsed();
            let first_done = first_done.expect("the probe waited for a request to finish");
            assert!(waited >= first_done, "{waited:?} < {first_done:?}");
            assert!(waited >= Duration::from_millis(500), "{waited:?}");
            break;
        }
        assert!(
            id == "slow-0" || first_done.is_some(),
            "only the running request answers before it finishes, got {frame}"
        );
    }
}
