//! Every block type, every kernel this CPU has and row counts 1 to 32, against candle's
//! dequantized values and its quantized matmul.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use super::*;

const TYPES: [GgmlDType; 6] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q8_0,
    GgmlDType::Q4K,
    GgmlDType::Q6K,
];

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// A random `(out, k)` matrix quantized to `dtype`: `k` a whole number of blocks; when
/// `padded`, for the 32-value types an odd number of them, so rows end in a padded half
/// chunk (candle's own kernels take only even numbers of blocks).
fn matrix(dtype: GgmlDType, out: usize, padded: bool) -> (QTensor, usize) {
    let k = if matches!(dtype, GgmlDType::Q4K | GgmlDType::Q6K) {
        512
    } else if padded {
        160
    } else {
        192
    };
    let w = Tensor::randn(0f32, 1., (out, k), &Device::Cpu).unwrap();
    (QTensor::quantize(&w, dtype).unwrap(), k)
}

#[test]
fn packing_keeps_every_value_of_every_block_type() {
    for dtype in TYPES {
        let (q, k) = matrix(dtype, 37, true);
        let packed = PackedMatrix::from_qtensor(&q).unwrap().unwrap();
        let want = flat(&q.dequantize(&Device::Cpu).unwrap());
        let got = packed.dequantize();
        // The K types' scale and offset products are rounded to FP16 (module docs): off by
        // at most a few FP16 steps of the group's largest value. The rest is exact.
        let tolerance = if matches!(dtype, GgmlDType::Q4K | GgmlDType::Q6K) {
            2f32.powi(-8)
        } else {
            0.0
        };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let group = i / 32 * 32..(i / 32 + 1) * 32;
            let largest = want[group].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                (g - w).abs() <= tolerance * largest,
                "{dtype:?} value {i} (row {}): {g} against {w}",
                i / k
            );
        }
    }
}

#[test]
fn unsupported_block_types_are_left_to_candle() {
    let w = Tensor::randn(0f32, 1., (4, 256), &Device::Cpu).unwrap();
    for dtype in [GgmlDType::Q2K, GgmlDType::Q3K, GgmlDType::F16] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        assert!(!pack::supports(dtype));
        assert!(PackedMatrix::from_qtensor(&q).unwrap().is_none());
    }
}

fn kernels() -> Vec<Isa> {
    let all = [Isa::Avx512Vnni, Isa::Avx2, Isa::Portable];
    let here: Vec<Isa> = all.into_iter().filter(|i| i.available()).collect();
    eprintln!("kernels on this CPU: {here:?}");
    here
}

/// For every block type, kernel and row count 1..=32: within the bound that 8-bit
/// activations allow of the exact product with the dequantized weights, equal to the
/// portable kernel up to float rounding, and close to candle's own quantized matmul.
#[test]
fn every_kernel_matches_the_references_for_every_type_and_row_count() {
    let out = 37; // odd: a lone last weight row, and several tasks
    for (dtype, padded) in TYPES.into_iter().flat_map(|t| [(t, true), (t, false)]) {
        let (q, k) = matrix(dtype, out, padded);
        let packed = PackedMatrix::from_qtensor(&q).unwrap().unwrap();
        let w = packed.dequantize();
        let candle = QMatMul::from_qtensor(q).unwrap();
        for rows in 1..=32 {
            let xt = Tensor::randn(0f32, 1., (rows, k), &Device::Cpu).unwrap();
            let x = flat(&xt);
            let portable = packed.matmul_rows_with(Isa::Portable, &x, rows);
            for r in 0..rows {
                let xr = &x[r * k..(r + 1) * k];
                for o in 0..out {
                    let wr = &w[o * k..(o + 1) * k];
                    let exact: f64 = xr.iter().zip(wr).map(|(a, b)| f64::from(a * b)).sum();
                    // Each activation is off by at most half its block's step, amax / 254.
                    let bound: f64 = xr
                        .chunks(32)
                        .zip(wr.chunks(32))
                        .map(|(xb, wb)| {
                            let step = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 254.0;
                            wb.iter().map(|v| f64::from(v.abs() * step)).sum::<f64>()
                        })
                        .sum();
                    let got = f64::from(portable[r * out + o]);
                    assert!(
                        (got - exact).abs() <= bound * 1.01 + 1e-3,
                        "{dtype:?} portable, {rows} rows, ({r}, {o}): {got} against {exact} (bound {bound})"
                    );
                }
            }
            for isa in kernels() {
                let got = packed.matmul_rows_with(isa, &x, rows);
                for (i, (g, p)) in got.iter().zip(&portable).enumerate() {
                    assert!(
                        (g - p).abs() <= 1e-4 * p.abs().max(1.0),
                        "{dtype:?} {isa:?}, {rows} rows, element {i}: {g} against {p}"
                    );
                }
            }
            if padded && k == 160 {
                continue;
            }
            let theirs = flat(&candle.forward(&xt).unwrap());
            let (num, den) = theirs
                .iter()
                .zip(&portable)
                .fold((0f64, 0f64), |(n, d), (t, p)| {
                    (n + f64::from(t - p).powi(2), d + f64::from(*t).powi(2))
                });
            let relative = (num / den).sqrt();
            assert!(
                relative < 0.03,
                "{dtype:?}, {rows} rows: {relative} from candle"
            );
        }
    }
}

#[test]
fn the_candle_op_checks_its_input() {
    let (q, k) = matrix(GgmlDType::Q8_0, 5, true);
    let packed = PackedMatrix::from_qtensor(&q).unwrap().unwrap();
    let x = Tensor::randn(0f32, 1., (3, k), &Device::Cpu).unwrap();
    let y = x.apply_op1_no_bwd(&packed).unwrap();
    assert_eq!(y.dims(), &[3, 5]);
    assert_eq!(flat(&y), packed.matmul_rows(&flat(&x), 3));
    let wrong = Tensor::zeros((3, k + 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = wrong.apply_op1_no_bwd(&packed).unwrap_err().to_string();
    assert!(err.contains("rows of 192 against weights of 160"), "{err}");
    let half = x.to_dtype(candle_core::DType::F16).unwrap();
    assert!(half.apply_op1_no_bwd(&packed).is_err());
}

#[test]
fn sizes_are_the_layouts_bytes() {
    let (q, _) = matrix(GgmlDType::Q4_1, 8, true);
    let packed = PackedMatrix::from_qtensor(&q).unwrap().unwrap();
    // 160 values padded to 192: 96 code bytes and 6 scales and offsets per row.
    assert_eq!(packed.bytes(), 8 * (96 + 2 * 2 * 6));
    assert_eq!(
        (packed.out(), packed.k(), packed.source()),
        (8, 160, GgmlDType::Q4_1)
    );
}
