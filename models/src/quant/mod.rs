//! Matrix products over GGUF-quantized weights as stored, with integer dot products.
//!
//! A decode step reads every weight once, so a lone sequence is bound by the bytes it
//! reads: 4-bit blocks are an eighth of FP32. Dequantizing to FP32 at load (what candle's
//! CPU matmul needs to batch rows) gives that up; candle's own quantized kernels keep the
//! bytes but pass over the weights once per row, so a batch gains nothing. These kernels do
//! both: the weights stay 4 or 8 bits per value, the activations are quantized to 8 bits once
//! per row and call, and every pass over a weight block multiplies it into up to eight
//! sequence rows (AVX-512 VNNI `vpdpbusd`; AVX2 `vpmaddubsw`; a portable loop elsewhere).
//!
//! At load a GGUF matrix is repacked ([`PackedMatrix::from_qtensor`]) into one of two
//! layouts that the kernels share across block types:
//! - 4-bit unsigned codes `u` with an FP16 scale `d` and offset `m` per 32 values
//!   (`value = d * u + m`): Q4_0 (`m = -8d`), Q4_1, and Q4_K (its 6-bit sub-block scales and
//!   mins folded into `d` and `m`);
//! - 8-bit signed codes `w` with an FP16 scale per 32 or 16 values (`value = d * w`): Q8_0,
//!   Q5_0 (`w = q - 16`) and Q6_K (`w = q - 32`, 16 values per scale).
//!
//! Q4_0, Q4_1, Q5_0 and Q8_0 scales are FP16 in the file and stay exact; the K types'
//! products of a super-block scale and a 6-bit sub-block scale are rounded to FP16
//! (relative error below 2^-11, far under the 4- or 6-bit codes' own). Bytes per value:
//! Q4_0 5 bits (file 4.5), Q4_1 5 (5), Q4_K 5 (4.5), Q5_0 8.5 (5.5), Q8_0 8.5 (8.5), Q6_K 9
//! (6.56).
//!
//! The product `y[r][o] = sum_i x[r][i] * value[o][i]` is computed per group `g` of the
//! weight row as `d_g * dx_b * sum_{i in g} code_i * q_i + m_g * dx_b * sum_{i in g} q_i`,
//! where `q` are the row's 8-bit activations with scale `dx_b` per 32 values
//! ([`activations::QuantizedRows`]): integer products, one float multiply-add per group.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::f16;

use crate::cpu_op::by_weight_rows;

mod activations;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dense;
mod pack;
mod portable;
#[cfg(target_arch = "x86_64")]
mod tiles;

pub(crate) use activations::QuantizedRows;
pub use dense::{DenseFormat, PackedLinear};

/// Values per chunk: the kernels' unit along `k`, one 512-bit vector of 8-bit codes.
pub(crate) const CHUNK: usize = 64;
/// Values per activation scale.
pub(crate) const ACTIVATION_BLOCK: usize = 32;

/// How a matrix's codes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codes {
    /// Unsigned 4-bit codes, two per byte: in each chunk of 64 values, byte `i` holds value
    /// `i` in its low nibble and value `32 + i` in its high one. One scale and one offset
    /// per 32 values.
    Nibbles,
    /// Signed 8-bit codes, one per byte; a scale per [`PackedMatrix::group`] values and no
    /// offset.
    Bytes,
}

impl Codes {
    /// Bytes of codes in a row of `k_pad` values.
    pub(crate) fn row_bytes(self, k_pad: usize) -> usize {
        match self {
            Self::Nibbles => k_pad / 2,
            Self::Bytes => k_pad,
        }
    }
}

/// A weight matrix `(out, k)` repacked for the kernels.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    out: usize,
    k: usize,
    /// `k` rounded up to a whole chunk; the padding has zero codes and scales.
    k_pad: usize,
    codes: Codes,
    /// Values per scale: 32, or 16 for Q6_K.
    group: usize,
    code_bytes: Vec<u8>,
    scales: Vec<f16>,
    /// Per-group offsets of [`Codes::Nibbles`]; empty for bytes.
    offsets: Vec<f16>,
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    source: GgmlDType,
}

/// The instruction sets the kernels come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/BW/VL with VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// AVX2 with FMA (`vpmaddubsw` + `vpmaddwd`).
    Avx2,
    /// Plain Rust, for any CPU.
    Portable,
}

impl Isa {
    /// The best kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni") {
                return Self::Avx512Vnni;
            }
            if has!("avx2") && has!("fma") && has!("f16c") {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Whether this CPU can run the kernel: tests force each one the machine has.
    pub fn available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                use std::arch::is_x86_feature_detected as has;
                has!("avx2") && has!("fma") && has!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => Self::detect() == Self::Avx512Vnni,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Fewest weight rows per parallel task: enough to amortise the task, few enough that two
/// threads share even a 192-row projection. Larger matrices get about eight tasks per
/// thread ([`PackedMatrix::rows_per_task`]).
const MIN_ROWS_PER_TASK: usize = 16;

impl PackedMatrix {
    /// Output rows.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    pub fn out(&self) -> usize {
        self.out
    }

    /// Inner dimension.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    pub fn k(&self) -> usize {
        self.k
    }

    /// The GGUF block type this matrix came from.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    pub fn source(&self) -> GgmlDType {
        self.source
    }

    /// Bytes the kernels read per pass over the matrix.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    pub fn bytes(&self) -> usize {
        self.code_bytes.len() + 2 * (self.scales.len() + self.offsets.len())
    }

    /// Weight rows per parallel task: an even number (the kernels take rows in pairs), at
    /// least [`MIN_ROWS_PER_TASK`], about eight tasks per thread of the current pool.
    fn rows_per_task(&self) -> usize {
        let tasks = 8 * rayon::current_num_threads();
        (self.out.div_ceil(tasks).div_ceil(2) * 2).max(MIN_ROWS_PER_TASK)
    }

    /// The weight rows `first..first + n` as the kernels take them.
    fn rows(&self, first: usize, n: usize) -> WeightRows<'_> {
        let (cb, gb) = (self.codes.row_bytes(self.k_pad), self.k_pad / self.group);
        WeightRows {
            codes: &self.code_bytes[first * cb..(first + n) * cb],
            scales: &self.scales[first * gb..(first + n) * gb],
            offsets: if self.offsets.is_empty() {
                &[]
            } else {
                &self.offsets[first * gb..(first + n) * gb]
            },
            kind: self.codes,
            group: self.group,
            k_pad: self.k_pad,
        }
    }

    /// The matrix as FP32 `(out, k)`, row-major: what the kernels multiply by.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    pub fn dequantize(&self) -> Vec<f32> {
        let mut y = Vec::with_capacity(self.out * self.k);
        for o in 0..self.out {
            let rows = self.rows(o, 1);
            y.extend((0..self.k).map(|i| rows.value(0, i)));
        }
        y
    }

    /// `x · Wᵀ` for `x` of shape `(rows, k)` row-major; returns `(rows, out)` row-major.
    /// Runs on the current rayon pool with the best kernel for this CPU.
    pub fn matmul_rows(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matmul_rows_with(Isa::detect(), x, rows)
    }

    /// [`Self::matmul_rows`] with the kernel `isa`, which this CPU must have
    /// ([`Isa::available`]).
    pub fn matmul_rows_with(&self, isa: Isa, x: &[f32], rows: usize) -> Vec<f32> {
        assert!(isa.available(), "this CPU cannot run the {isa:?} kernel");
        assert_eq!(x.len(), rows * self.k, "x is not rows x k");
        let xq = QuantizedRows::new(x, rows, self.k, self.k_pad, self.group);
        by_weight_rows(rows, self.out, self.rows_per_task(), |first, dst| {
            let w = self.rows(first, dst.len() / rows);
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `available` confirmed the CPU has AVX-512 F/BW/VL/VNNI.
                Isa::Avx512Vnni => unsafe { avx512::block(&w, &xq, dst) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `available` confirmed the CPU has AVX2, FMA and F16C.
                Isa::Avx2 => unsafe { avx2::block(&w, &xq, dst) },
                _ => portable::block(&w, &xq, dst),
            }
        })
    }
}

/// Some consecutive rows of a [`PackedMatrix`].
#[derive(Clone, Copy)]
pub(crate) struct WeightRows<'a> {
    codes: &'a [u8],
    scales: &'a [f16],
    offsets: &'a [f16],
    kind: Codes,
    group: usize,
    k_pad: usize,
}

impl WeightRows<'_> {
    fn len(&self) -> usize {
        self.scales.len() / self.groups()
    }

    fn groups(&self) -> usize {
        self.k_pad / self.group
    }

    fn row_code_bytes(&self) -> usize {
        self.kind.row_bytes(self.k_pad)
    }

    /// The code of value `i` of row `o` of these rows, as an integer.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    fn code(&self, o: usize, i: usize) -> i32 {
        let row = &self.codes[o * self.row_code_bytes()..];
        match self.kind {
            Codes::Nibbles => {
                let (chunk, at) = (i / CHUNK, i % CHUNK);
                let byte = row[chunk * CHUNK / 2 + at % (CHUNK / 2)];
                i32::from(if at < CHUNK / 2 {
                    byte & 0xF
                } else {
                    byte >> 4
                })
            }
            Codes::Bytes => i32::from(row[i] as i8),
        }
    }

    /// Value `i` of row `o` as FP32.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    fn value(&self, o: usize, i: usize) -> f32 {
        let g = o * self.groups() + i / self.group;
        let offset = self.offsets.get(g).map_or(0.0, |m| m.to_f32());
        self.scales[g].to_f32() * self.code(o, i) as f32 + offset
    }
}

impl CustomOp1 for PackedMatrix {
    fn name(&self) -> &'static str {
        "quantized-rows-times-weight-t"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = (self.out, self.k);
        crate::cpu_op::rows_times_weights(self.name(), xs, layout, shape, |x, rows| {
            self.matmul_rows(x, rows)
        })
    }
}

impl PackedMatrix {
    /// Repacks a 2-D GGUF tensor `(out, k)`; `None` for block types the kernels do not take
    /// (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K are taken).
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<Self>> {
        pack::from_qtensor(t)
    }
}

#[cfg(test)]
mod tests;
