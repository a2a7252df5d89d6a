//! AVX2 kernel: a chunk of 64 codes is two 256-bit vectors (two groups of 32 activations),
//! multiplied by `vpmaddubsw` (unsigned by signed bytes into 16-bit pairs) and `vpmaddwd`
//! (pairs into 32-bit sums). Signed 8-bit codes go through `vpsignb` first (`|w|` times `x`
//! with `w`'s sign), which keeps every 16-bit pair sum inside `i16`. Tiles of two weight
//! rows by up to four sequence rows: eight accumulators and the weight vectors in the
//! sixteen registers.

#![allow(clippy::needless_range_loop)] // register tiles read clearest as indexed loops

use std::arch::x86_64::*;

use super::tiles::{pairs, Activations, Kernel, TileSums, WeightPair};
use super::{Codes, QuantizedRows, WeightRows, CHUNK};

/// Most sequence rows per tile.
const TILE_ROWS: usize = 4;

/// `dst[o * rows + r] = w[o] · x[r]`.
///
/// SAFETY: the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
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
    let kernel = Kernel {
        // SAFETY: inlined into `block` (F16C); `to` is longer than `from`.
        widen: |from: &[half::f16], to: &mut [f32]| unsafe { widen_halves(from, to) },
        before_pair: |_: usize| {},
        tile_rows: |left: usize| left.min(TILE_ROWS),
        // SAFETY: inlined into `block` (AVX2/FMA/F16C); `pairs` hands over whole rows of
        // `chunks` chunks and scale buffers four floats past the groups.
        tile: |pair: &WeightPair, rows: &Activations, n: usize| unsafe {
            match n {
                4 => tile::<NIBBLES, G, 4>(pair, rows, chunks),
                3 => tile::<NIBBLES, G, 3>(pair, rows, chunks),
                2 => tile::<NIBBLES, G, 2>(pair, rows, chunks),
                _ => tile::<NIBBLES, G, 1>(pair, rows, chunks),
            }
        },
    };
    pairs(NIBBLES, w, x, dst, kernel);
}

/// FP16 values widened into the front of `to`, eight at a time.
#[inline(always)]
unsafe fn widen_halves(from: &[half::f16], to: &mut [f32]) {
    // SAFETY: inlined where F16C is enabled; whole loads of eight stay inside `from`.
    unsafe {
        let whole = from.len() / 8 * 8;
        let mut i = 0;
        while i < whole {
            let h = _mm_loadu_si128(from.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(to.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        for j in whole..from.len() {
            to[j] = from[j].to_f32();
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
    // SAFETY: inlined into `block` (AVX2/FMA/F16C); the caller's pointers cover `chunks`
    // chunks and `chunks * 64 / G + 4` scales and offsets.
    unsafe {
        // Lane `l` of a 32-value half's sums covers values 4l..4l+3, so group `4l / G`.
        let spread: [i32; 8] = std::array::from_fn(|l| (4 * l / G) as i32);
        let spread = _mm256_loadu_si256(spread.as_ptr() as *const __m256i);
        let low_nibbles = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); R]; 2];
        for c in 0..chunks {
            for half in 0..2 {
                let at = c * CHUNK + half * CHUNK / 2;
                let mut wv = [_mm256_setzero_si256(); 2];
                let mut sw = [_mm256_setzero_ps(); 2];
                let mut mw = [_mm256_setzero_ps(); 2];
                for o in 0..2 {
                    wv[o] = if NIBBLES {
                        let v = _mm256_loadu_si256(w.codes[o].add(c * CHUNK / 2) as *const __m256i);
                        if half == 0 {
                            _mm256_and_si256(v, low_nibbles)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(v), low_nibbles)
                        }
                    } else {
                        _mm256_loadu_si256(w.codes[o].add(at) as *const __m256i)
                    };
                    let s = _mm_loadu_ps(w.scales[o].add(at / G));
                    sw[o] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(s), spread);
                    if NIBBLES {
                        let m = _mm_loadu_ps(w.offsets[o].add(at / G));
                        mw[o] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(m), spread);
                    }
                }
                for r in 0..R {
                    let xv = _mm256_loadu_si256(x.q[r].add(at) as *const __m256i);
                    let sx = _mm256_loadu_ps(x.lanes[r].add(at / 4));
                    let sums = if NIBBLES {
                        _mm256_loadu_ps(x.sum_lanes[r].add(at / 4))
                    } else {
                        _mm256_setzero_ps()
                    };
                    for o in 0..2 {
                        let pairs = if NIBBLES {
                            _mm256_maddubs_epi16(wv[o], xv)
                        } else {
                            let magnitude = _mm256_sign_epi8(wv[o], wv[o]);
                            _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(xv, wv[o]))
                        };
                        let p = _mm256_madd_epi16(pairs, ones);
                        let scale = _mm256_mul_ps(sw[o], sx);
                        acc[o][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[o][r]);
                        if NIBBLES {
                            acc[o][r] = _mm256_fmadd_ps(mw[o], sums, acc[o][r]);
                        }
                    }
                }
            }
        }
        let mut sums = TileSums::default();
        for o in 0..2 {
            for r in 0..R {
                sums[o][r] = horizontal_sum(acc[o][r]);
            }
        }
        sums
    }
}

#[inline(always)]
unsafe fn horizontal_sum(v: __m256) -> f32 {
    // SAFETY: register-only AVX/SSE arithmetic, inlined where AVX2 is enabled.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}
