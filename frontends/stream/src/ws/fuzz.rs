//! Fuzz target of the WebSocket door (run by `cargo test`; longer by `scripts/fuzz.sh`):
//! text and binary frames as a client sends them. The first byte picks the frame kind.

use bytes::Bytes;
use nereid_fuzz::Target;

use super::frame::{parse_binary, parse_text, Defaults};

#[test]
fn fuzz_websocket_frames() {
    let defaults = Defaults {
        model: Some("simple".into()),
        ..Defaults::default()
    };
    let json = br#"{"id":"7","model_name":"simple","inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1,2],"data":[1,2]}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]}"#;
    let mut text = vec![b'T'];
    text.extend_from_slice(json);
    let header = br#"{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}]}"#;
    let mut binary = vec![b'B'];
    binary.extend((header.len() as u32).to_le_bytes());
    binary.extend_from_slice(header);
    binary.extend([1, 0, 0, 0, 2, 0, 0, 0]);
    Target::new("ws_frames")
        .seed(&text)
        .seed(b"T{\"cancel\":\"7\"}")
        .seed(&binary)
        .token(b"\"cancel\"")
        .token(b"\"model_version\"")
        .token(b"\"binary_data_size\"")
        .run(|bytes| match bytes.split_first() {
            Some((b'T', rest)) => std::str::from_utf8(rest)
                .is_ok_and(|s| parse_text(s.to_string().into(), &defaults).is_ok()),
            Some((_, rest)) => parse_binary(Bytes::copy_from_slice(rest), &defaults).is_ok(),
            None => false,
        });
}
