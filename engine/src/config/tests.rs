use super::*;
use nereid_proto::parse_model_config;

fn spec(text: &str) -> Result<ModelSpec> {
    ModelSpec::from_config(parse_model_config(text).expect("parses"))
}

const SIMPLE: &str = r#"
    name: "simple"
    backend: "add_sub"
    max_batch_size: 8
    input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
            { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
    output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
             { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
    dynamic_batching { preferred_batch_size: [ 8, 4 ] max_queue_delay_microseconds: 100 }
    instance_group [ { count: 2 kind: KIND_CPU } ]
"#;

#[test]
fn live_sequences_default_to_the_batch_size_for_decoupled_models() {
    let decoupled = |extra: &str| {
        spec(&format!(
            r#"name: "d" max_batch_size: 8 model_transaction_policy {{ decoupled: true }}
            output {{ name: "Y" data_type: TYPE_FP32 dims: [1] }} {extra}"#
        ))
        .unwrap()
        .max_sequences
    };
    assert_eq!(decoupled(""), 8);
    let sixteen = r#"parameters { key: "max_sequences" value: { string_value: " 16 " } }"#;
    assert_eq!(decoupled(sixteen), 16);
    assert_eq!(spec(SIMPLE).unwrap().max_sequences, 1);
    let unbatched = spec(
        r#"name: "r" model_transaction_policy { decoupled: true }
        output { name: "Y" data_type: TYPE_FP32 dims: [1] }"#,
    )
    .unwrap();
    assert_eq!(unbatched.max_sequences, 1);
}

#[test]
fn triton_simple_example_validates() {
    let s = spec(SIMPLE).unwrap();
    assert_eq!(s.max_batch_size, 8);
    assert_eq!(s.inputs[1].dtype, DataType::Int32);
    assert_eq!(s.inputs[0].dims, vec![16]);
    let b = s.batching.unwrap();
    assert_eq!(b.preferred_batch_sizes, vec![4, 8]);
    assert_eq!(b.max_queue_delay, Duration::from_micros(100));
    assert_eq!(s.instances, vec![Device::Cpu, Device::Cpu]);
    assert_eq!(s.config.instance_group[0].name, "simple_0");
    assert_eq!(s.levels.len(), 1);
    assert_eq!(s.levels[0].max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
}

#[test]
fn queue_policies_and_priorities() {
    let s = spec(
        r#"name: "p" max_batch_size: 4
        input { name: "X" data_type: TYPE_FP32 dims: [-1] }
        output { name: "Y" data_type: TYPE_FP32 dims: [-1] }
        dynamic_batching {
          priority_levels: 2 default_priority_level: 2
          default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 1000
                                 allow_timeout_override: true max_queue_size: 4 }
          priority_queue_policy { key: 1 value: { max_queue_size: 2 } }
        }
        instance_group { kind: KIND_GPU gpus: [0, 1] count: 2 }"#,
    )
    .unwrap();
    assert_eq!(s.default_priority, 2);
    assert_eq!(s.levels[1].timeout_action, TimeoutPolicy::Delay);
    assert_eq!(s.levels[1].default_timeout, Some(Duration::from_millis(1)));
    assert_eq!(s.levels[0].max_queue_size, 2);
    assert_eq!(s.levels[0].timeout_action, TimeoutPolicy::Reject);
    assert_eq!(
        s.instances,
        vec![
            Device::Gpu(0),
            Device::Gpu(0),
            Device::Gpu(1),
            Device::Gpu(1)
        ]
    );
}

#[test]
fn broken_configs_name_the_problem() {
    let cases = [
        (
            r#"name: "m" max_batch_size: 4 output { name: "Y" data_type: TYPE_FP32 dims: [1] }
            dynamic_batching { preferred_batch_size: [8] }"#,
            "preferred_batch_size 8",
        ),
        (
            r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [-2] }"#,
            "invalid dimension -2",
        ),
        (
            r#"name: "m" output { name: "Y" dims: [1] }"#,
            "'Y': data_type 0",
        ),
        (
            r#"name: "m" input { name: "X" data_type: TYPE_FP32 dims: [1] }
            input { name: "X" data_type: TYPE_FP32 dims: [1] }
            output { name: "Y" data_type: TYPE_FP32 dims: [1] }"#,
            "'X': declared twice",
        ),
        (r#"name: "m""#, "declares no output"),
        (
            r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [1] }
            dynamic_batching { priority_levels: 2 default_priority_level: 3 }"#,
            "default_priority_level 3",
        ),
        (
            r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [1] }
            parameters { key: "max_sequences" value: { string_value: "4" } }"#,
            "'max_sequences' applies to decoupled models only",
        ),
        (
            r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [1] }
            model_transaction_policy { decoupled: true }
            parameters { key: "max_sequences" value: { string_value: "0" } }"#,
            "'max_sequences' = '0' is not a positive integer",
        ),
        (
            r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [1] }
            parameters { key: "execution_timeout_ms" value: { string_value: "soon" } }"#,
            "'execution_timeout_ms' = 'soon' is not a positive number of milliseconds",
        ),
        (
            r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [1] }
            parameters { key: "execution_timeout_ms" value: { string_value: "0" } }"#,
            "'execution_timeout_ms' = '0'",
        ),
        (
            r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [1] }
            model_transaction_policy { decoupled: true }
            parameters { key: "execution_timeout_ms" value: { string_value: "100" } }"#,
            "'execution_timeout_ms' applies to models that are not decoupled",
        ),
        (
            r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [1] }
            instance_group [ { count: 2147483647 kind: KIND_GPU gpus: [ 0, 1 ] } ]"#,
            "at most 1024",
        ),
    ];
    let timed = spec(
        r#"name: "m" output { name: "Y" data_type: TYPE_FP32 dims: [1] }
        parameters { key: "execution_timeout_ms" value: { string_value: " 250 " } }"#,
    )
    .unwrap();
    assert_eq!(timed.execution_timeout, Some(Duration::from_millis(250)));
    for (text, needle) in cases {
        let err = spec(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        assert!(err.contains("'m'"), "{err}");
    }
}

fn sequence_model(batching: &str) -> String {
    format!(
        r#"name: "s" backend: "sequence" max_batch_size: 4
        input [ {{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
        output [ {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
        instance_group [ {{ count: 3 kind: KIND_CPU }} ]
        sequence_batching {{ {batching} }}"#
    )
}

#[test]
fn sequence_batching_reads_strategies_controls_and_state() {
    let direct = spec(&sequence_model(
        r#"direct { max_queue_delay_microseconds: 700 minimum_slot_utilization: 0.5 }
        control_input [
          { name: "S" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
          { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
        ]"#,
    ))
    .unwrap();
    let seq = direct.sequence.as_ref().unwrap();
    assert_eq!(seq.strategy, SequenceStrategy::Direct);
    assert_eq!(seq.max_live, 12, "max_batch_size sequences per instance");
    assert_eq!(seq.max_idle, DEFAULT_SEQUENCE_IDLE);
    let start = seq.control(ControlKind::Start).unwrap();
    assert_eq!((start.input.as_str(), start.dtype), ("S", DataType::Fp32));
    assert_eq!(
        start.false_true.as_ref().unwrap()[1].as_ref(),
        1.0f32.to_le_bytes()
    );
    assert_eq!(
        seq.control(ControlKind::CorrelationId).unwrap().dtype,
        DataType::Bytes
    );
    let batching = direct.batching.unwrap();
    assert_eq!(batching.preferred_batch_sizes, vec![2]);
    assert_eq!(batching.max_queue_delay, Duration::from_micros(700));

    let oldest = spec(&sequence_model(
        r#"max_sequence_idle_microseconds: 2500
        oldest { max_candidate_sequences: 9 preferred_batch_size: [ 4, 2 ] preserve_ordering: true }
        state [ { input_name: "AI" output_name: "AO" data_type: TYPE_INT64 dims: [ 2 ] } ]"#,
    ))
    .unwrap();
    let seq = oldest.sequence.as_ref().unwrap();
    assert_eq!((seq.strategy, seq.max_live), (SequenceStrategy::Oldest, 9));
    assert_eq!(seq.max_idle, Duration::from_micros(2500));
    assert_eq!(seq.states[0].dims, vec![2]);
    assert!(seq.fills_input("AI") && !seq.fills_input("INPUT"));
    let batching = oldest.batching.unwrap();
    assert_eq!(batching.preferred_batch_sizes, vec![2, 4]);
    assert!(batching.preserve_ordering);
}

#[test]
fn bad_sequence_batching_is_refused_naming_the_field() {
    let refused = |batching: &str| spec(&sequence_model(batching)).unwrap_err().to_string();
    let start = r#"{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }"#;
    for (batching, says) in [
        (
            "oldest { max_candidate_sequences: 0 }".to_string(),
            "max_candidate_sequences must be at least 1",
        ),
        (
            format!(r#"control_input [ {{ name: "INPUT" control [ {start} ] }} ]"#),
            "'INPUT' is filled by the server",
        ),
        (
            format!(
                r#"control_input [ {{ name: "A" control [ {start} ] }}, {{ name: "B" control [ {start} ] }} ]"#
            ),
            "a second control of kind Start",
        ),
        (
            r#"control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 1 ] } ] } ]"#
                .to_string(),
            "needs two values",
        ),
        (
            r#"control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] } ]"#
                .to_string(),
            "CONTROL_SEQUENCE_CORRID needs data_type",
        ),
        (
            r#"state [ { input_name: "AI" output_name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]"#
                .to_string(),
            "output 'OUTPUT' is kept by the server",
        ),
        (
            r#"state [ { input_name: "AI" output_name: "AO" data_type: TYPE_INT32 dims: [ -1 ] } ]"#
                .to_string(),
            "must all be fixed",
        ),
        (
            "iterative_sequence: true".to_string(),
            "sequence_batching.iterative_sequence",
        ),
        (
            "direct { minimum_slot_utilization: 1.5 }".to_string(),
            "minimum_slot_utilization 1.5 is outside",
        ),
    ] {
        let error = refused(&batching);
        assert!(error.contains(says), "{batching}: {error}");
    }
    let decoupled = sequence_model("").replace(
        "max_batch_size: 4",
        "max_batch_size: 4 model_transaction_policy { decoupled: true }",
    );
    assert!(spec(&decoupled)
        .unwrap_err()
        .to_string()
        .contains("'sequence_batching' is not supported for decoupled models"));
}
