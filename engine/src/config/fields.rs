//! What Nereid does with each field of Triton's `ModelConfig`: honours it, refuses a config
//! that sets it, or, where Triton itself treats the field as a hint, accepts it and lists it
//! as ignored. No field is parsed and then silently dropped.

use nereid_proto::inference::{ModelConfig, ModelParameter};

/// What Nereid does with a config field. An entry covers the fields below it unless a
/// deeper entry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldSupport {
    /// Read and acted on as Triton does.
    Honoured,
    /// A config that sets the field is refused at load, for the reason given.
    Refused(&'static str),
    /// A performance or placement hint (Triton's own backends ignore it in many cases):
    /// accepted, logged as a warning and listed in the model's
    /// [`IGNORED_FIELDS_PARAMETER`].
    Ignored(&'static str),
}

use FieldSupport::{Honoured, Ignored, Refused};

const RAGGED: &str = "ragged batching is not supported";
const RESHAPE: &str = "reshaping between the request's shape and the model's is not supported";
const TENSORRT_ONLY: &str = "a TensorRT feature that Nereid's backends do not have";

/// Every `ModelConfig` field, by dotted path, with what Nereid does with it. A unit test
/// walks the schema and checks that each of its fields resolves to an entry here.
pub const FIELD_SUPPORT: &[(&str, FieldSupport)] = &[
    ("name", Honoured),
    ("platform", Honoured),
    ("backend", Honoured),
    (
        "runtime",
        Refused("a runtime other than the backend's own is not supported"),
    ),
    ("version_policy", Honoured),
    ("max_batch_size", Honoured),
    ("input", Honoured),
    (
        "input.format",
        Ignored("the tensor layout is descriptive; backends read the dims"),
    ),
    ("input.reshape", Refused(RESHAPE)),
    ("input.is_shape_tensor", Refused(TENSORRT_ONLY)),
    ("input.allow_ragged_batch", Refused(RAGGED)),
    ("input.is_non_linear_format_io", Refused(TENSORRT_ONLY)),
    ("output", Honoured),
    ("output.reshape", Refused(RESHAPE)),
    (
        "output.label_filename",
        Refused("the classification extension is not supported"),
    ),
    ("output.is_shape_tensor", Refused(TENSORRT_ONLY)),
    ("output.is_non_linear_format_io", Refused(TENSORRT_ONLY)),
    ("batch_input", Refused(RAGGED)),
    ("batch_output", Refused(RAGGED)),
    (
        "optimization",
        Ignored("backend optimisation settings; Nereid's backends choose their own kernels"),
    ),
    ("dynamic_batching", Honoured),
    ("sequence_batching", Honoured),
    (
        "sequence_batching.iterative_sequence",
        Refused("iterative sequences are not supported: a sequence advances one request at a time"),
    ),
    (
        "sequence_batching.state.use_same_buffer_for_input_output",
        Ignored("a buffer-sharing hint; state is kept as the output the model returned"),
    ),
    (
        "sequence_batching.state.use_growable_memory",
        Ignored("a buffer-sharing hint; state is kept as the output the model returned"),
    ),
    ("ensemble_scheduling", Honoured),
    (
        "ensemble_scheduling.step.model_namespace",
        Refused("model namespaces are not supported: model names are global"),
    ),
    ("instance_group", Honoured),
    (
        "instance_group.rate_limiter",
        Ignored("Nereid has no rate-limiter mode (Triton too ignores these unless started with --rate-limit)"),
    ),
    (
        "instance_group.secondary_devices",
        Refused("secondary devices (DLA) are not supported"),
    ),
    (
        "instance_group.profile",
        Ignored("TensorRT optimisation profiles; other backends ignore them in Triton too"),
    ),
    (
        "instance_group.passive",
        Refused("passive instances are not supported: every instance takes requests"),
    ),
    (
        "instance_group.host_policy",
        Ignored("host policies (NUMA binding) are not applied"),
    ),
    (
        "default_model_filename",
        Refused("Nereid's backends read the files their documentation names, not one named here"),
    ),
    (
        "cc_model_filenames",
        Refused("model files per GPU compute capability are not supported"),
    ),
    (
        "metric_tags",
        Ignored("metric labels are Nereid's own (model and version)"),
    ),
    ("parameters", Honoured),
    ("model_warmup", Honoured),
    (
        "model_operations",
        Refused("custom operation libraries are not supported"),
    ),
    ("model_transaction_policy", Honoured),
    (
        "model_repository_agents",
        Refused("repository agents are not supported"),
    ),
    ("response_cache", Honoured),
    (
        "model_metrics",
        Ignored("metric families and histogram buckets are Nereid's own"),
    ),
];

/// The config parameter in which a loaded model lists the fields its config sets that
/// Nereid ignores (comma-separated paths), so the config APIs show them.
pub const IGNORED_FIELDS_PARAMETER: &str = "nereid_ignored_fields";

/// What Nereid does with the field at `path` (dotted): the deepest entry of
/// [`FIELD_SUPPORT`] at or above it.
pub fn field_support(path: &str) -> Option<FieldSupport> {
    let mut candidate = path;
    loop {
        if let Some((_, support)) = FIELD_SUPPORT.iter().find(|(p, _)| *p == candidate) {
            return Some(*support);
        }
        candidate = &candidate[..candidate.rfind('.')?];
    }
}

/// Checks every field `config` sets: the first refused one is an error naming it; the
/// ignored ones are logged and listed under [`IGNORED_FIELDS_PARAMETER`].
pub(crate) fn check_fields(config: &mut ModelConfig) -> Result<(), String> {
    config.parameters.remove(IGNORED_FIELDS_PARAMETER);
    let mut ignored = Vec::new();
    for path in nereid_proto::model_config_set_fields(config) {
        match field_support(&path) {
            Some(Honoured) => {}
            Some(Refused(why)) => return Err(format!("field '{path}' is not supported: {why}")),
            Some(Ignored(why)) => {
                tracing::warn!(model = %config.name, field = %path, "config field ignored: {why}");
                ignored.push(path);
            }
            None => return Err(format!("field '{path}' is not known to this server")),
        }
    }
    // A field below an ignored one is ignored with it: list the outermost only.
    let outermost: Vec<&str> = ignored
        .iter()
        .filter(|p| {
            !ignored.iter().any(|q| {
                p.len() > q.len() && p.starts_with(q.as_str()) && p.as_bytes()[q.len()] == b'.'
            })
        })
        .map(String::as_str)
        .collect();
    if !outermost.is_empty() {
        config.parameters.insert(
            IGNORED_FIELDS_PARAMETER.into(),
            ModelParameter {
                string_value: outermost.join(","),
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost_reflect::{Kind, MessageDescriptor};

    use super::*;
    use crate::ModelSpec;

    fn model_config() -> MessageDescriptor {
        nereid_proto::descriptor_pool()
            .get_message_by_name(nereid_proto::MODEL_CONFIG_MESSAGE)
            .unwrap()
    }

    /// A valid config, with `path` set to a value other than its default.
    fn config_setting(path: &str) -> String {
        let segments: Vec<&str> = path.split('.').collect();
        let mut base = BASE.to_string();
        match segments[0] {
            first @ ("input" | "output" | "instance_group") if segments.len() > 1 => {
                let field = model_config().get_field_by_name(first).unwrap();
                let Kind::Message(element) = field.kind() else {
                    unreachable!("{first} is a list of messages")
                };
                base = base.replace(&format!("{{{first}}}"), &setting(element, &segments[1..]));
            }
            _ => base.push_str(&format!("\n{}", setting(model_config(), &segments))),
        }
        for hole in ["{input}", "{output}", "{instance_group}"] {
            base = base.replace(hole, "");
        }
        base
    }

    /// Text format setting the field at `segments` below `message`.
    fn setting(message: MessageDescriptor, segments: &[&str]) -> String {
        let field = message.get_field_by_name(segments[0]).unwrap();
        if segments.len() == 1 {
            return format!("{}{}", field.name(), value_text(&field));
        }
        let Kind::Message(child) = field.kind() else {
            panic!("{} is a scalar", field.name())
        };
        // A message that is refused without its own required fields gets them.
        let required = match child.full_name() {
            "inference.ModelSequenceBatching.State" => {
                r#"input_name: "SI" output_name: "SO" data_type: TYPE_FP32 dims: [ 1 ] "#
            }
            _ => "",
        };
        format!(
            "{} {{ {required}{} }}",
            field.name(),
            setting(child, &segments[1..])
        )
    }

    /// The text that follows a field's name to give it a value other than its default.
    fn value_text(field: &prost_reflect::FieldDescriptor) -> String {
        if field.is_map() {
            return " { key: \"k\" value: \"v\" }".into();
        }
        match field.kind() {
            Kind::Message(_) => " { }".into(),
            Kind::Bool => ": true".into(),
            Kind::String => ": \"x\"".into(),
            Kind::Enum(e) => format!(": {}", e.get_value(1).unwrap().name()),
            _ => ": 1".into(),
        }
    }

    const BASE: &str = r#"name: "m" backend: "identity" max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] {input} } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] {output} } ]
instance_group [ { count: 1 {instance_group} } ]"#;

    fn load(text: &str) -> crate::Result<ModelSpec> {
        let config =
            nereid_proto::parse_model_config(text).unwrap_or_else(|e| panic!("{text}\n{e}"));
        ModelSpec::from_config(config)
    }

    #[test]
    fn every_field_of_the_schema_is_honoured_refused_or_ignored() {
        let schema = nereid_proto::model_config_field_paths();
        for path in &schema {
            assert!(field_support(path).is_some(), "no entry covers '{path}'");
        }
        for (path, _) in FIELD_SUPPORT {
            assert!(
                schema.iter().any(|p| p == path),
                "'{path}' is not in the schema"
            );
        }
    }

    #[test]
    fn a_refused_field_fails_the_load_naming_it() {
        for (path, support) in FIELD_SUPPORT {
            let Refused(why) = support else { continue };
            let text = config_setting(path);
            let err = load(&text).expect_err(&text).to_string();
            assert!(
                err.contains(&format!("field '{path}' is not supported: {why}")),
                "{path}: {err}\n{text}"
            );
        }
    }

    #[test]
    fn an_ignored_field_loads_and_is_listed() {
        for (path, support) in FIELD_SUPPORT {
            let Ignored(_) = support else { continue };
            let text = config_setting(path);
            let spec = load(&text).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
            assert_eq!(
                spec.parameter(IGNORED_FIELDS_PARAMETER),
                Some(*path),
                "{text}"
            );
        }
    }

    #[test]
    fn a_config_without_hints_lists_nothing_and_a_stale_list_is_replaced() {
        let text = ["{input}", "{output}", "{instance_group}"]
            .iter()
            .fold(BASE.to_string(), |text, hole| text.replace(hole, ""));
        assert_eq!(
            load(&text).unwrap().parameter(IGNORED_FIELDS_PARAMETER),
            None
        );
        let stale = format!(
            "{text}\nparameters {{ key: \"{IGNORED_FIELDS_PARAMETER}\" value: {{ string_value: \"optimization\" }} }}"
        );
        assert_eq!(
            load(&stale).unwrap().parameter(IGNORED_FIELDS_PARAMETER),
            None
        );
    }

    #[test]
    fn only_the_outermost_ignored_field_is_listed() {
        let text = config_setting("optimization.graph.level")
            .replace("optimization {", "optimization { priority: PRIORITY_MAX");
        assert_eq!(
            load(&text).unwrap().parameter(IGNORED_FIELDS_PARAMETER),
            Some("optimization")
        );
    }

    #[test]
    fn the_protocol_document_lists_every_entry_as_the_server_treats_it() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let section = &doc[doc.find("## Model configuration fields").unwrap()..];
        for (path, support) in FIELD_SUPPORT {
            let named = format!("`{path}`");
            let row = section
                .lines()
                .take_while(|l| !l.starts_with("### "))
                .filter(|l| l.starts_with("| `"))
                .find(|l| {
                    l.split('|')
                        .nth(1)
                        .is_some_and(|cell| cell.split(',').any(|c| c.trim().starts_with(&named)))
                })
                .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no row for {named}"));
            let said = row.split('|').nth(2).unwrap().trim();
            let word = match support {
                Honoured => "honoured",
                Refused(_) => "refused",
                Ignored(_) => "ignored",
            };
            assert!(
                said.starts_with(word),
                "{named}: the document says '{said}', the server {word}"
            );
        }
    }
}
