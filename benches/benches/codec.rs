//! Encode and decode paths of each wire, per tensor size: KServe JSON float arrays, the
//! binary tensor extension, and protobuf (raw and typed contents).

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nereid_bench::codec::{
    decode_grpc_response, decode_http_response, encode_http_request, grpc_request,
    grpc_request_typed,
};
use nereid_bench::inputs::{random_fp32, InputTensor, ModelInfo};
use nereid_proto::inference::model_infer_response::InferOutputTensor;
use nereid_proto::inference::{ModelInferRequest, ModelInferResponse};
use prost::Message;

const SIZES: [usize; 2] = [768, 150_528];

fn tensor(n: usize) -> Vec<InputTensor> {
    vec![InputTensor {
        name: "INPUT0".into(),
        datatype: "FP32".into(),
        shape: vec![1, n as i64],
        data: random_fp32(n, 7),
    }]
}

/// A JSON response of an identity model, as a server would send it.
fn json_response(n: usize, binary: bool) -> (Bytes, Option<usize>) {
    let data = random_fp32(n, 9);
    let out = if binary {
        serde_json::json!({"model_name":"identity_fp32","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32",
            "shape":[1, n],"parameters":{"binary_data_size": data.len()}}]})
    } else {
        let values: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        serde_json::json!({"model_name":"identity_fp32","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32",
            "shape":[1, n],"data": values}]})
    };
    let mut body = serde_json::to_vec(&out).unwrap();
    let header = body.len();
    if binary {
        body.extend_from_slice(&data);
    }
    (body.into(), binary.then_some(header))
}

fn protobuf_response(n: usize) -> Bytes {
    let response = ModelInferResponse {
        model_name: "identity_fp32".into(),
        model_version: "1".into(),
        outputs: vec![InferOutputTensor {
            name: "OUTPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![1, n as i64],
            ..Default::default()
        }],
        raw_output_contents: vec![random_fp32(n, 9)],
        ..Default::default()
    };
    response.encode_to_vec().into()
}

fn encode(c: &mut Criterion) {
    let model = ModelInfo::identity_fp32();
    let mut group = c.benchmark_group("encode_request");
    for n in SIZES {
        let inputs = Arc::new(tensor(n));
        group.throughput(Throughput::Bytes(4 * n as u64));
        group.bench_with_input(BenchmarkId::new("json", n), &inputs, |b, i| {
            b.iter(|| encode_http_request(i, false, false).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("binary", n), &inputs, |b, i| {
            b.iter(|| encode_http_request(i, true, true).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("protobuf_raw", n), &inputs, |b, i| {
            b.iter(|| grpc_request(&model, i).encode_to_vec())
        });
        group.bench_with_input(BenchmarkId::new("protobuf_typed", n), &inputs, |b, i| {
            b.iter(|| grpc_request_typed(&model, i).unwrap().encode_to_vec())
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let model = ModelInfo::identity_fp32();
    let mut group = c.benchmark_group("decode");
    for n in SIZES {
        group.throughput(Throughput::Bytes(4 * n as u64));
        let (json, _) = json_response(n, false);
        group.bench_with_input(BenchmarkId::new("json_response", n), &json, |b, body| {
            b.iter(|| decode_http_response(body, None).unwrap())
        });
        let (binary, header) = json_response(n, true);
        group.bench_with_input(
            BenchmarkId::new("binary_response", n),
            &binary,
            |b, body| b.iter(|| decode_http_response(body, header).unwrap()),
        );
        let proto = protobuf_response(n);
        group.bench_with_input(
            BenchmarkId::new("protobuf_response", n),
            &proto,
            |b, body| {
                b.iter(|| {
                    decode_grpc_response(&ModelInferResponse::decode(body.clone()).unwrap())
                        .unwrap()
                })
            },
        );
        // What a server does with a request: JSON float array into a typed vector, protobuf into
        // a message whose raw contents slice the buffer.
        let json_request = encode_http_request(&tensor(n), false, false).unwrap().body;
        group.bench_with_input(
            BenchmarkId::new("json_request_to_f32", n),
            &json_request,
            |b, body| {
                b.iter(|| {
                    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                    let data: Vec<f32> =
                        serde_json::from_value(v["inputs"][0]["data"].clone()).unwrap();
                    data
                })
            },
        );
        let proto_request: Bytes = grpc_request(&model, &tensor(n)).encode_to_vec().into();
        group.bench_with_input(
            BenchmarkId::new("protobuf_request", n),
            &proto_request,
            |b, body| b.iter(|| ModelInferRequest::decode(body.clone()).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
