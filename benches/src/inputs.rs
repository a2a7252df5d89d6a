//! What the load sends: the model's signature and the input tensors of each request,
//! made once before measuring (random, zero or from a perf_analyzer-style JSON file).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use serde_json::Value;

use crate::args::{InputData, ShapeArg};

/// Name, datatype and shape of one model tensor, the batch dimension left out.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// KServe datatype ("FP32", "INT32", "BYTES", ...).
    pub datatype: String,
    /// Dimensions without the batch dimension; -1 marks a variable one.
    pub dims: Vec<i64>,
}

impl TensorInfo {
    /// From model metadata, whose `shape` leads with the batch dimension (-1) when the
    /// model batches.
    pub fn from_metadata(name: &str, datatype: &str, shape: &[i64], batching: bool) -> Self {
        let dims = if batching {
            shape.get(1..).unwrap_or_default()
        } else {
            shape
        };
        Self {
            name: name.into(),
            datatype: datatype.into(),
            dims: dims.to_vec(),
        }
    }
}

/// What the load generator needs to know about a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Version to address; empty means the newest ready one.
    pub version: String,
    /// `max_batch_size` of the config; 0 means the model takes no batch dimension.
    pub max_batch_size: i64,
    /// Whether the model is decoupled (many responses per request).
    pub decoupled: bool,
    /// Inputs.
    pub inputs: Vec<TensorInfo>,
    /// Outputs.
    pub outputs: Vec<TensorInfo>,
}

impl ModelInfo {
    /// The built-in `simple` model (two INT32 [16] inputs, add and subtract).
    pub fn simple() -> Self {
        let t = |n: &str| TensorInfo {
            name: n.into(),
            datatype: "INT32".into(),
            dims: vec![16],
        };
        Self {
            name: "simple".into(),
            version: String::new(),
            max_batch_size: 8,
            decoupled: false,
            inputs: vec![t("INPUT0"), t("INPUT1")],
            outputs: vec![t("OUTPUT0"), t("OUTPUT1")],
        }
    }

    /// The built-in `identity_fp32` model (one FP32 vector of any length).
    pub fn identity_fp32() -> Self {
        let t = |n: &str| TensorInfo {
            name: n.into(),
            datatype: "FP32".into(),
            dims: vec![-1],
        };
        Self {
            name: "identity_fp32".into(),
            version: String::new(),
            max_batch_size: 64,
            decoupled: false,
            inputs: vec![t("INPUT0")],
            outputs: vec![t("OUTPUT0")],
        }
    }
}

/// One input tensor of a request, ready to encode on any wire.
#[derive(Clone, Debug, PartialEq)]
pub struct InputTensor {
    /// Input name.
    pub name: String,
    /// KServe datatype.
    pub datatype: String,
    /// Full shape, with the batch dimension when the model batches.
    pub shape: Vec<i64>,
    /// Row-major little-endian contents (BYTES: 4-byte length + bytes per element).
    pub data: Bytes,
}

/// The inputs of one request.
pub type InputSet = Arc<Vec<InputTensor>>;

/// Bytes per element of a fixed-size datatype; `None` for BYTES or unknown names.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

/// A small, fast, deterministic generator (splitmix64): benchmark data needs no better.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` random FP32 values in [0, 1) as little-endian bytes.
pub fn random_fp32(n: usize, seed: u64) -> Bytes {
    let mut rng = SplitMix::new(seed);
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        out.extend_from_slice(&(rng.next_f64() as f32).to_le_bytes());
    }
    out.into()
}

/// `n` random INT32 values in [0, 100) as little-endian bytes.
pub fn random_int32(n: usize, seed: u64) -> Bytes {
    let mut rng = SplitMix::new(seed);
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        out.extend_from_slice(&((rng.next_u64() % 100) as i32).to_le_bytes());
    }
    out.into()
}

/// The full shape of an input: `--shape` fills variable dimensions, the batch dimension
/// comes first when the model batches.
fn input_shape(
    model: &ModelInfo,
    input: &TensorInfo,
    shapes: &[ShapeArg],
    batch: usize,
) -> anyhow::Result<Vec<i64>> {
    let dims = match shapes.iter().find(|s| s.name == input.name) {
        Some(s) => {
            let fits = s.dims.len() == input.dims.len()
                && s.dims
                    .iter()
                    .zip(&input.dims)
                    .all(|(&given, &want)| want < 0 || given == want);
            if !fits {
                bail!(
                    "--shape {}:{:?} does not fit the model's dims {:?}",
                    s.name,
                    s.dims,
                    input.dims
                );
            }
            s.dims.clone()
        }
        None if input.dims.iter().any(|&d| d < 0) => {
            bail!(
                "input {} has variable dims {:?}: give them with --shape {}:d1,d2",
                input.name,
                input.dims,
                input.name
            )
        }
        None => input.dims.clone(),
    };
    if model.max_batch_size > 0 {
        if batch as i64 > model.max_batch_size {
            bail!(
                "--batch-size {batch} is over the model's max_batch_size {}",
                model.max_batch_size
            );
        }
        Ok(std::iter::once(batch as i64).chain(dims).collect())
    } else {
        if batch != 1 {
            bail!(
                "model {} does not batch: --batch-size must be 1",
                model.name
            );
        }
        Ok(dims)
    }
}

fn generated(
    datatype: &str,
    elements: usize,
    random: bool,
    rng: &mut SplitMix,
) -> anyhow::Result<Bytes> {
    if datatype == "BYTES" {
        let mut out = Vec::new();
        for _ in 0..elements {
            let s = if random {
                format!("{:016x}", rng.next_u64())
            } else {
                String::new()
            };
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        return Ok(out.into());
    }
    let size = element_size(datatype).ok_or_else(|| anyhow!("unknown datatype {datatype}"))?;
    let mut out = vec![0u8; elements * size];
    if random {
        for chunk in out.chunks_exact_mut(size) {
            let bits = rng.next_u64();
            match datatype {
                "BOOL" => chunk[0] = (bits & 1) as u8,
                "FP32" => chunk.copy_from_slice(&(rng.next_f64() as f32).to_le_bytes()),
                "FP64" => chunk.copy_from_slice(&rng.next_f64().to_le_bytes()),
                // FP16/BF16: a value in [0, 1) built from the top mantissa bits.
                "FP16" => {
                    chunk.copy_from_slice(&(0x3800u16 | (bits as u16 & 0x03ff)).to_le_bytes())
                }
                "BF16" => {
                    chunk.copy_from_slice(&(0x3f00u16 | (bits as u16 & 0x007f)).to_le_bytes())
                }
                // Small non-negative integers: valid for every integer type and readable.
                _ => chunk[0] = (bits % 100) as u8,
            }
        }
    }
    Ok(out.into())
}

/// Builds the request inputs: one set for random or zero data, one per entry of a file.
pub fn build_inputs(
    model: &ModelInfo,
    data: &InputData,
    shapes: &[ShapeArg],
    batch: usize,
) -> anyhow::Result<Vec<InputSet>> {
    match data {
        InputData::Random | InputData::Zero => {
            let mut rng = SplitMix::new(0x6e65_7265_6964);
            let mut set = Vec::new();
            for input in &model.inputs {
                let shape = input_shape(model, input, shapes, batch)?;
                let elements = shape.iter().product::<i64>() as usize;
                let data = generated(
                    &input.datatype,
                    elements,
                    *data == InputData::Random,
                    &mut rng,
                )?;
                set.push(InputTensor {
                    name: input.name.clone(),
                    datatype: input.datatype.clone(),
                    shape,
                    data,
                });
            }
            Ok(vec![Arc::new(set)])
        }
        InputData::File(path) => from_file(model, path, shapes, batch),
    }
}

/// Reads perf_analyzer's input JSON: `{"data": [{"NAME": [values] | {"content": [values],
/// "shape": [dims]}}, ...]}`; each entry is the inputs of one request, sent in turn.
fn from_file(
    model: &ModelInfo,
    path: &Path,
    shapes: &[ShapeArg],
    batch: usize,
) -> anyhow::Result<Vec<InputSet>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let entries = json
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{}: no \"data\" array", path.display()))?;
    if entries.is_empty() {
        bail!("{}: \"data\" is empty", path.display());
    }
    let mut sets = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let mut set = Vec::new();
        for input in &model.inputs {
            let value = entry
                .get(&input.name)
                .ok_or_else(|| anyhow!("{}: entry {i} lacks {}", path.display(), input.name))?;
            let (content, file_shape) = match value {
                Value::Object(o) => (
                    o.get("content")
                        .ok_or_else(|| anyhow!("entry {i}: {} has no content", input.name))?,
                    o.get("shape")
                        .map(|s| serde_json::from_value::<Vec<i64>>(s.clone()))
                        .transpose()?,
                ),
                v => (v, None),
            };
            let mut values = Vec::new();
            flatten(content, &mut values);
            let mut shape_args = shapes.to_vec();
            if let Some(dims) = file_shape {
                shape_args.retain(|s| s.name != input.name);
                shape_args.push(ShapeArg {
                    name: input.name.clone(),
                    dims,
                });
            } else if input.dims.iter().filter(|&&d| d < 0).count() == 1
                && !shapes.iter().any(|s| s.name == input.name)
            {
                // One variable dimension: the element count decides it.
                let fixed: i64 = input.dims.iter().filter(|&&d| d >= 0).product();
                let dims = input
                    .dims
                    .iter()
                    .map(|&d| {
                        if d < 0 {
                            values.len() as i64 / fixed.max(1)
                        } else {
                            d
                        }
                    })
                    .collect();
                shape_args.push(ShapeArg {
                    name: input.name.clone(),
                    dims,
                });
            }
            let shape = input_shape(model, input, &shape_args, 1)?;
            let elements = shape.iter().product::<i64>() as usize;
            if values.len() != elements {
                bail!(
                    "entry {i}: {} has {} values, its shape {:?} needs {elements}",
                    input.name,
                    values.len(),
                    shape
                );
            }
            let one = encode_values(&input.datatype, &values)?;
            // The same sample repeated over the batch.
            let data: Vec<u8> = std::iter::repeat_n(one.as_ref(), batch)
                .flatten()
                .copied()
                .collect();
            let shape = input_shape(model, input, &shape_args, batch)?;
            set.push(InputTensor {
                name: input.name.clone(),
                datatype: input.datatype.clone(),
                shape,
                data: data.into(),
            });
        }
        sets.push(Arc::new(set));
    }
    Ok(sets)
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Encodes JSON scalars as the raw little-endian bytes of `datatype`.
fn encode_values(datatype: &str, values: &[&Value]) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    for v in values {
        let bad = || anyhow!("{v} is not a {datatype} value");
        match datatype {
            "BYTES" => {
                let s = v.as_str().ok_or_else(bad)?;
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            "BOOL" => out.push(v.as_bool().ok_or_else(bad)? as u8),
            "FP32" => out.extend_from_slice(&(v.as_f64().ok_or_else(bad)? as f32).to_le_bytes()),
            "FP64" => out.extend_from_slice(&v.as_f64().ok_or_else(bad)?.to_le_bytes()),
            "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
                let n = v.as_u64().ok_or_else(bad)?;
                let size = element_size(datatype).unwrap_or(8);
                out.extend_from_slice(&n.to_le_bytes()[..size]);
            }
            "INT8" | "INT16" | "INT32" | "INT64" => {
                let n = v.as_i64().ok_or_else(bad)?;
                let size = element_size(datatype).unwrap_or(8);
                out.extend_from_slice(&n.to_le_bytes()[..size]);
            }
            other => bail!("--input-data files cannot hold {other} tensors"),
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_simple_inputs_have_batch_dimension() {
        let sets = build_inputs(&ModelInfo::simple(), &InputData::Random, &[], 2).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0][0].shape, vec![2, 16]);
        assert_eq!(sets[0][0].data.len(), 2 * 16 * 4);
    }

    #[test]
    fn variable_dims_need_a_shape() {
        let model = ModelInfo::identity_fp32();
        assert!(build_inputs(&model, &InputData::Zero, &[], 1).is_err());
        let shape = [ShapeArg {
            name: "INPUT0".into(),
            dims: vec![768],
        }];
        let sets = build_inputs(&model, &InputData::Zero, &shape, 1).unwrap();
        assert_eq!(sets[0][0].shape, vec![1, 768]);
        assert!(sets[0][0].data.iter().all(|&b| b == 0));
    }

    #[test]
    fn file_inputs_follow_perf_analyzer_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        std::fs::write(&path, r#"{"data":[{"INPUT0":[1.5,2.5,3.5]},{"INPUT0":{"content":[[1,2],[3,4]],"shape":[4]}}]}"#)
            .unwrap();
        let sets =
            build_inputs(&ModelInfo::identity_fp32(), &InputData::File(path), &[], 1).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0][0].shape, vec![1, 3]);
        assert_eq!(&sets[0][0].data[..4], &1.5f32.to_le_bytes());
        assert_eq!(sets[1][0].shape, vec![1, 4]);
    }
}
