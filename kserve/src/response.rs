//! Writing infer and generate responses as JSON, elements straight from tensor bytes.

use nereid_engine::{EngineError, InferResponse, Parameters, Tensor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::data::DataJson;
use crate::params::ParamsJson;
use crate::BINARY_DATA_SIZE;

/// Where a response goes, which decides whether it says `"final"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseForm {
    /// The one answer of an HTTP request: KServe's response object as it is.
    Unary,
    /// One of many answers on a stream (a WebSocket): the object gains `"final": bool`.
    Streamed,
}

/// The JSON header of an infer response. Outputs flagged in `binary` carry
/// `binary_data_size` instead of `data`; their bytes follow the header, in output order.
/// Fails only on a model's malformed BYTES output.
pub fn write_infer_response(
    response: &InferResponse,
    binary: &[bool],
    placed: &[Option<Parameters>],
    form: ResponseForm,
) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::with_capacity(estimate(&response.outputs, binary));
    let json = InferResponseJson {
        response,
        binary,
        placed,
        form,
    };
    serde_json::to_writer(&mut out, &json)
        .map_err(|e| EngineError::internal(format!("cannot write the response: {e}")))?;
    Ok(out)
}

/// One response of the generate extension: `id`, `model_name`, `model_version`, then one
/// key per output (a bare value when it has one element).
pub fn write_generate_response(
    response: &InferResponse,
    outputs: &[Tensor],
) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::with_capacity(estimate(outputs, &[]));
    let json = GenerateJson { response, outputs };
    serde_json::to_writer(&mut out, &json)
        .map_err(|e| EngineError::internal(format!("cannot write the response: {e}")))?;
    Ok(out)
}

/// A capacity that avoids regrowth for typical numbers (no more than ~12 characters each).
fn estimate(outputs: &[Tensor], binary: &[bool]) -> usize {
    let data: usize = outputs
        .iter()
        .enumerate()
        .filter(|(i, _)| !binary.get(*i).copied().unwrap_or(false))
        .map(|(_, t)| match t.dtype.element_size() {
            Some(size) => t.data.len() / size * 12,
            None => t.data.len() + t.data.len() / 2,
        })
        .sum();
    160 + outputs.len() * 96 + data
}

struct InferResponseJson<'a> {
    response: &'a InferResponse,
    binary: &'a [bool],
    placed: &'a [Option<Parameters>],
    form: ResponseForm,
}

impl Serialize for InferResponseJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.response;
        let mut map = s.serialize_map(None)?;
        head(&mut map, r)?;
        if !r.parameters.is_empty() {
            map.serialize_entry("parameters", &ParamsJson(&r.parameters))?;
        }
        map.serialize_entry(
            "outputs",
            &TensorsJson {
                tensors: &r.outputs,
                binary: Binary::Each(self.binary),
                placed: self.placed,
            },
        )?;
        if self.form == ResponseForm::Streamed {
            map.serialize_entry("final", &r.is_final)?;
        }
        map.end()
    }
}

/// The entries every response starts with: `id` (when the request had one), `model_name`
/// and `model_version` (a string, as KServe writes it).
fn head<M: SerializeMap>(map: &mut M, r: &InferResponse) -> Result<(), M::Error> {
    if !r.id.is_empty() {
        map.serialize_entry("id", &r.id)?;
    }
    map.serialize_entry("model_name", &r.model_name)?;
    map.serialize_entry("model_version", &Version(r.model_version))
}

/// A version number written as a string, as KServe does.
struct Version(i64);

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Which tensors of a list go binary.
#[derive(Clone, Copy)]
pub(crate) enum Binary<'a> {
    /// Every tensor, or none.
    All(bool),
    /// One flag per tensor (missing flags: JSON).
    Each(&'a [bool]),
}

/// A list of tensors as KServe JSON: `{"name", "datatype", "shape"}` with `data`, or with
/// `"parameters": {"binary_data_size": n}` when the tensor's bytes follow the header.
/// Requests' inputs and responses' outputs alike.
pub(crate) struct TensorsJson<'a> {
    pub(crate) tensors: &'a [Tensor],
    pub(crate) binary: Binary<'a>,
    /// By position, the parameters of tensors written to shared memory instead (no data).
    pub(crate) placed: &'a [Option<Parameters>],
}

impl Serialize for TensorsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.tensors.len()))?;
        for (i, tensor) in self.tensors.iter().enumerate() {
            let binary = match self.binary {
                Binary::All(b) => b,
                Binary::Each(flags) => flags.get(i).copied().unwrap_or(false),
            };
            let placed = self.placed.get(i).and_then(Option::as_ref);
            seq.serialize_element(&TensorJson {
                tensor,
                binary,
                placed,
            })?;
        }
        seq.end()
    }
}

struct TensorJson<'a> {
    tensor: &'a Tensor,
    binary: bool,
    placed: Option<&'a Parameters>,
}

impl Serialize for TensorJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.tensor;
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("name", &t.name)?;
        map.serialize_entry("datatype", t.dtype.as_str())?;
        map.serialize_entry("shape", &t.shape)?;
        if self.placed.is_some() {
            // As Triton: an output written to shared memory is its name, type and shape
            // alone. Triton's C++ client reads any output with parameters as binary data.
        } else if self.binary {
            map.serialize_entry("parameters", &Flag(BINARY_DATA_SIZE, t.data.len()))?;
        } else {
            map.serialize_entry(
                "data",
                &DataJson {
                    tensor: t,
                    scalar: false,
                },
            )?;
        }
        map.end()
    }
}

/// A one-entry object `{"<name>": value}`.
pub(crate) struct Flag<T>(pub(crate) &'static str, pub(crate) T);

impl<T: Serialize> Serialize for Flag<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

struct GenerateJson<'a> {
    response: &'a InferResponse,
    outputs: &'a [Tensor],
}

impl Serialize for GenerateJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.response;
        let mut map = s.serialize_map(None)?;
        head(&mut map, r)?;
        for t in self.outputs {
            map.serialize_entry(
                &t.name,
                &DataJson {
                    tensor: t,
                    scalar: true,
                },
            )?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nereid_engine::{DataType, ParamValue};

    fn response() -> InferResponse {
        InferResponse {
            model_name: "m".into(),
            model_version: 3,
            id: "r1".into(),
            outputs: vec![
                Tensor::from_vec("A", DataType::Int32, vec![1, 2], vec![5i32, -6]),
                Tensor::from_strings("T", vec![1], ["hi"]),
            ],
            parameters: [("triton_final_response".to_string(), ParamValue::Bool(true))].into(),
            is_final: true,
        }
    }

    #[test]
    fn infer_response_json_and_binary_forms() {
        let r = response();
        let text = String::from_utf8(
            write_infer_response(&r, &[false, false], &[], ResponseForm::Unary).unwrap(),
        )
        .unwrap();
        assert_eq!(
            text,
            r#"{"id":"r1","model_name":"m","model_version":"3","parameters":{"triton_final_response":true},"outputs":[{"name":"A","datatype":"INT32","shape":[1,2],"data":[5,-6]},{"name":"T","datatype":"BYTES","shape":[1],"data":["hi"]}]}"#
        );
        let text = String::from_utf8(
            write_infer_response(&r, &[true, false], &[], ResponseForm::Streamed).unwrap(),
        )
        .unwrap();
        assert!(text.contains(
            r#"{"name":"A","datatype":"INT32","shape":[1,2],"parameters":{"binary_data_size":8}}"#
        ));
        assert!(text.ends_with(r#"],"final":true}"#), "{text}");
    }

    #[test]
    fn generate_response_uses_output_names_as_keys() {
        let r = response();
        let text = String::from_utf8(write_generate_response(&r, &r.outputs).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"id":"r1","model_name":"m","model_version":"3","A":[5,-6],"T":"hi"}"#
        );
    }
}
