//! Request fields completions and chat share, their checks, and the sampling options they
//! turn into.

use serde::Deserialize;

use super::OneOrMany;
use crate::error::{ApiError, ApiResult};

/// Most choices one request may ask for (`n`), so one request cannot fill the engine.
pub(crate) const MAX_CHOICES: u64 = 16;

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields common to `/v1/completions` and `/v1/chat/completions`. Unknown fields are
/// ignored, as OpenAI-compatible servers do; known ones this server cannot honour are
/// refused when set to anything but their neutral value.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Common {
    pub model: String,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Common {
    /// Whether to answer with SSE.
    pub(crate) fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// Choices per prompt.
    pub(crate) fn choices(&self) -> ApiResult<u64> {
        match self.n.unwrap_or(1) {
            n @ 1..=MAX_CHOICES => Ok(n),
            n => Err(ApiError::invalid_param(
                "n",
                format!("'n' must be between 1 and {MAX_CHOICES}, not {n}"),
            )),
        }
    }

    /// The sampling options, checked. `max_tokens` may come from chat's
    /// `max_completion_tokens` instead.
    pub(crate) fn sampling(&self, max_tokens: Option<u64>) -> ApiResult<Sampling> {
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid_param(
                    "temperature",
                    format!("'temperature' must be in [0, 2], not {t}"),
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(ApiError::invalid_param(
                    "top_p",
                    format!("'top_p' must be in [0, 1], not {p}"),
                ));
            }
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::unsupported(
                    name,
                    format!("'{name}' is not supported by this server"),
                ));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::unsupported(
                "logit_bias",
                "'logit_bias' is not supported by this server",
            ));
        }
        let stop = self
            .stop
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default();
        if stop.len() > 4 {
            return Err(ApiError::invalid_param(
                "stop",
                "'stop' takes at most 4 sequences",
            ));
        }
        Ok(Sampling {
            max_tokens: max_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        })
    }
}

/// Sampling options common to completions and chat.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sampling {
    pub(crate) max_tokens: Option<u64>,
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
    pub(crate) seed: Option<u64>,
    pub(crate) stop: Vec<String>,
}

impl Sampling {
    /// The sampling options of choice `index` of a request: with several choices, each
    /// gets its own seed (derived from the client's) so they differ yet stay reproducible.
    pub(crate) fn for_choice(&self, index: u64) -> Sampling {
        let mut s = self.clone();
        s.seed = s.seed.map(|seed| seed.wrapping_add(index));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(json: &str) -> Common {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn checks_ranges_and_unsupported_fields() {
        let c = common(r#"{"model":"m","temperature":3}"#);
        assert_eq!(
            c.sampling(None).unwrap_err().param.as_deref(),
            Some("temperature")
        );
        let c = common(r#"{"model":"m","presence_penalty":0.5}"#);
        assert_eq!(
            c.sampling(None).unwrap_err().code,
            Some("unsupported_parameter")
        );
        let c = common(
            r#"{"model":"m","presence_penalty":0,"stop":null,"n":2,"seed":7,"max_tokens":5}"#,
        );
        let s = c.sampling(Some(9)).unwrap();
        assert_eq!(
            (s.max_tokens, s.seed, c.choices().unwrap()),
            (Some(9), Some(7), 2)
        );
        assert_eq!(s.for_choice(1).seed, Some(8));
        let c = common(r#"{"model":"m","stop":"\n"}"#);
        assert_eq!(c.sampling(None).unwrap().stop, vec!["\n".to_string()]);
        assert!(common(r#"{"model":"m","n":0}"#).choices().is_err());
    }
}
