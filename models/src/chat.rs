//! Chat-style prompts: a messages list rendered through the model's own Jinja chat template
//! (`tokenizer.chat_template` in the GGUF, rendered with minijinja), ending with the
//! assistant's turn opened (`add_generation_prompt`).
//!
//! A request is chat-style when its parameter `chat` is true (then `text_input` is either a
//! JSON messages list or plain text taken as one user message), or, without a `chat`
//! parameter, when `text_input` is a JSON list of `{"role", "content"}` objects (the OpenAI
//! chat route sends exactly that). `chat: false` always means a raw completion prompt.

use anyhow::{anyhow, Result};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    #[serde(deserialize_with = "content_text")]
    pub content: String,
}

/// OpenAI content may be a string or a list of parts; the text parts are joined.
fn content_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
        Null(()),
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        text: Option<String>,
    }
    Ok(match Content::deserialize(d)? {
        Content::Text(t) => t,
        Content::Parts(parts) => parts
            .into_iter()
            .filter_map(|p| p.text)
            .collect::<Vec<_>>()
            .join(""),
        Content::Null(()) => String::new(),
    })
}

/// Parses `text` as a JSON messages list, if it is one.
pub(crate) fn parse_messages(text: &str) -> Option<Vec<Message>> {
    if !text.trim_start().starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<Message>>(text)
        .ok()
        .filter(|m| !m.is_empty())
}

/// The messages a request's text stands for: `Some` when the request is chat-style.
pub(crate) fn messages_for(text: &str, chat: Option<bool>) -> Option<Vec<Message>> {
    match chat {
        Some(false) => None,
        Some(true) => Some(parse_messages(text).unwrap_or_else(|| {
            vec![Message {
                role: "user".into(),
                content: text.into(),
            }]
        })),
        None => parse_messages(text),
    }
}

/// ChatML, for models whose file carries no template.
pub(crate) const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source` (ChatML when `None`); `bos`/`eos` are the texts templates see as
    /// `bos_token`/`eos_token`.
    pub(crate) fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
            .map_err(|e| anyhow!("the chat template does not compile: {e}"))?;
        Ok(Self {
            env,
            bos: bos.into(),
            eos: eos.into(),
        })
    }

    /// The prompt for `messages`, ready for the assistant's answer.
    pub(crate) fn render(&self, messages: &[Message]) -> Result<String> {
        let template = self.env.get_template("chat").expect("added in new");
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos,
                eos_token => &self.eos,
            })
            .map_err(|e| anyhow!("chat template: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// Client text (a JSON messages list, or plain text) through the templates the server
    /// renders: run by `cargo test`, longer by `scripts/fuzz.sh`.
    #[test]
    fn fuzz_chat_template_rendering() {
        let strict = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] | trim }}{% endfor %}";
        let templates: Vec<ChatTemplate> = [Some(SMOLLM2), None, Some(strict)]
            .into_iter()
            .map(|source| ChatTemplate::new(source, "<s>", "</s>").unwrap())
            .collect();
        nereid_fuzz::Target::new("chat_template")
            .seed(br#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi {{ 7*7 }}"}]"#)
            .seed(br#"[{"role":"user","content":"\u00e9\n<|im_end|>"},{"role":"assistant","content":""}]"#)
            .seed(b"plain text, not a list")
            .token(br#"{"role":"user","content":"x"}"#)
            .token(b"{%")
            .token(b"{{")
            .token(b"\\u0000")
            .run(|bytes| {
                let text = String::from_utf8_lossy(bytes);
                let messages = messages_for(&text, Some(true)).expect("chat: always messages");
                // Every template renders every input: no short circuit.
                templates
                    .iter()
                    .filter(|t| t.render(&messages).is_ok())
                    .count()
                    > 0
            });
    }

    #[test]
    fn renders_the_smollm2_template() {
        let t = ChatTemplate::new(Some(SMOLLM2), "<|im_start|>", "<|im_end|>").unwrap();
        let prompt = t.render(&messages_for("Hi", Some(true)).unwrap()).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chat_detection() {
        let json = r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]"#;
        let m = messages_for(json, None).unwrap();
        assert_eq!(
            m[1],
            Message {
                role: "user".into(),
                content: "Hi".into()
            }
        );
        assert!(messages_for(json, Some(false)).is_none());
        assert!(messages_for("[not json", None).is_none());
        assert!(messages_for("plain", None).is_none());
        let plain = ChatTemplate::new(None, "", "").unwrap().render(&m).unwrap();
        assert!(
            plain.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"),
            "{plain}"
        );
        let raising =
            ChatTemplate::new(Some("{{ raise_exception('no system') }}"), "", "").unwrap();
        assert!(raising
            .render(&m)
            .unwrap_err()
            .to_string()
            .contains("no system"));
    }
}
