//! Dense layers for encoders in 16-bit pairs: 16-bit integer weights and activations, or
//! BF16 ones, multiplied by AVX-512 `vpdpwssd` / `vdpbf16ps` (32 multiply-adds an
//! instruction, twice an FP32 FMA's 16), or for integers by AVX2 `vpmaddwd`.
//!
//! An encoder's products are large (every token of every text at once), so unlike a decode
//! step they are bound by arithmetic, not by weight bytes. The weights are laid out so that
//! one 64-byte vector holds two consecutive `k` values of sixteen output channels: a row's
//! two activations broadcast against it accumulate sixteen outputs at once, no horizontal
//! sums. Tiles of up to eight rows by 32 channels keep sixteen accumulators in registers.
//!
//! - [`DenseFormat::Int16`]: `y = scale_x * scale_w * sum(q * w) + bias`, weights rounded to
//!   integers up to [`WEIGHT_LIMIT`] per output channel, each activation row to integers up
//!   to 32767 unless its sums could then overflow 32 bits: the row's scale is chosen from
//!   its own sum of magnitudes so that `WEIGHT_LIMIT * sum|q| < 2^31` whatever the weights
//!   ([`activation_scale`]). The multiply is 16 bits by 16 bits whatever the weights' range,
//!   so the split of the 31 bits between weights and activations is free to choose: on
//!   MiniLM, 13-bit weights kept its vectors closest to FP32 (cosine distance about 1e-6;
//!   12-bit 3e-6, 15-bit 8e-6; 8-bit weights, a first version, 2e-3).
//! - [`DenseFormat::Bf16`]: weights and activations rounded to BF16 (8 significant bits),
//!   products summed in FP32.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use super::activations::round_half_even;
use super::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;

/// Output channels per weight vector.
const LANES: usize = 16;
/// `k` values per lane of a weight vector.
const PAIR: usize = 2;
/// Most rows per tile.
const TILE_ROWS: usize = 8;
/// Rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// Largest weight code of [`DenseFormat::Int16`]: 13-bit signed integers. More weight bits
/// would take bits from the activations of rows with large sums (see [`activation_scale`]).
pub(crate) const WEIGHT_LIMIT: i32 = 4095;
/// Largest activation code of [`DenseFormat::Int16`].
const ACTIVATION_LIMIT: f64 = 32767.0;

/// Whether the CPU is AMD's (CPUID vendor "AuthenticAMD").
fn amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let id = std::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        vendor == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// How a [`PackedLinear`] holds its weights and multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseFormat {
    /// Weights as integers up to [`WEIGHT_LIMIT`] per output channel, activations as 16-bit
    /// integers per row; 32-bit integer sums.
    Int16,
    /// BF16 weights and activations, FP32 sums.
    Bf16,
}

impl DenseFormat {
    /// Whether this CPU can run the kernel `isa` for this format: the portable one always;
    /// AVX-512 VNNI for both (BF16 also needs AVX512_BF16); AVX2 for integers.
    pub fn runs_on(self, isa: Isa) -> bool {
        match (self, isa) {
            (_, Isa::Portable) => true,
            #[cfg(target_arch = "x86_64")]
            (Self::Bf16, Isa::Avx512Vnni) => {
                isa.available() && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            (Self::Int16, _) => isa.available(),
            _ => false,
        }
    }

    /// The fastest packed format on this CPU, as measured (docs/BENCHMARKS.md), or `None`
    /// where FP32 is faster (no vector kernel). BF16 where `vdpbf16ps` runs at full rate,
    /// on AMD's AVX-512 cores: there it does twice the work of `vpdpwssd` a cycle (minilm
    /// 1.8x-2.0x FP32, against 1.4x-1.6x for INT16). Elsewhere INT16: on Intel's AVX-512
    /// cores `vdpbf16ps` runs at half the rate (1.0x-1.2x FP32, INT16 1.4x-1.9x), and
    /// without AVX512_BF16 only the integer kernels have vector code.
    pub fn fastest() -> Option<Self> {
        if Self::Bf16.runs_on(Isa::Avx512Vnni) && amd() {
            return Some(Self::Bf16);
        }
        Self::Int16.vector_kernel().map(|_| Self::Int16)
    }

    /// The fastest vector kernel for this format that the CPU has.
    pub fn vector_kernel(self) -> Option<Isa> {
        [Isa::Avx512Vnni, Isa::Avx2]
            .into_iter()
            .find(|&isa| self.runs_on(isa))
    }
}

/// A dense layer `y = x Wᵀ + b` with `W` `(out, k)` packed in 16-bit pairs.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    format: DenseFormat,
    out: usize,
    k: usize,
    /// `k` rounded up to whole pairs.
    k_pad: usize,
    /// Channel blocks of [`LANES`]: `out` rounded up to an even number of them.
    blocks: usize,
    /// `[block][pair][lane][2]`: integer codes as 16 bits, or BF16 bits.
    packed: Vec<u16>,
    /// Per channel (padded): the weight scale (1 for BF16) and the bias.
    scales: Vec<f32>,
    bias: Vec<f32>,
}

/// `v` rounded to BF16 (nearest, ties to even), as bits.
fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

impl PackedLinear {
    /// Packs `weight` `(out, k)` row-major in `format` (integers: scale
    /// `max |w| / WEIGHT_LIMIT` per row).
    pub fn new(
        format: DenseFormat,
        weight: &[f32],
        out: usize,
        k: usize,
        bias: Option<&[f32]>,
    ) -> Self {
        assert_eq!(weight.len(), out * k, "weight is not out x k");
        let k_pad = k.div_ceil(PAIR) * PAIR;
        let blocks = out.div_ceil(2 * LANES) * 2;
        let channels = blocks * LANES;
        let pairs = k_pad / PAIR;
        let mut packed = vec![0u16; channels * k_pad];
        let mut scales = vec![0f32; channels];
        let mut bias_padded = vec![0f32; channels];
        for o in 0..out {
            let row = &weight[o * k..(o + 1) * k];
            let scale = match format {
                DenseFormat::Int16 => {
                    row.iter().fold(0f32, |m, v| m.max(v.abs())) / WEIGHT_LIMIT as f32
                }
                DenseFormat::Bf16 => 1.0,
            };
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (i, &v) in row.iter().enumerate() {
                let at = ((o / LANES * pairs + i / PAIR) * LANES + o % LANES) * PAIR + i % PAIR;
                packed[at] = match format {
                    DenseFormat::Int16 => {
                        let limit = WEIGHT_LIMIT as f32;
                        (v * inverse).round().clamp(-limit, limit) as i16 as u16
                    }
                    DenseFormat::Bf16 => bf16_bits(v),
                };
            }
            scales[o] = scale;
            bias_padded[o] = bias.map_or(0.0, |b| b[o]);
        }
        Self {
            format,
            out,
            k,
            k_pad,
            blocks,
            packed,
            scales,
            bias: bias_padded,
        }
    }

    /// Output channels.
    pub fn out(&self) -> usize {
        self.out
    }

    /// The weights as rounded, FP32 `(out, k)`: what the kernels multiply by.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    pub fn dequantize(&self) -> Vec<f32> {
        let pairs = self.k_pad / PAIR;
        let mut w = vec![0f32; self.out * self.k];
        for o in 0..self.out {
            for i in 0..self.k {
                let at = ((o / LANES * pairs + i / PAIR) * LANES + o % LANES) * PAIR + i % PAIR;
                w[o * self.k + i] = self.weight(at) * self.scales[o];
            }
        }
        w
    }

    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // for tests and the examples
    fn weight(&self, at: usize) -> f32 {
        match self.format {
            DenseFormat::Int16 => f32::from(self.packed[at] as i16),
            DenseFormat::Bf16 => bf16_value(self.packed[at]),
        }
    }

    /// `x Wᵀ + b` for `x` `(rows, k)` row-major, with the vector kernel where the CPU has
    /// it, else the portable one.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let isa = self.format.vector_kernel().unwrap_or(Isa::Portable);
        self.forward_rows_with(isa, x, rows)
    }

    /// [`Self::forward_rows`] with the kernel `isa`, which must run this format on this CPU
    /// ([`DenseFormat::runs_on`]).
    pub fn forward_rows_with(&self, isa: Isa, x: &[f32], rows: usize) -> Vec<f32> {
        assert!(
            self.format.runs_on(isa),
            "this CPU cannot run the {isa:?} kernel for {:?}",
            self.format
        );
        assert_eq!(x.len(), rows * self.k, "x is not rows x k");
        let mut y = vec![0f32; rows * self.out];
        if rows == 0 || self.out == 0 {
            return y;
        }
        y.par_chunks_mut(ROWS_PER_TASK * self.out)
            .enumerate()
            .for_each(|(task, y)| {
                let first = task * ROWS_PER_TASK;
                let n = y.len() / self.out;
                let rows = &x[first * self.k..(first + n) * self.k];
                let xq = WideRows::new(self.format, rows, n, self.k, self.k_pad);
                match (isa, self.format) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `runs_on` confirmed AVX-512 F/BW/VL/VNNI.
                    (Isa::Avx512Vnni, DenseFormat::Int16) => unsafe { avx512::int16(self, &xq, y) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `runs_on` confirmed AVX-512 F/BW/VL/VNNI and BF16.
                    (Isa::Avx512Vnni, DenseFormat::Bf16) => unsafe { avx512::bf16(self, &xq, y) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `runs_on` confirmed AVX2 and FMA.
                    (Isa::Avx2, DenseFormat::Int16) => unsafe { avx2::int16(self, &xq, y) },
                    _ => self.portable(&xq, y),
                }
            });
        y
    }

    fn portable(&self, x: &WideRows, y: &mut [f32]) {
        let pairs = self.k_pad / PAIR;
        for r in 0..x.rows {
            let xr = &x.codes[r * self.k_pad..(r + 1) * self.k_pad];
            for o in 0..self.out {
                let lane = |p: usize| ((o / LANES * pairs + p) * LANES + o % LANES) * PAIR;
                let sum = match self.format {
                    DenseFormat::Int16 => {
                        let mut sum = 0i32;
                        for p in 0..pairs {
                            for j in 0..PAIR {
                                let w = i32::from(self.packed[lane(p) + j] as i16);
                                sum += i32::from(xr[p * PAIR + j] as i16) * w;
                            }
                        }
                        sum as f32
                    }
                    DenseFormat::Bf16 => {
                        let mut sum = 0f32;
                        for p in 0..pairs {
                            for j in 0..PAIR {
                                let w = bf16_value(self.packed[lane(p) + j]);
                                sum += bf16_value(xr[p * PAIR + j]) * w;
                            }
                        }
                        sum
                    }
                };
                y[r * self.out + o] = sum * self.scales[o] * x.scales[r] + self.bias[o];
            }
        }
    }
}

/// The scale of an activation row for [`DenseFormat::Int16`]: the smallest that rounds
/// every value into 16 bits (`max |x| / 32767`) and keeps every partial sum of products with
/// weights up to [`WEIGHT_LIMIT`] inside 32 bits, rounding included:
/// `WEIGHT_LIMIT * (sum |x| / scale + k_pad / 2) < 2^31`.
pub(crate) fn activation_scale(row: &[f32], k_pad: usize) -> f32 {
    // Sixteen running maxima and sums, so that the loop vectorises; the FP32 sum's rounding
    // (relative error under k * 2^-24) is covered by the 1e-3 margin.
    let (mut maxima, mut sums) = ([0f32; 16], [0f32; 16]);
    let chunks = row.chunks_exact(16);
    for (i, &v) in chunks.remainder().iter().enumerate() {
        maxima[i] = maxima[i].max(v.abs());
        sums[i] += v.abs();
    }
    for chunk in chunks {
        for i in 0..16 {
            maxima[i] = maxima[i].max(chunk[i].abs());
            sums[i] += chunk[i].abs();
        }
    }
    let amax = f64::from(maxima.iter().fold(0f32, |m, &v| m.max(v)));
    let l1 = f64::from(sums.iter().sum::<f32>()) * (1.0 + 1e-3);
    let limit = f64::from(WEIGHT_LIMIT);
    let budget = f64::from(i32::MAX) / limit - (k_pad / 2 + 1) as f64;
    // Round up so that rounding the scale to FP32 cannot bring it under the bound.
    let scale = (amax / ACTIVATION_LIMIT).max(l1 / budget) as f32;
    if scale > 0.0 {
        scale * (1.0 + f32::EPSILON)
    } else {
        0.0
    }
}

/// Activation rows in the layer's format, zero-padded to whole pairs: 16-bit integers with a
/// scale per row ([`activation_scale`]), or BF16 bits with scale 1.
struct WideRows {
    rows: usize,
    codes: Vec<u16>,
    scales: Vec<f32>,
}

impl WideRows {
    fn new(format: DenseFormat, x: &[f32], rows: usize, k: usize, k_pad: usize) -> Self {
        let mut codes = vec![0u16; rows * k_pad];
        let mut scales = vec![1f32; rows];
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            let dst = &mut codes[r * k_pad..r * k_pad + k];
            match format {
                DenseFormat::Int16 => {
                    let scale = activation_scale(xr, k_pad);
                    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                    for (c, &v) in dst.iter_mut().zip(xr) {
                        *c = round_half_even(v * inverse) as i16 as u16;
                    }
                    scales[r] = scale;
                }
                DenseFormat::Bf16 => {
                    for (c, &v) in dst.iter_mut().zip(xr) {
                        *c = bf16_bits(v);
                    }
                }
            }
        }
        Self {
            rows,
            codes,
            scales,
        }
    }
}

impl CustomOp1 for PackedLinear {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = (self.out, self.k);
        crate::cpu_op::rows_times_weights(self.name(), xs, layout, shape, |x, rows| {
            self.forward_rows(x, rows)
        })
    }
}
