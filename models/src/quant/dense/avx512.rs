//! The AVX-512 kernels: tiles of up to eight rows by two channel blocks.
#![allow(clippy::needless_range_loop)] // register tiles read clearest as indexed loops

use std::arch::x86_64::*;

use super::{PackedLinear, WideRows, LANES, PAIR, TILE_ROWS};

/// The integer layer: `vpdpwssd` into 32-bit integer sums.
///
/// SAFETY: the CPU has AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn int16(m: &PackedLinear, x: &WideRows, y: &mut [f32]) {
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
    // SAFETY: inlined into `int16`/`bf16`; every pointer below stays inside `m.packed` (a
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
    // SAFETY: inlined into `int16`/`bf16` (BF16 only into `bf16`); `w` holds two blocks
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
