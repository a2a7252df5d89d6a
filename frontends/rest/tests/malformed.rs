//! Every malformed request gets the right status and a message naming the problem, fast,
//! and the server answers the next good request.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nereid_engine::ModelControlMode;
use nereid_rest::RestArgs;
use serde_json::json;

/// Posts `body` to simple's infer route and checks status, message and recovery.
async fn expect(
    s: &TestServer,
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
    status: u16,
    needle: &str,
) {
    let started = Instant::now();
    let r = post_raw(s, "/v2/models/simple/infer", headers, body).await;
    assert_eq!(r.status, status, "{}", r.text());
    let error = r.error();
    assert!(error.contains(needle), "expected {needle:?} in {error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_still_serves(s).await;
}

fn input(
    name: &str,
    shape: serde_json::Value,
    datatype: &str,
    data: serde_json::Value,
) -> serde_json::Value {
    json!({"name": name, "shape": shape, "datatype": datatype, "data": data})
}

fn good1() -> serde_json::Value {
    input("INPUT1", json!([1, 16]), "INT32", json!(vec![1; 16]))
}

fn req(first: serde_json::Value) -> String {
    json!({"inputs": [first, good1()]}).to_string()
}

#[tokio::test]
async fn malformed_json_requests() {
    let s = start_default().await;
    expect(&s, &[], "{\"inputs\": [", 400, "invalid JSON").await;
    expect(&s, &[], "not json", 400, "invalid JSON").await;
    expect(&s, &[], "{}", 400, "no 'inputs'").await;
    expect(&s, &[], "[]", 400, "inference request object").await;
    // Too deep for a recursive decoder (generate builds a JSON tree): refused, not a crash.
    let deep = format!("{{\"INPUT0\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    let r = post_raw(&s, "/v2/models/identity_fp32/generate", &[], deep).await;
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("nested more than 128 levels"),
        "{}",
        r.error()
    );
    let deep_data = req(input(
        "INPUT0",
        json!([1, 16]),
        "INT32",
        json!([[[[(0..16).collect::<Vec<i32>>()]]]]),
    ));
    expect(&s, &[], deep_data, 400, "nested deeper than its shape").await;
    expect(
        &s,
        &[],
        r#"{"inputs":[{"shape":[1,16],"datatype":"INT32","data":[]}]}"#,
        400,
        "has no 'name'",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn inputs_that_do_not_fit() {
    let s = start_default().await;
    let wrong_dtype = req(input(
        "INPUT0",
        json!([1, 16]),
        "FP32",
        json!(vec![0.5; 16]),
    ));
    expect(
        &s,
        &[],
        wrong_dtype,
        400,
        "input 'INPUT0' has datatype FP32 but the model expects INT32",
    )
    .await;
    let unknown_dtype = req(input(
        "INPUT0",
        json!([1, 16]),
        "FLOAT32",
        json!(vec![0; 16]),
    ));
    expect(&s, &[], unknown_dtype, 400, "unknown datatype 'FLOAT32'").await;
    let short = req(input("INPUT0", json!([1, 16]), "INT32", json!(vec![0; 15])));
    expect(
        &s,
        &[],
        short,
        400,
        "shape [1, 16] needs 16 elements but 'data' has 15",
    )
    .await;
    let long = req(input("INPUT0", json!([1, 16]), "INT32", json!(vec![0; 17])));
    expect(&s, &[], long, 400, "more than the 16 elements").await;
    let negative = req(input(
        "INPUT0",
        json!([1, -16]),
        "INT32",
        json!(vec![0; 16]),
    ));
    expect(&s, &[], negative, 400, "negative dimension").await;
    let huge = req(input(
        "INPUT0",
        json!([1_000_000_000_000i64]),
        "INT32",
        json!([1]),
    ));
    expect(&s, &[], huge, 400, "declares 1000000000000 elements").await;
    let overflow = req(input(
        "INPUT0",
        json!([i64::MAX, i64::MAX]),
        "INT32",
        json!([1]),
    ));
    expect(&s, &[], overflow, 400, "too large").await;
    let out_of_range = req(input(
        "INPUT0",
        json!([1, 16]),
        "INT32",
        json!(vec![vec![4294967296i64; 16]]),
    ));
    expect(&s, &[], out_of_range, 400, "4294967296").await;
    let strings = req(input(
        "INPUT0",
        json!([1, 16]),
        "INT32",
        json!(vec!["a"; 16]),
    ));
    expect(&s, &[], strings, 400, "the string \"a\"").await;
    let bad_shape = req(input(
        "INPUT0",
        json!(["1", 16]),
        "INT32",
        json!(vec![0; 16]),
    ));
    expect(
        &s,
        &[],
        bad_shape,
        400,
        "'shape' must be an array of integers",
    )
    .await;
    let wrong_shape = req(input(
        "INPUT0",
        json!([1, 4, 4]),
        "INT32",
        json!(vec![0; 16]),
    ));
    expect(
        &s,
        &[],
        wrong_shape,
        400,
        "input 'INPUT0' has shape [1, 4, 4]",
    )
    .await;
    let big_batch = json!({"inputs": [
        input("INPUT0", json!([9, 16]), "INT32", json!(vec![0; 144])),
        input("INPUT1", json!([9, 16]), "INT32", json!(vec![0; 144]))
    ]});
    expect(&s, &[], big_batch.to_string(), 400, "batch size 9").await;
    let missing = json!({"inputs": [good1()]}).to_string();
    expect(&s, &[], missing, 400, "missing input 'INPUT0'").await;
    let unknown_input = json!({"inputs": [good1(), input("INPUT0", json!([1, 16]), "INT32", json!(vec![0; 16])), input("X", json!([1]), "INT32", json!([0]))]});
    expect(
        &s,
        &[],
        unknown_input.to_string(),
        400,
        "unexpected input 'X'",
    )
    .await;
    let mut unknown_output = serde_json::from_str::<serde_json::Value>(&req(input(
        "INPUT0",
        json!([1, 16]),
        "INT32",
        json!(vec![0; 16]),
    )))
    .unwrap();
    unknown_output["outputs"] = json!([{"name": "OUTPUT9"}]);
    expect(
        &s,
        &[],
        unknown_output.to_string(),
        400,
        "unknown requested output 'OUTPUT9'",
    )
    .await;
    unknown_output["outputs"] = json!([{"name": "OUTPUT0", "parameters": {"classification": 2}}]);
    expect(&s, &[], unknown_output.to_string(), 501, "classification").await;
    let bad_param = json!({"parameters": {"priority": [1]}, "inputs": [good1()]});
    expect(&s, &[], bad_param.to_string(), 400, "parameter 'priority'").await;
    let bad_priority = json!({"parameters": {"priority": 99}, "inputs": [input("INPUT0", json!([1, 16]), "INT32", json!(vec![0; 16])), good1()]});
    expect(&s, &[], bad_priority.to_string(), 400, "'priority'").await;

    let r = post_json(&s, "/v2/models/nope/infer", &simple_request()).await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("'nope'"));
    s.stop().await;
}

#[tokio::test]
async fn binary_extension_mistakes() {
    let s = start_default().await;
    let header = json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
        good1()
    ]})
    .to_string();
    let len = header.len().to_string();
    let hl = |v: &str| [("inference-header-content-length", v.to_string())];
    let h = hl(&len);
    let hdr: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Header length beyond the body.
    let far = (header.len() + 100).to_string();
    expect(
        &s,
        &[("inference-header-content-length", &far)],
        header.clone(),
        400,
        "Inference-Header-Content-Length",
    )
    .await;
    expect(
        &s,
        &[("inference-header-content-length", "ten")],
        header.clone(),
        400,
        "not a byte count",
    )
    .await;
    // Binary section shorter and longer than declared.
    expect(
        &s,
        &hdr,
        [header.as_bytes(), &[0u8; 60]].concat(),
        400,
        "runs past",
    )
    .await;
    expect(
        &s,
        &hdr,
        [header.as_bytes(), &[0u8; 70]].concat(),
        400,
        "add up to 64",
    )
    .await;
    // binary_data_size that does not match the shape.
    let wrong = header.replace("\"binary_data_size\":64", "\"binary_data_size\":60");
    let wlen = wrong.len().to_string();
    expect(
        &s,
        &[("inference-header-content-length", &wlen)],
        [wrong.as_bytes(), &[0u8; 60]].concat(),
        400,
        "needs 64 bytes",
    )
    .await;
    // A huge declared shape with a tiny binary section.
    let huge = header.replacen("[1,16]", "[1000000000000,16]", 1);
    let hlen = huge.len().to_string();
    expect(
        &s,
        &[("inference-header-content-length", &hlen)],
        [huge.as_bytes(), &[0u8; 64]].concat(),
        400,
        "needs",
    )
    .await;
    // Both data and binary_data_size.
    let both = header.replace(
        "\"parameters\":{\"binary_data_size\":64}",
        "\"parameters\":{\"binary_data_size\":64},\"data\":[1]",
    );
    let blen = both.len().to_string();
    expect(
        &s,
        &[("inference-header-content-length", &blen)],
        [both.as_bytes(), &[0u8; 64]].concat(),
        400,
        "both 'data'",
    )
    .await;
    // Binary input without the header: there is no binary section.
    expect(
        &s,
        &[],
        [header.as_bytes(), &[0u8; 64]].concat(),
        400,
        "invalid JSON",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let args = RestArgs {
        http_max_input_size: 4096,
        ..RestArgs::default()
    };
    let s = start(ModelControlMode::None, args).await;
    let big = req(input("INPUT0", json!([1, 16]), "INT32", json!(vec![0; 16]))) + &" ".repeat(5000);
    expect(&s, &[], big, 413, "over the limit of 4096 bytes").await;

    // Without a Content-Length (chunked), the limit is met while reading.
    let frames = (0..10).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b' ';
            1000
        ])))
    });
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let request = hyper::Request::post(s.url("/v2/models/simple/infer"))
        .body(body)
        .unwrap();
    let response =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http()
            .request(request)
            .await
            .unwrap();
    assert_eq!(response.status(), 413);
    assert_still_serves(&s).await;

    // A gzip body that inflates past the limit is refused too.
    let bomb = gzip(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096);
    expect(
        &s,
        &[("content-encoding", "gzip")],
        bomb,
        413,
        "over the limit",
    )
    .await;
    s.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
