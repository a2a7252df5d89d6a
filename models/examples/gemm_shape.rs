//! Which way to multiply a weight matrix by a few rows on CPU, for SmolLM2's projection
//! shapes: `x W^T` (rows as the GEMM's M), `(W x^T)^T` (the weight's long side as M) and
//! `nereid_models::testing::matmul_rows` (a stream over the weights); then with FP16 weights,
//! candle's `QMatMul::TensorF16` against the stream.
//! `cargo run --release -p nereid-models --example gemm_shape`.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use half::f16;
use std::time::Instant;

fn time(n: usize, mut f: impl FnMut() -> candle_core::Result<()>) -> candle_core::Result<f64> {
    f()?;
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() / n as f64 * 1e6)
}

fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    for (out, inp) in [(576usize, 576usize), (1536, 576), (576, 1536), (49152, 576)] {
        let w = Tensor::randn(0f32, 1., (out, inp), &d)?;
        let wv: Vec<f32> = w.flatten_all()?.to_vec1()?;
        let w16 = w.to_dtype(DType::F16)?;
        let wv16: Vec<f16> = w16.flatten_all()?.to_vec1()?;
        let candle16 = QMatMul::TensorF16(w16);
        for rows in [1usize, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32] {
            let x = Tensor::randn(0f32, 1., (rows, inp), &d)?;
            let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
            let n = if out > 10_000 { 20 } else { 200 };
            let a = time(n, || x.matmul(&w.t()?).map(|_| ()))?;
            let b = time(n, || w.matmul(&x.t()?)?.t()?.contiguous().map(|_| ()))?;
            let c = time(n, || {
                nereid_models::testing::matmul_rows(&xv, rows, &wv, out, inp);
                Ok(())
            })?;
            let d = time(n, || candle16.forward(&x).map(|_| ()))?;
            let e = time(n, || {
                nereid_models::testing::matmul_rows(&xv, rows, &wv16, out, inp);
                Ok(())
            })?;
            println!(
                "{out}x{inp} rows {rows}: x*wT {a:.0} us, (w*xT)T {b:.0} us, skinny {c:.0} us; \
                 fp16: candle {d:.0} us, skinny {e:.0} us"
            );
        }
    }
    Ok(())
}
