//! KServe v2 JSON tensor data and parameters: `data` arrays (flat or nested, row-major) to
//! raw little-endian bytes and back.

use bytes::Bytes;
use half::{bf16, f16};
use nereid_engine::tensor::{decode_bytes_elements, element_count, encode_bytes_elements};
use nereid_engine::{DataType, ParamValue, Parameters, Tensor};
use serde::Serialize;
use serde_json::{Map, Value};

/// Decodes a JSON `data` array into raw bytes of `dtype`, checking it holds as many
/// elements as `shape` says.
pub(crate) fn decode_data(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    data: &Value,
) -> Result<Bytes, String> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let expected = element_count(shape).map_err(|e| format!("input '{name}': {e}"))?;
    if flat.len() != expected {
        return Err(format!(
            "input '{name}': shape {shape:?} needs {expected} elements, 'data' has {}",
            flat.len()
        ));
    }
    let bad = |v: &Value| format!("input '{name}': {v} is not a valid {dtype} element");
    macro_rules! ints {
        ($t:ty) => {{
            let mut out = Vec::with_capacity(flat.len() * std::mem::size_of::<$t>());
            for v in &flat {
                let x: $t = v
                    .as_i64()
                    .and_then(|i| <$t>::try_from(i).ok())
                    .or_else(|| v.as_u64().and_then(|u| <$t>::try_from(u).ok()))
                    .ok_or_else(|| bad(v))?;
                out.extend_from_slice(&x.to_le_bytes());
            }
            out
        }};
    }
    macro_rules! floats {
        ($conv:expr) => {{
            let mut out = Vec::new();
            for v in &flat {
                let x = v.as_f64().ok_or_else(|| bad(v))?;
                out.extend_from_slice(&$conv(x));
            }
            out
        }};
    }
    let bytes = match dtype {
        DataType::Bool => flat
            .iter()
            .map(|v| match v {
                Value::Bool(b) => Ok(*b as u8),
                Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                    Ok(n.as_u64().unwrap_or(0) as u8)
                }
                _ => Err(bad(v)),
            })
            .collect::<Result<Vec<u8>, _>>()?,
        DataType::Uint8 => ints!(u8),
        DataType::Uint16 => ints!(u16),
        DataType::Uint32 => ints!(u32),
        DataType::Uint64 => ints!(u64),
        DataType::Int8 => ints!(i8),
        DataType::Int16 => ints!(i16),
        DataType::Int32 => ints!(i32),
        DataType::Int64 => ints!(i64),
        DataType::Fp16 => floats!(|x: f64| f16::from_f64(x).to_le_bytes()),
        DataType::Bf16 => floats!(|x: f64| bf16::from_f64(x).to_le_bytes()),
        DataType::Fp32 => floats!(|x: f64| (x as f32).to_le_bytes()),
        DataType::Fp64 => floats!(|x: f64| x.to_le_bytes()),
        DataType::Bytes => {
            let items = flat
                .iter()
                .map(|v| v.as_str().map(str::as_bytes).ok_or_else(|| bad(v)))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(encode_bytes_elements(items));
        }
    };
    Ok(Bytes::from(bytes))
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// A tensor's elements as a flat JSON array, serialised straight from typed vectors so
/// FP32 values print as the shortest text that reads back the same.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Data {
    /// BOOL.
    Bool(Vec<bool>),
    /// Signed integers.
    Int(Vec<i64>),
    /// Unsigned integers.
    Uint(Vec<u64>),
    /// FP16, BF16, FP32.
    Float(Vec<f32>),
    /// FP64.
    Double(Vec<f64>),
    /// BYTES, as text (invalid UTF-8 replaced).
    Text(Vec<String>),
}

/// Encodes a tensor's data as JSON.
pub(crate) fn encode_data(t: &Tensor) -> Result<Data, String> {
    let err = |e: nereid_engine::EngineError| e.to_string();
    let widen = |v: Vec<i64>| Data::Int(v);
    Ok(match t.dtype {
        DataType::Bool => Data::Bool(t.data.iter().map(|&b| b != 0).collect()),
        DataType::Uint8 => Data::Uint(t.data.iter().map(|&b| b as u64).collect()),
        DataType::Uint16 => Data::Uint(
            t.to_vec::<u16>()
                .map_err(err)?
                .into_iter()
                .map(u64::from)
                .collect(),
        ),
        DataType::Uint32 => Data::Uint(
            t.to_vec::<u32>()
                .map_err(err)?
                .into_iter()
                .map(u64::from)
                .collect(),
        ),
        DataType::Uint64 => Data::Uint(t.to_vec::<u64>().map_err(err)?),
        DataType::Int8 => widen(t.data.iter().map(|&b| b as i8 as i64).collect()),
        DataType::Int16 => widen(
            t.to_vec::<i16>()
                .map_err(err)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        DataType::Int32 => widen(
            t.to_vec::<i32>()
                .map_err(err)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        DataType::Int64 => widen(t.to_vec::<i64>().map_err(err)?),
        DataType::Fp16 => Data::Float(
            t.to_vec::<f16>()
                .map_err(err)?
                .into_iter()
                .map(f32::from)
                .collect(),
        ),
        DataType::Bf16 => Data::Float(
            t.to_vec::<bf16>()
                .map_err(err)?
                .into_iter()
                .map(f32::from)
                .collect(),
        ),
        DataType::Fp32 => Data::Float(t.to_vec::<f32>().map_err(err)?),
        DataType::Fp64 => Data::Double(t.to_vec::<f64>().map_err(err)?),
        DataType::Bytes => Data::Text(
            decode_bytes_elements(&t.data)?
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        ),
    })
}

/// Request parameters from JSON: booleans, integers, floats and strings.
pub(crate) fn params_from_json(map: &Map<String, Value>) -> Result<Parameters, String> {
    map.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::Bool(b) => ParamValue::Bool(*b),
                Value::String(s) => ParamValue::String(s.clone()),
                Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => ParamValue::Int(i),
                    (None, Some(u), _) => ParamValue::Uint(u),
                    (_, _, Some(f)) => ParamValue::Double(f),
                    _ => return Err(format!("parameter '{k}': {n} is not a usable number")),
                },
                other => {
                    return Err(format!(
                        "parameter '{k}': {other} is not a boolean, number or string"
                    ))
                }
            };
            Ok((k.clone(), value))
        })
        .collect()
}

/// Response parameters as JSON.
pub(crate) fn params_to_json(parameters: &Parameters) -> Map<String, Value> {
    parameters
        .iter()
        .map(|(k, v)| {
            let value = match v {
                ParamValue::Bool(b) => Value::from(*b),
                ParamValue::Int(i) => Value::from(*i),
                ParamValue::Uint(u) => Value::from(*u),
                ParamValue::Double(d) => Value::from(*d),
                ParamValue::String(s) => Value::from(s.clone()),
            };
            (k.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_through_json() {
        let raw = decode_data(
            "x",
            DataType::Int32,
            &[2, 2],
            &serde_json::json!([[1, -2], [3, 4]]),
        )
        .unwrap();
        let t = Tensor::new("x", DataType::Int32, vec![2, 2], raw);
        assert_eq!(
            serde_json::to_string(&encode_data(&t).unwrap()).unwrap(),
            "[1,-2,3,4]"
        );
        let raw = decode_data("f", DataType::Fp32, &[2], &serde_json::json!([0.1, 2])).unwrap();
        let t = Tensor::new("f", DataType::Fp32, vec![2], raw);
        assert_eq!(
            serde_json::to_string(&encode_data(&t).unwrap()).unwrap(),
            "[0.1,2.0]"
        );
        let raw = decode_data("s", DataType::Bytes, &[2], &serde_json::json!(["a", "é"])).unwrap();
        let t = Tensor::new("s", DataType::Bytes, vec![2], raw);
        assert_eq!(
            serde_json::to_string(&encode_data(&t).unwrap()).unwrap(),
            r#"["a","é"]"#
        );
    }

    #[test]
    fn bad_data_is_named() {
        let err = decode_data("x", DataType::Uint8, &[1], &serde_json::json!([300])).unwrap_err();
        assert!(err.contains("'x'") && err.contains("300"), "{err}");
        let err = decode_data("x", DataType::Int32, &[3], &serde_json::json!([1, 2])).unwrap_err();
        assert!(err.contains("3 elements"), "{err}");
    }
}
