//! Model warmup (`model_warmup` in the config): sample requests every instance computes
//! before the model version reports READY, so the first client request does not pay for
//! lazy allocations, and a model that cannot compute its own samples fails to load with
//! the sample named.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use half::{bf16, f16};
use nereid_proto::inference::model_warmup::input::InputDataType;
use nereid_proto::inference::ModelWarmup;
use tokio::sync::mpsc;

use crate::sink::{InflightCounter, InflightGuard, RequestContext};
use crate::tensor::encode_bytes_elements;
use crate::{
    DataType, EngineError, ExecBatch, Instance, ModelSpec, ModelStats, Parameters, Responder,
    Result, Sequence, Tensor, STREAM_BUFFER,
};

/// The folder of a model (beside its version folders) that holds warmup data files, as in
/// Triton.
pub const WARMUP_FOLDER: &str = "warmup";

/// One `model_warmup` entry, its inputs built.
pub(crate) struct WarmupSample {
    name: String,
    batch_size: usize,
    runs: usize,
    inputs: Vec<Tensor>,
}

/// Builds the config's warmup samples, checking each against the model's inputs; data
/// files are read from `model_dir`'s [`WARMUP_FOLDER`].
pub(crate) fn samples(spec: &ModelSpec, model_dir: &Path) -> Result<Vec<WarmupSample>> {
    spec.config
        .model_warmup
        .iter()
        .enumerate()
        .map(|(i, warmup)| {
            let label = if warmup.name.is_empty() {
                format!("#{i}")
            } else {
                format!("'{}'", warmup.name)
            };
            sample(spec, model_dir, warmup, &label).map_err(|msg| {
                EngineError::invalid(format!(
                    "model '{}': warmup sample {label}: {msg}",
                    spec.name()
                ))
            })
        })
        .collect()
}

fn sample(
    spec: &ModelSpec,
    model_dir: &Path,
    warmup: &ModelWarmup,
    label: &str,
) -> std::result::Result<WarmupSample, String> {
    let batch_size = warmup.batch_size as usize;
    match spec.max_batch_size {
        0 if batch_size != 1 => {
            return Err(format!(
                "batch_size {batch_size}: a model that does not batch takes batch_size 1"
            ))
        }
        max if max > 0 && !(1..=max).contains(&batch_size) => {
            return Err(format!(
                "batch_size {batch_size} is not between 1 and max_batch_size {max}"
            ))
        }
        _ => {}
    }
    for name in warmup.inputs.keys() {
        if spec.input(name).is_none() {
            return Err(format!("input '{name}' is not an input of the model"));
        }
    }
    let mut rng = SplitMix(0x9e37_79b9_7f4a_7c15);
    let mut inputs = Vec::new();
    for input in &spec.inputs {
        let Some(given) = warmup.inputs.get(&input.name) else {
            if input.optional {
                continue;
            }
            return Err(format!("gives no data for input '{}'", input.name));
        };
        let bad = |msg: String| format!("input '{}': {msg}", input.name);
        let dtype = DataType::from_config(given.data_type).ok_or_else(|| {
            bad(format!(
                "data_type {} is not a valid TYPE_*",
                given.data_type
            ))
        })?;
        if dtype != input.dtype {
            return Err(bad(format!(
                "data_type {} differs from the model's {}",
                dtype.as_str(),
                input.dtype.as_str()
            )));
        }
        let fits = given.dims.len() == input.dims.len()
            && given.dims.iter().all(|&d| d >= 0)
            && given
                .dims
                .iter()
                .zip(&input.dims)
                .all(|(&d, &want)| want == -1 || d == want);
        if !fits {
            return Err(bad(format!(
                "dims {:?} do not fit the model's {:?} (give every dimension)",
                given.dims, input.dims
            )));
        }
        let elements: usize = given.dims.iter().map(|&d| d as usize).product();
        let one = match &given.input_data_type {
            Some(InputDataType::ZeroData(_)) => zeros(dtype, elements),
            Some(InputDataType::RandomData(_)) => random(dtype, elements, &mut rng),
            Some(InputDataType::InputDataFile(file)) => {
                read_data_file(model_dir, file, dtype, elements).map_err(bad)?
            }
            None => {
                return Err(bad(
                    "sets none of zero_data, random_data and input_data_file".into(),
                ))
            }
        };
        let (shape, data) = if spec.max_batch_size > 0 {
            let mut shape = vec![batch_size as i64];
            shape.extend(&given.dims);
            (shape, one.repeat(batch_size).into())
        } else {
            (given.dims.clone(), Bytes::from(one))
        };
        inputs.push(Tensor::new(input.name.clone(), dtype, shape, data));
    }
    Ok(WarmupSample {
        name: label.to_string(),
        batch_size,
        runs: (warmup.count as usize).max(1),
        inputs,
    })
}

fn read_data_file(
    model_dir: &Path,
    file: &str,
    dtype: DataType,
    elements: usize,
) -> std::result::Result<Vec<u8>, String> {
    let plain = Path::new(file)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if file.is_empty() || !plain {
        return Err(format!(
            "input_data_file '{file}' must name a file inside the model's {WARMUP_FOLDER}/ folder"
        ));
    }
    let path = model_dir.join(WARMUP_FOLDER).join(file);
    let data =
        std::fs::read(&path).map_err(|e| format!("input_data_file {}: {e}", path.display()))?;
    let found = match dtype.element_size() {
        Some(size) => (data.len() == size * elements).then_some(elements),
        None => crate::tensor::count_bytes_elements(&data)
            .ok()
            .filter(|&n| n == elements),
    };
    if found.is_none() {
        return Err(format!(
            "input_data_file {} holds {} bytes, not {elements} {} elements{}",
            path.display(),
            data.len(),
            dtype.as_str(),
            if dtype == DataType::Bytes {
                " (each a 4-byte little-endian length, then its bytes)"
            } else {
                ""
            }
        ));
    }
    Ok(data)
}

fn zeros(dtype: DataType, elements: usize) -> Vec<u8> {
    // A BYTES element of length zero is four zero bytes.
    vec![0; dtype.element_size().unwrap_or(4) * elements]
}

/// Typed values a model can take: floats in [0, 1), integers in [0, 100), booleans, short
/// lowercase ASCII words (random bits would be NaNs, out-of-range ids or invalid UTF-8).
fn random(dtype: DataType, elements: usize, rng: &mut SplitMix) -> Vec<u8> {
    let mut out = Vec::with_capacity(dtype.element_size().unwrap_or(8) * elements);
    for _ in 0..elements {
        let unit = rng.unit();
        let small = (unit * 100.0) as u8;
        match dtype {
            DataType::Bool => out.push(u8::from(unit < 0.5)),
            DataType::Uint8 | DataType::Int8 => out.push(small),
            DataType::Uint16 | DataType::Int16 => out.extend((small as u16).to_le_bytes()),
            DataType::Uint32 | DataType::Int32 => out.extend((small as u32).to_le_bytes()),
            DataType::Uint64 | DataType::Int64 => out.extend((small as u64).to_le_bytes()),
            DataType::Fp16 => out.extend(f16::from_f64(unit).to_le_bytes()),
            DataType::Bf16 => out.extend(bf16::from_f64(unit).to_le_bytes()),
            DataType::Fp32 => out.extend((unit as f32).to_le_bytes()),
            DataType::Fp64 => out.extend(unit.to_le_bytes()),
            DataType::Bytes => {
                let len = 1 + (rng.unit() * 12.0) as usize;
                let word: Vec<u8> = (0..len).map(|_| b'a' + (rng.unit() * 26.0) as u8).collect();
                out.extend(encode_bytes_elements([word]));
            }
        }
    }
    out
}

/// A small deterministic generator: warmup data need not be unpredictable, only varied.
struct SplitMix(u64);

impl SplitMix {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs every sample on one instance, as many times as its `count` says.
pub(crate) fn warm(
    spec: &ModelSpec,
    instance: &mut Instance,
    samples: &[WarmupSample],
) -> Result<()> {
    for sample in samples {
        for _ in 0..sample.runs {
            run(spec, instance, sample).map_err(|e| {
                EngineError::invalid(format!("warmup sample {} failed: {e}", sample.name))
            })?;
        }
    }
    Ok(())
}

fn run(spec: &ModelSpec, instance: &mut Instance, sample: &WarmupSample) -> Result<()> {
    match instance {
        Instance::Batched(model) => {
            let batch = ExecBatch::whole(sample.inputs.clone(), sample.batch_size);
            model.execute(&batch).map(drop)
        }
        Instance::Decoupled(model) => {
            let (tx, mut rx) = mpsc::channel(STREAM_BUFFER);
            // Warmup is not a client's request: counted nowhere.
            let stats = metrics::with_local_recorder(&metrics::NoopRecorder, || {
                ModelStats::new(spec.name(), 0)
            });
            let ctx = RequestContext {
                model_name: Arc::from(spec.name()),
                model_version: 0,
                id: format!("warmup {}", sample.name),
                requested: Vec::new(),
                stats: Arc::new(stats),
                received: Instant::now(),
                inflight: InflightGuard::admit(&Arc::new(InflightCounter::default()), None)?,
                trace: None,
                responded: false,
                cache_fill: None,
                turn: None,
            };
            model.admit(Sequence {
                inputs: sample.inputs.clone(),
                parameters: Parameters::new(),
                responder: Responder::new(tx, ctx),
            });
            loop {
                // Read as it comes, so the sequence never waits for room in its buffer.
                while let Ok(response) = rx.try_recv() {
                    if response?.is_final {
                        return Ok(());
                    }
                }
                if model.live() == 0 {
                    break;
                }
                model.step()?;
            }
            match rx.try_recv() {
                Ok(response) => response.map(drop),
                Err(_) => Err(EngineError::internal(
                    "the sequence ended without a final response",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests;
