//! The KServe v2 routes end to end over a real engine: metadata, infer (JSON, binary, every
//! datatype), generate, statistics, repository control, OpenAPI.

mod common;

use common::*;
use half::{bf16, f16};
use nereid_engine::ModelControlMode;
use nereid_rest::RestArgs;
use serde_json::{json, Value};

#[tokio::test]
async fn health_metadata_config_and_docs() {
    let s = start_default().await;
    let v = get(&s, "/v2").await.json();
    assert_eq!(v["name"], "nereid");
    assert!(v["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));
    assert_eq!(get(&s, "/v2/health/live").await.status, 200);
    assert_eq!(get(&s, "/v2/health/ready").await.status, 200);

    let meta = get(&s, "/v2/models/simple").await.json();
    assert_eq!(meta["name"], "simple");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]})
    );
    assert_eq!(get(&s, "/v2/models/simple/versions/1").await.status, 200);
    let r = get(&s, "/v2/models/nope").await;
    assert_eq!(r.status, 404);
    assert!(r
        .error()
        .contains("Request for unknown model: 'nope' is not found"));
    let r = get(&s, "/v2/models/simple/versions/x").await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("version 'x'"));

    assert_eq!(get(&s, "/v2/models/simple/ready").await.status, 200);
    assert_eq!(
        get(&s, "/v2/models/simple/versions/1/ready").await.status,
        200
    );
    assert_eq!(get(&s, "/v2/models/nope/ready").await.status, 400);

    let cfg = get(&s, "/v2/models/simple/config").await.json();
    assert_eq!(cfg["name"], "simple");
    assert_eq!(cfg["max_batch_size"], 8);
    assert_eq!(cfg["input"][0]["data_type"], "TYPE_INT32");
    assert_eq!(
        get(&s, "/v2/models/repeat_int32/versions/1/config")
            .await
            .json()["model_transaction_policy"]["decoupled"],
        true
    );

    let api = get(&s, "/openapi.json").await.json();
    assert_eq!(api["openapi"].as_str().unwrap().chars().next(), Some('3'));
    for path in [
        "/v2/models/{model}/infer",
        "/v2/repository/index",
        "/v2/models/{model}/generate_stream",
        "/v2/health/ready",
    ] {
        assert!(
            api["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let docs = get(&s, "/docs").await;
    assert_eq!(docs.status, 200);
    assert!(docs.text().contains("/v2/models/{model}/infer") && docs.text().contains("<table>"));

    let r = get(&s, "/v2/nothing/here").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/v2/nothing/here"));
    // No CUDA shared memory: none listed, registering refused with a 501.
    let r = get(&s, "/v2/cudasharedmemory/status").await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!([])));
    let r = post_json(
        &s,
        "/v2/cudasharedmemory/region/gpu/register",
        &serde_json::json!({"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 8}),
    )
    .await;
    assert_eq!(r.status, 501);
    s.stop().await;
}

#[tokio::test]
async fn json_infer_flat_nested_requested_outputs_and_parameters() {
    let s = start_default().await;
    let r = post_json(&s, "/v2/models/simple/infer", &simple_request()).await;
    assert_simple_answer(&r);
    assert_eq!(r.json()["id"], "req-1");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );

    // Nested data, one requested output, request parameters, version in the path.
    let nested: Vec<Vec<i32>> = vec![(0..16).collect(), (100..116).collect()];
    let req = json!({
        "parameters": {"priority": 0, "timeout": 1000000, "custom": "x"},
        "inputs": [
            {"name": "INPUT0", "shape": [2, 16], "datatype": "INT32", "data": nested},
            {"name": "INPUT1", "shape": [2, 16], "datatype": "INT32", "data": vec![vec![1; 16], vec![2; 16]]}
        ],
        "outputs": [{"name": "OUTPUT1"}]
    });
    let v = post_json(&s, "/v2/models/simple/versions/1/infer", &req)
        .await
        .json();
    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], "OUTPUT1");
    assert_eq!(outputs[0]["shape"], json!([2, 16]));
    let expect: Vec<i32> = (-1..15).chain(98..114).collect();
    assert_eq!(outputs[0]["data"], json!(expect));
    assert!(v.get("id").is_none());

    // FP32 values survive the trip exactly.
    let values = [0.1f32, -3.5, 1e-30, 3.4028235e38, 7.0];
    let req = json!({"inputs": [{"name": "INPUT0", "shape": [1, 5], "datatype": "FP32", "data": values}]});
    let v = post_json(&s, "/v2/models/identity_fp32/infer", &req)
        .await
        .json();
    let back: Vec<f32> = serde_json::from_value(v["outputs"][0]["data"].clone()).unwrap();
    assert_eq!(back, values);
    s.stop().await;
}

#[tokio::test]
async fn every_datatype_round_trips_as_json() {
    let s = start_default().await;
    let inputs = json!([
        {"name": "BOOL", "shape": [2], "datatype": "BOOL", "data": [true, false]},
        {"name": "UINT8", "shape": [2], "datatype": "UINT8", "data": [0, 255]},
        {"name": "UINT16", "shape": [2], "datatype": "UINT16", "data": [0, 65535]},
        {"name": "UINT32", "shape": [2], "datatype": "UINT32", "data": [0, 4294967295u32]},
        {"name": "UINT64", "shape": [2], "datatype": "UINT64", "data": [0, u64::MAX]},
        {"name": "INT8", "shape": [2], "datatype": "INT8", "data": [-128, 127]},
        {"name": "INT16", "shape": [2], "datatype": "INT16", "data": [-32768, 32767]},
        {"name": "INT32", "shape": [2], "datatype": "INT32", "data": [i32::MIN, i32::MAX]},
        {"name": "INT64", "shape": [2], "datatype": "INT64", "data": [i64::MIN, i64::MAX]},
        {"name": "FP16", "shape": [2], "datatype": "FP16", "data": [1.5, -2.0]},
        {"name": "BF16", "shape": [2], "datatype": "BF16", "data": [1.5, -2.0]},
        {"name": "FP32", "shape": [2], "datatype": "FP32", "data": [1.5, -2.0]},
        {"name": "FP64", "shape": [2], "datatype": "FP64", "data": [1.5, -2.0]},
        {"name": "BYTES", "shape": [3], "datatype": "BYTES", "data": ["héllo", "", "a\"b"]}
    ]);
    let v = post_json(
        &s,
        "/v2/models/identity_all/infer",
        &json!({ "inputs": inputs }),
    )
    .await
    .json();
    for input in inputs.as_array().unwrap() {
        let name = format!("{}_OUT", input["name"].as_str().unwrap());
        let out = v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap();
        assert_eq!(out["datatype"], input["datatype"]);
        assert_eq!(out["data"], input["data"], "{name}");
    }
    s.stop().await;
}

/// Splits a binary answer into its JSON header and binary section.
fn split(reply: &Reply) -> (Value, bytes::Bytes) {
    let n: usize = reply
        .header("inference-header-content-length")
        .expect("binary answer")
        .parse()
        .unwrap();
    (
        serde_json::from_slice(&reply.body[..n]).unwrap(),
        reply.body.slice(n..),
    )
}

#[tokio::test]
async fn binary_tensors_both_ways() {
    let s = start_default().await;
    let a: Vec<i32> = (0..16).collect();
    let b = vec![3i32; 16];
    let header = json!({
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": b}
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}, {"name": "OUTPUT1"}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(a.iter().flat_map(|x| x.to_le_bytes()));
    let len = header.len().to_string();
    let r = post_raw(
        &s,
        "/v2/models/simple/infer",
        &[("inference-header-content-length", &len)],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    let (head, bin) = split(&r);
    let outs = head["outputs"].as_array().unwrap();
    assert_eq!(outs[0]["parameters"]["binary_data_size"], 64);
    assert!(outs[0].get("data").is_none());
    assert_eq!(outs[1]["data"], json!((-3..13).collect::<Vec<i32>>()));
    let sum: Vec<i32> = bin
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(sum, (3..19).collect::<Vec<i32>>());
    assert_eq!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );

    // FP16, BF16 and BYTES through binary, all outputs binary via binary_data_output.
    let h: Vec<u8> = [1.5f32, -0.25]
        .iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect();
    let bf: Vec<u8> = [2.5f32, 8.0]
        .iter()
        .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
        .collect();
    let strings: Vec<u8> = [&b"ab"[..], b"\xff\x00"]
        .iter()
        .flat_map(|s| [&(s.len() as u32).to_le_bytes()[..], s].concat())
        .collect();
    let header = json!({
        "parameters": {"binary_data_output": true},
        "inputs": [
            {"name": "FP16", "shape": [2], "datatype": "FP16", "parameters": {"binary_data_size": 4}},
            {"name": "BF16", "shape": [2], "datatype": "BF16", "parameters": {"binary_data_size": 4}},
            {"name": "BYTES", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": strings.len()}}
        ]
    })
    .to_string();
    let body = [header.as_bytes(), &h, &bf, &strings].concat();
    let len = header.len().to_string();
    let r = post_raw(
        &s,
        "/v2/models/identity_all/infer",
        &[("Inference-Header-Content-Length", &len)],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (head, bin) = split(&r);
    let names: Vec<_> = head["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["FP16_OUT", "BF16_OUT", "BYTES_OUT"]);
    assert_eq!(&bin[..], &[&h[..], &bf, &strings].concat()[..]);
    s.stop().await;
}

#[tokio::test]
async fn generate_and_generate_stream() {
    let s = start_default().await;
    let v = post_json(
        &s,
        "/v2/models/echo_text/generate",
        &json!({"id": "g1", "text_input": "hello"}),
    )
    .await
    .json();
    assert_eq!(
        v,
        json!({"id": "g1", "model_name": "echo_text", "model_version": "1", "text_output": "hello"})
    );

    let req = json!({"INPUT0": (0..16).collect::<Vec<i32>>(), "parameters": {"INPUT1": vec![2; 16], "priority": 0}});
    let v = post_json(&s, "/v2/models/simple/generate", &req)
        .await
        .json();
    assert_eq!(v["OUTPUT0"], json!((2..18).collect::<Vec<i32>>()));
    assert_eq!(v["OUTPUT1"], json!((-2..14).collect::<Vec<i32>>()));
    let v = post_json(
        &s,
        "/v2/models/identity_fp32/versions/1/generate",
        &json!({"INPUT0": 2.5}),
    )
    .await
    .json();
    assert_eq!(v["OUTPUT0"], json!(2.5));

    let r = post_json(
        &s,
        "/v2/models/repeat_int32/generate_stream",
        &json!({"IN": [1, 2, 3]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events: Vec<Value> = r
        .text()
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{}", r.text());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["model_name"], "repeat_int32");
        assert_eq!(e["OUT"], json!(i as i32 + 1));
        assert_eq!(e["IDX"], json!(i));
    }
    // Non-streamed generate on a decoupled model answers with the last values.
    let v = post_json(
        &s,
        "/v2/models/repeat_int32/generate",
        &json!({"IN": [4, 5]}),
    )
    .await
    .json();
    assert_eq!((v["OUT"].clone(), v["IDX"].clone()), (json!(5), json!(1)));
    // Unary infer on it is not possible.
    let req = json!({"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [1]}]});
    let r = post_json(&s, "/v2/models/repeat_int32/infer", &req).await;
    assert_eq!(r.status, 501);
    assert!(r.error().contains("decoupled"));

    // Errors before the first event are plain HTTP errors.
    let r = post_json(
        &s,
        "/v2/models/repeat_int32/generate_stream",
        &json!({"NOPE": 1}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("no input 'NOPE'"), "{}", r.error());
    let r = post_json(&s, "/v2/models/simple/generate", &json!({"INPUT0": [1, 2]})).await;
    assert_eq!(r.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn statistics_and_repository_index() {
    let s = start_default().await;
    assert_simple_answer(&post_json(&s, "/v2/models/simple/infer", &simple_request()).await);
    let v = get(&s, "/v2/models/simple/stats").await.json();
    let stats = &v["model_stats"][0];
    assert_eq!(stats["name"], "simple");
    assert_eq!(stats["version"], "1");
    assert_eq!(stats["inference_stats"]["success"]["count"], 1);
    assert!(stats["inference_stats"]["queue"]["ns"].as_u64().is_some());
    assert_eq!(
        get(&s, "/v2/models/stats").await.json()["model_stats"]
            .as_array()
            .unwrap()
            .len(),
        nereid_engine::builtin::demo::BUILTIN_MODELS.len() + 3,
        "the demo models, identity_all, echo_text and sleep"
    );
    assert_eq!(
        get(&s, "/v2/models/simple/versions/1/stats").await.json()["model_stats"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(get(&s, "/v2/models/nope/stats").await.status, 404);

    let index = post_json(&s, "/v2/repository/index", &json!({}))
        .await
        .json();
    let names: Vec<_> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"simple") && names.contains(&"repeat_int32"),
        "{index}"
    );
    assert!(index
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["state"] == "READY"));
    let r = post_raw(&s, "/v2/repository/index", &[], "").await;
    assert_eq!(
        r.json().as_array().unwrap().len(),
        nereid_engine::builtin::demo::BUILTIN_MODELS.len() + 3
    );

    // Control mode none: load and unload are refused.
    let r = post_json(&s, "/v2/repository/models/simple/load", &json!({})).await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("explicit"), "{}", r.error());
    assert_eq!(
        post_raw(&s, "/v2/repository/models/simple/unload", &[], "")
            .await
            .status,
        503
    );
    s.stop().await;
}

#[tokio::test]
async fn explicit_load_unload_and_inline_config() {
    let s = start(ModelControlMode::Explicit, RestArgs::default()).await;
    assert_eq!(
        post_raw(&s, "/v2/repository/models/simple/unload", &[], "")
            .await
            .status,
        200
    );
    assert_eq!(get(&s, "/v2/models/simple/ready").await.status, 400);
    let r = post_json(&s, "/v2/models/simple/infer", &simple_request()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let index = post_json(&s, "/v2/repository/index", &json!({"ready": true}))
        .await
        .json();
    assert!(index
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"] != "simple"));

    assert_eq!(
        post_raw(&s, "/v2/repository/models/simple/load", &[], "")
            .await
            .status,
        200
    );
    assert_still_serves(&s).await;

    // Reload identity_fp32 with a config given inline: max_batch_size 2.
    let mut cfg = get(&s, "/v2/models/identity_fp32/config").await.json();
    cfg["max_batch_size"] = json!(2);
    let body = json!({"parameters": {"config": cfg.to_string()}});
    let r = post_json(&s, "/v2/repository/models/identity_fp32/load", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(&s, "/v2/models/identity_fp32/config").await.json()["max_batch_size"],
        2
    );

    let r = post_json(
        &s,
        "/v2/repository/models/identity_fp32/load",
        &json!({"parameters": {"config": "{nope"}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("parameter 'config'"), "{}", r.error());
    let bad = json!({"parameters": {"config": "{\"no_such_field\": 1}"}});
    let r = post_json(&s, "/v2/repository/models/identity_fp32/load", &bad).await;
    assert_eq!(r.status, 400);
    let r = post_json(
        &s,
        "/v2/repository/models/identity_fp32/load",
        &json!({"parameters": {"file:1/model.bin": "AAAA"}}),
    )
    .await;
    assert_eq!(r.status, 501);
    let r = post_raw(&s, "/v2/repository/models/not_there/load", &[], "").await;
    assert!(
        r.status == 404 || r.status == 400,
        "{} {}",
        r.status,
        r.text()
    );
    s.stop().await;
}
