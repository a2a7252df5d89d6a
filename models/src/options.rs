//! Config parameters shared by the backends, the device an instance runs on, and errors
//! turned into the engine's error type.

use std::fmt::Display;
use std::str::FromStr;

use candle_core::DType;
use nereid_engine::{Device, EngineError, ModelSpec};

/// An error at load time, naming the model.
pub(crate) fn load_error(spec: &ModelSpec, backend: &str, e: impl Display) -> EngineError {
    model_error(spec.name(), backend, e)
}

/// [`load_error`] for a model known by name only (its config not validated yet, or an
/// instance created after the load).
pub(crate) fn model_error(model: &str, backend: &str, e: impl Display) -> EngineError {
    EngineError::invalid(format!("model '{model}' (backend {backend}): {e}"))
}

/// A failure while computing.
pub(crate) fn internal(e: impl Display) -> EngineError {
    EngineError::internal(e.to_string())
}

/// Parses the config parameter `key` when present.
pub(crate) fn param<T: FromStr>(spec: &ModelSpec, key: &str) -> Result<Option<T>, String>
where
    T::Err: Display,
{
    match spec.parameter(key).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| format!("parameter '{key}' = '{v}': {e}")),
    }
}

/// Parses a boolean config parameter (`true`/`false`/`1`/`0`/`yes`/`no`).
pub(crate) fn bool_param(spec: &ModelSpec, key: &str) -> Result<Option<bool>, String> {
    match spec.parameter(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(format!("parameter '{key}' = '{v}' is not a boolean")),
        },
    }
}

/// `intra_op_threads` of the model, or the default.
pub(crate) fn intra_op_threads(spec: &ModelSpec) -> Result<usize, String> {
    Ok(param::<usize>(spec, "intra_op_threads")?
        .filter(|&n| n > 0)
        .unwrap_or_else(crate::threads::default_threads))
}

/// The candle device for an engine device. GPUs need the `cuda` cargo feature.
pub(crate) fn candle_device(device: Device) -> Result<candle_core::Device, String> {
    match device {
        Device::Cpu => Ok(candle_core::Device::Cpu),
        Device::Gpu(ordinal) => gpu(ordinal),
    }
}

#[cfg(feature = "cuda")]
fn gpu(ordinal: u32) -> Result<candle_core::Device, String> {
    candle_core::Device::new_cuda(ordinal as usize)
        .map_err(|e| format!("cannot open CUDA device {ordinal}: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn gpu(ordinal: u32) -> Result<candle_core::Device, String> {
    Err(format!(
        "instance_group asks for GPU {ordinal}, but this build has no CUDA support: build nereid-models \
         with --features cuda (scripts/cuda/build.sh) or use KIND_CPU"
    ))
}

/// The dtype an instance computes in: the `dtype` parameter (`fp32`, `fp16`, `bf16`) on a
/// GPU; always FP32 on the CPU, where candle's half-precision kernels are slower.
pub(crate) fn compute_dtype(spec: &ModelSpec, device: Device) -> Result<DType, String> {
    let asked = match spec
        .parameter("dtype")
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => DType::F32,
        Some(v) => match v.as_str() {
            "" | "fp32" | "f32" | "float32" | "auto" => DType::F32,
            "fp16" | "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            other => {
                return Err(format!(
                    "parameter 'dtype' = '{other}': use fp32, fp16 or bf16"
                ))
            }
        },
    };
    Ok(match device {
        Device::Cpu => DType::F32,
        Device::Gpu(_) => asked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(params: &str) -> ModelSpec {
        let params: String = params
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                format!("parameters {{ key: \"{k}\" value: {{ string_value: \"{v}\" }} }}\n")
            })
            .collect();
        let text = format!(
            "name: \"m\" output {{ name: \"Y\" data_type: TYPE_FP32 dims: [1] }}\n{params}"
        );
        ModelSpec::from_config(nereid_proto::parse_model_config(&text).unwrap()).unwrap()
    }

    #[test]
    fn parameters_parse_and_name_the_key_when_wrong() {
        let s = spec("intra_op_threads=2,dtype=fp16,chat=yes");
        assert_eq!(intra_op_threads(&s).unwrap(), 2);
        assert_eq!(compute_dtype(&s, Device::Gpu(0)).unwrap(), DType::F16);
        assert_eq!(compute_dtype(&s, Device::Cpu).unwrap(), DType::F32);
        assert_eq!(bool_param(&s, "chat").unwrap(), Some(true));
        let bad = spec("intra_op_threads=lots,dtype=fp8");
        assert!(intra_op_threads(&bad)
            .unwrap_err()
            .contains("intra_op_threads"));
        assert!(compute_dtype(&bad, Device::Gpu(0))
            .unwrap_err()
            .contains("fp8"));
        #[cfg(not(feature = "cuda"))]
        assert!(candle_device(Device::Gpu(0))
            .unwrap_err()
            .contains("--features cuda"));
    }
}
