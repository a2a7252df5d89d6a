//! INT8 dense layers for encoders: weights rounded to 8 bits per output channel at load,
//! activations to 16-bit integers per row per call, and whole rows multiplied in integers.
//!
//! An encoder's products are large (every token of every text at once), so unlike a decode
//! step they are bound by arithmetic, not by weight bytes. One AVX-512 VNNI `vpdpwssd` does
//! 32 multiply-adds of 16-bit integers where an FP32 FMA does 16. The weights are laid out
//! so that one 64-byte vector holds two consecutive `k` values of sixteen output channels: a
//! row's two activations broadcast against it accumulate sixteen outputs at once, no
//! horizontal sums. Tiles of up to eight rows by 32 channels keep sixteen accumulators in
//! registers.
//!
//! Why 16-bit activations: rounded to 8 bits per row, MiniLM's vectors kept a cosine of only
//! 0.993 to FP32 (a few large channels set each row's scale and leave the rest a handful of
//! steps); at 16 bits the weights' rounding is all that is left. Each activation keeps as
//! many bits as lets a row's integer sum never overflow 32 bits (`127 * max|q| * k < 2^31`:
//! 14 bits at `k = 1536`). `y = scale_x * scale_w * sum(q * w) + bias`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use super::Isa;

/// Output channels per weight vector.
const LANES: usize = 16;
/// `k` values per lane of a weight vector.
const QUAD: usize = 2;
/// Most rows per tile.
const TILE_ROWS: usize = 8;
/// Rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// A dense layer `y = x Wᵀ + b` with `W` `(out, k)` in INT8 per output channel.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    out: usize,
    k: usize,
    /// `k` rounded up to whole quads.
    k_pad: usize,
    /// Channel blocks of [`LANES`]: `out` rounded up to an even number of them.
    blocks: usize,
    /// `[block][pair][lane][2]` signed 8-bit codes, widened to 16 bits.
    packed: Vec<i16>,
    /// Per channel (padded): the weight scale and the bias.
    scales: Vec<f32>,
    bias: Vec<f32>,
}

impl Int8Linear {
    /// Rounds `weight` `(out, k)` row-major to 8 bits per row (scale `max |w| / 127`).
    pub fn new(weight: &[f32], out: usize, k: usize, bias: Option<&[f32]>) -> Self {
        assert_eq!(weight.len(), out * k, "weight is not out x k");
        let k_pad = k.div_ceil(QUAD) * QUAD;
        let blocks = out.div_ceil(2 * LANES) * 2;
        let channels = blocks * LANES;
        let quads = k_pad / QUAD;
        let mut packed = vec![0i16; channels * k_pad];
        let mut scales = vec![0f32; channels];
        let mut bias_padded = vec![0f32; channels];
        for o in 0..out {
            let row = &weight[o * k..(o + 1) * k];
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let (block, lane) = (o / LANES, o % LANES);
            for (i, &v) in row.iter().enumerate() {
                let at = ((block * quads + i / QUAD) * LANES + lane) * QUAD + i % QUAD;
                packed[at] = (v * inverse).round().clamp(-127.0, 127.0) as i16;
            }
            scales[o] = scale;
            bias_padded[o] = bias.map_or(0.0, |b| b[o]);
        }
        Self {
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
        let quads = self.k_pad / QUAD;
        let mut w = vec![0f32; self.out * self.k];
        for o in 0..self.out {
            for i in 0..self.k {
                let at = ((o / LANES * quads + i / QUAD) * LANES + o % LANES) * QUAD + i % QUAD;
                w[o * self.k + i] = self.scales[o] * f32::from(self.packed[at]);
            }
        }
        w
    }

    /// `x Wᵀ + b` for `x` `(rows, k)` row-major, with the best kernel for this CPU.
    pub fn forward_rows(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let isa = match Isa::detect() {
            Isa::Avx512Vnni => Isa::Avx512Vnni,
            _ => Isa::Portable,
        };
        self.forward_rows_with(isa, x, rows)
    }

    /// [`Self::forward_rows`] with the kernel `isa`: [`Isa::Avx512Vnni`] (if the CPU has
    /// it) or [`Isa::Portable`].
    pub fn forward_rows_with(&self, isa: Isa, x: &[f32], rows: usize) -> Vec<f32> {
        assert!(isa.available(), "this CPU cannot run the {isa:?} kernel");
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
                let xq = WideRows::new(
                    &x[first * self.k..(first + n) * self.k],
                    n,
                    self.k,
                    self.k_pad,
                );
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `available` confirmed AVX-512 F/BW/VL/VNNI.
                    Isa::Avx512Vnni => unsafe { vnni::gemm(self, &xq, y) },
                    _ => self.portable(&xq, y),
                }
            });
        y
    }

    fn portable(&self, x: &WideRows, y: &mut [f32]) {
        let quads = self.k_pad / QUAD;
        for r in 0..x.rows {
            let xr = &x.codes[r * self.k_pad..(r + 1) * self.k_pad];
            for o in 0..self.out {
                let (block, lane) = (o / LANES, o % LANES);
                let mut sum = 0i32;
                for q in 0..quads {
                    let at = ((block * quads + q) * LANES + lane) * QUAD;
                    for j in 0..QUAD {
                        sum += i32::from(xr[q * QUAD + j]) * i32::from(self.packed[at + j]);
                    }
                }
                y[r * self.out + o] = sum as f32 * self.scales[o] * x.scales[r] + self.bias[o];
            }
        }
    }
}

/// Rows rounded to 16-bit integers (scale `max |x| / limit` per row, `limit` the largest
/// that keeps `127 * limit * k_pad` below 2^31), zero-padded to whole pairs.
struct WideRows {
    rows: usize,
    codes: Vec<i16>,
    scales: Vec<f32>,
}

impl WideRows {
    fn new(x: &[f32], rows: usize, k: usize, k_pad: usize) -> Self {
        let limit = (i32::MAX as usize / (127 * k_pad.max(1))).min(i16::MAX as usize) as f32;
        let mut codes = vec![0i16; rows * k_pad];
        let mut scales = vec![0f32; rows];
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            let amax = xr.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / limit;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (c, &v) in codes[r * k_pad..r * k_pad + k].iter_mut().zip(xr) {
                *c = round_to_i16(v * inverse);
            }
            scales[r] = scale;
        }
        Self {
            rows,
            codes,
            scales,
        }
    }
}

/// `v` (within `[-32767.5, 32767.5]`) to the nearest integer, ties to even, without a call
/// to `roundf` (the trick of [`super::activations`]).
#[inline(always)]
fn round_to_i16(v: f32) -> i16 {
    const MAGIC: f32 = 12_582_912.0;
    ((v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i16
}

impl CustomOp1 for Int8Linear {
    fn name(&self) -> &'static str {
        "int8-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::cpu_op::contiguous_f32(self.name(), xs, layout)?;
        let (rows, k) = layout.shape().dims2()?;
        if k != self.k {
            candle_core::bail!("{}: rows of {k} against weights of {}", self.name(), self.k);
        }
        Ok((
            CpuStorage::F32(self.forward_rows(x, rows)),
            Shape::from((rows, self.out)),
        ))
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register tiles read clearest as indexed loops
mod vnni {
    use std::arch::x86_64::*;

    use super::{Int8Linear, WideRows, LANES, QUAD, TILE_ROWS};

    /// `y (rows, out) = x Wᵀ + b` for the rows of `x`.
    ///
    /// SAFETY: the CPU has AVX-512 F/BW/VL/VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn gemm(m: &Int8Linear, x: &WideRows, y: &mut [f32]) {
        // SAFETY: every pointer below stays inside `m.packed` (a block pair's `quads * 32`
        // codes), a row of `x.codes` (`k_pad` codes) or `y`; stores past `out` are masked.
        unsafe {
            let quads = m.k_pad / QUAD;
            for pair in 0..m.blocks / 2 {
                let w = m.packed.as_ptr().add(pair * 2 * quads * LANES * QUAD);
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
                        8 => tile::<8>(w, x, first, m.k_pad, quads),
                        4 => tile::<4>(w, x, first, m.k_pad, quads),
                        2 => tile::<2>(w, x, first, m.k_pad, quads),
                        _ => tile::<1>(w, x, first, m.k_pad, quads),
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
                            let exact = _mm512_cvtepi32_ps(acc[r][j]);
                            let row_scale = _mm512_set1_ps(x.scales[first + r]);
                            let v = _mm512_fmadd_ps(_mm512_mul_ps(exact, scale), row_scale, bias);
                            _mm512_mask_storeu_ps(
                                y.as_mut_ptr().add((first + r) * m.out + channel),
                                mask,
                                v,
                            );
                        }
                    }
                    first += n;
                }
            }
        }
    }

    /// The integer sums of `R` rows from `first` against a pair of channel blocks at `w`.
    #[inline(always)]
    unsafe fn tile<const R: usize>(
        w: *const i16,
        x: &WideRows,
        first: usize,
        k_pad: usize,
        quads: usize,
    ) -> [[__m512i; 2]; TILE_ROWS] {
        // SAFETY: inlined into `gemm`; `w` holds two blocks of `quads` 64-byte vectors and
        // each row `k_pad = 2 * quads` codes.
        unsafe {
            let zero = _mm512_setzero_si512();
            let mut acc = [[zero; 2]; TILE_ROWS];
            let rows: [*const i16; R] =
                std::array::from_fn(|r| x.codes.as_ptr().add((first + r) * k_pad));
            let second = w.add(quads * LANES * QUAD);
            for q in 0..quads {
                let w0 = _mm512_loadu_si512(w.add(q * LANES * QUAD) as *const _);
                let w1 = _mm512_loadu_si512(second.add(q * LANES * QUAD) as *const _);
                for r in 0..R {
                    let two = (rows[r].add(q * QUAD) as *const i32).read_unaligned();
                    let xb = _mm512_set1_epi32(two);
                    acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], xb, w0);
                    acc[r][1] = _mm512_dpwssd_epi32(acc[r][1], xb, w1);
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

    /// Both kernels against the exact product with the rounded weights, within the bound
    /// the 8-bit rows allow, for odd shapes (channels past a block pair, `k` past a quad)
    /// and every row count up to 21.
    #[test]
    fn kernels_match_the_rounded_product_within_the_activation_rounding() {
        for (out, k) in [(37usize, 50usize), (64, 384), (5, 3)] {
            let w = pseudo_random(out * k, 7);
            let bias = pseudo_random(out, 9);
            let layer = Int8Linear::new(&w, out, k, Some(&bias));
            let rounded = layer.dequantize();
            for (o, (a, b)) in rounded.iter().zip(&w).enumerate() {
                let step = w[o / k * k..(o / k + 1) * k]
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()))
                    / 127.0;
                assert!((a - b).abs() <= step / 2.0 + 1e-6);
            }
            for rows in 1..=21 {
                let x = pseudo_random(rows * k, rows as u32 + 100);
                let portable = layer.forward_rows_with(Isa::Portable, &x, rows);
                let vector = Isa::Avx512Vnni
                    .available()
                    .then(|| layer.forward_rows_with(Isa::Avx512Vnni, &x, rows));
                for r in 0..rows {
                    let xr = &x[r * k..(r + 1) * k];
                    let step = xr.iter().fold(0f32, |m, v| m.max(v.abs()))
                        / 2.0
                        / (i32::MAX as usize / (127 * k.div_ceil(2) * 2)).min(32767) as f32;
                    for o in 0..out {
                        let wr = &rounded[o * k..(o + 1) * k];
                        let exact: f64 = xr
                            .iter()
                            .zip(wr)
                            .map(|(a, b)| f64::from(a * b))
                            .sum::<f64>()
                            + f64::from(bias[o]);
                        let bound: f64 = wr.iter().map(|v| f64::from(v.abs() * step)).sum();
                        let got = f64::from(portable[r * out + o]);
                        assert!(
                            (got - exact).abs() <= bound * 1.01 + 1e-4,
                            "{out}x{k}, {rows} rows, ({r}, {o}): {got} vs {exact}"
                        );
                        if let Some(v) = &vector {
                            let g = v[r * out + o];
                            assert!(
                                (g - portable[r * out + o]).abs() <= 1e-4 * g.abs().max(1.0),
                                "VNNI ({r}, {o})"
                            );
                        }
                    }
                }
            }
        }
    }
}
