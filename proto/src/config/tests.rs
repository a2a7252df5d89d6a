//! Tests of config.pbtxt parsing and the JSON form.

use super::*;
use crate::inference::{
    model_config::SchedulingChoice, model_instance_group::Kind, model_queue_policy::TimeoutAction,
    model_version_policy::PolicyChoice, DataType, ModelDynamicBatching,
};

/// The add/sub `simple` example model, written as Triton users write it.
const SIMPLE: &str = r#"
# Adds and subtracts two int32 vectors.
name: "simple"
platform: "tensorflow_graphdef"
backend: "tensorflow"
max_batch_size: 8
input [
  {
    name: "INPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "INPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "OUTPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
dynamic_batching { preferred_batch_size: [4, 8] max_queue_delay_microseconds: 100 }
instance_group [{ count: 2 kind: KIND_CPU }]
"#;

/// A config exercising version policy, queue policy, decoupled transactions,
/// parameters and variable dimensions.
const POLICIES: &str = r#"
name: "policies"
backend: "python"
max_batch_size: 0
version_policy { specific { versions: [1, 3] } }
input [
  {
    name: "TEXT"
    data_type: TYPE_STRING
    dims: [ -1 ]
  }
]
output [
  {
    name: "LOGITS"
    data_type: TYPE_FP32
    dims: [ -1, 4 ]
    reshape { shape: [ 1, -1, 4 ] }
  }
]
dynamic_batching {
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy {
    timeout_action: DELAY
    default_timeout_microseconds: 1000
    allow_timeout_override: true
    max_queue_size: 4
  }
  priority_queue_policy {
    key: 2
    value: { timeout_action: REJECT max_queue_size: 16 }
  }
}
model_transaction_policy { decoupled: true }
parameters { key: "x" value: { string_value: "y" } }
parameters: { key: "EXECUTION_ENV_PATH", value: {string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz"} }
"#;

fn simple() -> ModelConfig {
    parse_model_config(SIMPLE).expect("the simple config parses")
}

fn dynamic_batching(cfg: &ModelConfig) -> &ModelDynamicBatching {
    match &cfg.scheduling_choice {
        Some(SchedulingChoice::DynamicBatching(db)) => db,
        other => panic!("expected dynamic_batching, got {other:?}"),
    }
}

#[test]
fn parses_the_simple_example() {
    let cfg = simple();
    assert_eq!(cfg.name, "simple");
    assert_eq!(cfg.platform, "tensorflow_graphdef");
    assert_eq!(cfg.backend, "tensorflow");
    assert_eq!(cfg.max_batch_size, 8);

    let names: Vec<_> = cfg.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["INPUT0", "INPUT1"]);
    let names: Vec<_> = cfg.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["OUTPUT0", "OUTPUT1"]);
    for tensor in &cfg.input {
        assert_eq!(tensor.data_type(), DataType::TypeInt32);
        assert_eq!(tensor.dims, [16]);
    }
    for tensor in &cfg.output {
        assert_eq!(tensor.data_type(), DataType::TypeInt32);
        assert_eq!(tensor.dims, [16]);
    }

    let db = dynamic_batching(&cfg);
    assert_eq!(db.preferred_batch_size, [4, 8]);
    assert_eq!(db.max_queue_delay_microseconds, 100);

    assert_eq!(cfg.instance_group.len(), 1);
    assert_eq!(cfg.instance_group[0].count, 2);
    assert_eq!(cfg.instance_group[0].kind(), Kind::Cpu);
}

#[test]
fn parses_policies_parameters_and_variable_dims() {
    let cfg = parse_model_config(POLICIES).expect("the policies config parses");

    match cfg
        .version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref())
    {
        Some(PolicyChoice::Specific(specific)) => assert_eq!(specific.versions, [1, 3]),
        other => panic!("expected a specific version policy, got {other:?}"),
    }

    let db = dynamic_batching(&cfg);
    assert_eq!(db.priority_levels, 2);
    assert_eq!(db.default_priority_level, 1);
    let queue = db
        .default_queue_policy
        .as_ref()
        .expect("default_queue_policy");
    assert_eq!(queue.timeout_action(), TimeoutAction::Delay);
    assert_eq!(queue.default_timeout_microseconds, 1000);
    assert!(queue.allow_timeout_override);
    assert_eq!(queue.max_queue_size, 4);
    let level2 = &db.priority_queue_policy[&2];
    assert_eq!(level2.timeout_action(), TimeoutAction::Reject);
    assert_eq!(level2.max_queue_size, 16);

    assert!(
        cfg.model_transaction_policy
            .as_ref()
            .expect("model_transaction_policy")
            .decoupled
    );
    assert_eq!(cfg.parameters["x"].string_value, "y");
    assert_eq!(
        cfg.parameters["EXECUTION_ENV_PATH"].string_value,
        "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    );

    assert_eq!(cfg.input[0].data_type(), DataType::TypeString);
    assert_eq!(cfg.input[0].dims, [-1]);
    assert_eq!(cfg.output[0].dims, [-1, 4]);
    assert_eq!(
        cfg.output[0].reshape.as_ref().expect("reshape").shape,
        [1, -1, 4]
    );
}

#[test]
fn parses_sequence_batching_and_ensembles() {
    let sequence = parse_model_config(
        r#"
name: "seq"
backend: "onnxruntime"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  oldest { max_candidate_sequences: 8 preferred_batch_size: [2, 4] }
  control_input [
    {
      name: "START"
      control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ]
    },
    {
      name: "CORRID"
      control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ]
    }
  ]
  state [
    {
      input_name: "STATE_IN"
      output_name: "STATE_OUT"
      data_type: TYPE_FP32
      dims: [ -1 ]
      initial_state: { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true name: "zeros" }
    }
  ]
}
optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }
model_warmup [{ name: "w" batch_size: 1 inputs { key: "IN" value: { data_type: TYPE_FP32 dims: [ 4 ] random_data: true } } }]
"#,
    )
    .expect("the sequence config parses");
    match &sequence.scheduling_choice {
        Some(SchedulingChoice::SequenceBatching(sb)) => {
            assert_eq!(sb.max_sequence_idle_microseconds, 5_000_000);
            assert_eq!(sb.control_input.len(), 2);
            assert_eq!(sb.state[0].initial_state[0].name, "zeros");
        }
        other => panic!("expected sequence_batching, got {other:?}"),
    }

    let ensemble = parse_model_config(
        r#"
name: "ensemble_model"
platform: "ensemble"
max_batch_size: 0
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "ANSWER" data_type: TYPE_STRING dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    {
      model_name: "pre"
      model_version: -1
      input_map { key: "IN" value: "TEXT" }
      output_map { key: "OUT" value: "ids" }
    },
    {
      model_name: "post"
      model_version: -1
      input_map { key: "IN" value: "ids" }
      output_map { key: "OUT" value: "ANSWER" }
    }
  ]
}
"#,
    )
    .expect("the ensemble config parses");
    match &ensemble.scheduling_choice {
        Some(SchedulingChoice::EnsembleScheduling(e)) => {
            assert_eq!(e.step.len(), 2);
            assert_eq!(e.step[0].model_version, -1);
            assert_eq!(e.step[1].output_map["OUT"], "ANSWER");
        }
        other => panic!("expected ensemble_scheduling, got {other:?}"),
    }
}

/// Asserts that `text` fails at `line` with a message containing `needle`.
fn assert_text_error(text: &str, line: usize, needle: &str) {
    let err = parse_model_config(text).expect_err("the config must not parse");
    match &err {
        ConfigTextError::Text {
            line: l, message, ..
        } => {
            assert_eq!(*l, line, "wrong line in {err}");
            assert!(message.contains(needle), "{err:?} should mention {needle}");
        }
        other => panic!("expected a text error, got {other:?}"),
    }
    let shown = err.to_string();
    assert!(shown.contains(&format!("line {line}")), "{shown}");
    assert!(shown.contains(needle), "{shown}");
}

#[test]
fn unknown_field_names_the_field_and_line() {
    let text = "name: \"m\"\nmax_batch_size: 4\nmax_batch: 8\n";
    assert_text_error(text, 3, "max_batch");
    match parse_model_config(text) {
        Err(ConfigTextError::Text { column, .. }) => assert_eq!(column, 1),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_enum_value_names_the_value_and_line() {
    let text = "name: \"m\"\ninput [\n  {\n    name: \"x\"\n    data_type: TYPE_INT33\n  }\n]\n";
    assert_text_error(text, 5, "TYPE_INT33");
    match parse_model_config(text) {
        Err(ConfigTextError::Text {
            column, message, ..
        }) => {
            assert_eq!(column, 16);
            assert!(message.contains("inference.DataType"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_brace_is_reported_at_the_end() {
    let text = "name: \"m\"\ndynamic_batching {\n  max_queue_delay_microseconds: 100\n";
    assert_text_error(text, 4, "end of input");
}

#[test]
fn wrong_value_type_is_reported() {
    assert_text_error("name: \"m\"\nmax_batch_size: \"eight\"\n", 2, "expected");
    assert_text_error("max_batch_size: 99999999999\n", 1, "out of range");
    assert_text_error(
        "name: \"m\"\nmax_batch_size: \"eight\"\n",
        2,
        "field 'max_batch_size'",
    );
    assert_text_error("max_batch_size: 99999999999\n", 1, "field 'max_batch_size'");
    assert_text_error(
        "input [ { name: \"x\" dims: [ 1, y ] } ]\n",
        1,
        "field 'dims'",
    );
}

#[test]
fn json_matches_triton_conventions() {
    let json = model_config_to_json(&simple());

    assert_eq!(json["name"], "simple");
    assert_eq!(json["max_batch_size"], 8);
    assert_eq!(json["input"][0]["name"], "INPUT0");
    assert_eq!(json["input"][0]["data_type"], "TYPE_INT32");
    assert_eq!(json["input"][0]["format"], "FORMAT_NONE");
    assert_eq!(json["input"][0]["dims"], serde_json::json!([16]));
    assert_eq!(json["instance_group"][0]["kind"], "KIND_CPU");
    assert_eq!(json["instance_group"][0]["count"], 2);
    // 64-bit integers are numbers, not strings.
    assert_eq!(
        json["dynamic_batching"]["max_queue_delay_microseconds"],
        serde_json::json!(100)
    );
    assert_eq!(
        json["dynamic_batching"]["preferred_batch_size"],
        serde_json::json!([4, 8])
    );
    // Default-valued fields are present.
    assert_eq!(json["runtime"], "");
    assert_eq!(json["input"][0]["is_shape_tensor"], false);
    assert_eq!(json["input"][0]["optional"], false);
    assert_eq!(json["output"][0]["label_filename"], "");
    assert_eq!(json["batch_input"], serde_json::json!([]));
    assert_eq!(json["parameters"], serde_json::json!({}));
    assert_eq!(json["dynamic_batching"]["priority_levels"], 0);
    // Unset messages are absent, as in Triton.
    assert!(json.get("sequence_batching").is_none());
    assert!(json.get("response_cache").is_none());
    assert!(json["input"][0].get("reshape").is_none());
    // No camelCase names.
    assert!(json.get("maxBatchSize").is_none());
}

#[test]
fn json_round_trips() {
    for text in [SIMPLE, POLICIES] {
        let cfg = parse_model_config(text).expect("parses");
        let json = model_config_to_json(&cfg);
        let back = model_config_from_json(&json).expect("the JSON reads back");
        assert_eq!(back, cfg);
        // And through a string, as the REST frontend would send it.
        let reparsed: serde_json::Value =
            serde_json::from_str(&json.to_string()).expect("valid JSON text");
        assert_eq!(model_config_from_json(&reparsed).expect("reads back"), cfg);
    }
    let json = model_config_to_json(&parse_model_config(POLICIES).unwrap());
    assert_eq!(
        json["dynamic_batching"]["default_queue_policy"]["timeout_action"],
        "DELAY"
    );
    assert_eq!(
        json["dynamic_batching"]["priority_queue_policy"]["2"]["max_queue_size"],
        16
    );
    assert_eq!(
        json["version_policy"]["specific"]["versions"],
        serde_json::json!([1, 3])
    );
    assert_eq!(json["parameters"]["x"]["string_value"], "y");
    assert_eq!(json["model_transaction_policy"]["decoupled"], true);
}

#[test]
fn json_accepts_camel_case_and_string_integers() {
    let cfg = model_config_from_json(&serde_json::json!({
        "name": "m",
        "maxBatchSize": 4,
        "input": [{ "name": "x", "dataType": "TYPE_FP32", "dims": ["-1", 3] }],
        "dynamic_batching": { "max_queue_delay_microseconds": "250" },
        "instance_group": [{ "kind": 2, "count": 1 }]
    }))
    .expect("reads");
    assert_eq!(cfg.max_batch_size, 4);
    assert_eq!(cfg.input[0].dims, [-1, 3]);
    assert_eq!(dynamic_batching(&cfg).max_queue_delay_microseconds, 250);
    assert_eq!(cfg.instance_group[0].kind(), Kind::Cpu);
}

#[test]
fn json_errors_are_reported() {
    let err = model_config_from_json(&serde_json::json!({ "name": "m", "bogus": 1 }))
        .expect_err("unknown field");
    assert!(matches!(err, ConfigTextError::Json { .. }), "{err:?}");
    assert!(err.to_string().contains("bogus"), "{err}");

    let err = model_config_from_json(&serde_json::json!({
        "input": [{ "data_type": "TYPE_NOPE" }]
    }))
    .expect_err("unknown enum");
    assert!(err.to_string().contains("TYPE_NOPE"), "{err}");

    // A value of the wrong type names its field, with the path to it.
    let err = model_config_from_json(&serde_json::json!({ "max_batch_size": "x" }))
        .expect_err("not an integer");
    assert!(err.to_string().contains("max_batch_size: "), "{err}");
    let err = model_config_from_json(&serde_json::json!({
        "input": [{ "name": "IN", "dims": ["x"] }]
    }))
    .expect_err("not an integer");
    assert!(err.to_string().contains("input[0].dims[0]: "), "{err}");
}

#[test]
fn line_and_column_counts_characters() {
    assert_eq!(line_and_column("abc", 0), (1, 1));
    assert_eq!(line_and_column("abc\ndef", 5), (2, 2));
    assert_eq!(line_and_column("é\nxé", 5), (2, 2));
    assert_eq!(line_and_column("é\nxé", 6), (2, 3));
    assert_eq!(line_and_column("ab\n", 99), (2, 1));
}
