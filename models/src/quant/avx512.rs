//! AVX-512 VNNI kernel: a chunk of 64 codes is one 512-bit vector, and one `vpdpbusd`
//! multiplies it into a row's 64 activations, leaving sixteen 4-value sums. Tiles of two
//! weight rows by up to eight sequence rows keep sixteen accumulators, the two unpacked
//! weight vectors and their scales in the 32 registers, so each weight chunk is unpacked
//! once for all rows of the tile.
//!
//! `vpdpbusd` takes unsigned bytes on one side: nibbles are unsigned already, and signed
//! 8-bit codes are flipped to `w + 128`, each lane starting from `-128 * sum(q)` of its four
//! activations so that the integer sums come out exact (taking it off in floats afterwards
//! loses the result to the rounding of the far larger terms).

#![allow(clippy::needless_range_loop)] // register tiles read clearest as indexed loops

use std::arch::x86_64::*;

use super::{Codes, QuantizedRows, WeightRows, CHUNK};

/// Most sequence rows per tile.
const TILE_ROWS: usize = 8;

/// `dst[o * rows + r] = w[o] · x[r]`.
///
/// SAFETY: the CPU has AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn block(w: &WeightRows, x: &QuantizedRows, dst: &mut [f32]) {
    // SAFETY: the features `typed` is compiled for are the caller's guarantee.
    unsafe {
        match (w.kind, w.group) {
            (Codes::Nibbles, _) => typed::<true, 32>(w, x, dst),
            (Codes::Bytes, 16) => typed::<false, 16>(w, x, dst),
            (Codes::Bytes, _) => typed::<false, 32>(w, x, dst),
        }
    }
}

/// [`block`] for one code kind (`NIBBLES`) and group size `G`.
#[inline(always)]
unsafe fn typed<const NIBBLES: bool, const G: usize>(
    w: &WeightRows,
    x: &QuantizedRows,
    dst: &mut [f32],
) {
    // SAFETY: inlined into `block` (AVX-512 F/BW/VL/VNNI); every pointer handed to `tile`
    // covers `chunks` whole chunks of its row, and the scale buffers four floats more than
    // the groups (the 128-bit scale loads of the last chunk).
    unsafe {
        let rows = x.rows;
        let groups = w.groups();
        let chunks = w.k_pad / CHUNK;
        let row_bytes = w.row_code_bytes();
        let mut scales = [vec![0f32; groups + 4], vec![0f32; groups + 4]];
        let mut offsets = vec![0f32; groups];
        let xq: Vec<*const i8> = (0..rows).map(|r| x.row(r).as_ptr()).collect();
        let xl: Vec<*const f32> = (0..rows).map(|r| x.row_lanes(r).as_ptr()).collect();
        let mut o = 0;
        while o < w.len() {
            let pair = (w.len() - o).min(2);
            for p in 0..pair {
                widen_halves(&w.scales[(o + p) * groups..(o + p + 1) * groups], &mut scales[p]);
            }
            let codes = [
                w.codes[o * row_bytes..].as_ptr(),
                w.codes[(o + pair - 1) * row_bytes..].as_ptr(),
            ];
            let sp = [scales[0].as_ptr(), scales[pair - 1].as_ptr()];
            let mut first = 0;
            while first < rows {
                let n = (rows - first).min(TILE_ROWS);
                // Powers of two only: fewer copies of the tile, and a leftover row count
                // takes at most three passes over two weight rows that sit in L1.
                let n = if n >= 8 {
                    8
                } else if n >= 4 {
                    4
                } else if n >= 2 {
                    2
                } else {
                    1
                };
                let (xs, ls) = (&xq[first..first + n], &xl[first..first + n]);
                let mut put = |sums: &[[f32; TILE_ROWS]; 2]| {
                    for p in 0..pair {
                        for r in 0..n {
                            dst[(o + p) * rows + first + r] = sums[p][r];
                        }
                    }
                };
                match n {
                    8 => put(&tile::<NIBBLES, G, 8>(codes, sp, xs, ls, chunks)),
                    4 => put(&tile::<NIBBLES, G, 4>(codes, sp, xs, ls, chunks)),
                    2 => put(&tile::<NIBBLES, G, 2>(codes, sp, xs, ls, chunks)),
                    _ => put(&tile::<NIBBLES, G, 1>(codes, sp, xs, ls, chunks)),
                }
                first += n;
            }
            // The offset terms: each group's offset times the row's scaled sum over it.
            if NIBBLES {
                for p in 0..pair {
                    widen_halves(&w.offsets[(o + p) * groups..(o + p + 1) * groups], &mut offsets);
                    for r in 0..rows {
                        let sums = x.row_group_sums(r);
                        dst[(o + p) * rows + r] += crate::cpu_op::dot::<32>(&offsets, sums);
                    }
                }
            }
            o += pair;
        }
    }
}

/// FP16 values widened into the front of `to`, sixteen at a time.
#[inline(always)]
unsafe fn widen_halves(from: &[half::f16], to: &mut [f32]) {
    // SAFETY: inlined where AVX-512 F/BW is enabled; the masked load reads only the
    // `from` elements that exist, and `to` is at least as long as `from`.
    unsafe {
        debug_assert!(to.len() >= from.len());
        let mut i = 0;
        while i < from.len() {
            let n = (from.len() - i).min(16);
            let mask: __mmask16 = if n == 16 { !0 } else { (1u16 << n) - 1 };
            let h = _mm256_maskz_loadu_epi16(mask, from.as_ptr().add(i) as *const i16);
            _mm512_mask_storeu_ps(to.as_mut_ptr().add(i), mask, _mm512_cvtph_ps(h));
            i += 16;
        }
    }
}

/// The `2 x R` integer-scaled products of two weight rows (`codes`, their FP32 scales
/// `scales`; the same row twice for a single one) with `R` activation rows (`xs`, their
/// lane scales `lanes`), over `chunks` chunks.
#[inline(always)]
unsafe fn tile<const NIBBLES: bool, const G: usize, const R: usize>(
    codes: [*const u8; 2],
    scales: [*const f32; 2],
    xs: &[*const i8],
    lanes: &[*const f32],
    chunks: usize,
) -> [[f32; TILE_ROWS]; 2] {
    // SAFETY: inlined into `block` (AVX-512 F/BW/VL/VNNI); the caller's pointers cover
    // `chunks` chunks (codes, activations, 16 lanes each) and `chunks * 64 / G + 4` scales.
    unsafe {
        // Lane `l` of a chunk's sums covers values 4l..4l+3, so group `4l / G`.
        let spread: [i32; 16] = std::array::from_fn(|l| (4 * l / G) as i32);
        let spread = _mm512_loadu_si512(spread.as_ptr() as *const _);
        let low_nibbles = _mm256_set1_epi8(0x0F);
        let flip = _mm512_set1_epi8(-128);
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); R]; 2];
        for c in 0..chunks {
            let mut wv = [_mm512_setzero_si512(); 2];
            let mut sw = [_mm512_setzero_ps(); 2];
            for o in 0..2 {
                wv[o] = if NIBBLES {
                    let v = _mm256_loadu_si256(codes[o].add(c * CHUNK / 2) as *const __m256i);
                    let low = _mm256_and_si256(v, low_nibbles);
                    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low_nibbles);
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
                } else {
                    let v = _mm512_loadu_si512(codes[o].add(c * CHUNK) as *const _);
                    _mm512_xor_si512(v, flip)
                };
                let s = _mm_loadu_ps(scales[o].add(c * CHUNK / G));
                sw[o] = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(s));
            }
            for r in 0..R {
                let xv = _mm512_loadu_si512(xs[r].add(c * CHUNK) as *const _);
                let sx = _mm512_loadu_ps(lanes[r].add(c * CHUNK / 4));
                // The flip's `128 * sum(q)` per lane, taken off before the products.
                let start = if NIBBLES {
                    zero
                } else {
                    _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv))
                };
                for o in 0..2 {
                    let p = _mm512_dpbusd_epi32(start, wv[o], xv);
                    let scale = _mm512_mul_ps(sw[o], sx);
                    acc[o][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc[o][r]);
                }
            }
        }
        let mut sums = [[0f32; TILE_ROWS]; 2];
        for o in 0..2 {
            for r in 0..R {
                sums[o][r] = _mm512_reduce_add_ps(acc[o][r]);
            }
        }
        sums
    }
}
