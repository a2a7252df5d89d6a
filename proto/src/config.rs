//! Triton model configurations: `config.pbtxt` (protobuf text format) and the
//! JSON form of Triton's REST config and repository-load APIs.

use miette::Diagnostic;
use prost_reflect::{
    text_format::ParseError, DeserializeOptions, DynamicMessage, MessageDescriptor,
    SerializeOptions,
};

use crate::descriptor::{descriptor_pool, MODEL_CONFIG_MESSAGE};
use crate::inference::ModelConfig;

mod fields;
mod pbtxt;

pub use fields::{model_config_field_paths, model_config_set_fields};

/// Why a model configuration (text or JSON) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigTextError {
    /// The `config.pbtxt` text is not a valid `inference.ModelConfig` in
    /// protobuf text format: a syntax error, an unknown field, an unknown
    /// enum value, a value out of range, a field set twice, ...
    #[error("invalid model config at line {line}, column {column}: {message}")]
    Text {
        /// 1-based line of the offending token (the last line when the input
        /// ended too early).
        line: usize,
        /// 1-based column, in characters, of the offending token.
        column: usize,
        /// What was wrong, as described by the text-format parser.
        message: String,
    },
    /// The JSON value is not a valid `inference.ModelConfig` in the protobuf
    /// JSON mapping (unknown field, wrong type, unknown enum name, ...).
    #[error("invalid model config JSON: {message}")]
    Json {
        /// What was wrong, as described by the JSON decoder.
        message: String,
    },
    /// The configuration could not be converted to or from the generated
    /// [`ModelConfig`] type (not expected: both come from the same schema).
    #[error("model config does not match the compiled schema: {0}")]
    Transcode(#[from] prost::DecodeError),
}

impl ConfigTextError {
    /// Builds a [`ConfigTextError::Text`] locating `err`, raised while
    /// parsing `parsed`, inside the original `text`.
    fn from_parse_error(err: &ParseError, parsed: &pbtxt::Normalized, text: &str) -> Self {
        let offset = err
            .labels()
            .and_then(|mut labels| labels.next())
            .map_or(parsed.text.len(), |label| label.offset());
        let offset = offset.min(parsed.text.len());
        let (line, column) = line_and_column(text, parsed.original_offset(offset));
        let mut message = match pbtxt::field_of_value(&parsed.text, offset) {
            Some(field) => format!("field '{field}': {err}"),
            None => err.to_string(),
        };
        if let Some(help) = err.help() {
            message.push_str(&format!(" ({help})"));
        }
        ConfigTextError::Text {
            line,
            column,
            message,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The `inference.ModelConfig` message descriptor.
fn model_config_descriptor() -> MessageDescriptor {
    descriptor_pool()
        .get_message_by_name(MODEL_CONFIG_MESSAGE)
        .expect("inference.ModelConfig is in the embedded descriptor set")
}

/// Parses a Triton `config.pbtxt` (protobuf text format of
/// `inference.ModelConfig`).
///
/// Accepts what Triton's (protobuf C++) text parser accepts for this
/// schema: `#` comments, `field: value`, `field { ... }`, message lists with
/// or without a colon (`input [ {...}, {...} ]`), scalar lists such as
/// `dims: [ 16, -1 ]`, enum values by name, and map entries written as
/// `parameters { key: "k" value: { string_value: "v" } }`. (It is slightly
/// more lenient: a scalar list without its colon, `dims [ 16 ]`, is accepted
/// too.) Errors carry the line and column of the offending token.
pub fn parse_model_config(text: &str) -> Result<ModelConfig, ConfigTextError> {
    let parsed = pbtxt::insert_list_colons(text);
    let message = DynamicMessage::parse_text_format(model_config_descriptor(), &parsed.text)
        .map_err(|err| ConfigTextError::from_parse_error(&err, &parsed, text))?;
    Ok(message.transcode_to::<ModelConfig>()?)
}

/// Serialization options matching Triton's config JSON: proto field names,
/// enum names, 64-bit integers as numbers, default-valued fields present.
fn triton_json_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .use_enum_numbers(false)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false)
}

/// Renders `cfg` the way Triton's `GET /v2/models/{model}/config` does.
///
/// Field names are the proto names (`max_batch_size`, `data_type`), enums
/// are their names (`"TYPE_INT32"`, `"KIND_CPU"`), 64-bit integers are JSON
/// numbers, and scalar, repeated and map fields appear even when they hold
/// their default value. Unset sub-messages (for example an absent
/// `dynamic_batching`) are left out, as Triton does.
pub fn model_config_to_json(cfg: &ModelConfig) -> serde_json::Value {
    let mut message = DynamicMessage::new(model_config_descriptor());
    message
        .transcode_from(cfg)
        .expect("a ModelConfig always decodes as inference.ModelConfig");
    message
        .serialize_with_options(serde_json::value::Serializer, &triton_json_options())
        .expect("a ModelConfig always serializes to a JSON value")
}

/// Reads a model configuration from its JSON form (the inverse of
/// [`model_config_to_json`]; also what Triton's repository load API accepts
/// as the `config` parameter).
///
/// Both proto field names and lowerCamelCase JSON names are accepted, enums
/// by name or number, 64-bit integers as numbers or strings. Unknown fields
/// are an error.
pub fn model_config_from_json(v: &serde_json::Value) -> Result<ModelConfig, ConfigTextError> {
    let mut track = serde_path_to_error::Track::new();
    let message = DynamicMessage::deserialize_with_options(
        model_config_descriptor(),
        serde_path_to_error::Deserializer::new(v, &mut track),
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|err| {
        let path = track.path().to_string();
        ConfigTextError::Json {
            message: match path.as_str() {
                "" | "." => err.to_string(),
                _ => format!("{path}: {err}"),
            },
        }
    })?;
    Ok(message.transcode_to::<ModelConfig>()?)
}

#[cfg(test)]
mod tests;
