//! The AVX2 integer kernel: `vpmaddwd` multiplies the same 16-bit pairs as AVX-512's
//! `vpdpwssd`, eight channels a 256-bit vector, so a 16-channel block is two vectors. Tiles
//! of up to four rows by one block keep eight accumulators, two weight vectors and the
//! broadcast activations in the sixteen registers.
#![allow(clippy::needless_range_loop)] // register tiles read clearest as indexed loops

use std::arch::x86_64::*;

use super::{PackedLinear, WideRows, LANES, PAIR};

/// Channels per 256-bit vector.
const HALF: usize = LANES / 2;
/// Most rows per tile.
const TILE_ROWS: usize = 4;

/// The integer layer: `vpmaddwd` into 32-bit integer sums.
///
/// SAFETY: the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn int16(m: &PackedLinear, x: &WideRows, y: &mut [f32]) {
    // SAFETY: every pointer below stays inside `m.packed` (a block's `pairs * 32` codes), a
    // row of `x.codes` (`k_pad` codes), `m.scales`/`m.bias` (padded to whole blocks) or the
    // stack buffer; `y` is written through slices.
    unsafe {
        let pairs = m.k_pad / PAIR;
        for block in 0..m.blocks {
            let channel = block * LANES;
            if channel >= m.out {
                break;
            }
            let w = m.packed.as_ptr().add(block * pairs * LANES * PAIR);
            let mut first = 0;
            while first < x.rows {
                let n = match x.rows - first {
                    n if n >= 4 => 4,
                    n if n >= 2 => 2,
                    _ => 1,
                };
                let acc = match n {
                    4 => tile::<4>(w, x, first, m.k_pad, pairs),
                    2 => tile::<2>(w, x, first, m.k_pad, pairs),
                    _ => tile::<1>(w, x, first, m.k_pad, pairs),
                };
                for h in 0..2 {
                    let channel = channel + h * HALF;
                    if channel >= m.out {
                        break;
                    }
                    let valid = (m.out - channel).min(HALF);
                    let scale = _mm256_loadu_ps(m.scales.as_ptr().add(channel));
                    let bias = _mm256_loadu_ps(m.bias.as_ptr().add(channel));
                    for r in 0..n {
                        let sums = _mm256_cvtepi32_ps(acc[r][h]);
                        let row_scale = _mm256_set1_ps(x.scales[first + r]);
                        let v = _mm256_fmadd_ps(_mm256_mul_ps(sums, scale), row_scale, bias);
                        let mut out = [0f32; HALF];
                        _mm256_storeu_ps(out.as_mut_ptr(), v);
                        let at = (first + r) * m.out + channel;
                        y[at..at + valid].copy_from_slice(&out[..valid]);
                    }
                }
                first += n;
            }
        }
    }
}

/// The sums of `R` rows from `first` against the channel block at `w`, as two halves of
/// eight channels.
#[inline(always)]
unsafe fn tile<const R: usize>(
    w: *const u16,
    x: &WideRows,
    first: usize,
    k_pad: usize,
    pairs: usize,
) -> [[__m256i; 2]; TILE_ROWS] {
    // SAFETY: inlined into `int16` (AVX2); `w` holds `pairs` 64-byte vectors and each row
    // `k_pad = 2 * pairs` codes.
    unsafe {
        let zero = _mm256_setzero_si256();
        let mut acc = [[zero; 2]; TILE_ROWS];
        let rows: [*const u16; R] =
            std::array::from_fn(|r| x.codes.as_ptr().add((first + r) * k_pad));
        for p in 0..pairs {
            let at = w.add(p * LANES * PAIR);
            let w0 = _mm256_loadu_si256(at as *const __m256i);
            let w1 = _mm256_loadu_si256(at.add(HALF * PAIR) as *const __m256i);
            for r in 0..R {
                let two = (rows[r].add(p * PAIR) as *const i32).read_unaligned();
                let xb = _mm256_set1_epi32(two);
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(xb, w0));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(xb, w1));
            }
        }
        acc
    }
}
