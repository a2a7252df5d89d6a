//! The packed dense kernels against candle's FP32 matmul on minilm's layer shapes, one
//! thread, every kernel this CPU runs (the AVX2 one forced on an AVX-512 machine too), for
//! docs/BENCHMARKS.md.
//!
//! ```text
//! RAYON_NUM_THREADS=1 cargo run --release -p nereid-models --example dense_kernels
//! ```
//!
//! Each product is `(rows, k) x (k, out)` with `rows = 512` (32 texts of 16 tokens); the
//! figure is the best of five timed passes after a warm-up, in GFLOP/s (2 per multiply-add).

use std::time::Instant;

use candle_core::{Device, Tensor};
use nereid_models::testing::{pseudo_random, DenseFormat, Isa, PackedLinear};

const ROWS: usize = 512;
/// minilm's dense layers as (name, out, k).
const SHAPES: [(&str, usize, usize); 4] = [
    ("qkv", 1152, 384),
    ("attention out", 384, 384),
    ("intermediate", 1536, 384),
    ("output", 384, 1536),
];

/// The best of five passes of `f`, in GFLOP/s for a product of `flops`.
fn best(flops: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut fastest = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        f();
        fastest = fastest.min(start.elapsed().as_secs_f64());
    }
    flops / fastest / 1e9
}

fn main() -> candle_core::Result<()> {
    println!("{ROWS} rows, one thread unless RAYON_NUM_THREADS says otherwise; GFLOP/s");
    for (name, out, k) in SHAPES {
        let flops = 2.0 * (ROWS * out * k) as f64;
        let x = pseudo_random(ROWS * k, 1);
        let w = pseudo_random(out * k, 2);
        let xt = Tensor::from_vec(x.clone(), (ROWS, k), &Device::Cpu)?;
        let wt = Tensor::from_vec(w.clone(), (out, k), &Device::Cpu)?.t()?;
        let mut line = format!(
            "{name:>14} {out:>4}x{k:<4}  fp32 (candle) {:6.1}",
            best(flops, || {
                xt.matmul(&wt).expect("matmul");
            })
        );
        for format in [DenseFormat::Int16, DenseFormat::Bf16] {
            let layer = PackedLinear::new(format, &w, out, k, None);
            for isa in [Isa::Avx512Vnni, Isa::Avx2, Isa::Portable] {
                if isa == Isa::Portable || !format.runs_on(isa) {
                    continue;
                }
                let speed = best(flops, || {
                    layer.forward_rows_with(isa, &x, ROWS);
                });
                line += &format!("  {format:?} {isa:?} {speed:6.1}");
            }
        }
        println!("{line}");
    }
    Ok(())
}
