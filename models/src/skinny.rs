//! The matrix products of a decode step on CPU: a few FP32 sequence rows times a large
//! weight matrix. For a few rows the product is a stream over the weights, and a general
//! GEMM's packing and tiling only add to it: streaming each weight row once and
//! multiplying it into every sequence row while it sits in L1 is 1.3x to 3x faster than
//! gemm for SmolLM2's shapes up to 8 rows, and no slower up to about 24
//! (`models/examples/gemm_shape.rs`), which covers a decode step that also reads a short
//! prompt. Longer prefill chunks go to gemm.
//!
//! Weights may be FP32 or FP16 ([`Weight`]); FP16 ones are widened as they are loaded, so
//! they cost half the memory traffic, which is what bounds a lone sequence's step.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use half::f16;

use crate::cpu_op::{by_weight_rows, contiguous, contiguous_f32, dot};

/// A weight element type the kernels stream: FP32, or FP16 widened to FP32 on load.
pub trait Weight: Copy + Send + Sync + 'static {
    /// The value as FP32.
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Most rows for which [`matmul_rows`] beats a general GEMM on this kind of machine.
pub(crate) const MAX_ROWS: usize = 24;

/// Weight rows per parallel task: enough work to amortise a task, small enough that two
/// threads share even a 192-row projection.
const ROWS_PER_TASK: usize = 32;

/// `x · wᵀ` for `x` of shape `(rows, k)` and `w` of shape `(out, k)`, both row-major;
/// returns `(rows, out)` row-major. Runs on the current rayon pool, one pass over the
/// weights whatever `rows` is (worth it up to [`MAX_ROWS`]).
pub fn matmul_rows<W: WeightLoad>(
    x: &[f32],
    rows: usize,
    w: &[W],
    out: usize,
    k: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), rows * k, "x is not rows x k");
    assert_eq!(w.len(), out * k, "w is not out x k");
    by_weight_rows(rows, out, ROWS_PER_TASK, |first, dst| {
        let weight_rows = dst.len() / rows;
        block(&w[first * k..(first + weight_rows) * k], x, rows, k, dst);
    })
}

/// [`matmul_rows`] as a candle op: `xs.apply_op2_no_bwd(&weight, &RowsTimesWeightT)` for
/// contiguous CPU tensors `xs (rows, k)` (FP32) and `weight (out, k)` (FP32 or FP16).
pub(crate) struct RowsTimesWeightT;

impl CustomOp2 for RowsTimesWeightT {
    fn name(&self) -> &'static str {
        "rows-times-weight-t"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(self.name(), xs, xs_layout)?;
        let (rows, k) = xs_layout.shape().dims2()?;
        let (out, wk) = weight_layout.shape().dims2()?;
        if k != wk {
            candle_core::bail!("rows-times-weight-t: rows of {k} against weights of {wk}");
        }
        let y = match weight {
            CpuStorage::F16(_) => {
                let weight = contiguous::<f16>(self.name(), weight, weight_layout)?;
                matmul_rows(xs, rows, weight, out, k)
            }
            _ => {
                let weight = contiguous_f32(self.name(), weight, weight_layout)?;
                matmul_rows(xs, rows, weight, out, k)
            }
        };
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }
}

/// `dst[o * rows + r] = w[o] · x[r]` for the weight rows of `w` and every row of `x`.
fn block<W: WeightLoad>(w: &[W], x: &[f32], rows: usize, k: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has the features `avx2::block` is compiled for, checked just above.
        return unsafe { avx2::block(w, x, rows, k, dst) };
    }
    portable_block(w, x, rows, k, dst)
}

/// What the kernels need of a weight type: [`Weight`], and on x86-64 a vector load.
#[cfg(target_arch = "x86_64")]
pub trait WeightLoad: Weight + avx2::Load {}
#[cfg(target_arch = "x86_64")]
impl<W: Weight + avx2::Load> WeightLoad for W {}
/// What the kernels need of a weight type.
#[cfg(not(target_arch = "x86_64"))]
pub trait WeightLoad: Weight {}
#[cfg(not(target_arch = "x86_64"))]
impl<W: Weight> WeightLoad for W {}

/// Lanes per accumulator set in the portable kernel: four AVX-sized vectors in flight.
const LANES: usize = 32;

/// The kernel for CPUs without AVX2/FMA/F16C: one dot product at a time, against each
/// weight row widened once.
fn portable_block<W: Weight>(w: &[W], x: &[f32], rows: usize, k: usize, dst: &mut [f32]) {
    let mut widened = vec![0f32; k];
    for (weights, out) in w.chunks_exact(k).zip(dst.chunks_exact_mut(rows)) {
        for (wide, weight) in widened.iter_mut().zip(weights) {
            *wide = weight.to_f32();
        }
        for (xr, out) in x.chunks_exact(k).zip(out.iter_mut()) {
            *out = dot::<LANES>(&widened, xr);
        }
    }
}

/// AVX2/FMA tiles of two weight rows by up to four sequence rows: eight accumulators, two
/// weight vectors and one row vector in the sixteen registers, so nothing spills. The two
/// weight rows stay in L1 while every group of four sequence rows passes over them.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // a register tile reads clearest as indexed loops
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    /// Floats per AVX vector.
    const V: usize = 8;
    /// Sequence rows per tile.
    const TILE_ROWS: usize = 4;
    /// Bytes per cache line.
    const LINE_BYTES: usize = 64;

    /// A weight element type loaded eight at a time as FP32 lanes.
    pub trait Load: super::Weight {
        /// Eight weights from `p` as FP32.
        ///
        /// SAFETY: `p` points at eight readable elements; the CPU has AVX2 and F16C.
        unsafe fn load8(p: *const Self) -> __m256;
    }

    impl Load for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const Self) -> __m256 {
            // SAFETY: the caller guarantees eight readable elements at `p` and AVX2.
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    impl Load for f16 {
        #[inline(always)]
        unsafe fn load8(p: *const Self) -> __m256 {
            // SAFETY: the caller guarantees eight readable elements at `p` and F16C.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn block<E: Load>(
        w: &[E],
        x: &[f32],
        rows: usize,
        k: usize,
        dst: &mut [f32],
    ) {
        // SAFETY: this function is only called once AVX2, FMA and F16C were detected; the slices bound every index below.
        unsafe {
            let pairs = w.len() / k / 2;
            for pair in 0..pairs {
                let (w2, next) = w[pair * 2 * k..].split_at(2 * k);
                let out = &mut dst[pair * 2 * rows..(pair * 2 + 2) * rows];
                weight_rows::<E, 2>(w2, next, x, rows, k, out);
            }
            if w.len() / k % 2 == 1 {
                let last = w.len() / k - 1;
                weight_rows::<E, 1>(&w[last * k..], &[], x, rows, k, &mut dst[last * rows..]);
            }
        }
    }

    /// Products of `N` weight rows with every sequence row, written `out[o * rows + r]`.
    #[inline(always)]
    unsafe fn weight_rows<E: Load, const N: usize>(
        w: &[E],
        next: &[E],
        x: &[f32],
        rows: usize,
        k: usize,
        out: &mut [f32],
    ) {
        // SAFETY: inlined into `block`, which runs with AVX2/FMA/F16C enabled; `tile` gets whole rows of `w` and `x`.
        unsafe {
            let mut first = 0;
            while first < rows {
                let n = (rows - first).min(TILE_ROWS);
                let xs = &x[first * k..(first + n) * k];
                // The first pass brings these weight rows in; it asks for the next ones too.
                let ahead = if first == 0 { next } else { &[] };
                let sums = match n {
                    4 => tile::<E, N, 4>(w, xs, ahead, k),
                    3 => tile::<E, N, 3>(w, xs, ahead, k),
                    2 => tile::<E, N, 2>(w, xs, ahead, k),
                    _ => tile::<E, N, 1>(w, xs, ahead, k),
                };
                for o in 0..N {
                    for r in 0..n {
                        out[o * rows + first + r] = sums[o][r];
                    }
                }
                first += n;
            }
        }
    }

    /// `N x R` dot products of length `k` over `w (N, k)` and `x (R, k)`, prefetching the
    /// weight rows after next (`ahead` starts at the next `N` rows) into cache on the way:
    /// the hardware prefetcher alone leaves the loop waiting on memory a third of its time.
    #[inline(always)]
    unsafe fn tile<E: Load, const N: usize, const R: usize>(
        w: &[E],
        x: &[f32],
        ahead: &[E],
        k: usize,
    ) -> [[f32; TILE_ROWS]; N] {
        // SAFETY: inlined into `block` (AVX2/FMA/F16C); pointer offsets stay below `N * k` in `w`, `R * k` in `x` and `2 * N * k` in `ahead`, checked by `prefetch`.
        unsafe {
            debug_assert!(w.len() == N * k && x.len() == R * k);
            let line = LINE_BYTES / std::mem::size_of::<E>();
            let whole = k / V * V;
            let wp = w.as_ptr();
            let xp = x.as_ptr();
            let prefetch = ahead.len() >= 2 * N * k;
            let ap = ahead.as_ptr();
            let mut acc = [[_mm256_setzero_ps(); R]; N];
            let mut i = 0;
            // One cache line of every weight row per turn, so one prefetch per line and row.
            while i + line <= whole {
                if prefetch {
                    for o in 0..N {
                        // SAFETY: a prefetch never faults, and the address is inside `ahead`.
                        _mm_prefetch::<_MM_HINT_T0>(ap.add((N + o) * k + i) as *const i8);
                    }
                }
                let mut j = i;
                while j < i + line {
                    multiply_add::<E, N, R>(&mut acc, wp, xp, k, j);
                    j += V;
                }
                i += line;
            }
            while i < whole {
                multiply_add::<E, N, R>(&mut acc, wp, xp, k, i);
                i += V;
            }
            let mut sums = [[0f32; TILE_ROWS]; N];
            for o in 0..N {
                for r in 0..R {
                    let mut s = horizontal_sum(acc[o][r]);
                    for j in whole..k {
                        s += w[o * k + j].to_f32() * x[r * k + j];
                    }
                    sums[o][r] = s;
                }
            }
            sums
        }
    }

    /// `acc[o][r] += w[o][i..i + V] * x[r][i..i + V]` lane by lane.
    ///
    /// SAFETY: `i + V <= k`, `wp` points at `N` rows of `k` weights and `xp` at `R` rows.
    #[inline(always)]
    unsafe fn multiply_add<E: Load, const N: usize, const R: usize>(
        acc: &mut [[__m256; R]; N],
        wp: *const E,
        xp: *const f32,
        k: usize,
        i: usize,
    ) {
        // SAFETY: the caller guarantees `i + V <= k` and `N`/`R` rows of `k` behind `wp`/`xp`; AVX2/FMA are enabled in the inlining `block`.
        unsafe {
            let mut wv = [_mm256_setzero_ps(); N];
            for o in 0..N {
                wv[o] = E::load8(wp.add(o * k + i));
            }
            for r in 0..R {
                let xv = _mm256_loadu_ps(xp.add(r * k + i));
                for o in 0..N {
                    acc[o][r] = _mm256_fmadd_ps(wv[o], xv, acc[o][r]);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn horizontal_sum(v: __m256) -> f32 {
        // SAFETY: register-only AVX/SSE arithmetic, inlined into `block` where AVX2 is enabled.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn candle_product(x: &Tensor, w: &Tensor) -> Vec<f32> {
        x.matmul(&w.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn worst_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn matches_candle_matmul_for_every_row_count_and_odd_sizes() {
        let device = Device::Cpu;
        for (out, k) in [(5usize, 37usize), (70, 64), (33, 8), (192, 576)] {
            let w = Tensor::randn(0f32, 1., (out, k), &device).unwrap();
            for rows in [1usize, 2, 3, 4, 5, 6, 7, 8, 11] {
                let x = Tensor::randn(0f32, 1., (rows, k), &device).unwrap();
                let got = matmul_rows(&flat(&x), rows, &flat(&w), out, k);
                let worst = worst_difference(&got, &candle_product(&x, &w));
                assert!(worst < 1e-3, "{out}x{k}, {rows} rows: off by {worst}");
            }
        }
    }

    #[test]
    fn fp16_weights_match_candle_matmul_of_the_same_values() {
        let device = Device::Cpu;
        for (out, k) in [(5usize, 37usize), (70, 64), (192, 576)] {
            let w16 = Tensor::randn(0f32, 1., (out, k), &device)
                .unwrap()
                .to_dtype(candle_core::DType::F16)
                .unwrap();
            let w = w16.to_dtype(candle_core::DType::F32).unwrap();
            let halves: Vec<f16> = w16.flatten_all().unwrap().to_vec1().unwrap();
            for rows in [1usize, 4, 7] {
                let x = Tensor::randn(0f32, 1., (rows, k), &device).unwrap();
                let got = matmul_rows(&flat(&x), rows, &halves, out, k);
                let worst = worst_difference(&got, &candle_product(&x, &w));
                assert!(worst < 1e-3, "{out}x{k}, {rows} rows: off by {worst}");
                let mut portable = vec![0f32; out * rows];
                portable_block(&halves, &flat(&x), rows, k, &mut portable);
                let turned: Vec<f32> = (0..rows * out)
                    .map(|i| portable[(i % out) * rows + i / out])
                    .collect();
                assert!(worst_difference(&turned, &got) < 1e-3);
            }
            let op = x_times(&w16, 3, k);
            assert!(worst_difference(&flat(&op.0), &candle_product(&op.1, &w)) < 1e-3);
        }
    }

    /// `x (rows, k) · w^T` through the candle op, and `x`.
    fn x_times(w: &Tensor, rows: usize, k: usize) -> (Tensor, Tensor) {
        let x = Tensor::randn(0f32, 1., (rows, k), &Device::Cpu).unwrap();
        (x.apply_op2_no_bwd(w, &RowsTimesWeightT).unwrap(), x)
    }

    #[test]
    fn the_op_refuses_other_weight_types() {
        let w = Tensor::zeros((4, 8), candle_core::DType::BF16, &Device::Cpu).unwrap();
        let x = Tensor::zeros((1, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = x.apply_op2_no_bwd(&w, &RowsTimesWeightT).unwrap_err();
        assert!(err.to_string().contains("takes FP32 only"), "{err}");
    }

    #[test]
    fn portable_kernel_matches_candle_matmul() {
        let device = Device::Cpu;
        let (out, k, rows) = (9usize, 45usize, 3usize);
        let w = Tensor::randn(0f32, 1., (out, k), &device).unwrap();
        let x = Tensor::randn(0f32, 1., (rows, k), &device).unwrap();
        let mut by_weight_row = vec![0f32; out * rows];
        portable_block(&flat(&w), &flat(&x), rows, k, &mut by_weight_row);
        let want = candle_product(&x, &w);
        let turned: Vec<f32> = (0..rows * out)
            .map(|i| by_weight_row[(i % out) * rows + i / out])
            .collect();
        let worst = worst_difference(&turned, &want);
        assert!(worst < 1e-3, "off by {worst}");
    }

    #[test]
    fn empty_products_are_empty() {
        assert!(matmul_rows(&[], 0, &[1.0, 2.0], 1, 2).is_empty());
        assert!(matmul_rows::<f32>(&[1.0, 2.0], 1, &[], 0, 2).is_empty());
    }
}
