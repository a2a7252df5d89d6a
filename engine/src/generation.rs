//! The contract of text generation models, written once for the backends that serve it and
//! the frontends that drive it: a decoupled model taking its prompt as a BYTES
//! `text_input` and streaming BYTES `text_output` pieces, the last response final.
//!
//! Optional inputs: `max_tokens` (INT32, INT64 or UINT32), `temperature` and `top_p` (FP32
//! or FP64), `seed` (UINT64, INT64 or UINT32), `stop` (BYTES, any number of strings).
//! Optional outputs of the final response: `prompt_tokens`, `completion_tokens` and
//! `cached_tokens` (integers: prompt tokens read from a reused cache) and `finish_reason`
//! (BYTES: `stop` or `length`). The request parameter `chat` says whether `text_input` is a
//! JSON list of `{"role", "content"}` messages for the model's own chat template.

use crate::{DataType, EngineError, ModelSpec, Result, Tensor, TensorSpec};

/// The prompt input.
pub const TEXT_INPUT: &str = "text_input";
/// Optional input: most tokens to generate.
pub const MAX_TOKENS: &str = "max_tokens";
/// Optional input: sampling temperature (0 is greedy).
pub const TEMPERATURE: &str = "temperature";
/// Optional input: nucleus sampling mass.
pub const TOP_P: &str = "top_p";
/// Optional input: sampling seed.
pub const SEED: &str = "seed";
/// Optional input: stop strings.
pub const STOP: &str = "stop";
/// The streamed text output.
pub const TEXT_OUTPUT: &str = "text_output";
/// Optional output: the prompt's token count.
pub const PROMPT_TOKENS: &str = "prompt_tokens";
/// Optional output: tokens generated.
pub const COMPLETION_TOKENS: &str = "completion_tokens";
/// Optional output: leading prompt tokens whose cache was reused rather than computed.
pub const CACHED_TOKENS: &str = "cached_tokens";
/// Optional output: why generation ended, `stop` or `length`.
pub const FINISH_REASON: &str = "finish_reason";
/// Request parameter (bool): `text_input` holds chat messages as JSON.
pub const PARAM_CHAT: &str = "chat";

const BYTES: &[DataType] = &[DataType::Bytes];
const LIMIT: &[DataType] = &[DataType::Int32, DataType::Int64, DataType::Uint32];
const FLOAT: &[DataType] = &[DataType::Fp32, DataType::Fp64];
const SEEDS: &[DataType] = &[DataType::Uint64, DataType::Int64, DataType::Uint32];
const COUNT: &[DataType] = &[
    DataType::Int32,
    DataType::Int64,
    DataType::Uint32,
    DataType::Uint64,
];

/// Every input of the contract with the datatypes it may have.
const INPUTS: [(&str, &[DataType]); 6] = [
    (TEXT_INPUT, BYTES),
    (MAX_TOKENS, LIMIT),
    (TEMPERATURE, FLOAT),
    (TOP_P, FLOAT),
    (SEED, SEEDS),
    (STOP, BYTES),
];

/// Every output of the contract with the datatypes it may have.
const OUTPUTS: [(&str, &[DataType]); 5] = [
    (TEXT_OUTPUT, BYTES),
    (PROMPT_TOKENS, COUNT),
    (COMPLETION_TOKENS, COUNT),
    (CACHED_TOKENS, COUNT),
    (FINISH_REASON, BYTES),
];

/// The contract's tensors as one model declares them (dims without the batch dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationIo {
    /// The prompt (BYTES).
    pub text_input: TensorSpec,
    /// Most tokens to generate.
    pub max_tokens: Option<TensorSpec>,
    /// Sampling temperature.
    pub temperature: Option<TensorSpec>,
    /// Nucleus sampling mass.
    pub top_p: Option<TensorSpec>,
    /// Sampling seed.
    pub seed: Option<TensorSpec>,
    /// Stop strings (BYTES).
    pub stop: Option<TensorSpec>,
    /// The streamed text (BYTES).
    pub text_output: TensorSpec,
    /// The prompt's token count.
    pub prompt_tokens: Option<TensorSpec>,
    /// Tokens generated.
    pub completion_tokens: Option<TensorSpec>,
    /// Prompt tokens read from a reused cache.
    pub cached_tokens: Option<TensorSpec>,
    /// Why generation ended (BYTES).
    pub finish_reason: Option<TensorSpec>,
}

impl GenerationIo {
    /// Reads the contract's tensors from a model's spec: the model must be decoupled,
    /// declare `text_input` and `text_output`, and give every contract tensor it declares a
    /// datatype the contract allows. Tensors of other names are the model's business (see
    /// [`GenerationIo::check_no_others`]). The error names the tensor at fault.
    pub fn from_spec(spec: &ModelSpec) -> Result<Self> {
        let bad = |msg: String| {
            EngineError::invalid(format!(
                "model '{}' is not a text generator: {msg}",
                spec.name()
            ))
        };
        if !spec.decoupled {
            return Err(bad(
                "it must be decoupled (model_transaction_policy { decoupled: true }) to stream \
                 its text"
                    .into(),
            ));
        }
        let pick = |what: &str, name: &str, found: Option<&TensorSpec>, allowed: &[DataType]| {
            match found {
                Some(t) if !allowed.contains(&t.dtype) => Err(bad(format!(
                    "{what} '{name}' is {} but must be {}",
                    t.dtype,
                    list(allowed)
                ))),
                found => Ok(found.cloned()),
            }
        };
        let input = |index: usize| {
            let (name, allowed) = INPUTS[index];
            pick("input", name, spec.input(name), allowed)
        };
        let output = |index: usize| {
            let (name, allowed) = OUTPUTS[index];
            pick("output", name, spec.output(name), allowed)
        };
        let required = |what: &str, name: &str, found: Option<TensorSpec>| {
            found.ok_or_else(|| bad(format!("it declares no {what} '{name}' (TYPE_STRING)")))
        };
        Ok(Self {
            text_input: required("input", TEXT_INPUT, input(0)?)?,
            max_tokens: input(1)?,
            temperature: input(2)?,
            top_p: input(3)?,
            seed: input(4)?,
            stop: input(5)?,
            text_output: required("output", TEXT_OUTPUT, output(0)?)?,
            prompt_tokens: output(1)?,
            completion_tokens: output(2)?,
            cached_tokens: output(3)?,
            finish_reason: output(4)?,
        })
    }

    /// For a backend that serves exactly the contract: fails naming the first input or
    /// output of `spec` that the contract does not define.
    pub fn check_no_others(spec: &ModelSpec) -> Result<()> {
        let stray =
            |what: &str, tensors: &[TensorSpec], known: &[(&str, &[DataType])]| match tensors
                .iter()
                .find(|t| known.iter().all(|(name, _)| *name != t.name))
            {
                Some(t) => Err(EngineError::invalid(format!(
                    "model '{}': unexpected {what} '{}'; a text generator's {what}s are {}",
                    spec.name(),
                    t.name,
                    known
                        .iter()
                        .map(|(name, _)| format!("'{name}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
                None => Ok(()),
            };
        stray("input", &spec.inputs, &INPUTS)?;
        stray("output", &spec.outputs, &OUTPUTS)
    }
}

/// A one-element count output (`prompt_tokens`, ...) in the datatype `spec` declares.
pub fn count_tensor(spec: &TensorSpec, shape: Vec<i64>, count: usize) -> Tensor {
    let name = spec.name.clone();
    match spec.dtype {
        DataType::Int64 => Tensor::from_vec(name, spec.dtype, shape, vec![count as i64]),
        DataType::Uint32 => Tensor::from_vec(name, spec.dtype, shape, vec![count as u32]),
        DataType::Uint64 => Tensor::from_vec(name, spec.dtype, shape, vec![count as u64]),
        // INT32, the only other datatype the contract allows a count.
        _ => Tensor::from_vec(
            name,
            DataType::Int32,
            shape,
            vec![count.min(i32::MAX as usize) as i32],
        ),
    }
}

/// The first value of a count output, whichever integer datatype it has (negative counts
/// read as 0); `None` when it holds no integer.
pub fn read_count(tensor: &Tensor) -> Option<u64> {
    match tensor.dtype {
        DataType::Int32 => first(tensor.to_vec::<i32>()).map(|v| v.max(0) as u64),
        DataType::Int64 => first(tensor.to_vec::<i64>()).map(|v| v.max(0) as u64),
        DataType::Uint32 => first(tensor.to_vec::<u32>()).map(u64::from),
        DataType::Uint64 => first(tensor.to_vec::<u64>()),
        _ => None,
    }
}

fn first<T: Copy>(values: Result<Vec<T>>) -> Option<T> {
    values.ok()?.first().copied()
}

fn list(types: &[DataType]) -> String {
    let names: Vec<&str> = types.iter().map(|d| d.as_str()).collect();
    match names.as_slice() {
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        [] => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATOR: &str = r#"name: "g" max_batch_size: 2
        model_transaction_policy { decoupled: true }
        input [ { name: "text_input" data_type: TYPE_STRING dims: [1] },
                { name: "max_tokens" data_type: TYPE_INT64 dims: [1] optional: true },
                { name: "stop" data_type: TYPE_STRING dims: [-1] optional: true } ]
        output [ { name: "text_output" data_type: TYPE_STRING dims: [1] },
                 { name: "completion_tokens" data_type: TYPE_UINT32 dims: [1] } ]"#;

    fn spec(text: &str) -> ModelSpec {
        ModelSpec::from_config(nereid_proto::parse_model_config(text).expect("parses"))
            .expect("valid")
    }

    fn error(text: &str) -> String {
        GenerationIo::from_spec(&spec(text))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_generator_declares_what_it_has() {
        let io = GenerationIo::from_spec(&spec(GENERATOR)).unwrap();
        assert_eq!(io.text_input.dtype, DataType::Bytes);
        assert_eq!(io.max_tokens.unwrap().dtype, DataType::Int64);
        assert_eq!(io.stop.unwrap().dims, vec![-1]);
        assert_eq!(io.completion_tokens.unwrap().dtype, DataType::Uint32);
        assert!(io.temperature.is_none() && io.seed.is_none() && io.finish_reason.is_none());
        GenerationIo::check_no_others(&spec(GENERATOR)).unwrap();
    }

    #[test]
    fn a_missing_text_input_is_named() {
        let err = error(&GENERATOR.replace("\"text_input\"", "\"prompt\""));
        assert!(err.contains("no input 'text_input'"), "{err}");
        assert!(err.contains("model 'g'"), "{err}");
        let err = error(&GENERATOR.replace("\"text_output\"", "\"text\""));
        assert!(err.contains("no output 'text_output'"), "{err}");
    }

    #[test]
    fn a_wrong_datatype_is_named_with_the_allowed_ones() {
        let err = error(&GENERATOR.replace("TYPE_INT64", "TYPE_FP32"));
        assert!(
            err.contains("input 'max_tokens' is FP32 but must be INT32, INT64 or UINT32"),
            "{err}"
        );
        let text = GENERATOR.replace(
            r#""text_input" data_type: TYPE_STRING"#,
            r#""text_input" data_type: TYPE_INT32"#,
        );
        assert!(error(&text).contains("input 'text_input' is INT32 but must be BYTES"));
        let err = error(&GENERATOR.replace("TYPE_UINT32", "TYPE_FP64"));
        assert!(err.contains("output 'completion_tokens' is FP64"), "{err}");
    }

    #[test]
    fn a_generator_must_be_decoupled() {
        let err = error(&GENERATOR.replace("decoupled: true", "decoupled: false"));
        assert!(err.contains("must be decoupled"), "{err}");
    }

    #[test]
    fn others_are_refused_only_on_request() {
        let text = GENERATOR.replace(
            "output [",
            r#"output [ { name: "logits" data_type: TYPE_FP32 dims: [-1] },"#,
        );
        GenerationIo::from_spec(&spec(&text)).unwrap();
        let err = GenerationIo::check_no_others(&spec(&text))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected output 'logits'"), "{err}");
    }

    #[test]
    fn counts_round_trip_in_every_allowed_datatype() {
        for dtype in COUNT {
            let spec = TensorSpec {
                name: COMPLETION_TOKENS.into(),
                dtype: *dtype,
                dims: vec![1],
                optional: false,
            };
            let t = count_tensor(&spec, vec![1, 1], 42);
            assert_eq!((t.dtype, read_count(&t)), (*dtype, Some(42)));
        }
        let text = Tensor::from_strings(FINISH_REASON, vec![1], ["stop"]);
        assert_eq!(read_count(&text), None);
    }
}
