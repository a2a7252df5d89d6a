//! A generation request read from a sequence's inputs and parameters: the prompt and
//! sampling settings, from input tensors first, else from request parameters of the same
//! names.
//!
//! Inputs are those of the engine's generation contract ([`nereid_engine::generation`]), in
//! any datatype it allows: `text_input` (required), `max_tokens`, `temperature`, `top_p`,
//! `seed`, `stop` (any number of strings). Parameters: `chat` (bool: see [`crate::chat`]),
//! and `max_tokens`, `temperature`, `top_p`, `seed`, `stop` (string) when the matching input
//! is absent.

use nereid_engine::generation::{
    MAX_TOKENS, PARAM_CHAT, SEED, STOP, TEMPERATURE, TEXT_INPUT, TOP_P,
};
use nereid_engine::{DataType, EngineError, ParamValue, Parameters, Result, Tensor};

/// What one generation asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The prompt text (or JSON messages).
    pub text: String,
    /// Whether the request said it is (or is not) chat-style.
    pub chat: Option<bool>,
    /// Most tokens to generate.
    pub max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass; 1 keeps every token.
    pub top_p: f32,
    /// Random seed.
    pub seed: u64,
    /// Stop strings.
    pub stop: Vec<String>,
}

fn invalid(msg: String) -> EngineError {
    EngineError::invalid(msg)
}

fn one<T: bytemuck::Pod>(t: &Tensor) -> Result<T> {
    let values = t.to_vec::<T>()?;
    match values.as_slice() {
        [v] => Ok(*v),
        _ => Err(invalid(format!(
            "input '{}' must hold one value, got {}",
            t.name,
            values.len()
        ))),
    }
}

/// The one integer of an integer input, whichever integer datatype it has.
fn integer(t: &Tensor) -> Result<i64> {
    Ok(match t.dtype {
        DataType::Int32 => one::<i32>(t)?.into(),
        DataType::Int64 => one::<i64>(t)?,
        DataType::Uint32 => one::<u32>(t)?.into(),
        DataType::Uint64 => i64::try_from(one::<u64>(t)?)
            .map_err(|_| invalid(format!("input '{}' is too large", t.name)))?,
        other => {
            return Err(invalid(format!(
                "input '{}' is {other}, not an integer",
                t.name
            )))
        }
    })
}

/// The one number of a floating-point input.
fn float(t: &Tensor) -> Result<f64> {
    match t.dtype {
        DataType::Fp32 => Ok(one::<f32>(t)?.into()),
        DataType::Fp64 => one::<f64>(t),
        other => Err(invalid(format!(
            "input '{}' is {other}, not FP32 or FP64",
            t.name
        ))),
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| invalid(format!("{what} is not UTF-8: {e}")))
}

fn param_f64(params: &Parameters, key: &str) -> Result<Option<f64>> {
    match params.get(key) {
        None => Ok(None),
        Some(ParamValue::Double(v)) => Ok(Some(*v)),
        Some(ParamValue::Int(v)) => Ok(Some(*v as f64)),
        Some(ParamValue::Uint(v)) => Ok(Some(*v as f64)),
        Some(ParamValue::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("parameter '{key}' = '{s}' is not a number"))),
        Some(other) => Err(invalid(format!(
            "parameter '{key}' must be a number, got {other:?}"
        ))),
    }
}

impl GenerateRequest {
    /// Reads the request; `seed_default` seeds requests that name no seed.
    pub fn parse(inputs: &[Tensor], params: &Parameters, seed_default: u64) -> Result<Self> {
        let input = |name: &str| inputs.iter().find(|t| t.name == name);
        let text_tensor =
            input(TEXT_INPUT).ok_or_else(|| invalid(format!("missing input '{TEXT_INPUT}'")))?;
        let texts = text_tensor.string_elements()?;
        let text = match texts.as_slice() {
            [t] => utf8(t, &format!("input '{TEXT_INPUT}'"))?,
            _ => {
                return Err(invalid(format!(
                    "input '{TEXT_INPUT}' must hold one prompt per request, got {}",
                    texts.len()
                )))
            }
        };
        let chat = match params.get(PARAM_CHAT) {
            None => None,
            Some(ParamValue::Bool(b)) => Some(*b),
            Some(ParamValue::String(s)) if s == "true" || s == "false" => Some(s == "true"),
            Some(ParamValue::Int(i)) => Some(*i != 0),
            Some(other) => {
                return Err(invalid(format!(
                    "parameter 'chat' must be a bool, got {other:?}"
                )))
            }
        };
        let max_tokens = match input(MAX_TOKENS) {
            Some(t) => Some(integer(t)?),
            None => param_f64(params, MAX_TOKENS)?.map(|v| v as i64),
        };
        if max_tokens.is_some_and(|m| m < 0) {
            return Err(invalid("max_tokens must not be negative".into()));
        }
        let temperature = match input(TEMPERATURE) {
            Some(t) => Some(float(t)?),
            None => param_f64(params, TEMPERATURE)?,
        }
        .unwrap_or(0.0);
        let top_p = match input(TOP_P) {
            Some(t) => Some(float(t)?),
            None => param_f64(params, TOP_P)?,
        }
        .unwrap_or(1.0);
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(invalid(format!(
                "temperature must be >= 0, got {temperature}"
            )));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(invalid(format!("top_p must be in (0, 1], got {top_p}")));
        }
        let seed = match input(SEED) {
            Some(t) => match t.dtype {
                DataType::Uint64 => one::<u64>(t)?,
                _ => integer(t)? as u64,
            },
            None => match params.get(SEED) {
                Some(p) => p.as_u64().ok_or_else(|| {
                    invalid("parameter 'seed' must be a non-negative integer".into())
                })?,
                None => seed_default,
            },
        };
        let stop = match input(STOP) {
            Some(t) => t
                .string_elements()?
                .iter()
                .map(|s| utf8(s, &format!("input '{STOP}'")))
                .collect::<Result<Vec<_>>>()?,
            None => match params.get(STOP) {
                Some(ParamValue::String(s)) => vec![s.clone()],
                None => Vec::new(),
                Some(other) => {
                    return Err(invalid(format!(
                        "parameter 'stop' must be a string, got {other:?}"
                    )))
                }
            },
        };
        Ok(Self {
            text,
            chat,
            max_tokens: max_tokens.map(|m| m as usize),
            temperature: temperature as f32,
            top_p: top_p as f32,
            seed,
            stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Tensor {
        Tensor::from_strings("text_input", vec![1, 1], [s])
    }

    #[test]
    fn inputs_then_parameters_then_defaults() {
        let r = GenerateRequest::parse(&[text("hi")], &Parameters::new(), 9).unwrap();
        assert_eq!(
            (
                r.text.as_str(),
                r.temperature,
                r.top_p,
                r.seed,
                r.max_tokens
            ),
            ("hi", 0.0, 1.0, 9, None)
        );
        let inputs = vec![
            text("hi"),
            Tensor::from_vec("max_tokens", DataType::Int32, vec![1, 1], vec![5i32]),
            Tensor::from_vec("temperature", DataType::Fp32, vec![1, 1], vec![0.5f32]),
            Tensor::from_vec("seed", DataType::Uint64, vec![1, 1], vec![42u64]),
            Tensor::from_strings("stop", vec![1, 2], ["\n", "END"]),
        ];
        let mut params = Parameters::new();
        params.insert("chat".into(), ParamValue::Bool(true));
        params.insert("top_p".into(), ParamValue::Double(0.9));
        params.insert("max_tokens".into(), ParamValue::Int(100));
        let r = GenerateRequest::parse(&inputs, &params, 0).unwrap();
        assert_eq!(r.max_tokens, Some(5), "the input wins over the parameter");
        assert_eq!(
            (r.temperature, r.top_p, r.seed, r.chat),
            (0.5, 0.9, 42, Some(true))
        );
        assert_eq!(r.stop, vec!["\n".to_string(), "END".to_string()]);
    }

    #[test]
    fn every_datatype_of_the_contract_is_read() {
        let inputs = vec![
            text("hi"),
            Tensor::from_vec("max_tokens", DataType::Int64, vec![1, 1], vec![7i64]),
            Tensor::from_vec("temperature", DataType::Fp64, vec![1, 1], vec![0.25f64]),
            Tensor::from_vec("top_p", DataType::Fp64, vec![1, 1], vec![0.5f64]),
            Tensor::from_vec("seed", DataType::Uint32, vec![1, 1], vec![3u32]),
        ];
        let r = GenerateRequest::parse(&inputs, &Parameters::new(), 0).unwrap();
        assert_eq!(
            (r.max_tokens, r.temperature, r.top_p, r.seed),
            (Some(7), 0.25, 0.5, 3)
        );
        let unsigned = Tensor::from_vec("max_tokens", DataType::Uint32, vec![1], vec![9u32]);
        let r = GenerateRequest::parse(&[text("hi"), unsigned], &Parameters::new(), 0).unwrap();
        assert_eq!(r.max_tokens, Some(9));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let err = |inputs: Vec<Tensor>, params: Parameters| {
            GenerateRequest::parse(&inputs, &params, 0)
                .unwrap_err()
                .to_string()
        };
        assert!(err(vec![], Parameters::new()).contains("text_input"));
        let two = Tensor::from_strings("text_input", vec![2, 1], ["a", "b"]);
        assert!(err(vec![two], Parameters::new()).contains("one prompt"));
        let mut p = Parameters::new();
        p.insert("top_p".into(), ParamValue::Double(0.0));
        assert!(err(vec![text("x")], p).contains("top_p"));
        let mut p = Parameters::new();
        p.insert("temperature".into(), ParamValue::String("hot".into()));
        assert!(err(vec![text("x")], p).contains("temperature"));
        let latin1 = Tensor::from_strings("text_input", vec![1, 1], [b"caf\xe9".as_slice()]);
        assert!(err(vec![latin1], Parameters::new()).contains("input 'text_input' is not UTF-8"));
        let stop = Tensor::from_strings("stop", vec![1, 1], [b"\xff".as_slice()]);
        assert!(err(vec![text("x"), stop], Parameters::new()).contains("input 'stop' is not UTF-8"));
    }
}
