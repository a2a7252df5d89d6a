//! Configs of the built-in demo models, and a writer for repositories made of them (the
//! server's default repository, and every test's).

use std::path::Path;

/// Triton's add_sub `simple` example.
pub const SIMPLE: &str = r#"name: "simple"
backend: "add_sub"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// FP32 identity over a variable-length vector.
pub const IDENTITY_FP32: &str = r#"name: "identity_fp32"
backend: "identity"
max_batch_size: 64
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// Decoupled model after Triton's `repeat_int32`: one response per element of IN.
pub const REPEAT_INT32: &str = r#"name: "repeat_int32"
backend: "repeat"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] optional: true },
  { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] optional: true }
]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// Triton's `simple_string`: `simple` over BYTES elements that are integers written in
/// UTF-8, answering with their sums and differences as text.
pub const SIMPLE_STRING: &str = r#"name: "simple_string"
backend: "add_sub"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_STRING dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_STRING dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_STRING dims: [ 16 ] }
]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// Triton's `simple_int8`: `simple` over INT8 (wrapping, as the C++ example does).
pub const SIMPLE_INT8: &str = r#"name: "simple_int8"
backend: "add_sub"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT8 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT8 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT8 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT8 dims: [ 16 ] }
]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// Triton's `simple_identity`: BYTES in, the same BYTES out.
pub const SIMPLE_IDENTITY: &str = r#"name: "simple_identity"
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// Triton's `simple_sequence`: OUTPUT = INPUT, plus 1 on a sequence's first request
/// (direct strategy, START and READY controls).
pub const SIMPLE_SEQUENCE: &str = r#"name: "simple_sequence"
backend: "sequence"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// Triton's `simple_dyna_sequence`: `simple_sequence` plus the correlation id on the last
/// request (oldest strategy, START, END, READY and a UINT64 CORRID).
pub const SIMPLE_DYNA_SEQUENCE: &str = r#"name: "simple_dyna_sequence"
backend: "sequence"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 10000000
  oldest { max_candidate_sequences: 1024 max_queue_delay_microseconds: 10000 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"#;

/// Triton's `simple_string_dyna_sequence`: the running sum of a sequence's inputs (kept
/// in implicit state), plus the correlation id (a string holding an integer) on the last.
pub const SIMPLE_STRING_DYNA_SEQUENCE: &str = r#"name: "simple_string_dyna_sequence"
backend: "accumulate"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 10000000
  oldest { max_candidate_sequences: 1024 max_queue_delay_microseconds: 10000 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
  ]
  state [
    {
      input_name: "ACCUMULATOR_IN"
      output_name: "ACCUMULATOR_OUT"
      data_type: TYPE_INT32
      dims: [ 1 ]
      initial_state { name: "zero" data_type: TYPE_INT32 dims: [ 1 ] zero_data: true }
    }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// An ensemble over `simple`: step 1 gives SUM and DIFF of the inputs; steps 2 and 3 both
/// wait on it and then run at once, giving OUTPUT0 = 2*INPUT0, OUTPUT1 = 2*INPUT1,
/// OUTPUT2 = 2*INPUT0 and OUTPUT3 = -2*INPUT1. Listed out of order: the graph decides.
pub const ENSEMBLE_ADD_SUB: &str = r#"name: "ensemble_add_sub"
platform: "ensemble"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT2" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT3" data_type: TYPE_INT32 dims: [ 16 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "simple"
      model_version: -1
      input_map { key: "INPUT0" value: "SUM" }
      input_map { key: "INPUT1" value: "DIFF" }
      output_map { key: "OUTPUT0" value: "OUTPUT0" }
      output_map { key: "OUTPUT1" value: "OUTPUT1" }
    },
    {
      model_name: "simple"
      model_version: -1
      input_map { key: "INPUT0" value: "DIFF" }
      input_map { key: "INPUT1" value: "SUM" }
      output_map { key: "OUTPUT0" value: "OUTPUT2" }
      output_map { key: "OUTPUT1" value: "OUTPUT3" }
    },
    {
      model_name: "simple"
      model_version: -1
      input_map { key: "INPUT0" value: "INPUT0" }
      input_map { key: "INPUT1" value: "INPUT1" }
      output_map { key: "OUTPUT0" value: "SUM" }
      output_map { key: "OUTPUT1" value: "DIFF" }
    }
  ]
}
"#;

/// `sleep` with one instance (not a demo model: tests add it to fill a queue).
pub const SLEEP: &str = r#"name: "sleep"
backend: "sleep"
max_batch_size: 0
input [ { name: "MS" data_type: TYPE_UINT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_UINT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"#;

/// The built-in demo models as (name, config.pbtxt text).
pub const BUILTIN_MODELS: [(&str, &str); 10] = [
    ("simple", SIMPLE),
    ("identity_fp32", IDENTITY_FP32),
    ("repeat_int32", REPEAT_INT32),
    ("simple_string", SIMPLE_STRING),
    ("simple_int8", SIMPLE_INT8),
    ("simple_identity", SIMPLE_IDENTITY),
    ("simple_sequence", SIMPLE_SEQUENCE),
    ("simple_dyna_sequence", SIMPLE_DYNA_SEQUENCE),
    ("simple_string_dyna_sequence", SIMPLE_STRING_DYNA_SEQUENCE),
    ("ensemble_add_sub", ENSEMBLE_ADD_SUB),
];

/// Writes `<root>/<name>/config.pbtxt` and an empty version folder `<root>/<name>/1` for
/// each model, replacing configs already there.
pub fn write_repository<'a>(
    root: &Path,
    models: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> std::io::Result<()> {
    for (name, config) in models {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("1"))?;
        let path = dir.join(crate::CONFIG_FILE);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(config) {
            std::fs::write(path, config)?;
        }
    }
    Ok(())
}
