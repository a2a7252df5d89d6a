//! The matrix-vector product of a one-sequence decode step on CPU: a row times a large FP32
//! weight matrix is a stream over the weights, memory-bound, and a general GEMM's packing
//! and tiling only add to it. Streaming each weight row once through four vector
//! accumulators on every core of the instance's pool is 1.3x (projections) to 1.7x (the
//! vocabulary head) faster than gemm here (`models/examples/gemm_shape.rs`). For two rows
//! and more, gemm's `W x^T` wins and is what the llama uses.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use rayon::prelude::*;

use crate::cpu_op::contiguous_f32;

/// Most rows for which [`matmul_rows`] beats a general GEMM on this kind of machine.
pub const MAX_ROWS: usize = 1;

/// Weight rows per parallel task: enough work to amortise a task, small enough that two
/// threads share even a 192-row projection.
const ROWS_PER_TASK: usize = 32;

/// `x · wᵀ` for `x` of shape `(rows, k)` and `w` of shape `(out, k)`, both row-major;
/// returns `(rows, out)` row-major. Runs on the current rayon pool. Any `rows` works, one
/// pass over the weights per row (worth it for [`MAX_ROWS`]).
pub fn matmul_rows(x: &[f32], rows: usize, w: &[f32], out: usize, k: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * k, "x is not rows x k");
    assert_eq!(w.len(), out * k, "w is not out x k");
    let mut y = vec![0f32; rows * out];
    for (row, dst) in x.chunks_exact(k.max(1)).zip(y.chunks_exact_mut(out.max(1))) {
        dst.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, dst)| {
                let first = task * ROWS_PER_TASK;
                block(&w[first * k..(first + dst.len()) * k], row, k, dst);
            });
    }
    y
}

/// [`matmul_rows`] as a candle op: `xs.apply_op2_no_bwd(&weight, &RowsTimesWeightT)` for
/// contiguous FP32 CPU tensors `xs (rows, k)` and `weight (out, k)`.
pub struct RowsTimesWeightT;

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
        let weight = contiguous_f32(self.name(), weight, weight_layout)?;
        let (rows, k) = xs_layout.shape().dims2()?;
        let (out, wk) = weight_layout.shape().dims2()?;
        if k != wk {
            candle_core::bail!("rows-times-weight-t: rows of {k} against weights of {wk}");
        }
        let y = matmul_rows(xs, rows, weight, out, k);
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }
}

/// `dst[o] = w[o] · x` for the weight rows of `w`.
fn block(w: &[f32], x: &[f32], k: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `block_avx2` is compiled for, checked just above.
        return unsafe { block_avx2(w, x, k, dst) };
    }
    weight_rows::<false>(w, x, k, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(w: &[f32], x: &[f32], k: usize, dst: &mut [f32]) {
    weight_rows::<true>(w, x, k, dst)
}

/// Lanes per accumulator set: four AVX vectors in flight, an FMA's latency.
const LANES: usize = 32;

#[inline(always)]
fn weight_rows<const FMA: bool>(w: &[f32], x: &[f32], k: usize, dst: &mut [f32]) {
    let whole = k / LANES * LANES;
    for (weights, out) in w.chunks_exact(k).zip(dst.iter_mut()) {
        let mut acc = [0f32; LANES];
        for (wv, xv) in weights[..whole]
            .chunks_exact(LANES)
            .zip(x[..whole].chunks_exact(LANES))
        {
            for j in 0..LANES {
                acc[j] = if FMA {
                    wv[j].mul_add(xv[j], acc[j])
                } else {
                    wv[j] * xv[j] + acc[j]
                };
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for (a, b) in weights[whole..].iter().zip(&x[whole..]) {
            sum += a * b;
        }
        *out = sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_candle_matmul_for_every_row_count_and_odd_sizes() {
        let device = Device::Cpu;
        for (out, k) in [(5usize, 37usize), (70, 64), (192, 576)] {
            let w = Tensor::randn(0f32, 1., (out, k), &device).unwrap();
            for rows in [1usize, 2, 3, 5, 8, 11] {
                let x = Tensor::randn(0f32, 1., (rows, k), &device).unwrap();
                let want: Vec<f32> = x
                    .matmul(&w.t().unwrap())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let got = matmul_rows(
                    &x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    rows,
                    &w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    out,
                    k,
                );
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-3, "{out}x{k}, {rows} rows: off by {worst}");
            }
        }
    }
}
