//! GGUF blocks decoded into codes, scales and offsets, and packed into the kernels' layouts
//! (see the module above for both).

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

use super::{Codes, PackedMatrix, CHUNK};

/// Values per K-quant super-block.
const QK_K: usize = 256;

/// The block types the kernels take.
#[cfg(test)]
pub(super) fn supports(dtype: GgmlDType) -> bool {
    layout(dtype).is_some()
}

/// How a block type is packed: its code kind, values per scale, values and bytes per block.
struct BlockLayout {
    codes: Codes,
    group: usize,
    values: usize,
    bytes: usize,
}

fn layout(dtype: GgmlDType) -> Option<BlockLayout> {
    let (codes, group, values, bytes) = match dtype {
        GgmlDType::Q4_0 => (Codes::Nibbles, 32, 32, 18),
        GgmlDType::Q4_1 => (Codes::Nibbles, 32, 32, 20),
        GgmlDType::Q4K => (Codes::Nibbles, 32, QK_K, 144),
        GgmlDType::Q5_0 => (Codes::Bytes, 32, 32, 22),
        GgmlDType::Q8_0 => (Codes::Bytes, 32, 32, 34),
        GgmlDType::Q6K => (Codes::Bytes, 16, QK_K, 210),
        _ => return None,
    };
    Some(BlockLayout {
        codes,
        group,
        values,
        bytes,
    })
}

/// One block's values as integer codes, with a scale and an offset per group:
/// `value[i] = scale[i / group] * code[i] + offset[i / group]`.
struct Decoded {
    codes: Vec<i32>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
}

fn half(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Decodes one block of `dtype` from `b` into `out` (whose vectors hold one block each).
fn decode(dtype: GgmlDType, b: &[u8], out: &mut Decoded) {
    let Decoded {
        codes,
        scales,
        offsets,
    } = out;
    match dtype {
        GgmlDType::Q4_0 | GgmlDType::Q4_1 => {
            let d = half(&b[0..2]);
            let (m, qs) = if dtype == GgmlDType::Q4_0 {
                (-8.0 * d, &b[2..18])
            } else {
                (half(&b[2..4]), &b[4..20])
            };
            for (j, &q) in qs.iter().enumerate() {
                codes[j] = i32::from(q & 0xF);
                codes[j + 16] = i32::from(q >> 4);
            }
            scales[0] = d;
            offsets[0] = m;
        }
        GgmlDType::Q5_0 => {
            let d = half(&b[0..2]);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for (j, &q) in b[6..22].iter().enumerate() {
                let high0 = ((qh >> j) << 4) & 0x10;
                let high1 = (qh >> (j + 12)) & 0x10;
                codes[j] = (u32::from(q & 0xF) | high0) as i32 - 16;
                codes[j + 16] = (u32::from(q >> 4) | high1) as i32 - 16;
            }
            scales[0] = d;
        }
        GgmlDType::Q8_0 => {
            let d = half(&b[0..2]);
            for (c, &q) in codes.iter_mut().zip(&b[2..34]) {
                *c = i32::from(q as i8);
            }
            scales[0] = d;
        }
        GgmlDType::Q4K => {
            let (d, dmin) = (half(&b[0..2]), half(&b[2..4]));
            let sub_scales = &b[4..16];
            let qs = &b[16..144];
            for half_block in 0..4 {
                let q = &qs[half_block * 32..half_block * 32 + 32];
                for (j, &byte) in q.iter().enumerate() {
                    codes[half_block * 64 + j] = i32::from(byte & 0xF);
                    codes[half_block * 64 + 32 + j] = i32::from(byte >> 4);
                }
                for sub in 0..2 {
                    let is = half_block * 2 + sub;
                    let (sc, mn) = scale_min_k4(is, sub_scales);
                    scales[is] = d * f32::from(sc);
                    offsets[is] = -dmin * f32::from(mn);
                }
            }
        }
        GgmlDType::Q6K => {
            let (ql, qh) = (&b[0..128], &b[128..192]);
            let sub_scales = &b[192..208];
            let d = half(&b[208..210]);
            for half_block in 0..2 {
                let (ql, qh) = (&ql[64 * half_block..], &qh[32 * half_block..]);
                let base = 128 * half_block;
                for l in 0..32 {
                    let q = [
                        (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                        (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                    ];
                    for (quarter, q) in q.into_iter().enumerate() {
                        codes[base + 32 * quarter + l] = i32::from(q) - 32;
                    }
                }
            }
            for (s, &sc) in scales.iter_mut().zip(sub_scales) {
                *s = d * f32::from(sc as i8);
            }
        }
        other => unreachable!("{other:?} has no layout"),
    }
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block's 12 scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

pub(super) fn from_qtensor(t: &QTensor) -> candle_core::Result<Option<PackedMatrix>> {
    let dtype = t.dtype();
    let Some(layout) = layout(dtype) else {
        return Ok(None);
    };
    let (out, k) = t.shape().dims2()?;
    if k % layout.values != 0 {
        candle_core::bail!("{dtype:?} rows of {k} are not whole blocks");
    }
    let data = t.data()?;
    let blocks_per_row = k / layout.values;
    if data.len() != out * blocks_per_row * layout.bytes {
        candle_core::bail!("{dtype:?} tensor ({out}, {k}) holds {} bytes", data.len());
    }
    let k_pad = k.div_ceil(CHUNK) * CHUNK;
    let groups = k_pad / layout.group;
    let group_per_block = layout.values / layout.group;
    let row_code_bytes = layout.codes.row_bytes(k_pad);
    let mut code_bytes = vec![0u8; out * row_code_bytes];
    let mut scales = vec![f16::ZERO; out * groups];
    let mut offsets = match layout.codes {
        Codes::Nibbles => vec![f16::ZERO; out * groups],
        Codes::Bytes => Vec::new(),
    };
    let mut block = Decoded {
        codes: vec![0; layout.values],
        scales: vec![0.0; group_per_block],
        offsets: vec![0.0; group_per_block],
    };
    let mut row_codes = vec![0i32; k_pad];
    for o in 0..out {
        let row = &data[o * blocks_per_row * layout.bytes..(o + 1) * blocks_per_row * layout.bytes];
        for (bi, b) in row.chunks_exact(layout.bytes).enumerate() {
            decode(dtype, b, &mut block);
            row_codes[bi * layout.values..(bi + 1) * layout.values].copy_from_slice(&block.codes);
            let g0 = o * groups + bi * group_per_block;
            for g in 0..group_per_block {
                scales[g0 + g] = f16::from_f32(block.scales[g]);
                if !offsets.is_empty() {
                    offsets[g0 + g] = f16::from_f32(block.offsets[g]);
                }
            }
        }
        let dst = &mut code_bytes[o * row_code_bytes..(o + 1) * row_code_bytes];
        match layout.codes {
            Codes::Nibbles => {
                for (chunk, bytes) in row_codes
                    .chunks_exact(CHUNK)
                    .zip(dst.chunks_exact_mut(CHUNK / 2))
                {
                    for (i, byte) in bytes.iter_mut().enumerate() {
                        *byte = (chunk[i] as u8 & 0xF) | ((chunk[CHUNK / 2 + i] as u8) << 4);
                    }
                }
            }
            Codes::Bytes => {
                for (byte, &c) in dst.iter_mut().zip(&row_codes) {
                    *byte = c as i8 as u8;
                }
            }
        }
    }
    Ok(Some(PackedMatrix {
        out,
        k,
        k_pad,
        codes: layout.codes,
        group: layout.group,
        code_bytes,
        scales,
        offsets,
        source: dtype,
    }))
}
