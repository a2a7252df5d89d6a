//! Text in, tokens out, the way each request asks: the per-request options of the text
//! models (`sentence_transformer`, `bert_classifier`) and the tokenizers that honour them.
//!
//! Request parameters (KServe `parameters`, the TEI routes set them from their fields):
//! - `truncate` (bool, default true): false refuses a text longer than the model takes
//!   instead of cutting it;
//! - `truncation_direction` (`right`, the default, or `left`): which end is cut;
//! - `prompt_name` (string): a prompt of the model's `config_sentence_transformers.json`
//!   put before each text (embedders only);
//! - `normalize` (bool): L2-normalise this request's vectors or not, whatever the model's
//!   default (embedders only).

use std::collections::BTreeMap;
use std::path::Path;

use nereid_engine::{
    DataType, EngineError, ExecBatch, InferRequest, ModelSpec, ParamValue, Parameters, Tensor,
    TensorSpec, TextCodec, TextToken,
};
use tokenizers::{EncodeInput, Encoding, Tokenizer, TruncationDirection, TruncationParams};

/// The tensors of a text model's config: one BYTES text input `dims: [1]` (two for
/// pairs), one FP32 output, and optionally an INT32 `[1]` output counting each item's
/// tokens (what `/v1/embeddings` and TEI report).
#[derive(Debug, Clone)]
pub(crate) struct TextIo {
    /// The text input (the first text of a pair).
    pub(crate) text: String,
    /// The second text of a pair model.
    pub(crate) pair: Option<String>,
    /// The FP32 output.
    pub(crate) output: TensorSpec,
    /// The output of every token's final state, FP32 `[-1, hidden_size]` (embedders):
    /// rows padded to the batch's longest text; the token counts say how many are real.
    pub(crate) states: Option<String>,
    /// The token-count output.
    pub(crate) tokens: Option<String>,
    /// Whether requests carry a batch dimension.
    batching: bool,
}

impl TextIo {
    /// Reads and checks the config's tensors for a model of `kind`.
    pub(crate) fn of(spec: &ModelSpec, kind: TextModel) -> Result<Self, String> {
        let (text, pair) = match spec.inputs.as_slice() {
            [text] => (text, None),
            [text, pair] => (text, Some(pair)),
            _ => return Err("needs one BYTES input (text), or two (text and pair)".into()),
        };
        for input in std::iter::once(text).chain(pair) {
            if input.dtype != DataType::Bytes || !(input.dims == [1] || input.dims == [-1]) {
                return Err(format!(
                    "input '{}' must be TYPE_STRING with dims [1]",
                    input.name
                ));
            }
        }
        let (mut scores, mut states, mut tokens) = (None, None, None);
        for t in &spec.outputs {
            let slot = match (t.dtype, t.dims.len()) {
                (DataType::Fp32, 1) => &mut scores,
                (DataType::Fp32, 2) if kind == TextModel::Embedder => &mut states,
                (DataType::Int32, _) if t.dims == [1] => &mut tokens,
                _ => return Err(format!("output '{}': {}", t.name, kind.outputs_message())),
            };
            if slot.replace(t).is_some() {
                return Err(format!("output '{}': {}", t.name, kind.outputs_message()));
            }
        }
        let Some(scores) = scores else {
            return Err(kind.outputs_message());
        };
        if spec.decoupled {
            return Err("cannot be decoupled".into());
        }
        if let (Some(states), Some(_)) = (states, pair) {
            return Err(format!(
                "output '{}' (token states) needs a model of one text",
                states.name
            ));
        }
        Ok(Self {
            text: text.name.clone(),
            pair: pair.map(|p| p.name.clone()),
            output: scores.clone(),
            states: states.map(|t| t.name.clone()),
            tokens: tokens.map(|t| t.name.clone()),
            batching: spec.max_batch_size > 0,
        })
    }

    /// A request's texts (and pairs, when the model takes them and the request has them),
    /// checked: one per batch item, UTF-8, as many pairs as texts.
    pub(crate) fn of_request(&self, request: &InferRequest) -> nereid_engine::Result<Texts> {
        let Some(text) = request.input(&self.text) else {
            return Ok(Texts::default()); // the engine's validation names a missing input
        };
        let items = match text.shape.first() {
            Some(&b) if self.batching => b.max(0) as usize,
            _ => 1,
        };
        let pair = self.pair.as_ref().and_then(|p| request.input(p));
        self.read(text, pair, items)
    }

    /// A batch's texts (and pairs), checked as [`of_request`](Self::of_request) does.
    pub(crate) fn of_batch(&self, batch: &ExecBatch) -> nereid_engine::Result<Texts> {
        let text = batch.require(&self.text)?;
        // An optional pair input may be left out: the batch then holds single texts.
        let pair = self.pair.as_ref().and_then(|p| batch.input(p));
        self.read(text, pair, batch.batch_size)
    }

    fn read(
        &self,
        text: &Tensor,
        pair: Option<&Tensor>,
        items: usize,
    ) -> nereid_engine::Result<Texts> {
        let texts = utf8(text, &self.text)?;
        if texts.len() != items {
            return Err(EngineError::invalid(format!(
                "input '{}' must hold one text per batch item ({} texts for batch {items})",
                self.text,
                texts.len()
            )));
        }
        let pairs = match (pair, &self.pair) {
            (Some(pair), Some(name)) => {
                let pairs = utf8(pair, name)?;
                if pairs.len() != texts.len() {
                    return Err(EngineError::invalid(format!(
                        "input '{name}' holds {} texts but '{}' holds {}: one pair per text",
                        pairs.len(),
                        self.text,
                        texts.len()
                    )));
                }
                Some(pairs)
            }
            _ => None,
        };
        Ok(Texts { texts, pairs })
    }
}

/// Which text model a config is for: what its outputs may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextModel {
    /// Vectors (or pair scores), optionally token states.
    Embedder,
    /// One score per label.
    Classifier,
}

impl TextModel {
    fn outputs_message(self) -> String {
        match self {
            Self::Embedder => {
                "needs one FP32 output of vectors [hidden_size] (or of pair scores [1]), \
                 and optionally an FP32 one of token states [-1, hidden_size] and an INT32 one of \
                 token counts [1]"
                    .into()
            }
            Self::Classifier => "needs one FP32 output of scores [num_labels], and optionally an \
                 INT32 one of token counts [1]"
                .into(),
        }
    }
}

/// The texts of a request or batch, and their pairs.
#[derive(Debug, Default)]
pub(crate) struct Texts {
    pub(crate) texts: Vec<String>,
    pub(crate) pairs: Option<Vec<String>>,
}

/// The elements of a BYTES tensor as text, or an error naming the input and item.
fn utf8(tensor: &Tensor, name: &str) -> nereid_engine::Result<Vec<String>> {
    tensor
        .string_elements()?
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            String::from_utf8(b.to_vec()).map_err(|err| {
                EngineError::invalid(format!("input '{name}': text {i} is not UTF-8: {err}"))
            })
        })
        .collect()
}

/// One request's options, parsed from its parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TextOptions {
    /// Refuse rather than cut a text that is too long.
    pub(crate) strict_length: bool,
    /// Cut from the start rather than the end.
    pub(crate) cut_left: bool,
    /// The prompt to put before each text, by name.
    pub(crate) prompt_name: Option<String>,
    /// Whether to normalise, when the request says.
    pub(crate) normalize: Option<bool>,
}

impl TextOptions {
    /// Reads the options from a request's parameters; a wrongly typed one is an error
    /// naming it. Other parameters (`priority`, `timeout`, ...) are not this module's.
    pub(crate) fn of(parameters: &Parameters) -> Result<Self, EngineError> {
        let mut options = Self::default();
        for (key, value) in parameters {
            match key.as_str() {
                "truncate" => options.strict_length = !boolean(key, value)?,
                "normalize" => options.normalize = Some(boolean(key, value)?),
                "truncation_direction" => {
                    options.cut_left = match string(key, value)?.to_ascii_lowercase().as_str() {
                        "left" => true,
                        "right" => false,
                        other => {
                            return Err(EngineError::invalid(format!(
                            "parameter 'truncation_direction' = '{other}': use 'left' or 'right'"
                        )))
                        }
                    }
                }
                "prompt_name" => options.prompt_name = Some(string(key, value)?.to_string()),
                _ => {}
            }
        }
        Ok(options)
    }
}

fn boolean(key: &str, value: &ParamValue) -> Result<bool, EngineError> {
    value.as_bool().ok_or_else(|| {
        EngineError::invalid(format!("parameter '{key}' must be a bool, not {value:?}"))
    })
}

fn string<'a>(key: &str, value: &'a ParamValue) -> Result<&'a str, EngineError> {
    match value {
        ParamValue::String(s) => Ok(s),
        other => Err(EngineError::invalid(format!(
            "parameter '{key}' must be a string, not {other:?}"
        ))),
    }
}

/// A model's tokenizer three ways: cutting at the right, cutting at the left, and not
/// cutting at all (to tell how long a text really is).
pub(crate) struct TextTokenizer {
    right: Tokenizer,
    left: Tokenizer,
    whole: Tokenizer,
    max_len: usize,
}

impl TextTokenizer {
    /// Wraps `tokenizer` (its padding turned off), cutting texts at `max_len` tokens.
    pub(crate) fn new(mut tokenizer: Tokenizer, max_len: usize) -> Result<Self, String> {
        tokenizer.with_padding(None);
        let mut whole = tokenizer.clone();
        whole
            .with_truncation(None)
            .map_err(|e| format!("tokenizer truncation: {e}"))?;
        let cut = |direction| {
            let mut t = tokenizer.clone();
            t.with_truncation(Some(TruncationParams {
                max_length: max_len,
                direction,
                ..Default::default()
            }))
            .map_err(|e| format!("tokenizer truncation: {e}"))?;
            Ok::<_, String>(t)
        };
        Ok(Self {
            right: cut(TruncationDirection::Right)?,
            left: cut(TruncationDirection::Left)?,
            whole,
            max_len,
        })
    }

    /// Tokenises `input` with special tokens, cut as `options` say.
    pub(crate) fn encode<'s>(
        &self,
        input: impl Into<EncodeInput<'s>>,
        options: &TextOptions,
    ) -> anyhow::Result<Encoding> {
        let tokenizer = if options.cut_left {
            &self.left
        } else {
            &self.right
        };
        tokenizer
            .encode(input, true)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))
    }

    /// Before a request is queued: when it asks not to cut, fails it if `input` is longer
    /// than the model takes (`what` names the input in the message). Texts too short to
    /// reach the limit (a token is at least one byte) are not tokenised twice.
    pub(crate) fn check_length<'s>(
        &self,
        input: impl Into<EncodeInput<'s>>,
        bytes: usize,
        options: &TextOptions,
        what: &str,
    ) -> Result<(), EngineError> {
        const SPECIAL_TOKENS: usize = 4;
        if !options.strict_length || bytes + SPECIAL_TOKENS <= self.max_len {
            return Ok(());
        }
        let tokens = self
            .whole
            .encode(input, true)
            .map_err(|e| EngineError::invalid(format!("{what}: tokenizer: {e}")))?
            .len();
        if tokens > self.max_len {
            return Err(EngineError::invalid(format!(
                "{what} must have at most {} tokens (given: {tokens}); send truncate: true to cut it",
                self.max_len
            )));
        }
        Ok(())
    }
}

impl TextCodec for TextTokenizer {
    /// Never cuts: the tokens of the whole text, with byte offsets.
    fn tokenize(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> nereid_engine::Result<Vec<TextToken>> {
        let encoding = self
            .whole
            .encode(text, add_special_tokens)
            .map_err(|e| EngineError::invalid(format!("tokenizer: {e}")))?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .zip(encoding.get_offsets())
            .zip(encoding.get_special_tokens_mask())
            .map(|(((&id, token), &(start, stop)), &special)| {
                let special = special == 1;
                let slice = (!special).then(|| text.get(start..stop)).flatten();
                TextToken {
                    id,
                    text: slice.unwrap_or(token).to_string(),
                    special,
                    span: slice.map(|_| (start, stop)),
                }
            })
            .collect())
    }

    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> nereid_engine::Result<String> {
        self.whole
            .decode(ids, skip_special_tokens)
            .map_err(|e| EngineError::invalid(format!("tokenizer: {e}")))
    }
}

/// The prompts of a sentence-transformers model (`config_sentence_transformers.json`):
/// text put before each input, by name, and the one used when a request names none.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub(crate) struct Prompts {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

/// The file that holds them.
pub(crate) const PROMPTS_FILE: &str = "config_sentence_transformers.json";

impl Prompts {
    /// Reads them from `dir` (none when the file is absent).
    pub(crate) fn from_dir(dir: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(dir.join(PROMPTS_FILE)) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{PROMPTS_FILE}: {e}")),
            Err(_) => Ok(Self::default()),
        }
    }

    /// The prompt text for `options` (its own, else the default), or an error naming the
    /// prompts there are.
    pub(crate) fn text(&self, options: &TextOptions) -> Result<&str, EngineError> {
        let Some(name) = options
            .prompt_name
            .as_deref()
            .or(self.default_prompt_name.as_deref())
        else {
            return Ok("");
        };
        self.prompts.get(name).map(String::as_str).ok_or_else(|| {
            EngineError::invalid(format!(
                "parameter 'prompt_name' = '{name}' is not one of this model's prompts {:?}",
                self.prompts.keys().collect::<Vec<_>>()
            ))
        })
    }

    /// The prompts by name, for tests and logs.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.prompts.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, ParamValue)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn options_are_read_from_parameters_and_bad_ones_are_named() {
        let o = TextOptions::of(&params(&[
            ("truncate", ParamValue::Bool(false)),
            ("truncation_direction", ParamValue::String("Left".into())),
            ("prompt_name", ParamValue::String("query".into())),
            ("normalize", ParamValue::Bool(false)),
            ("priority", ParamValue::Uint(1)),
        ]))
        .unwrap();
        assert_eq!(
            o,
            TextOptions {
                strict_length: true,
                cut_left: true,
                prompt_name: Some("query".into()),
                normalize: Some(false),
            }
        );
        assert_eq!(
            TextOptions::of(&Parameters::new()).unwrap(),
            TextOptions::default()
        );
        for (key, value, said) in [
            (
                "truncate",
                ParamValue::String("no".into()),
                "'truncate' must be a bool",
            ),
            (
                "truncation_direction",
                ParamValue::String("up".into()),
                "use 'left' or 'right'",
            ),
            (
                "prompt_name",
                ParamValue::Int(3),
                "'prompt_name' must be a string",
            ),
        ] {
            let e = TextOptions::of(&params(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(said), "{e}");
        }
    }

    #[test]
    fn prompts_resolve_by_name_or_default() {
        let p: Prompts = serde_json::from_str(
            r#"{"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"}"#,
        )
        .unwrap();
        let named = |n: Option<&str>| TextOptions {
            prompt_name: n.map(String::from),
            ..Default::default()
        };
        assert_eq!(p.text(&named(Some("query"))).unwrap(), "query: ");
        assert_eq!(p.text(&named(None)).unwrap(), "passage: ");
        let e = p.text(&named(Some("doc"))).unwrap_err().to_string();
        assert!(e.contains("'doc'") && e.contains("\"passage\""), "{e}");
        assert_eq!(Prompts::default().text(&named(None)).unwrap(), "");
    }
}
