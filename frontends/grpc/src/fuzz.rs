//! Fuzz target of the gRPC door (run by `cargo test`; longer by `scripts/fuzz.sh`):
//! protobuf bytes as a `ModelInferRequest`, then into an engine request (typed contents,
//! raw contents, parameters, versions).

use nereid_engine::{DataType, InferRequest, Tensor};
use nereid_fuzz::Target;
use nereid_proto::{InferTensorContents, ModelInferRequest};
use prost::Message;

use crate::convert::{request_from_wire, request_to_wire};

fn seeds() -> Vec<Vec<u8>> {
    let raw = request_to_wire(InferRequest::new(
        "simple",
        vec![
            Tensor::from_vec("INPUT0", DataType::Int32, vec![1, 4], vec![1, 2, 3, 4]),
            Tensor::from_vec("INPUT1", DataType::Fp32, vec![2], vec![0.5f32, -1.0]),
        ],
    ));
    let text = request_to_wire(InferRequest::new(
        "identity",
        vec![Tensor::from_strings("T", vec![2], ["ab", "\u{e9}"])],
    ));
    let mut typed = request_to_wire(InferRequest::new("m", Vec::new()));
    typed.model_version = "2".into();
    typed.inputs = raw.inputs.clone();
    typed.inputs[0].contents = Some(InferTensorContents {
        int_contents: vec![1, 2, 3, 4],
        ..Default::default()
    });
    typed.inputs[1].contents = Some(InferTensorContents {
        fp32_contents: vec![0.5, -1.0],
        ..Default::default()
    });
    [raw, text, typed]
        .iter()
        .map(ModelInferRequest::encode_to_vec)
        .collect()
}

#[test]
fn fuzz_model_infer_request() {
    let target = seeds()
        .iter()
        .fold(Target::new("grpc_model_infer_request"), |t, s| t.seed(s));
    target.run(|bytes| {
        ModelInferRequest::decode(bytes)
            .ok()
            .and_then(|message| request_from_wire(message, None, &Default::default()).ok())
            .is_some()
    });
}
