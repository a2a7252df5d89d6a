//! Decoding the JSON header of an infer request in one pass: inputs' `data` go straight
//! into tensor bytes as they are read (see [`super::data`]); an input whose `data` comes
//! before its name, datatype or shape is kept as raw JSON text and decoded right after.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use nereid_engine::{DataType, Parameters, RequestedOutput};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::data::DataSink;
use super::params::JsonParams;

/// The JSON header of an infer request.
#[derive(Debug, Default)]
pub(crate) struct InferHeader {
    /// Request id (`id`).
    pub id: String,
    /// Request parameters.
    pub parameters: Parameters,
    /// Inputs, in request order.
    pub inputs: Vec<InputHeader>,
    /// Requested outputs with their parameters.
    pub outputs: Vec<RequestedOutput>,
}

/// One input of the header.
#[derive(Debug)]
pub(crate) struct InputHeader {
    /// Input name.
    pub name: String,
    /// Datatype.
    pub dtype: DataType,
    /// Shape.
    pub shape: Vec<i64>,
    /// Its elements, or where they are.
    pub data: InputData,
}

/// Where an input's elements are.
#[derive(Debug)]
pub(crate) enum InputData {
    /// Decoded from JSON `data` into raw bytes.
    Json(Bytes),
    /// The next this-many bytes of the binary section (`binary_data_size`).
    Binary(usize),
}

/// Decodes an infer request header. Errors are messages for a 400 that name the field.
pub(crate) fn decode_infer_header(text: &[u8]) -> Result<InferHeader, String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let header = HeaderSeed {
        text_len: text.len(),
    }
    .deserialize(&mut de)
    .map_err(describe)?;
    de.end().map_err(describe)?;
    Ok(header)
}

/// Words a JSON error for a person: syntax errors say "invalid JSON", errors of content
/// (wrong types, the decoder's own checks) "invalid request".
pub(crate) fn describe(e: serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        return format!(
            "invalid JSON: nested more than 128 levels deep (line {} column {})",
            e.line(),
            e.column()
        );
    }
    match e.classify() {
        serde_json::error::Category::Data => format!("invalid request: {text}"),
        _ => format!("invalid JSON: {text}"),
    }
}

/// An object key, borrowed from the body unless it has escapes.
pub(crate) struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

struct HeaderSeed {
    text_len: usize,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed {
    type Value = InferHeader;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<InferHeader, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed {
    type Value = InferHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an inference request object {\"inputs\": [...], ...}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InferHeader, A::Error> {
        let mut header = InferHeader::default();
        let mut has_inputs = false;
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "id" => header.id = map.next_value::<Id>()?.0,
                "parameters" => header.parameters = map.next_value::<JsonParams>()?.0,
                "inputs" => {
                    header.inputs = map.next_value_seed(InputsSeed {
                        text_len: self.text_len,
                    })?;
                    has_inputs = true;
                }
                "outputs" => {
                    header.outputs = map
                        .next_value::<Vec<OutputJson>>()?
                        .into_iter()
                        .map(|o| RequestedOutput {
                            name: o.name,
                            parameters: o.parameters.0,
                        })
                        .collect();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !has_inputs {
            return Err(de::Error::custom("the request has no 'inputs'"));
        }
        Ok(header)
    }
}

/// The request id: a string (numbers are accepted and kept as their text).
struct Id(String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'id' as a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: JsonParams,
}

struct InputsSeed {
    text_len: usize,
}

impl<'de> DeserializeSeed<'de> for InputsSeed {
    type Value = Vec<InputHeader>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed {
    type Value = Vec<InputHeader>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("'inputs' as an array of input objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut inputs = Vec::with_capacity(seq.size_hint().unwrap_or(2).min(64));
        while let Some(input) = seq.next_element_seed(InputSeed {
            text_len: self.text_len,
            index: inputs.len(),
        })? {
            inputs.push(input);
        }
        Ok(inputs)
    }
}

struct InputSeed {
    text_len: usize,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for InputSeed {
    type Value = InputHeader;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<InputHeader, D::Error> {
        d.deserialize_map(self)
    }
}

/// `data` as met: decoded already, or raw text waiting for the fields it needs.
enum Pending<'de> {
    Decoded(Bytes),
    Raw(&'de RawValue),
}

impl<'de> Visitor<'de> for InputSeed {
    type Value = InputHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "input #{} as an object {{\"name\", \"datatype\", \"shape\", \"data\"}}",
            self.index
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputHeader, A::Error> {
        let mut name: Option<String> = None;
        let mut dtype: Option<DataType> = None;
        let mut shape: Option<Vec<i64>> = None;
        let mut params = Parameters::new();
        let mut data: Option<Pending<'de>> = None;
        let label = |name: &Option<String>| match name {
            Some(n) => format!("input '{n}'"),
            None => format!("input #{}", self.index),
        };
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "name" => name = Some(map.next_value::<String>()?),
                "datatype" => {
                    let Key(text) = map.next_value()?;
                    let parsed = text.parse::<DataType>();
                    dtype = Some(
                        parsed.map_err(|e| de::Error::custom(format!("{}: {e}", label(&name))))?,
                    );
                }
                "shape" => shape = Some(map.next_value_seed(ShapeSeed(label(&name)))?),
                "parameters" => params = map.next_value::<JsonParams>()?.0,
                "data" => match (&name, dtype, &shape) {
                    (Some(n), Some(dt), Some(s)) => {
                        let mut sink =
                            DataSink::new(n, dt, s, self.text_len).map_err(de::Error::custom)?;
                        map.next_value_seed(SinkSeed(&mut sink))?;
                        data = Some(Pending::Decoded(sink.finish().map_err(de::Error::custom)?));
                    }
                    _ => data = Some(Pending::Raw(map.next_value()?)),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(name) = name else {
            return Err(de::Error::custom(format!(
                "input #{} has no 'name'",
                self.index
            )));
        };
        let missing = |field: &str| de::Error::custom(format!("input '{name}' has no '{field}'"));
        let dtype = dtype.ok_or_else(|| missing("datatype"))?;
        let shape = shape.ok_or_else(|| missing("shape"))?;
        let binary = match params.get("binary_data_size") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        de::Error::custom(format!(
                    "input '{name}': parameter 'binary_data_size' must be a non-negative integer"
                ))
                    })?,
            ),
        };
        let data = match (data, binary) {
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(format!(
                    "input '{name}' has both 'data' and parameter 'binary_data_size'; give one"
                )))
            }
            (None, Some(size)) => InputData::Binary(size),
            (None, None) => {
                return Err(de::Error::custom(format!(
                    "input '{name}' has no 'data' and no 'binary_data_size' parameter"
                )))
            }
            (Some(Pending::Decoded(bytes)), None) => InputData::Json(bytes),
            (Some(Pending::Raw(raw)), None) => {
                InputData::Json(decode_raw(&name, dtype, &shape, raw).map_err(de::Error::custom)?)
            }
        };
        Ok(InputHeader {
            name,
            dtype,
            shape,
            data,
        })
    }
}

/// Decodes `data` that arrived before the fields it depends on.
fn decode_raw(name: &str, dtype: DataType, shape: &[i64], raw: &RawValue) -> Result<Bytes, String> {
    let text = raw.get();
    let mut sink = DataSink::new(name, dtype, shape, text.len())?;
    let mut de = serde_json::Deserializer::from_str(text);
    sink.read(&mut de).map_err(|e| e.to_string())?;
    sink.finish()
}

struct SinkSeed<'s, 'a>(&'s mut DataSink<'a>);

impl<'de> DeserializeSeed<'de> for SinkSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.read(d)
    }
}

/// A shape: an array of integers (negative ones are rejected later, with the shape shown).
struct ShapeSeed(String);

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Vec<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<i64>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Vec<i64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: 'shape' as an array of integers", self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
        let mut dims = Vec::with_capacity(4);
        loop {
            match seq.next_element::<i64>() {
                Ok(Some(d)) => dims.push(d),
                Ok(None) => return Ok(dims),
                Err(_) => {
                    return Err(de::Error::custom(format!(
                        "{}: 'shape' must be an array of integers",
                        self.0
                    )))
                }
            }
            if dims.len() > 64 {
                return Err(de::Error::custom(format!(
                    "{}: 'shape' has more than 64 dimensions",
                    self.0
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_inputs_outputs_id_and_parameters() {
        let h = decode_infer_header(
            br#"{"id":"7","parameters":{"binary_data_output":true,"priority":2,"s":"x"},
                "inputs":[{"name":"A","shape":[1,2],"datatype":"INT32","data":[[1,2]]},
                          {"name":"B","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}],
                "outputs":[{"name":"Y","parameters":{"binary_data":true}}]}"#,
        )
        .unwrap();
        assert_eq!(h.id, "7");
        assert_eq!(h.parameters.len(), 3);
        assert!(matches!(&h.inputs[0].data, InputData::Json(b) if b.len() == 8));
        assert!(matches!(h.inputs[1].data, InputData::Binary(4)));
        assert_eq!(h.outputs[0].name, "Y");
        assert_eq!(
            h.outputs[0]
                .parameters
                .get("binary_data")
                .and_then(|v| v.as_bool()),
            Some(true)
        );
    }

    #[test]
    fn data_before_its_datatype_is_decoded_afterwards() {
        let h = decode_infer_header(
            br#"{"inputs":[{"data":[1,2],"name":"A","datatype":"INT64","shape":[2]}]}"#,
        )
        .unwrap();
        assert!(matches!(&h.inputs[0].data, InputData::Json(b) if b.len() == 16));
    }

    #[test]
    fn malformed_headers_name_the_problem() {
        let err = |t: &str| decode_infer_header(t.as_bytes()).unwrap_err();
        assert!(err("{").contains("invalid JSON"));
        assert!(err("{}").contains("invalid request: the request has no 'inputs'"));
        assert!(err(r#"{"inputs":[{"name":"A","shape":[1],"data":[1]}]}"#)
            .contains("input 'A' has no 'datatype'"));
        assert!(
            err(r#"{"inputs":[{"name":"A","shape":[1],"datatype":"FLOAT","data":[1]}]}"#)
                .contains("'FLOAT'")
        );
        assert!(
            err(r#"{"inputs":[{"name":"A","shape":[1.5],"datatype":"FP32","data":[1]}]}"#)
                .contains("input 'A': 'shape' must be an array of integers")
        );
        assert!(
            err(r#"{"inputs":[{"name":"A","shape":[1],"datatype":"FP32"}]}"#).contains("no 'data'")
        );
        // Nesting in a field the decoder skips costs no stack (serde_json skips iteratively);
        // wherever a value is built recursively, the limit answers.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(decode_infer_header(format!("{{\"x\":{deep},\"inputs\":[]}}").as_bytes()).is_ok());
        let e = describe(serde_json::from_str::<serde_json::Value>(&deep).unwrap_err());
        assert!(e.contains("nested more than 128 levels"), "{e}");
    }
}
