//! Chat messages, and the conversation as the generator receives it: a JSON list of
//! `{"role", "content"}` with plain-text content, which the model renders with its own
//! chat template (the one its weights were trained with).

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

/// One message of a conversation.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content: text, or a list of parts of which only text parts are understood.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One part of a multi-part message.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A message reduced to what a chat template needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Turn {
    pub role: String,
    pub content: String,
}

/// The conversation as plain (role, text) turns; `developer` is OpenAI's new name for
/// `system`, which is what chat templates know.
pub(crate) fn turns(messages: &[Message]) -> ApiResult<Vec<Turn>> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "developer" => "system",
                r @ ("system" | "user" | "assistant") => r,
                other => {
                    return Err(ApiError::unsupported(
                        &format!("messages[{i}].role"),
                        format!("message role '{other}' is not supported"),
                    ))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::unsupported(
                                    &format!("messages[{i}].content"),
                                    format!("content parts of type '{kind}' are not supported"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(Turn {
                role: role.to_string(),
                content,
            })
        })
        .collect()
}

/// The conversation as the JSON text the generator's `text_input` carries.
pub(crate) fn to_json(messages: &[Message]) -> ApiResult<String> {
    serde_json::to_string(&turns(messages)?)
        .map_err(|e| ApiError::internal(format!("cannot encode messages: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_joined_and_roles_normalised() {
        let messages: Vec<Message> = serde_json::from_str(
            r#"[{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null}]"#,
        )
        .unwrap();
        assert_eq!(
            to_json(&messages).unwrap(),
            r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi there"},{"role":"assistant","content":""}]"#
        );
        let image: Vec<Message> = serde_json::from_str(
            r#"[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]"#,
        )
        .unwrap();
        assert_eq!(
            to_json(&image).unwrap_err().code,
            Some("unsupported_parameter")
        );
        let tool: Vec<Message> =
            serde_json::from_str(r#"[{"role": "tool", "content": "x"}]"#).unwrap();
        assert!(to_json(&tool).is_err());
    }
}
