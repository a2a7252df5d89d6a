//! The parts of a request header that are not tensors: the outputs it asks for (each
//! with its parameters, `binary_data` a bool), and string fields whose type errors name
//! the field.

use std::fmt;

use nereid_engine::{Parameters, RequestedOutput};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::Key;
use crate::params::JsonParams;
use crate::BINARY_DATA;

/// Whether parameter `key` is a bool, or not given.
pub(super) fn bool_or_absent(parameters: &Parameters, key: &str) -> bool {
    parameters.get(key).is_none_or(|v| v.as_bool().is_some())
}

/// A string field; a value of another type is refused naming the field (`what`, only
/// formatted then: decoding a good request formats nothing).
pub(super) struct Text<W>(pub(super) W);

impl<'de, W: fmt::Display> DeserializeSeed<'de> for Text<W> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<W: fmt::Display> Visitor<'_> for Text<W> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as a string", self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

/// A request's `outputs`: the outputs it asks for, with their parameters.
pub(super) struct RequestedSeed;

impl<'de> DeserializeSeed<'de> for RequestedSeed {
    type Value = Vec<RequestedOutput>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RequestedSeed {
    type Value = Vec<RequestedOutput>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("'outputs' as an array of {\"name\", \"parameters\"} objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut outputs = Vec::new();
        while let Some(output) = seq.next_element_seed(RequestedOutputSeed(outputs.len()))? {
            outputs.push(output);
        }
        Ok(outputs)
    }
}

/// One requested output, `#index` in the request.
struct RequestedOutputSeed(usize);

impl<'de> DeserializeSeed<'de> for RequestedOutputSeed {
    type Value = RequestedOutput;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RequestedOutput, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestedOutputSeed {
    type Value = RequestedOutput;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "output #{} as an object {{\"name\", \"parameters\"}}",
            self.0
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestedOutput, A::Error> {
        let index = self.0;
        let mut name = None;
        let mut parameters = Parameters::new();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "name" => {
                    let what = format_args!("output #{index}: 'name'");
                    name = Some(map.next_value_seed(Text(what))?)
                }
                "parameters" => parameters = map.next_value::<JsonParams>()?.0,
                other => {
                    return Err(de::Error::custom(format!(
                        "output #{index}: unknown field '{other}', expected 'name' or 'parameters'"
                    )))
                }
            }
        }
        let name =
            name.ok_or_else(|| de::Error::custom(format!("output #{index} has no 'name'")))?;
        if !bool_or_absent(&parameters, BINARY_DATA) {
            return Err(de::Error::custom(format!(
                "output '{name}': parameter '{BINARY_DATA}' must be a bool"
            )));
        }
        Ok(RequestedOutput { name, parameters })
    }
}
