//! Fuzz targets of the KServe codec (run by `cargo test`; longer by `scripts/fuzz.sh`):
//! JSON infer bodies, and bodies split by the binary tensor extension's header length.

use bytes::Bytes;
use nereid_fuzz::Target;

use crate::{decode_infer_request, Body};

const SEEDS: &[&[u8]] = &[
    br#"{"id":"1","inputs":[{"name":"X","datatype":"INT32","shape":[2],"data":[1,2]}]}"#,
    br#"{"inputs":[{"name":"X","datatype":"FP32","shape":[1,2,2],"data":[[[1.5,2],[3,4e3]]]}],"outputs":[{"name":"Y","parameters":{"binary_data":true}}]}"#,
    br#"{"inputs":[{"name":"T","datatype":"BYTES","shape":[2],"data":["a","\u00e9"]}],"parameters":{"priority":1,"timeout":5}}"#,
    br#"{"inputs":[{"name":"B","datatype":"BOOL","shape":[3],"data":[true,false,1]},{"name":"H","datatype":"FP16","shape":[1],"data":[0.5]}]}"#,
    br#"{"inputs":[{"name":"X","datatype":"UINT8","shape":[4],"parameters":{"binary_data_size":4}}]}"#,
    br#"{"inputs":[{"name":"X","datatype":"INT64","shape":[0],"data":[]},{"name":"Y","datatype":"BF16","shape":[],"data":[1]}]}"#,
];

const TOKENS: &[&[u8]] = &[
    b"\"binary_data_size\"",
    b"\"shape\"",
    b"\"datatype\"",
    b"\"data\"",
    b"\"parameters\"",
    b"\"BYTES\"",
    b"\"FP16\"",
    b"\"BF16\"",
    b"\"FP64\"",
    b"\"INT8\"",
    b"\"UINT64\"",
    b"null",
    b"true",
    b"[[",
    b"]]",
    b"{}",
    b"\"\\u0000\"",
];

fn target(name: &str) -> Target {
    let mut target = Target::new(name);
    for seed in SEEDS {
        target = target.seed(seed);
    }
    TOKENS.iter().fold(target, |t, token| t.token(token))
}

#[test]
fn fuzz_json_infer_request() {
    target("kserve_json_infer").run(|bytes| {
        decode_infer_request(
            Body::json(Bytes::copy_from_slice(bytes)),
            &Default::default(),
        )
        .is_ok()
    });
}

/// The first four bytes are the `Inference-Header-Content-Length` (little-endian;
/// `u32::MAX` means absent), the rest the HTTP body.
#[test]
fn fuzz_binary_infer_request() {
    let mut binary = target("kserve_binary_infer");
    for seed in SEEDS {
        let mut input = (seed.len() as u32).to_le_bytes().to_vec();
        input.extend_from_slice(seed);
        input.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        binary = binary.seed(&input);
    }
    binary.run(|bytes| {
        let Some((length, body)) = bytes.split_first_chunk::<4>() else {
            return false;
        };
        let length = u32::from_le_bytes(*length);
        let length = (length != u32::MAX).then_some(length as usize);
        Body::split(Bytes::copy_from_slice(body), length)
            .and_then(|body| decode_infer_request(body, &Default::default()))
            .is_ok()
    });
}
