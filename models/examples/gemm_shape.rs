//! Which way round to multiply a weight matrix by a few rows on CPU: `x W^T` (rows as the
//! GEMM's M) against `(W x^T)^T` (the weight's long side as M), for SmolLM2's projection
//! shapes and 1 or 8 rows. `cargo run --release -p nereid-models --example gemm_shape`.

use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    for (out, inp) in [(576usize, 576usize), (1536, 576), (576, 1536), (49152, 576)] {
        let w = Tensor::randn(0f32, 1., (out, inp), &d)?;
        for rows in [1usize, 8] {
            let x = Tensor::randn(0f32, 1., (rows, inp), &d)?;
            let n = 200;
            let t = Instant::now();
            for _ in 0..n {
                let _ = x.matmul(&w.t()?)?;
            }
            let a = t.elapsed().as_secs_f64() / n as f64 * 1e6;
            let t = Instant::now();
            for _ in 0..n {
                let _ = w.matmul(&x.t()?)?.t()?.contiguous()?;
            }
            let b = t.elapsed().as_secs_f64() / n as f64 * 1e6;
            println!("{out}x{inp} rows {rows}: x*wT {a:.0} us, (w*xT)T {b:.0} us");
        }
    }
    Ok(())
}
