//! One tensor of a KServe JSON header: name, datatype, shape, parameters, and `data`
//! decoded as it is read (or kept as raw text when it comes before the fields it needs).

use std::fmt;

use bytes::Bytes;
use nereid_engine::{DataType, Parameters, SharedMemoryRef};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;

use super::outputs::Text;
use super::{Key, TensorData, TensorHeader};
use crate::data::DataSink;
use crate::params::JsonParams;
use crate::BINARY_DATA_SIZE;

pub(super) struct TensorsSeed {
    pub(super) text_len: usize,
    /// "input" or "output", for messages.
    pub(super) kind: &'static str,
}

impl<'de> DeserializeSeed<'de> for TensorsSeed {
    type Value = Vec<TensorHeader>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TensorsSeed {
    type Value = Vec<TensorHeader>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "'{}s' as an array of {} objects", self.kind, self.kind)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut tensors = Vec::with_capacity(seq.size_hint().unwrap_or(2).min(64));
        while let Some(tensor) = seq.next_element_seed(TensorSeed {
            text_len: self.text_len,
            index: tensors.len(),
            kind: self.kind,
        })? {
            tensors.push(tensor);
        }
        Ok(tensors)
    }
}

struct TensorSeed {
    text_len: usize,
    index: usize,
    kind: &'static str,
}

impl<'de> DeserializeSeed<'de> for TensorSeed {
    type Value = TensorHeader;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TensorHeader, D::Error> {
        d.deserialize_map(self)
    }
}

/// `data` as met: decoded already, or raw text waiting for the fields it needs.
enum Pending<'de> {
    Decoded(Bytes),
    Raw(&'de RawValue),
}

impl<'de> Visitor<'de> for TensorSeed {
    type Value = TensorHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} #{} as an object {{\"name\", \"datatype\", \"shape\", \"data\"}}",
            self.kind, self.index
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TensorHeader, A::Error> {
        let mut name: Option<String> = None;
        let mut dtype: Option<DataType> = None;
        let mut shape: Option<Vec<i64>> = None;
        let mut params = Parameters::new();
        let mut data: Option<Pending<'de>> = None;
        let label = |name: &Option<String>| match name {
            Some(n) => format!("{} '{n}'", self.kind),
            None => format!("{} #{}", self.kind, self.index),
        };
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "name" => {
                    let what = format_args!("{} #{}: 'name'", self.kind, self.index);
                    name = Some(map.next_value_seed(Text(what))?)
                }
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
                "{} #{} has no 'name'",
                self.kind, self.index
            )));
        };
        let kind = self.kind;
        let missing = |field: &str| de::Error::custom(format!("{kind} '{name}' has no '{field}'"));
        let dtype = dtype.ok_or_else(|| missing("datatype"))?;
        let shape = shape.ok_or_else(|| missing("shape"))?;
        let binary = match params.get(BINARY_DATA_SIZE) {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        de::Error::custom(format!(
                    "{kind} '{name}': parameter 'binary_data_size' must be a non-negative integer"
                ))
                    })?,
            ),
        };
        let shared = SharedMemoryRef::from_params(&params, &format!("{kind} '{name}'"))
            .map_err(de::Error::custom)?;
        if let Some(at) = shared {
            if data.is_some() || binary.is_some() {
                return Err(de::Error::custom(format!(
                    "{kind} '{name}' is in shared memory and also has 'data' or \
                     'binary_data_size'; give one"
                )));
            }
            return Ok(TensorHeader {
                name,
                dtype,
                shape,
                data: TensorData::Shared(at),
            });
        }
        let data = match (data, binary) {
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(format!(
                    "{kind} '{name}' has both 'data' and parameter 'binary_data_size'; give one"
                )))
            }
            (None, Some(size)) => TensorData::Binary(size),
            (None, None) => {
                return Err(de::Error::custom(format!(
                    "{kind} '{name}' has no 'data' and no 'binary_data_size' parameter"
                )))
            }
            (Some(Pending::Decoded(bytes)), None) => TensorData::Json(bytes),
            (Some(Pending::Raw(raw)), None) => {
                TensorData::Json(decode_raw(&name, dtype, &shape, raw).map_err(de::Error::custom)?)
            }
        };
        Ok(TensorHeader {
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
