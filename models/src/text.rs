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

use nereid_engine::{EngineError, ParamValue, Parameters, TextCodec, TextToken};
use tokenizers::{EncodeInput, Encoding, Tokenizer, TruncationDirection, TruncationParams};

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
