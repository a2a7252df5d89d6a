use super::*;
use nereid_proto::parse_model_config;

const MODEL: &str = r#"name: "m" backend: "identity" max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1, 2 ] },
        { name: "T" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "OPT" data_type: TYPE_INT32 dims: [ 1 ] optional: true } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1, 2 ] } ]
"#;

fn spec(warmup: &str) -> ModelSpec {
    ModelSpec::from_config(parse_model_config(&format!("{MODEL}{warmup}")).unwrap()).unwrap()
}

fn build(warmup: &str, dir: &Path) -> Result<Vec<WarmupSample>> {
    samples(&spec(warmup), dir)
}

const TEXT: &str =
    r#"inputs { key: "T" value: { data_type: TYPE_STRING dims: [ 1 ] zero_data: true } }"#;

#[test]
fn zero_random_and_file_data_take_the_batch_dimension() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(WARMUP_FOLDER)).unwrap();
    let values: Vec<u8> = [1.5f32, -2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.path().join(WARMUP_FOLDER).join("x.bin"), &values).unwrap();
    let text = encode_bytes_elements(["hello"]);
    std::fs::write(dir.path().join(WARMUP_FOLDER).join("t.bin"), &text).unwrap();
    let got = build(
        &format!(
            r#"model_warmup [
  {{ name: "zero" batch_size: 2 inputs {{ key: "X" value: {{ data_type: TYPE_FP32 dims: [ 3, 2 ] zero_data: true }} }} {TEXT} }},
  {{ name: "random" batch_size: 1 count: 3 inputs {{ key: "X" value: {{ data_type: TYPE_FP32 dims: [ 1, 2 ] random_data: true }} }}
     inputs {{ key: "T" value: {{ data_type: TYPE_STRING dims: [ 1 ] random_data: true }} }} }},
  {{ batch_size: 4 inputs {{ key: "X" value: {{ data_type: TYPE_FP32 dims: [ 3, 2 ] input_data_file: "x.bin" }} }}
     inputs {{ key: "T" value: {{ data_type: TYPE_STRING dims: [ 1 ] input_data_file: "t.bin" }} }} }} ]"#
        ),
        dir.path(),
    )
    .unwrap();
    assert_eq!(got.len(), 3);
    let [zero, random, file] = &got[..] else {
        unreachable!()
    };
    assert_eq!(
        (zero.name.as_str(), zero.runs, zero.batch_size),
        ("'zero'", 1, 2)
    );
    assert_eq!(zero.inputs.len(), 2, "the optional input is left out");
    assert_eq!(zero.inputs[0].shape, [2, 3, 2]);
    assert!(zero.inputs[0]
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .all(|&v| v == 0.0));
    assert_eq!(
        zero.inputs[1].string_elements().unwrap(),
        [Bytes::new(), Bytes::new()]
    );

    assert_eq!(random.runs, 3);
    let x = random.inputs[0].to_vec::<f32>().unwrap();
    assert!(
        x.iter().all(|v| (0.0..1.0).contains(v)) && x[0] != x[1],
        "{x:?}"
    );
    let words = random.inputs[1].string_elements().unwrap();
    assert!(words[0].iter().all(u8::is_ascii_lowercase) && !words[0].is_empty());

    assert_eq!(file.name, "#2");
    assert_eq!(file.inputs[0].shape, [4, 3, 2]);
    let x = file.inputs[0].to_vec::<f32>().unwrap();
    assert_eq!(x.len(), 24);
    assert_eq!(
        &x[18..],
        [1.5, -2.0, 3.0, 4.0, 5.0, 6.0],
        "one element, repeated"
    );
    assert_eq!(file.inputs[1].string_elements().unwrap().len(), 4);
    assert_eq!(&file.inputs[1].string_elements().unwrap()[3][..], b"hello");
}

#[test]
fn a_bad_sample_is_refused_naming_it_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(WARMUP_FOLDER)).unwrap();
    std::fs::write(dir.path().join(WARMUP_FOLDER).join("short.bin"), [0u8; 7]).unwrap();
    let x = |data: &str| {
        format!(
            r#"inputs {{ key: "X" value: {{ data_type: TYPE_FP32 dims: [ 1, 2 ] {data} }} }} {TEXT}"#
        )
    };
    let zero = x("zero_data: true");
    for (sample, says) in [
        (
            format!(r#"name: "big" batch_size: 5 {zero}"#),
            "warmup sample 'big': batch_size 5 is not between 1 and max_batch_size 4",
        ),
        (
            format!(r#"name: "none" batch_size: 0 {zero}"#),
            "batch_size 0 is not between 1",
        ),
        (
            format!(
                r#"name: "u" batch_size: 1 {zero} inputs {{ key: "NOPE" value: {{ data_type: TYPE_FP32 dims: [ 1 ] zero_data: true }} }}"#
            ),
            "warmup sample 'u': input 'NOPE' is not an input of the model",
        ),
        (
            format!(
                r#"batch_size: 1 {}"#,
                x("zero_data: true").replace(TEXT, "")
            ),
            "warmup sample #0: gives no data for input 'T'",
        ),
        (
            format!(
                r#"name: "t" batch_size: 1 {}"#,
                x("zero_data: true").replace("TYPE_FP32", "TYPE_FP64")
            ),
            "input 'X': data_type FP64 differs from the model's FP32",
        ),
        (
            format!(
                r#"name: "d" batch_size: 1 {}"#,
                x("zero_data: true").replace("[ 1, 2 ]", "[ 1, 3 ]")
            ),
            "input 'X': dims [1, 3] do not fit the model's [-1, 2]",
        ),
        (
            format!(
                r#"name: "any" batch_size: 1 {}"#,
                x("zero_data: true").replace("[ 1, 2 ]", "[ -1, 2 ]")
            ),
            "do not fit",
        ),
        (
            format!(r#"name: "empty" batch_size: 1 {}"#, x("")),
            "input 'X': sets none of zero_data, random_data and input_data_file",
        ),
        (
            format!(
                r#"name: "f" batch_size: 1 {}"#,
                x(r#"input_data_file: "short.bin""#)
            ),
            "holds 7 bytes, not 2 FP32 elements",
        ),
        (
            format!(
                r#"name: "g" batch_size: 1 {}"#,
                x(r#"input_data_file: "gone.bin""#)
            ),
            "gone.bin",
        ),
        (
            format!(
                r#"name: "esc" batch_size: 1 {}"#,
                x(r#"input_data_file: "../config.pbtxt""#)
            ),
            "must name a file inside the model's warmup/ folder",
        ),
    ] {
        let err = build(&format!("model_warmup [ {{ {sample} }} ]"), dir.path())
            .err()
            .unwrap_or_else(|| panic!("{sample}: accepted"))
            .to_string();
        assert!(err.contains(says), "{sample}\n{err}");
    }
}

#[test]
fn a_model_that_does_not_batch_takes_batch_size_one() {
    let unbatched = MODEL.replace("max_batch_size: 4", "max_batch_size: 0");
    let load = |batch: u32| {
        let config = format!(
            r#"{unbatched}model_warmup [ {{ name: "w" batch_size: {batch} inputs {{ key: "X" value: {{ data_type: TYPE_FP32 dims: [ 2, 2 ] zero_data: true }} }} {TEXT} }} ]"#
        );
        samples(
            &ModelSpec::from_config(parse_model_config(&config).unwrap()).unwrap(),
            Path::new("/nonexistent"),
        )
    };
    assert_eq!(
        load(1).unwrap()[0].inputs[0].shape,
        [2, 2],
        "no batch dimension"
    );
    let err = load(2).err().unwrap().to_string();
    assert!(
        err.contains("batch_size 2: a model that does not batch takes batch_size 1"),
        "{err}"
    );
}
