//! The kernel for any CPU, and the reference the vector kernels are tested against: each
//! weight row's codes widened to bytes once, then one integer dot product per group and
//! sequence row.

use super::{Codes, QuantizedRows, WeightRows, ACTIVATION_BLOCK, CHUNK};

/// `dst[o * rows + r] = w[o] · x[r]` for every row of `w` and of `x`.
pub(super) fn block(w: &WeightRows, x: &QuantizedRows, dst: &mut [f32]) {
    let rows = x.rows;
    let groups = w.groups();
    let mut codes = vec![0i8; w.k_pad];
    let mut scales = vec![0f32; groups];
    let mut offsets = vec![0f32; groups];
    for o in 0..w.len() {
        widen(w, o, &mut codes);
        for (s, h) in scales.iter_mut().zip(&w.scales[o * groups..]) {
            *s = h.to_f32();
        }
        let has_offsets = !w.offsets.is_empty();
        if has_offsets {
            for (m, h) in offsets.iter_mut().zip(&w.offsets[o * groups..]) {
                *m = h.to_f32();
            }
        }
        for r in 0..rows {
            let (q, dx) = (x.row(r), x.row_scales(r));
            let mut sum = 0f32;
            for g in 0..groups {
                let span = g * w.group..(g + 1) * w.group;
                let dot: i32 = codes[span.clone()]
                    .iter()
                    .zip(&q[span])
                    .map(|(&c, &v)| i32::from(c) * i32::from(v))
                    .sum();
                sum += scales[g] * dx[g * w.group / ACTIVATION_BLOCK] * dot as f32;
            }
            if has_offsets {
                let sums = x.row_group_sums(r);
                sum += offsets.iter().zip(sums).map(|(m, s)| m * s).sum::<f32>();
            }
            dst[o * rows + r] = sum;
        }
    }
}

/// Row `o`'s codes in value order, one byte each.
fn widen(w: &WeightRows, o: usize, codes: &mut [i8]) {
    let bytes = &w.codes[o * w.row_code_bytes()..(o + 1) * w.row_code_bytes()];
    match w.kind {
        Codes::Nibbles => {
            for (chunk, packed) in codes
                .chunks_exact_mut(CHUNK)
                .zip(bytes.chunks_exact(CHUNK / 2))
            {
                let (low, high) = chunk.split_at_mut(CHUNK / 2);
                for ((l, h), &b) in low.iter_mut().zip(high).zip(packed) {
                    *l = (b & 0xF) as i8;
                    *h = (b >> 4) as i8;
                }
            }
        }
        Codes::Bytes => {
            for (c, &b) in codes.iter_mut().zip(bytes) {
                *c = b as i8;
            }
        }
    }
}
