//! The loop the vector kernels share: weight rows two at a time, their FP16 scales and
//! offsets widened to FP32 once per pair, the activation rows in tiles, and each tile's sums
//! written `dst[o * rows + r]`. A kernel supplies the widening, a hook before each pair (the
//! AVX-512 one prefetches), the tile size for a number of rows left, and the tile itself;
//! everything is inlined into the kernel's `#[target_feature]` function.

use half::f16;

use super::{QuantizedRows, WeightRows};

/// Most sequence rows a tile takes.
pub(super) const MAX_TILE_ROWS: usize = 8;

/// A tile's sums: two weight rows by up to [`MAX_TILE_ROWS`] sequence rows.
pub(super) type TileSums = [[f32; MAX_TILE_ROWS]; 2];

/// Two weight rows as a tile reads them (the same row twice for a lone last one): codes,
/// and FP32 scales and offsets (offsets for nibbles only), each buffer four floats longer
/// than the row's groups so that a 128-bit load of the last chunk's scales stays inside.
pub(super) struct WeightPair {
    pub(super) codes: [*const u8; 2],
    pub(super) scales: [*const f32; 2],
    pub(super) offsets: [*const f32; 2],
}

/// Some activation rows as a tile reads them ([`QuantizedRows`]' rows, lanes and sum lanes).
pub(super) struct Activations<'a> {
    pub(super) q: &'a [*const i8],
    pub(super) lanes: &'a [*const f32],
    pub(super) sum_lanes: &'a [*const f32],
}

/// What a kernel plugs into [`pairs`].
pub(super) struct Kernel<Widen, Before, Rows, Tile> {
    /// FP16 values into the front of an FP32 buffer.
    pub(super) widen: Widen,
    /// Called with the first weight row of each pair before it is computed.
    pub(super) before_pair: Before,
    /// The rows the next tile takes, of the rows left.
    pub(super) tile_rows: Rows,
    /// The sums of a pair with `n` activation rows.
    pub(super) tile: Tile,
}

/// `dst[o * rows + r] = w[o] · x[r]` for every row of `w` and of `x`.
#[inline(always)]
pub(super) fn pairs<Widen, Before, Rows, Tile>(
    nibbles: bool,
    w: &WeightRows,
    x: &QuantizedRows,
    dst: &mut [f32],
    mut kernel: Kernel<Widen, Before, Rows, Tile>,
) where
    Widen: FnMut(&[f16], &mut [f32]),
    Before: FnMut(usize),
    Rows: Fn(usize) -> usize,
    Tile: FnMut(&WeightPair, &Activations, usize) -> TileSums,
{
    let rows = x.rows;
    let groups = w.groups();
    let row_bytes = w.row_code_bytes();
    let mut scales = [vec![0f32; groups + 4], vec![0f32; groups + 4]];
    let mut offsets = [vec![0f32; groups + 4], vec![0f32; groups + 4]];
    let xq: Vec<*const i8> = (0..rows).map(|r| x.row(r).as_ptr()).collect();
    let xl: Vec<*const f32> = (0..rows).map(|r| x.row_lanes(r).as_ptr()).collect();
    let xs: Vec<*const f32> = (0..rows).map(|r| x.row_sum_lanes(r).as_ptr()).collect();
    let mut o = 0;
    while o < w.len() {
        let pair = (w.len() - o).min(2);
        (kernel.before_pair)(o);
        for (p, (scales, offsets)) in scales.iter_mut().zip(&mut offsets).take(pair).enumerate() {
            let row = (o + p) * groups..(o + p + 1) * groups;
            (kernel.widen)(&w.scales[row.clone()], scales);
            if nibbles {
                (kernel.widen)(&w.offsets[row], offsets);
            }
        }
        let weights = WeightPair {
            codes: [
                w.codes[o * row_bytes..].as_ptr(),
                w.codes[(o + pair - 1) * row_bytes..].as_ptr(),
            ],
            scales: [scales[0].as_ptr(), scales[pair - 1].as_ptr()],
            offsets: [offsets[0].as_ptr(), offsets[pair - 1].as_ptr()],
        };
        let mut first = 0;
        while first < rows {
            let n = (kernel.tile_rows)(rows - first);
            let activations = Activations {
                q: &xq[first..first + n],
                lanes: &xl[first..first + n],
                sum_lanes: &xs[first..first + n],
            };
            let sums = (kernel.tile)(&weights, &activations, n);
            for (p, sums) in sums.iter().enumerate().take(pair) {
                for (r, &sum) in sums.iter().enumerate().take(n) {
                    dst[(o + p) * rows + first + r] = sum;
                }
            }
            first += n;
        }
        o += pair;
    }
}
