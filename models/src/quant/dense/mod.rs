//! Dense layers for encoders in 16-bit pairs: INT8 weights per output channel with 16-bit
//! integer activations, or BF16 weights and activations, multiplied by AVX-512 `vpdpwssd` /
//! `vdpbf16ps` (32 multiply-adds an instruction, twice an FP32 FMA's 16).
//!
//! An encoder's products are large (every token of every text at once), so unlike a decode
//! step they are bound by arithmetic, not by weight bytes. The weights are laid out so that
//! one 64-byte vector holds two consecutive `k` values of sixteen output channels: a row's
//! two activations broadcast against it accumulate sixteen outputs at once, no horizontal
//! sums. Tiles of up to eight rows by 32 channels keep sixteen accumulators in registers.
//!
//! - [`DenseFormat::Int8`]: `y = scale_x * scale_w * sum(q * w) + bias`, weights rounded to
//!   8 bits per output channel, each activation row to as many bits as keep its integer sums
//!   inside 32 bits (`127 * max|q| * k < 2^31`: 14 bits at `k = 1536`). Activations rounded
//!   to 8 bits per row kept MiniLM's vectors at a cosine of only 0.993 to FP32: a few large
//!   channels set each row's scale and leave the rest a handful of steps.
//! - [`DenseFormat::Bf16`]: weights and activations rounded to BF16 (8 significant bits),
//!   products summed in FP32.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use super::activations::round_half_even;
use super::Isa;

/// Output channels per weight vector.
const LANES: usize = 16;
/// `k` values per lane of a weight vector.
const PAIR: usize = 2;
/// Most rows per tile.
const TILE_ROWS: usize = 8;
/// Rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// How a [`PackedLinear`] holds its weights and multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseFormat {
    /// INT8 weights per output channel, 16-bit integer activations per row.
    Int8,
    /// BF16 weights and activations, FP32 sums.
    Bf16,
}

impl DenseFormat {
    /// The vector kernel for this format, when the CPU has it.
    pub fn vector_kernel(self) -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            let vnni = Isa::detect() == Isa::Avx512Vnni;
            let ok = match self {
                Self::Int8 => vnni,
                Self::Bf16 => vnni && std::arch::is_x86_feature_detected!("avx512bf16"),
            };
            if ok {
                return Some(Isa::Avx512Vnni);
            }
        }
        None
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
    /// `[block][pair][lane][2]`: 8-bit codes widened to 16 bits, or BF16 bits.
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
    /// Packs `weight` `(out, k)` row-major in `format` (INT8: scale `max |w| / 127` per row).
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
                DenseFormat::Int8 => row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0,
                DenseFormat::Bf16 => 1.0,
            };
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (i, &v) in row.iter().enumerate() {
                let at = ((o / LANES * pairs + i / PAIR) * LANES + o % LANES) * PAIR + i % PAIR;
                packed[at] = match format {
                    DenseFormat::Int8 => (v * inverse).round().clamp(-127.0, 127.0) as i16 as u16,
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

    fn weight(&self, at: usize) -> f32 {
        match self.format {
            DenseFormat::Int8 => f32::from(self.packed[at] as i16),
            DenseFormat::Bf16 => bf16_value(self.packed[at]),
        }
    }

    /// `x Wᵀ + b` for `x` `(rows, k)` row-major, with the vector kernel where the CPU has
    /// it, else the portable one.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let isa = self.format.vector_kernel().unwrap_or(Isa::Portable);
        self.forward_rows_with(isa, x, rows)
    }

    /// [`Self::forward_rows`] with the kernel `isa`: [`Isa::Portable`], or the format's
    /// [`DenseFormat::vector_kernel`].
    pub fn forward_rows_with(&self, isa: Isa, x: &[f32], rows: usize) -> Vec<f32> {
        assert!(
            isa == Isa::Portable || self.format.vector_kernel() == Some(isa),
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
                    // SAFETY: `vector_kernel` confirmed AVX-512 F/BW/VL/VNNI.
                    (Isa::Avx512Vnni, DenseFormat::Int8) => unsafe { vector::int8(self, &xq, y) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `vector_kernel` confirmed AVX-512 F/BW/VL/VNNI and BF16.
                    (Isa::Avx512Vnni, DenseFormat::Bf16) => unsafe { vector::bf16(self, &xq, y) },
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
                    DenseFormat::Int8 => {
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

/// Activation rows in the layer's format, zero-padded to whole pairs: 16-bit integers with a
/// scale per row (`max |x| / limit`, `limit` the largest that keeps `127 * limit * k_pad`
/// below 2^31), or BF16 bits with scale 1.
struct WideRows {
    rows: usize,
    codes: Vec<u16>,
    scales: Vec<f32>,
}

impl WideRows {
    fn new(format: DenseFormat, x: &[f32], rows: usize, k: usize, k_pad: usize) -> Self {
        let limit = (i32::MAX as usize / (127 * k_pad.max(1))).min(i16::MAX as usize) as f32;
        let mut codes = vec![0u16; rows * k_pad];
        let mut scales = vec![1f32; rows];
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            let dst = &mut codes[r * k_pad..r * k_pad + k];
            match format {
                DenseFormat::Int8 => {
                    let amax = xr.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = amax / limit;
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

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register tiles read clearest as indexed loops
mod vector {
    use std::arch::x86_64::*;

    use super::{PackedLinear, WideRows, LANES, PAIR, TILE_ROWS};

    /// The INT8 layer: `vpdpwssd` into 32-bit integer sums.
    ///
    /// SAFETY: the CPU has AVX-512 F/BW/VL/VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn int8(m: &PackedLinear, x: &WideRows, y: &mut [f32]) {
        // SAFETY: the caller's guarantee covers `gemm`'s features.
        unsafe { gemm::<false>(m, x, y) }
    }

    /// The BF16 layer: `vdpbf16ps` into FP32 sums.
    ///
    /// SAFETY: the CPU has AVX-512 F/BW/VL/VNNI and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16")]
    pub(super) unsafe fn bf16(m: &PackedLinear, x: &WideRows, y: &mut [f32]) {
        // SAFETY: the caller's guarantee covers `gemm`'s features.
        unsafe { gemm::<true>(m, x, y) }
    }

    /// `y (rows, out) = x Wᵀ + b` for the rows of `x`.
    #[inline(always)]
    unsafe fn gemm<const BF16: bool>(m: &PackedLinear, x: &WideRows, y: &mut [f32]) {
        // SAFETY: inlined into `int8`/`bf16`; every pointer below stays inside `m.packed` (a
        // block pair's `pairs * 32` codes), a row of `x.codes` (`k_pad` codes) or `y`;
        // stores past `out` are masked.
        unsafe {
            let pairs = m.k_pad / PAIR;
            for pair in 0..m.blocks / 2 {
                let w = m.packed.as_ptr().add(pair * 2 * pairs * LANES * PAIR);
                let mut first = 0;
                while first < x.rows {
                    let n = (x.rows - first).min(TILE_ROWS);
                    let n = if n >= 8 {
                        8
                    } else if n >= 4 {
                        4
                    } else if n >= 2 {
                        2
                    } else {
                        1
                    };
                    let acc = match n {
                        8 => tile::<BF16, 8>(w, x, first, m.k_pad, pairs),
                        4 => tile::<BF16, 4>(w, x, first, m.k_pad, pairs),
                        2 => tile::<BF16, 2>(w, x, first, m.k_pad, pairs),
                        _ => tile::<BF16, 1>(w, x, first, m.k_pad, pairs),
                    };
                    for j in 0..2 {
                        let channel = (pair * 2 + j) * LANES;
                        if channel >= m.out {
                            break;
                        }
                        let valid = (m.out - channel).min(LANES);
                        let mask: __mmask16 = if valid == LANES {
                            !0
                        } else {
                            (1u16 << valid) - 1
                        };
                        let scale = _mm512_loadu_ps(m.scales.as_ptr().add(channel));
                        let bias = _mm512_loadu_ps(m.bias.as_ptr().add(channel));
                        for r in 0..n {
                            let sums = if BF16 {
                                _mm512_castsi512_ps(acc[r][j])
                            } else {
                                _mm512_cvtepi32_ps(acc[r][j])
                            };
                            let row_scale = _mm512_set1_ps(x.scales[first + r]);
                            let v = _mm512_fmadd_ps(_mm512_mul_ps(sums, scale), row_scale, bias);
                            let at = y.as_mut_ptr().add((first + r) * m.out + channel);
                            _mm512_mask_storeu_ps(at, mask, v);
                        }
                    }
                    first += n;
                }
            }
        }
    }

    /// The sums of `R` rows from `first` against a pair of channel blocks at `w`: 32-bit
    /// integers, or FP32 bits for BF16.
    #[inline(always)]
    unsafe fn tile<const BF16: bool, const R: usize>(
        w: *const u16,
        x: &WideRows,
        first: usize,
        k_pad: usize,
        pairs: usize,
    ) -> [[__m512i; 2]; TILE_ROWS] {
        // SAFETY: inlined into `int8`/`bf16` (BF16 only into `bf16`); `w` holds two blocks
        // of `pairs` 64-byte vectors and each row `k_pad = 2 * pairs` codes.
        unsafe {
            let zero = _mm512_setzero_si512();
            let mut acc = [[zero; 2]; TILE_ROWS];
            let rows: [*const u16; R] =
                std::array::from_fn(|r| x.codes.as_ptr().add((first + r) * k_pad));
            let second = w.add(pairs * LANES * PAIR);
            for p in 0..pairs {
                let w0 = _mm512_loadu_si512(w.add(p * LANES * PAIR) as *const _);
                let w1 = _mm512_loadu_si512(second.add(p * LANES * PAIR) as *const _);
                for r in 0..R {
                    let two = (rows[r].add(p * PAIR) as *const i32).read_unaligned();
                    let xb = _mm512_set1_epi32(two);
                    for (j, wv) in [w0, w1].into_iter().enumerate() {
                        acc[r][j] = if BF16 {
                            let sums = _mm512_dpbf16_ps(
                                _mm512_castsi512_ps(acc[r][j]),
                                std::mem::transmute::<__m512i, __m512bh>(xb),
                                std::mem::transmute::<__m512i, __m512bh>(wv),
                            );
                            _mm512_castps_si512(sums)
                        } else {
                            _mm512_dpwssd_epi32(acc[r][j], xb, wv)
                        };
                    }
                }
            }
            acc
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Both formats and both kernels against the exact product with the rounded weights,
    /// within the bound the rounded activations allow, for odd shapes (channels past a
    /// block pair, `k` past a pair) and every row count up to 21.
    #[test]
    fn kernels_match_the_rounded_product_within_the_activation_rounding() {
        for format in [DenseFormat::Int8, DenseFormat::Bf16] {
            for (out, k) in [(37usize, 51usize), (64, 384), (5, 3)] {
                check(format, out, k);
            }
        }
    }

    fn check(format: DenseFormat, out: usize, k: usize) {
        let w = pseudo_random(out * k, 7);
        let bias = pseudo_random(out, 9);
        let layer = PackedLinear::new(format, &w, out, k, Some(&bias));
        let rounded = layer.dequantize();
        for (i, (a, b)) in rounded.iter().zip(&w).enumerate() {
            let row = &w[i / k * k..(i / k + 1) * k];
            let step = match format {
                DenseFormat::Int8 => row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0,
                DenseFormat::Bf16 => b.abs() / 128.0,
            };
            assert!((a - b).abs() <= step / 2.0 + 1e-7, "{format:?} weight {i}");
        }
        let vector = format.vector_kernel();
        eprintln!("{format:?}: vector kernel {vector:?}");
        for rows in 1..=21 {
            let x = pseudo_random(rows * k, rows as u32 + 100);
            let portable = layer.forward_rows_with(Isa::Portable, &x, rows);
            let fast = vector.map(|isa| layer.forward_rows_with(isa, &x, rows));
            for r in 0..rows {
                let xr = &x[r * k..(r + 1) * k];
                let amax = xr.iter().fold(0f32, |m, v| m.max(v.abs()));
                let limit = (i32::MAX as usize / (127 * k.div_ceil(2) * 2)).min(32767) as f32;
                for o in 0..out {
                    let wr = &rounded[o * k..(o + 1) * k];
                    let exact: f64 = xr
                        .iter()
                        .zip(wr)
                        .map(|(a, b)| f64::from(a * b))
                        .sum::<f64>()
                        + f64::from(bias[o]);
                    // Each activation is off by at most half its step.
                    let bound: f64 = xr
                        .iter()
                        .zip(wr)
                        .map(|(v, w)| {
                            let step = match format {
                                DenseFormat::Int8 => amax / limit,
                                DenseFormat::Bf16 => v.abs() / 128.0,
                            };
                            f64::from(w.abs() * step / 2.0)
                        })
                        .sum();
                    let got = f64::from(portable[r * out + o]);
                    assert!(
                        (got - exact).abs() <= bound * 1.01 + 1e-4,
                        "{format:?} {out}x{k}, {rows} rows, ({r}, {o}): {got} vs {exact}"
                    );
                    if let Some(v) = &fast {
                        let (g, p) = (v[r * out + o], portable[r * out + o]);
                        assert!(
                            (g - p).abs() <= 1e-4 * g.abs().max(1.0),
                            "{format:?} vector ({r}, {o}): {g} vs {p}"
                        );
                    }
                }
            }
        }
    }
}
