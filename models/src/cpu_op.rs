//! What our own CPU kernels ([`crate::activation`], [`crate::skinny`],
//! [`crate::decode_attention`]) share.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Shape, WithDType};
use rayon::prelude::*;

/// The values of a contiguous FP32 tensor given to the op named `op`; anything else is an
/// error that names the op.
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    if !matches!(storage, CpuStorage::F32(_)) {
        candle_core::bail!("{op} takes FP32 only");
    }
    contiguous(op, storage, layout)
}

/// The values of a contiguous tensor of element type `T` given to the op named `op`.
pub(crate) fn contiguous<'a, T: WithDType>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [T]> {
    let Ok(data) = storage.as_slice::<T>() else {
        candle_core::bail!("{op} takes {:?} here, not {:?}", T::DTYPE, storage.dtype());
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous tensors only");
    };
    Ok(&data[start..end])
}

/// The forward pass of an op multiplying rows `xs (rows, k)` (contiguous FP32) by weights
/// `(out, k)`: checks `k`, lets `multiply(x, rows)` compute, and shapes `(rows, out)`.
pub(crate) fn rows_times_weights(
    op: &str,
    xs: &CpuStorage,
    layout: &Layout,
    (out, k): (usize, usize),
    multiply: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let x = contiguous_f32(op, xs, layout)?;
    let (rows, got) = layout.shape().dims2()?;
    if got != k {
        candle_core::bail!("{op}: rows of {got} against weights of {k}");
    }
    Ok((CpuStorage::F32(multiply(x, rows)), Shape::from((rows, out))))
}

/// The `(rows, out)` row-major products of `rows` activation rows with `out` weight rows,
/// computed by weight row: `fill(first, dst)` writes `dst[o * rows + r]` for the weight rows
/// `first..first + dst.len() / rows`, in tasks of `per_task` weight rows on the current rayon
/// pool (a task owning whole weight rows needs no locks), then the result is turned.
pub(crate) fn by_weight_rows(
    rows: usize,
    out: usize,
    per_task: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    if rows == 0 || out == 0 {
        return vec![0f32; rows * out];
    }
    let mut by_weight_row = vec![0f32; out * rows];
    by_weight_row
        .par_chunks_mut(per_task * rows)
        .enumerate()
        .for_each(|(task, dst)| fill(task * per_task, dst));
    if rows == 1 {
        return by_weight_row;
    }
    let mut y = vec![0f32; rows * out];
    for (o, products) in by_weight_row.chunks_exact(rows).enumerate() {
        for (r, &p) in products.iter().enumerate() {
            y[r * out + o] = p;
        }
    }
    y
}

/// `a · b` over `LANES` independent partial sums: a shape LLVM vectorises for whatever the
/// target has (one running sum must be added in order, and is not vectorised).
#[inline(always)]
pub(crate) fn dot<const LANES: usize>(a: &[f32], b: &[f32]) -> f32 {
    let whole = a.len().min(b.len()) / LANES * LANES;
    let mut acc = [0f32; LANES];
    for (x, y) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
    {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_adds_every_product_including_the_tail() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 3) as f32 - 1.0).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(super::dot::<8>(&a, &b), want);
        assert_eq!(super::dot::<32>(&a, &b), want);
    }
}
