//! Every format and kernel against the exact product.

use super::*;
use crate::testing::pseudo_random;

/// Both formats and both kernels against the exact product with the rounded weights,
/// within the bound the rounded activations allow, for odd shapes (channels past a
/// block pair, `k` past a pair) and every row count up to 21.
#[test]
fn kernels_match_the_rounded_product_within_the_activation_rounding() {
    for format in [DenseFormat::Int16, DenseFormat::Bf16] {
        for (out, k) in [(37usize, 51usize), (64, 384), (5, 3)] {
            check(format, out, k);
        }
    }
}

fn check(format: DenseFormat, out: usize, k: usize) {
    let w = pseudo_random(out * k, 7);
    let bias = pseudo_random(out, 9);
    let layer = PackedLinear::new(format, &w, out, k, Some(&bias));
    let rounded = layer.dequantize();
    for (i, (a, b)) in rounded.iter().zip(&w).enumerate() {
        let row = &w[i / k * k..(i / k + 1) * k];
        let step = match format {
            DenseFormat::Int16 => {
                row.iter().fold(0f32, |m, v| m.max(v.abs())) / WEIGHT_LIMIT as f32
            }
            DenseFormat::Bf16 => b.abs() / 128.0,
        };
        assert!((a - b).abs() <= step / 2.0 + 1e-7, "{format:?} weight {i}");
    }
    let vectors: Vec<Isa> = [Isa::Avx512Vnni, Isa::Avx2]
        .into_iter()
        .filter(|&isa| format.runs_on(isa))
        .collect();
    eprintln!("{format:?}: vector kernels {vectors:?}");
    for rows in 1..=21 {
        let x = pseudo_random(rows * k, rows as u32 + 100);
        let portable = layer.forward_rows_with(Isa::Portable, &x, rows);
        let fast: Vec<(Isa, Vec<f32>)> = vectors
            .iter()
            .map(|&isa| (isa, layer.forward_rows_with(isa, &x, rows)))
            .collect();
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            let row_step = activation_scale(xr, k.div_ceil(PAIR) * PAIR);
            for o in 0..out {
                let wr = &rounded[o * k..(o + 1) * k];
                let exact: f64 = xr
                    .iter()
                    .zip(wr)
                    .map(|(a, b)| f64::from(a * b))
                    .sum::<f64>()
                    + f64::from(bias[o]);
                // Each activation is off by at most half its step.
                let bound: f64 = xr
                    .iter()
                    .zip(wr)
                    .map(|(v, w)| {
                        let step = match format {
                            DenseFormat::Int16 => row_step,
                            DenseFormat::Bf16 => v.abs() / 128.0,
                        };
                        f64::from(w.abs() * step / 2.0)
                    })
                    .sum();
                let got = f64::from(portable[r * out + o]);
                assert!(
                    (got - exact).abs() <= bound * 1.01 + 1e-4,
                    "{format:?} {out}x{k}, {rows} rows, ({r}, {o}): {got} vs {exact}"
                );
                for (isa, v) in &fast {
                    let (g, p) = (v[r * out + o], portable[r * out + o]);
                    assert!(
                        (g - p).abs() <= 1e-4 * g.abs().max(1.0),
                        "{format:?} {isa:?} ({r}, {o}): {g} vs {p}"
                    );
                }
            }
        }
    }
}

/// The worst case for 32-bit sums: every weight at the limit with the sign of its
/// activation, activations all equal (the largest sum of magnitudes for their maximum), at
/// MiniLM's widest `k`. The portable kernel's sums are checked for overflow in debug
/// builds; every kernel must give the exact product.
#[test]
fn integer_sums_cannot_overflow() {
    let (out, k) = (32, 1536);
    let x: Vec<f32> = (0..k)
        .map(|i| if i % 3 == 0 { -2.5 } else { 2.5 })
        .collect();
    let w: Vec<f32> = (0..out * k).map(|i| x[i % k].signum()).collect();
    let layer = PackedLinear::new(DenseFormat::Int16, &w, out, k, None);
    for isa in [Isa::Avx512Vnni, Isa::Avx2, Isa::Portable] {
        if !DenseFormat::Int16.runs_on(isa) {
            continue;
        }
        let y = layer.forward_rows_with(isa, &x, 1);
        for (o, v) in y.iter().enumerate() {
            let exact = 2.5 * k as f32;
            // Within the rounding of about 341-step activations; an overflow is far off.
            assert!(
                (v - exact).abs() <= exact * 2e-3,
                "{isa:?} channel {o}: {v} vs {exact}"
            );
        }
    }
}

/// A row shaped like a transformer's activations (a few large channels over many small
/// ones) keeps all 15 bits; the overflow bound bites only rows whose sum of magnitudes is
/// large against their maximum, and even a uniform row of 384 keeps 11 bits.
#[test]
fn rows_keep_their_precision_unless_their_sums_could_overflow() {
    let mut spiky: Vec<f32> = pseudo_random(384, 3).iter().map(|v| v * 0.05).collect();
    spiky[7] = 10.0;
    let scale = activation_scale(&spiky, 384);
    assert!((scale * 32767.0 / 10.0 - 1.0).abs() < 1e-5, "{scale}");
    let uniform = pseudo_random(384, 3);
    let amax = uniform.iter().fold(0f32, |m, v| m.max(v.abs()));
    let levels = amax / activation_scale(&uniform, 384);
    assert!((2048.0..32767.0).contains(&levels), "{levels} levels");
    assert_eq!(activation_scale(&[0.0; 8], 8), 0.0);
}

/// `matmul_weights: auto` never picks a format that would fall back to the portable kernel.
#[test]
fn the_fastest_format_has_a_vector_kernel() {
    match DenseFormat::fastest() {
        Some(format) => assert!(format.vector_kernel().is_some(), "{format:?}"),
        None => assert_eq!(DenseFormat::Int16.vector_kernel(), None),
    }
}
