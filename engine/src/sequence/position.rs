//! Where a request stands in its sequence: its correlation id and flags, read from the
//! request's parameters, and the id as the CORRID control's element.

use std::fmt;

use bytes::Bytes;

use crate::{
    ControlKind, DataType, EngineError, ModelSpec, ParamValue, Parameters, Result, SequenceSpec,
};

/// A sequence's correlation id, as the request gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SequenceId {
    Number(u64),
    Text(String),
}

impl fmt::Display for SequenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => write!(f, "'{s}'"),
        }
    }
}

/// Where a request stands in its sequence, from its `sequence_*` parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SequencePosition {
    pub id: SequenceId,
    pub start: bool,
    pub end: bool,
}

impl SequencePosition {
    /// Reads `sequence_id`, `sequence_start` and `sequence_end` of a request to a sequence
    /// model, with Triton's errors for a missing id.
    pub(crate) fn of(
        spec: &ModelSpec,
        sequence: &SequenceSpec,
        params: &Parameters,
    ) -> Result<Self> {
        let model = spec.name();
        let no_id = || {
            EngineError::invalid(format!(
                "inference request to model '{model}' must specify a non-zero or non-empty \
                 correlation ID"
            ))
        };
        let id = match params.get("sequence_id") {
            None => return Err(no_id()),
            Some(ParamValue::String(s)) if s.is_empty() => return Err(no_id()),
            Some(ParamValue::String(s)) => SequenceId::Text(s.clone()),
            Some(v) => match v.as_u64() {
                Some(0) => return Err(no_id()),
                Some(n) => SequenceId::Number(n),
                None => {
                    return Err(EngineError::invalid(format!(
                        "parameter 'sequence_id' of a request to model '{model}' must be a \
                         positive integer or a non-empty string, got {v:?}"
                    )))
                }
            },
        };
        let flag = |name: &str| match params.get(name) {
            None => Ok(false),
            Some(ParamValue::Bool(b)) => Ok(*b),
            Some(v) => Err(EngineError::invalid(format!(
                "parameter '{name}' must be a bool, got {v:?}"
            ))),
        };
        if let (SequenceId::Text(text), Some(corrid)) =
            (&id, sequence.control(ControlKind::CorrelationId))
        {
            if corrid.dtype != DataType::Bytes && text.parse::<u64>().is_err() {
                return Err(EngineError::invalid(format!(
                    "model '{model}' takes integer sequence ids (its control '{}' is {}); \
                     parameter 'sequence_id' is the string '{text}'",
                    corrid.input, corrid.dtype
                )));
            }
        }
        Ok(Self {
            id,
            start: flag("sequence_start")?,
            end: flag("sequence_end")?,
        })
    }
}

/// The correlation id as one element of the CORRID control's type.
pub(super) fn correlation_element(dtype: DataType, id: &SequenceId) -> Result<Bytes> {
    let number = match id {
        SequenceId::Number(n) => Some(*n),
        SequenceId::Text(s) => s.parse::<u64>().ok(),
    };
    let out_of_range = || {
        EngineError::invalid(format!(
            "sequence id {id} does not fit the CORRID control's type {dtype}"
        ))
    };
    Ok(match (dtype, number) {
        (DataType::Bytes, _) => {
            let text = match id {
                SequenceId::Number(n) => n.to_string(),
                SequenceId::Text(s) => s.clone(),
            };
            crate::tensor::encode_bytes_elements([text])
        }
        (DataType::Uint64, Some(n)) => Bytes::copy_from_slice(&n.to_le_bytes()),
        (DataType::Int64, Some(n)) => {
            Bytes::copy_from_slice(&i64::try_from(n).map_err(|_| out_of_range())?.to_le_bytes())
        }
        (DataType::Uint32, Some(n)) => {
            Bytes::copy_from_slice(&u32::try_from(n).map_err(|_| out_of_range())?.to_le_bytes())
        }
        (DataType::Int32, Some(n)) => {
            Bytes::copy_from_slice(&i32::try_from(n).map_err(|_| out_of_range())?.to_le_bytes())
        }
        _ => return Err(out_of_range()),
    })
}
