//! KServe `parameters` objects: JSON scalars to [`ParamValue`] and back.

use std::fmt;

use nereid_engine::{EngineError, ParamValue, Parameters};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `parameters` object read from JSON.
#[derive(Debug, Default)]
pub(crate) struct JsonParams(pub Parameters);

impl<'de> Deserialize<'de> for JsonParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonParams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'parameters' as an object of bool, number or string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonParams, A::Error> {
                let mut params = Parameters::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<JsonParam>().map_err(|_| {
                        de::Error::custom(format!(
                            "parameter '{key}' must be a bool, a number or a string"
                        ))
                    })?;
                    params.insert(key, value.0);
                }
                Ok(JsonParams(params))
            }
        }
        d.deserialize_map(V)
    }
}

/// One parameter value.
struct JsonParam(ParamValue);

impl<'de> Deserialize<'de> for JsonParam {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JsonParam;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a bool, a number or a string")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<JsonParam, E> {
                Ok(JsonParam(ParamValue::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonParam, E> {
                Ok(JsonParam(ParamValue::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonParam, E> {
                // Like KServe's int64_param first; uint64_param only where int64 cannot hold it.
                Ok(JsonParam(match i64::try_from(v) {
                    Ok(i) => ParamValue::Int(i),
                    Err(_) => ParamValue::Uint(v),
                }))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<JsonParam, E> {
                Ok(JsonParam(ParamValue::Double(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonParam, E> {
                Ok(JsonParam(ParamValue::String(v.to_owned())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A parameter value from a generic JSON value (the generate extension's `parameters`):
/// `None` for arrays, objects and null.
pub fn param_from_json(v: &serde_json::Value) -> Option<ParamValue> {
    JsonParam::deserialize(v).ok().map(|p| p.0)
}

/// A `parameters` object from generic JSON; a value that is not a bool, number or string
/// is an error naming its key.
pub fn params_from_json(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<Parameters, EngineError> {
    map.iter()
        .map(|(k, v)| {
            param_from_json(v).map(|p| (k.clone(), p)).ok_or_else(|| {
                EngineError::invalid(format!(
                    "parameter '{k}' must be a bool, a number or a string"
                ))
            })
        })
        .collect()
}

/// Writes parameters as a JSON object.
pub(crate) struct ParamsJson<'a>(pub &'a Parameters);

impl Serialize for ParamsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v {
                ParamValue::Bool(b) => map.serialize_entry(k, b)?,
                ParamValue::Int(i) => map.serialize_entry(k, i)?,
                ParamValue::Uint(u) => map.serialize_entry(k, u)?,
                ParamValue::Double(d) => map.serialize_entry(k, d)?,
                ParamValue::String(t) => map.serialize_entry(k, t)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_round_trip() {
        let text = r#"{"a":true,"b":-3,"c":18446744073709551615,"d":0.5,"e":"x"}"#;
        let p: JsonParams = serde_json::from_str(text).unwrap();
        assert_eq!(p.0["b"], ParamValue::Int(-3));
        assert_eq!(p.0["c"], ParamValue::Uint(u64::MAX));
        assert_eq!(serde_json::to_string(&ParamsJson(&p.0)).unwrap(), text);
        let e = serde_json::from_str::<JsonParams>(r#"{"a":[1]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter 'a'"), "{e}");
    }
}
