//! Model version strings, one meaning on every door (as Triton's frontends read them).

use nereid_engine::EngineError;

/// Reads a model version as a client wrote it: empty means the newest ready version, a
/// non-negative integer names one version (an unknown one is then NOT_FOUND), and anything
/// else, `-1` included, is INVALID_ARGUMENT naming the string.
pub fn parse_version(text: &str) -> Result<Option<i64>, EngineError> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(v) if v >= 0 => Ok(Some(v)),
        _ => Err(EngineError::invalid(format!(
            "model version '{text}' is not valid: give a non-negative integer, or no version \
             for the newest ready one"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_newest_integers_select_and_the_rest_is_refused() {
        assert_eq!(parse_version("").unwrap(), None);
        assert_eq!(parse_version("3").unwrap(), Some(3));
        assert_eq!(parse_version("0").unwrap(), Some(0));
        for bad in ["-1", "x", "1.0", " 1", "99999999999999999999"] {
            let e = parse_version(bad).unwrap_err();
            assert!(
                matches!(e, EngineError::InvalidArgument(_)) && e.to_string().contains(bad),
                "{bad}: {e}"
            );
        }
    }
}
