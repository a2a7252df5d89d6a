//! The `labels` parameter: the class names of a classifier's scores, one per element of
//! its first FP32 output, as a JSON array of strings. Triton keeps them in a
//! `label_filename` file beside the model; a parameter travels with the config through a
//! gateway, so every door (and every gateway in front of one) knows them.

use nereid_proto::inference::ModelConfig;

use super::TensorSpec;
use crate::DataType;

/// The config parameter that holds the labels.
pub const LABELS_PARAMETER: &str = "labels";

/// The labels, checked against the scores output they name: a non-empty JSON array of
/// strings, as many as the output's last dimension when that is fixed.
pub(super) fn parse(
    config: &ModelConfig,
    outputs: &[TensorSpec],
) -> Result<Option<Vec<String>>, String> {
    let Some(text) = config
        .parameters
        .get(LABELS_PARAMETER)
        .map(|p| p.string_value.trim())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let labels: Vec<String> = serde_json::from_str(text).map_err(|e| {
        format!("parameter '{LABELS_PARAMETER}' must be a JSON array of strings: {e}")
    })?;
    if labels.is_empty() {
        return Err(format!("parameter '{LABELS_PARAMETER}' names no label"));
    }
    let Some(scores) = outputs.iter().find(|o| o.dtype == DataType::Fp32) else {
        return Err(format!(
            "parameter '{LABELS_PARAMETER}' needs an FP32 output of scores to label"
        ));
    };
    match scores.dims.last() {
        Some(&d) if d >= 0 && d as usize != labels.len() => Err(format!(
            "parameter '{LABELS_PARAMETER}' has {} labels but output '{}' holds {d} scores",
            labels.len(),
            scores.name
        )),
        _ => Ok(Some(labels)),
    }
}

#[cfg(test)]
mod tests {
    use crate::ModelSpec;

    fn spec(labels: &str, dims: &str) -> crate::Result<ModelSpec> {
        let text = format!(
            r#"name: "c" backend: "identity" max_batch_size: 4
               input [{{ name: "IN" data_type: TYPE_FP32 dims: [2] }}]
               output [{{ name: "OUT" data_type: TYPE_FP32 dims: {dims} }}]
               parameters {{ key: "labels" value: {{ string_value: '{labels}' }} }}"#
        );
        ModelSpec::from_config(nereid_proto::parse_model_config(&text).expect("parses"))
    }

    #[test]
    fn labels_are_read_and_checked_against_the_scores() {
        let s = spec(r#"["NEGATIVE", "POSITIVE"]"#, "[2]").expect("valid");
        assert_eq!(
            s.labels.as_deref(),
            Some(&["NEGATIVE".into(), "POSITIVE".into()][..])
        );
        let s = spec(r#"["A", "B", "C"]"#, "[-1]").expect("a variable width takes any count");
        assert_eq!(s.labels.map(|l| l.len()), Some(3));

        let e = spec(r#"["A", "B", "C"]"#, "[2]").unwrap_err().to_string();
        assert!(e.contains("3 labels") && e.contains("'OUT' holds 2"), "{e}");
        let e = spec("NEGATIVE,POSITIVE", "[2]").unwrap_err().to_string();
        assert!(e.contains("parameter 'labels' must be a JSON array"), "{e}");
        let e = spec("[]", "[2]").unwrap_err().to_string();
        assert!(e.contains("names no label"), "{e}");
    }
}
