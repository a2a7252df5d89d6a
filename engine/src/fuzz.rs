//! Fuzz targets of the engine (run by `cargo test`; longer by `scripts/fuzz.sh`):
//! `config.pbtxt` text through parsing and validation, and requests (tensor headers and
//! raw bytes, as a frontend hands them over) through validation against the demo models.

use bytes::Bytes;
use nereid_fuzz::Target;
use nereid_proto::parse_model_config;

use crate::builtin::demo;
use crate::{DataType, InferRequest, ModelSpec, Tensor};

#[test]
fn fuzz_model_config() {
    let mut target = Target::new("engine_model_config");
    for (_, config) in demo::BUILTIN_MODELS {
        target = target.seed(config.as_bytes());
    }
    target = target.seed(demo::SLEEP.as_bytes()).seed(
        br#"name: "m" max_batch_size: 8 input [ { name: "X" data_type: TYPE_FP32 dims: [ -1, 3 ] optional: true } ]
output [ { name: "Y" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } } ]
dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100 priority_levels: 2 default_priority_level: 1
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 1000 max_queue_size: 4 }
  priority_queue_policy { key: 2 value: { max_queue_size: 1 } } }
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]
model_transaction_policy { decoupled: false }
parameters { key: "execution_timeout_ms" value: { string_value: "100" } }
version_policy { latest { num_versions: 2 } }"#,
    );
    for token in [
        &b"dims: [ -1 ]"[..],
        b"max_batch_size: ",
        b"dynamic_batching { }",
        b"sequence_batching { }",
        b"instance_group [ { count: 0 } ]",
        b"kind: KIND_MODEL",
        b"data_type: TYPE_BF16",
        b"data_type: 99",
        b"parameters { key: \"max_sequences\" value: { string_value: \"4\" } }",
        b"model_transaction_policy { decoupled: true }",
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b"#",
        b"\\",
    ] {
        target = target.token(token);
    }
    target.run(|bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return false;
        };
        parse_model_config(text)
            .ok()
            .and_then(|config| ModelSpec::from_config(config).ok())
            .is_some()
    });
}

/// Reads tensors from fuzz bytes: per tensor a name index, a dtype, a rank, dims (as
/// signed bytes, -1 and 0 included, or one edge value), a data length and the data.
fn tensors(mut bytes: &[u8], names: &[&str]) -> Vec<Tensor> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    let mut tensors = Vec::new();
    while let Some(&[name, dtype, rank]) = take(&mut bytes, 3) {
        let name = names
            .get(usize::from(name) % (names.len() + 1))
            .copied()
            .unwrap_or("NOPE");
        let dtype = DataType::ALL[usize::from(dtype) % DataType::ALL.len()];
        let mut shape = Vec::new();
        for _ in 0..rank % 6 {
            let Some(&[d]) = take(&mut bytes, 1) else {
                break;
            };
            shape.push(match d {
                0xf0 => i64::MAX,
                0xf1 => i64::MIN,
                0xf2 => 1 << 40,
                _ => i64::from(d as i8),
            });
        }
        let Some(&[len_lo, len_hi]) = take(&mut bytes, 2) else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([len_lo, len_hi])).min(bytes.len());
        let data = take(&mut bytes, len).unwrap_or_default();
        tensors.push(Tensor::new(
            name,
            dtype,
            shape,
            Bytes::copy_from_slice(data),
        ));
    }
    tensors
}

#[test]
fn fuzz_request_validation() {
    let specs: Vec<ModelSpec> = demo::BUILTIN_MODELS
        .iter()
        .map(|(_, text)| ModelSpec::from_config(parse_model_config(text).unwrap()).unwrap())
        .collect();
    // simple: INPUT0 and INPUT1, INT32 [-1 batch, 16]; the seeds name them right.
    let mut simple = vec![0u8];
    for name in [0u8, 1] {
        simple.extend([name, 7, 2, 1, 16, 64, 0]);
        simple.extend([1u8; 64]);
    }
    let mut bytes_seed = vec![1u8, 0, 13, 1, 1, 9, 0];
    bytes_seed.extend(5u32.to_le_bytes());
    bytes_seed.extend(b"hello");
    Target::new("engine_request_validation")
        .seed(&simple)
        .seed(&bytes_seed)
        .run(|bytes| {
            let Some((&which, rest)) = bytes.split_first() else {
                return false;
            };
            let spec = &specs[usize::from(which) % specs.len()];
            let names: Vec<&str> = spec.inputs.iter().map(|t| t.name.as_str()).collect();
            let request = InferRequest::new(spec.name(), tensors(rest, &names));
            crate::validate::validate(spec, &request).is_ok()
        });
}
