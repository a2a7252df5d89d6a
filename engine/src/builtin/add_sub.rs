//! Triton's `simple` example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.

use bytemuck::Pod;

use super::pairs;
use crate::{
    BatchedInstance, DataType, EngineError, ExecBatch, Instance, ModelSpec, Result, Tensor,
};

/// Element-wise sum and difference of two tensors (INT32, INT64, FP32 or FP64).
pub(super) struct AddSub {
    names: [String; 4],
    dtype: DataType,
}

pub(super) fn instance(spec: &ModelSpec) -> Result<Instance> {
    let dtype = pairs(spec, "add_sub", 2, 2)?;
    if !matches!(
        dtype,
        DataType::Int32 | DataType::Int64 | DataType::Fp32 | DataType::Fp64
    ) {
        return Err(EngineError::invalid(format!(
            "model '{}' (backend add_sub): datatype {dtype} is not supported; use INT32, INT64, FP32 or FP64",
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
arith_int!(i32, i64);
arith_float!(f32, f64);

impl AddSub {
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
            DataType::Int32 => self.compute::<i32>(a, b),
            DataType::Int64 => self.compute::<i64>(a, b),
            DataType::Fp32 => self.compute::<f32>(a, b),
            _ => self.compute::<f64>(a, b),
        }
    }
}
