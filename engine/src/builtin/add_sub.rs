//! Triton's `simple` example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, over
//! any integer or float type, and over BYTES holding integers as UTF-8 text (Triton's
//! `simple_string`).

use bytemuck::Pod;

use super::pairs;
use crate::{
    BatchedInstance, DataType, EngineError, ExecBatch, Instance, ModelSpec, Result, Tensor,
};

/// Element-wise sum and difference of two tensors.
pub(super) struct AddSub {
    names: [String; 4],
    dtype: DataType,
}

pub(super) fn instance(spec: &ModelSpec) -> Result<Instance> {
    let dtype = pairs(spec, "add_sub", 2, 2)?;
    if matches!(dtype, DataType::Bool | DataType::Fp16 | DataType::Bf16) {
        return Err(EngineError::invalid(format!(
            "model '{}' (backend add_sub): datatype {dtype} is not supported; use an integer \
             type, FP32, FP64, or BYTES holding integers as text",
            spec.name()
        )));
    }
    let names = [
        &spec.inputs[0],
        &spec.inputs[1],
        &spec.outputs[0],
        &spec.outputs[1],
    ]
    .map(|t| t.name.clone());
    Ok(Instance::Batched(Box::new(AddSub { names, dtype })))
}

trait Arith: Pod {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
}

macro_rules! arith_int {
    ($($t:ty),*) => {$(impl Arith for $t {
        fn add(self, o: Self) -> Self { self.wrapping_add(o) }
        fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
    })*};
}
macro_rules! arith_float {
    ($($t:ty),*) => {$(impl Arith for $t {
        fn add(self, o: Self) -> Self { self + o }
        fn sub(self, o: Self) -> Self { self - o }
    })*};
}
arith_int!(i8, i16, i32, i64, u8, u16, u32, u64);
arith_float!(f32, f64);

/// The elements of a BYTES tensor read as decimal integers.
fn integers(t: &Tensor) -> Result<Vec<i64>> {
    t.string_elements()?
        .iter()
        .enumerate()
        .map(|(i, e)| {
            std::str::from_utf8(e)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    EngineError::invalid(format!(
                        "'{}' element {i} is {:?}, not an integer written in UTF-8 (add_sub over \
                         BYTES adds numbers given as text)",
                        t.name,
                        String::from_utf8_lossy(e)
                    ))
                })
        })
        .collect()
}

impl AddSub {
    fn compute_text(&self, a: &Tensor, b: &Tensor) -> Result<Vec<Tensor>> {
        if a.shape != b.shape {
            return Err(EngineError::invalid(format!(
                "'{}' has shape {:?} but '{}' has {:?}; add_sub needs equal shapes",
                a.name, a.shape, b.name, b.shape
            )));
        }
        let (x, y) = (integers(a)?, integers(b)?);
        let text = |f: fn(i64, i64) -> i64| -> Vec<String> {
            x.iter()
                .zip(&y)
                .map(|(&p, &q)| f(p, q).to_string())
                .collect()
        };
        Ok(vec![
            Tensor::from_strings(
                self.names[2].clone(),
                a.shape.clone(),
                text(i64::wrapping_add),
            ),
            Tensor::from_strings(
                self.names[3].clone(),
                a.shape.clone(),
                text(i64::wrapping_sub),
            ),
        ])
    }

    fn compute<T: Arith>(&self, a: &Tensor, b: &Tensor) -> Result<Vec<Tensor>> {
        if a.shape != b.shape {
            return Err(EngineError::invalid(format!(
                "'{}' has shape {:?} but '{}' has {:?}; add_sub needs equal shapes",
                a.name, a.shape, b.name, b.shape
            )));
        }
        let shape = a.shape.clone();
        let (a, b) = (a.to_vec::<T>()?, b.to_vec::<T>()?);
        let sum: Vec<T> = a.iter().zip(&b).map(|(&x, &y)| x.add(y)).collect();
        let diff: Vec<T> = a.iter().zip(&b).map(|(&x, &y)| x.sub(y)).collect();
        Ok(vec![
            Tensor::from_vec(self.names[2].clone(), self.dtype, shape.clone(), sum),
            Tensor::from_vec(self.names[3].clone(), self.dtype, shape, diff),
        ])
    }
}

impl BatchedInstance for AddSub {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let a = batch.require(&self.names[0])?;
        let b = batch.require(&self.names[1])?;
        match self.dtype {
            DataType::Int8 => self.compute::<i8>(a, b),
            DataType::Int16 => self.compute::<i16>(a, b),
            DataType::Int32 => self.compute::<i32>(a, b),
            DataType::Int64 => self.compute::<i64>(a, b),
            DataType::Uint8 => self.compute::<u8>(a, b),
            DataType::Uint16 => self.compute::<u16>(a, b),
            DataType::Uint32 => self.compute::<u32>(a, b),
            DataType::Uint64 => self.compute::<u64>(a, b),
            DataType::Fp32 => self.compute::<f32>(a, b),
            DataType::Fp64 => self.compute::<f64>(a, b),
            DataType::Bytes => self.compute_text(a, b),
            DataType::Bool | DataType::Fp16 | DataType::Bf16 => {
                unreachable!("refused when the instance was made")
            }
        }
    }
}
