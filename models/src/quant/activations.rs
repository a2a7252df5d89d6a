//! Activation rows quantized to 8 bits once per call, in the form every kernel reads.

use super::{ACTIVATION_BLOCK, CHUNK};

/// Rows `(rows, k)` of FP32 activations as signed 8-bit values with one FP32 scale per 32
/// (`x ≈ scale * q`, the scale `max |x| / 127`), zero-padded to `k_pad`.
pub(crate) struct QuantizedRows {
    pub(crate) rows: usize,
    pub(crate) k_pad: usize,
    /// `rows * k_pad` values.
    pub(crate) q: Vec<i8>,
    /// `rows * k_pad / 32` scales.
    pub(crate) scales: Vec<f32>,
    /// Each chunk's two scales spread over the sixteen 32-bit lanes a `vpdpbusd` of the
    /// chunk fills (lanes 0-7 the first block's, 8-15 the second's): `rows * k_pad / 4`.
    pub(crate) lanes: Vec<f32>,
    /// `scale * sum(q)` over each weight group (`group` values): `rows * k_pad / group`.
    pub(crate) group_sums: Vec<f32>,
    /// The group sums spread over a chunk's lanes like [`Self::lanes`], each lane holding
    /// its group's sum divided by the lanes the group spans, so that adding up a vector of
    /// `offset * lane` gives `offset * sum`: `rows * k_pad / 4`.
    pub(crate) sum_lanes: Vec<f32>,
    pub(crate) group: usize,
}

impl QuantizedRows {
    /// Quantizes `x` `(rows, k)`, with sums over groups of `group` values (16 or 32).
    pub(crate) fn new(x: &[f32], rows: usize, k: usize, k_pad: usize, group: usize) -> Self {
        debug_assert!(k_pad.is_multiple_of(CHUNK) && ACTIVATION_BLOCK.is_multiple_of(group));
        let blocks = k_pad / ACTIVATION_BLOCK;
        let groups = k_pad / group;
        let mut q = vec![0i8; rows * k_pad];
        let mut scales = vec![0f32; rows * blocks];
        let mut lanes = vec![0f32; rows * k_pad / 4];
        let mut group_sums = vec![0f32; rows * groups];
        let mut sum_lanes = vec![0f32; rows * k_pad / 4];
        let lanes_per_group = group / 4;
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            let qr = &mut q[r * k_pad..(r + 1) * k_pad];
            for b in 0..blocks {
                let start = b * ACTIVATION_BLOCK;
                let end = (start + ACTIVATION_BLOCK).min(k);
                if start >= end {
                    break;
                }
                let values = &xr[start..end];
                let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                for (dst, &v) in qr[start..end].iter_mut().zip(values) {
                    *dst = round_half_even(v * inverse) as i8;
                }
                scales[r * blocks + b] = scale;
                let per_block = ACTIVATION_BLOCK / group;
                for g in 0..per_block {
                    let codes = &qr[start + g * group..start + (g + 1) * group];
                    let sum: i32 = codes.iter().map(|&c| i32::from(c)).sum();
                    let sum = scale * sum as f32;
                    group_sums[r * groups + b * per_block + g] = sum;
                    let lane0 = r * k_pad / 4 + (start + g * group) / 4;
                    sum_lanes[lane0..lane0 + lanes_per_group].fill(sum / lanes_per_group as f32);
                }
                let lane0 = r * k_pad / 4 + b * (ACTIVATION_BLOCK / 4);
                lanes[lane0..lane0 + ACTIVATION_BLOCK / 4].fill(scale);
            }
        }
        Self {
            rows,
            k_pad,
            q,
            scales,
            lanes,
            group_sums,
            sum_lanes,
            group,
        }
    }

    /// Row `r`'s group sums spread over lanes (see [`Self::sum_lanes`]).
    pub(crate) fn row_sum_lanes(&self, r: usize) -> &[f32] {
        &self.sum_lanes[r * self.k_pad / 4..(r + 1) * self.k_pad / 4]
    }

    /// Row `r`'s values.
    pub(crate) fn row(&self, r: usize) -> &[i8] {
        &self.q[r * self.k_pad..(r + 1) * self.k_pad]
    }

    /// Row `r`'s per-32 scales.
    pub(crate) fn row_scales(&self, r: usize) -> &[f32] {
        let blocks = self.k_pad / ACTIVATION_BLOCK;
        &self.scales[r * blocks..(r + 1) * blocks]
    }

    /// Row `r`'s scales spread over lanes (see [`Self::lanes`]).
    pub(crate) fn row_lanes(&self, r: usize) -> &[f32] {
        &self.lanes[r * self.k_pad / 4..(r + 1) * self.k_pad / 4]
    }

    /// Row `r`'s scaled sums per weight group.
    pub(crate) fn row_group_sums(&self, r: usize) -> &[f32] {
        let groups = self.k_pad / self.group;
        &self.group_sums[r * groups..(r + 1) * groups]
    }
}

/// `v` (within `[-2^22, 2^22]`) rounded to the nearest integer, ties to even: adding
/// 1.5 * 2^23 leaves the integer in the low mantissa bits, with no call to `roundf` and in a
/// shape the compiler vectorises.
#[inline(always)]
pub(super) fn round_half_even(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_within_half_a_step_and_sum_by_group() {
        let k = 80; // two blocks and a half, padded to 128
        let x: Vec<f32> = (0..2 * k)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3)
            .collect();
        let q = QuantizedRows::new(&x, 2, k, 128, 16);
        for r in 0..2 {
            for i in 0..k {
                let scale = q.row_scales(r)[i / 32];
                let back = scale * f32::from(q.row(r)[i]);
                assert!((back - x[r * k + i]).abs() <= scale / 2.0 + 1e-6);
            }
            assert!(q.row(r)[k..].iter().all(|&v| v == 0));
            let sums = q.row_group_sums(r);
            let want: f32 = (16..32)
                .map(|i| q.row_scales(r)[0] * f32::from(q.row(r)[i]))
                .sum();
            assert!((sums[1] - want).abs() < 1e-4);
            assert_eq!(q.row_lanes(r)[8], q.row_scales(r)[1]);
            let spread: f32 = q.row_sum_lanes(r)[4..8].iter().sum();
            assert!((spread - sums[1]).abs() < 1e-5);
        }
        for (v, want) in [
            (0.5f32, 0i8),
            (1.5, 2),
            (-2.5, -2),
            (126.7, 127),
            (-127.0, -127),
        ] {
            assert_eq!(round_half_even(v) as i8, want, "{v}");
        }
    }
}
