//! Field paths of `inference.ModelConfig`: every field the schema has, and those a given
//! config sets, named by their dotted proto paths (`instance_group.rate_limiter`), so a
//! loader can say what it does with each.

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};

use super::model_config_descriptor;
use crate::inference::ModelConfig;

/// Every field path of the `inference.ModelConfig` schema, parents before their children.
/// Messages nested under a map (`parameters`, `model_warmup.inputs`) are the map's own
/// path: their entries are values, not fields of the config.
pub fn model_config_field_paths() -> Vec<String> {
    let mut paths = Vec::new();
    schema_paths(&model_config_descriptor(), "", &mut paths);
    paths
}

fn schema_paths(message: &MessageDescriptor, prefix: &str, paths: &mut Vec<String>) {
    for field in message.fields() {
        let path = format!("{prefix}{}", field.name());
        paths.push(path.clone());
        if let Kind::Message(child) = field.kind() {
            if !field.is_map() {
                schema_paths(&child, &format!("{path}."), paths);
            }
        }
    }
}

/// The field paths `cfg` sets (a scalar different from its default, a message present, a
/// list or map not empty), parents before their children, each path once.
pub fn model_config_set_fields(cfg: &ModelConfig) -> Vec<String> {
    let mut message = DynamicMessage::new(model_config_descriptor());
    message
        .transcode_from(cfg)
        .expect("a ModelConfig always decodes as inference.ModelConfig");
    let mut paths = Vec::new();
    set_paths(&message, "", &mut paths);
    paths
}

fn set_paths(message: &DynamicMessage, prefix: &str, paths: &mut Vec<String>) {
    for (field, value) in message.fields() {
        let path = format!("{prefix}{}", field.name());
        if !paths.contains(&path) {
            paths.push(path.clone());
        }
        let nested = format!("{path}.");
        match value {
            Value::Message(child) => set_paths(child, &nested, paths),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(child) = item {
                        set_paths(child, &nested, paths);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_model_config;

    #[test]
    fn the_schema_lists_nested_fields_but_not_map_values() {
        let paths = model_config_field_paths();
        for expected in [
            "name",
            "instance_group.rate_limiter.resources.count",
            "sequence_batching.oldest.max_candidate_sequences",
            "model_warmup.inputs",
            "parameters",
        ] {
            assert!(paths.iter().any(|p| p == expected), "{expected}");
        }
        assert!(!paths.iter().any(|p| p.starts_with("parameters.")));
    }

    #[test]
    fn only_what_a_config_sets_is_listed() {
        let cfg = parse_model_config(
            r#"name: "m" max_batch_size: 0
            input [ { name: "A" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]
            output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
            instance_group [ { count: 1 rate_limiter { priority: 2 } } ]"#,
        )
        .unwrap();
        assert_eq!(
            model_config_set_fields(&cfg),
            [
                "name",
                "input",
                "input.name",
                "input.data_type",
                "input.dims",
                "input.optional",
                "output",
                "output.name",
                "output.data_type",
                "output.dims",
                "instance_group",
                "instance_group.count",
                "instance_group.rate_limiter",
                "instance_group.rate_limiter.priority",
            ]
        );
    }
}
