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

use super::tiles::{pairs, Activations, Kernel, TileSums, WeightPair};
use super::{Codes, QuantizedRows, WeightRows, CHUNK};

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
    let chunks = w.k_pad / CHUNK;
    let (groups, row_bytes) = (w.groups(), w.row_code_bytes());
    let kernel = Kernel {
        // SAFETY: inlined into `block` (AVX-512 F/BW); `to` is longer than `from`.
        widen: |from: &[half::f16], to: &mut [f32]| unsafe { widen_halves(from, to) },
        before_pair: |o: usize| {
            // The hardware prefetcher alone leaves these short rows waiting on memory: ask
            // for the pair after next while this one computes.
            let ahead = o + 4;
            if ahead < w.len() {
                let rows = ahead..(ahead + 2).min(w.len());
                // SAFETY: prefetches never fault; every slice is inside `w`.
                unsafe {
                    prefetch(&w.codes[rows.start * row_bytes..rows.end * row_bytes]);
                    prefetch(&w.scales[rows.start * groups..rows.end * groups]);
                    if NIBBLES {
                        prefetch(&w.offsets[rows.start * groups..rows.end * groups]);
                    }
                }
            }
        },
        // Powers of two only: fewer copies of the tile, and a leftover row count takes at
        // most three passes over two weight rows that sit in L1.
        tile_rows: |left: usize| match left {
            8.. => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        },
        // SAFETY: inlined into `block` (AVX-512 F/BW/VL/VNNI); `pairs` hands over whole
        // rows of `chunks` chunks and scale buffers four floats past the groups.
        tile: |pair: &WeightPair, rows: &Activations, n: usize| unsafe {
            match n {
                8 => tile::<NIBBLES, G, 8>(pair, rows, chunks),
                4 => tile::<NIBBLES, G, 4>(pair, rows, chunks),
                2 => tile::<NIBBLES, G, 2>(pair, rows, chunks),
                _ => tile::<NIBBLES, G, 1>(pair, rows, chunks),
            }
        },
    };
    pairs(NIBBLES, w, x, dst, kernel);
}

/// Every cache line of `data` asked for, into all cache levels.
#[inline(always)]
unsafe fn prefetch<T>(data: &[T]) {
    // SAFETY: a prefetch never faults; every address is inside `data`.
    unsafe {
        let bytes = std::mem::size_of_val(data);
        let p = data.as_ptr() as *const i8;
        let mut at = 0;
        while at < bytes {
            _mm_prefetch::<_MM_HINT_T0>(p.add(at));
            at += 64;
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

/// The `2 x R` products of a weight pair with `R` activation rows over `chunks` chunks.
#[inline(always)]
unsafe fn tile<const NIBBLES: bool, const G: usize, const R: usize>(
    w: &WeightPair,
    x: &Activations,
    chunks: usize,
) -> TileSums {
    // SAFETY: inlined into `block` (AVX-512 F/BW/VL/VNNI); the caller's pointers cover
    // `chunks` chunks (codes, activations, 16 lanes each) and `chunks * 64 / G + 4` scales
    // and offsets.
    unsafe {
        // Lane `l` of a chunk's sums covers values 4l..4l+3, so group `4l / G`.
        let spread: [i32; 16] = std::array::from_fn(|l| (4 * l / G) as i32);
        let spread = _mm512_loadu_si512(spread.as_ptr() as *const _);
        let low_nibbles = _mm256_set1_epi8(0x0F);
        let flip = _mm512_set1_epi8(-128);
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); R]; 2];
        for c in 0..chunks {
            let mut wv = [zero; 2];
            let mut sw = [_mm512_setzero_ps(); 2];
            let mut mw = [_mm512_setzero_ps(); 2];
            for o in 0..2 {
                wv[o] = if NIBBLES {
                    let v = _mm256_loadu_si256(w.codes[o].add(c * CHUNK / 2) as *const __m256i);
                    let low = _mm256_and_si256(v, low_nibbles);
                    let high = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low_nibbles);
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
                } else {
                    let v = _mm512_loadu_si512(w.codes[o].add(c * CHUNK) as *const _);
                    _mm512_xor_si512(v, flip)
                };
                let s = _mm_loadu_ps(w.scales[o].add(c * CHUNK / G));
                sw[o] = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(s));
                if NIBBLES {
                    let m = _mm_loadu_ps(w.offsets[o].add(c * CHUNK / G));
                    mw[o] = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(m));
                }
            }
            for r in 0..R {
                let xv = _mm512_loadu_si512(x.q[r].add(c * CHUNK) as *const _);
                let sx = _mm512_loadu_ps(x.lanes[r].add(c * CHUNK / 4));
                // The flip's `128 * sum(q)` per lane, taken off before the products.
                let start = if NIBBLES {
                    zero
                } else {
                    _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, xv))
                };
                let sums = if NIBBLES {
                    _mm512_loadu_ps(x.sum_lanes[r].add(c * CHUNK / 4))
                } else {
                    _mm512_setzero_ps()
                };
                for o in 0..2 {
                    let p = _mm512_dpbusd_epi32(start, wv[o], xv);
                    let scale = _mm512_mul_ps(sw[o], sx);
                    acc[o][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), scale, acc[o][r]);
                    if NIBBLES {
                        acc[o][r] = _mm512_fmadd_ps(mw[o], sums, acc[o][r]);
                    }
                }
            }
        }
        let mut sums = TileSums::default();
        for o in 0..2 {
            for r in 0..R {
                sums[o][r] = _mm512_reduce_add_ps(acc[o][r]);
            }
        }
        sums
    }
}
