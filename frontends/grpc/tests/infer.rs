//! Unary RPCs against an in-process server: inference with typed and raw contents, every
//! datatype path, errors (each followed by a good request), metadata, statistics,
//! repository, UNIMPLEMENTED RPCs and gzip.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::{simple_request, TestServer};
use nereid_engine::{DataType, Tensor};
use nereid_grpc::convert::request_to_wire;
use nereid_grpc::{CompressionLevel, GrpcArgs};
use nereid_proto::inference::model_infer_request::InferInputTensor;
use nereid_proto::inference::*;
use nereid_proto::{GrpcInferenceServiceClient, InferTensorContents};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::Code;

fn typed_input(
    name: &str,
    datatype: &str,
    shape: Vec<i64>,
    contents: InferTensorContents,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        parameters: HashMap::new(),
        contents: Some(contents),
    }
}

fn ints(v: Vec<i32>) -> InferTensorContents {
    InferTensorContents {
        int_contents: v,
        ..Default::default()
    }
}

fn typed_simple() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "simple".into(),
        id: "typed-1".into(),
        inputs: vec![
            typed_input("INPUT0", "INT32", vec![1, 16], ints((0..16).collect())),
            typed_input("INPUT1", "INT32", vec![1, 16], ints(vec![1; 16])),
        ],
        ..Default::default()
    }
}

fn raw_i32(resp: &ModelInferResponse, i: usize) -> Vec<i32> {
    resp.raw_output_contents[i]
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn check_simple(resp: &ModelInferResponse) {
    assert_eq!(resp.model_name, "simple");
    assert_eq!(resp.model_version, "1");
    assert_eq!(resp.outputs.len(), 2);
    assert_eq!(resp.outputs[0].name, "OUTPUT0");
    assert_eq!(resp.outputs[0].datatype, "INT32");
    assert_eq!(resp.outputs[0].shape, vec![1, 16]);
    assert_eq!(raw_i32(resp, 0), (1..17).collect::<Vec<i32>>());
    assert_eq!(raw_i32(resp, 1), (-1..15).collect::<Vec<i32>>());
}

async fn good(client: &mut GrpcInferenceServiceClient<Channel>) {
    let resp = client
        .model_infer(typed_simple())
        .await
        .expect("a good request after an error")
        .into_inner();
    check_simple(&resp);
}

#[tokio::test]
async fn typed_and_raw_contents_give_raw_outputs() {
    let server = TestServer::start().await;
    let mut client = server.raw().await;
    let resp = client
        .model_infer(typed_simple())
        .await
        .unwrap()
        .into_inner();
    check_simple(&resp);
    assert_eq!(resp.id, "typed-1");

    let mut raw = request_to_wire(simple_request(1));
    raw.id = "raw-1".into();
    let resp = client.model_infer(raw).await.unwrap().into_inner();
    check_simple(&resp);
    assert_eq!(resp.id, "raw-1");

    // The typed client: engine types in and out.
    let typed = server.client().await;
    let resp = typed.infer(simple_request(3)).await.unwrap();
    let out = resp.output("OUTPUT0").unwrap();
    assert_eq!(out.shape, vec![3, 16]);
    assert_eq!(
        out.to_vec::<i32>().unwrap()[16..32],
        (1..17).collect::<Vec<i32>>()[..]
    );
    assert!(resp.is_final);
}

#[tokio::test]
async fn bytes_fp16_and_bf16_tensors() {
    let server = TestServer::start().await;
    let mut client = server.raw().await;
    let words = vec![
        Bytes::from("hello"),
        Bytes::new(),
        Bytes::from(vec![0u8, 255]),
    ];
    let typed = ModelInferRequest {
        model_name: "identity_bytes".into(),
        inputs: vec![typed_input(
            "INPUT0",
            "BYTES",
            vec![1, 3],
            InferTensorContents {
                bytes_contents: words.clone(),
                ..Default::default()
            },
        )],
        ..Default::default()
    };
    let resp = client.model_infer(typed).await.unwrap().into_inner();
    assert_eq!(resp.outputs[0].datatype, "BYTES");
    let expected = Tensor::from_strings("INPUT0", vec![1, 3], &words);
    assert_eq!(resp.raw_output_contents[0], expected.data);

    let raw = request_to_wire(nereid_engine::InferRequest::new(
        "identity_bytes",
        vec![expected.clone()],
    ));
    let resp = client.model_infer(raw).await.unwrap().into_inner();
    assert_eq!(resp.raw_output_contents[0], expected.data);

    for (model, dtype) in [
        ("identity_fp16", DataType::Fp16),
        ("identity_bf16", DataType::Bf16),
    ] {
        let data = Bytes::from_static(&[0x00, 0x3c, 0x00, 0xc0]); // 1.0 and -2.0 in FP16
        let t = Tensor::new("INPUT0", dtype, vec![2], data.clone());
        let resp = client
            .model_infer(request_to_wire(nereid_engine::InferRequest::new(
                model,
                vec![t],
            )))
            .await
            .unwrap();
        let resp = resp.into_inner();
        assert_eq!(resp.outputs[0].datatype, dtype.as_str());
        assert_eq!(resp.raw_output_contents[0], data);
        // FP16/BF16 have no typed list.
        let typed = ModelInferRequest {
            model_name: model.into(),
            inputs: vec![typed_input(
                "INPUT0",
                dtype.as_str(),
                vec![2],
                InferTensorContents::default(),
            )],
            ..Default::default()
        };
        let err = client.model_infer(typed).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("'INPUT0'") && err.message().contains("raw"),
            "{}",
            err.message()
        );
    }
}

#[tokio::test]
async fn each_error_has_its_code_and_the_next_request_works() {
    let server = TestServer::start().await;
    let mut client = server.raw().await;
    let expect = |code: Code, needle: &'static str| {
        move |r: Result<tonic::Response<ModelInferResponse>, tonic::Status>| {
            let err = r.expect_err("the request must fail");
            assert_eq!(err.code(), code, "{}", err.message());
            assert!(
                err.message().contains(needle),
                "{:?} should contain {needle:?}",
                err.message()
            );
        }
    };

    let mut r = typed_simple();
    r.model_name = "nope".into();
    expect(Code::NotFound, "'nope'")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = typed_simple();
    r.inputs[0].datatype = "FP32".into();
    r.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![0.0; 16],
        ..Default::default()
    });
    expect(Code::InvalidArgument, "datatype FP32")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = typed_simple();
    r.inputs[0].datatype = "FLOAT32".into();
    expect(Code::InvalidArgument, "input 'INPUT0'")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = typed_simple();
    r.inputs[0].shape = vec![1, 8];
    r.inputs[0].contents = Some(ints(vec![0; 8]));
    expect(Code::InvalidArgument, "shape [1, 8]")(client.model_infer(r).await);
    good(&mut client).await;

    let r = request_to_wire(simple_request(9));
    expect(Code::InvalidArgument, "batch size 9")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = typed_simple();
    r.inputs.pop();
    expect(Code::InvalidArgument, "missing input 'INPUT1'")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = typed_simple();
    r.inputs[1].contents = Some(ints(vec![1; 15]));
    expect(Code::InvalidArgument, "input 'INPUT1'")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = request_to_wire(simple_request(1));
    r.inputs[0].contents = Some(ints((0..16).collect()));
    expect(Code::InvalidArgument, "one or the other")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = request_to_wire(simple_request(1));
    r.raw_input_contents.pop();
    expect(Code::InvalidArgument, "raw_input_contents")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = request_to_wire(simple_request(1));
    r.raw_input_contents[1] = r.raw_input_contents[1].slice(..60);
    expect(Code::InvalidArgument, "'INPUT1'")(client.model_infer(r).await);
    good(&mut client).await;

    let mut r = typed_simple();
    r.model_version = "7".into();
    expect(Code::NotFound, "version 7")(client.model_infer(r).await);
    good(&mut client).await;

    let r = request_to_wire(common::repeat_request("d", vec![1, 2], None));
    expect(Code::Unimplemented, "ModelStreamInfer")(client.model_infer(r).await);
    good(&mut client).await;
}

#[tokio::test]
async fn metadata_config_statistics_and_repository() {
    let server = TestServer::start().await;
    let mut client = server.raw().await;
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        client
            .model_ready(ready("simple", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        client
            .model_ready(ready("simple", "1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("nope", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(
        client
            .model_ready(ready("simple", "x"))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let meta = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "nereid");
    assert!(meta.extensions.iter().any(|e| e == "statistics"));

    let m = client
        .model_metadata(ModelMetadataRequest {
            name: "simple".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions, vec!["1"]);
    assert_eq!(m.platform, "add_sub");
    assert_eq!(
        (m.inputs[0].name.as_str(), m.inputs[0].datatype.as_str()),
        ("INPUT0", "INT32")
    );
    assert_eq!(m.inputs[0].shape, vec![-1, 16]);
    let err = client
        .model_metadata(ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await;
    assert_eq!(err.unwrap_err().code(), Code::NotFound);
    let typed = server
        .client()
        .await
        .model_metadata("repeat_int32", None)
        .await
        .unwrap();
    assert_eq!(typed.outputs[1].name, "IDX");

    let cfg = client
        .model_config(ModelConfigRequest {
            name: "simple".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!((cfg.name.as_str(), cfg.max_batch_size), ("simple", 8));

    good(&mut client).await;
    good(&mut client).await;
    let stats = client
        .model_statistics(ModelStatisticsRequest {
            name: "simple".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.model_stats.len(), 1);
    let s = &stats.model_stats[0];
    assert_eq!((s.name.as_str(), s.version.as_str()), ("simple", "1"));
    assert_eq!(s.inference_stats.unwrap().success.unwrap().count, 2);
    assert!(s.execution_count >= 1 && s.inference_count == 2);
    let all = client
        .model_statistics(ModelStatisticsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.model_stats.len() >= 3);

    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    let simple = index.models.iter().find(|m| m.name == "simple").unwrap();
    assert_eq!(
        (simple.version.as_str(), simple.state.as_str()),
        ("1", "READY")
    );

    // The server runs in model control mode "none": loads are refused, as in Triton.
    let load = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "simple".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(load.code(), Code::Unavailable);
    assert!(load.message().contains("explicit"), "{}", load.message());
}

#[tokio::test]
async fn cuda_shared_memory_lists_none_and_refuses_to_register() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let status = c
        .cuda_shared_memory_status(CudaSharedMemoryStatusRequest::default())
        .await
        .unwrap();
    assert!(status.into_inner().regions.is_empty());
    let named = c
        .cuda_shared_memory_status(CudaSharedMemoryStatusRequest { name: "gpu".into() })
        .await
        .unwrap_err();
    assert_eq!(named.code(), Code::NotFound);
    c.cuda_shared_memory_unregister(CudaSharedMemoryUnregisterRequest::default())
        .await
        .unwrap();
    let err = c
        .cuda_shared_memory_register(CudaSharedMemoryRegisterRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("not implemented by Nereid"),
        "{}",
        err.message()
    );
    good(&mut c).await;
}

#[tokio::test]
async fn gzip_is_accepted_and_sent_when_enabled() {
    let args = GrpcArgs {
        grpc_infer_response_compression_level: CompressionLevel::High,
        ..GrpcArgs::default()
    };
    let server = TestServer::start_with(args).await;
    let mut client = server
        .raw()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let resp = client.model_infer(typed_simple()).await.unwrap();
    assert_eq!(
        resp.metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    check_simple(&resp.into_inner());

    // Without the flag responses stay uncompressed, but gzip requests are still accepted.
    let plain = TestServer::start().await;
    let mut client = plain
        .raw()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let resp = client.model_infer(typed_simple()).await.unwrap();
    assert!(resp.metadata().get("grpc-encoding").is_none());
    check_simple(&resp.into_inner());
}

#[tokio::test]
async fn message_size_limit_is_enforced() {
    let args = GrpcArgs {
        grpc_max_message_size: 64,
        ..GrpcArgs::default()
    };
    let server = TestServer::start_with(args).await;
    let mut client = server.raw().await;
    let err = client
        .model_infer(request_to_wire(simple_request(2)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
}
