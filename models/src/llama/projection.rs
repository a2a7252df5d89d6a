//! How a llama's weight matrices are held and multiplied: quantized as stored (our integer
//! kernels on CPU, [`crate::quant`]), or dequantized to FP32 or FP16 once at load.

use anyhow::Result;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::quant::PackedMatrix;
use crate::skinny;

/// How the projection and MLP weights are held for the matmuls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulWeights {
    /// The GGUF blocks as stored, multiplied by integer dot products with 8-bit activations
    /// ([`crate::quant`]; block types it lacks, and GPUs, use candle's quantized kernels).
    /// Smallest and, on CPU, fastest: the CPU default.
    Quantized,
    /// Dequantized to FP32 once at load (about 8x the memory of Q4): every step is a real
    /// GEMM, so rows of concurrent sequences and prompt tokens share each weight read.
    F32,
    /// Dequantized to FP16: half of FP32's memory; fastest for one sequence on CPU, slow
    /// for batches there.
    F16,
}

impl std::str::FromStr for MatmulWeights {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "quantized" | "gguf" => Ok(Self::Quantized),
            "f32" | "fp32" => Ok(Self::F32),
            "f16" | "fp16" => Ok(Self::F16),
            other => Err(format!("'{other}' is not one of quantized, fp32, fp16")),
        }
    }
}

impl MatmulWeights {
    pub(super) fn matmul(self, weight: QTensor, device: &Device) -> Result<Projection> {
        if self == Self::Quantized && device.is_cpu() {
            if let Some(packed) = PackedMatrix::from_qtensor(&weight)? {
                return Ok(Projection::Packed(packed));
            }
        }
        Ok(Projection::Candle(match self {
            Self::Quantized => QMatMul::from_qtensor(weight)?,
            Self::F32 => QMatMul::Tensor(weight.dequantize(device)?),
            Self::F16 => QMatMul::TensorF16(weight.dequantize_f16(device)?),
        }))
    }
}

/// A weight matrix `(out, in)` applied to rows `(n, in)`.
pub(super) enum Projection {
    /// Repacked GGUF blocks for our CPU kernels.
    Packed(PackedMatrix),
    /// Candle's matmuls, with our FP32/FP16 stream for a decode step's few rows.
    Candle(QMatMul),
}

impl Projection {
    pub(super) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let candle = match self {
            Self::Packed(packed) => {
                return Ok(xs
                    .to_dtype(DType::F32)?
                    .contiguous()?
                    .apply_op1_no_bwd(packed)?)
            }
            Self::Candle(candle) => candle,
        };
        match candle {
            // The rows of a decode step (one per sequence) stream the weights once
            // (`skinny`); prefill's many rows go to gemm as `W x^T`, the long weight
            // dimension as the GEMM's rows, which it tiles far better than a few sequence
            // rows (models/examples/gemm_shape.rs).
            // FP16 weights always stream: candle's FP16 GEMM on CPU is 3-7x slower than the
            // stream even for 32 rows.
            QMatMul::Tensor(w) | QMatMul::TensorF16(w)
                if xs.rank() == 2
                    && xs.device().is_cpu()
                    && xs.dtype() == DType::F32
                    && (xs.dim(0)? <= skinny::MAX_ROWS || w.dtype() == DType::F16) =>
            {
                Ok(xs
                    .contiguous()?
                    .apply_op2_no_bwd(w, &skinny::RowsTimesWeightT)?)
            }
            QMatMul::Tensor(w) if xs.rank() == 2 && xs.device().is_cpu() => {
                Ok(w.matmul(&xs.t()?)?.t()?.contiguous()?)
            }
            other => Ok(other.forward(xs)?),
        }
    }
}
