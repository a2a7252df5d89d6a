//! Tensors between the engine and ONNX Runtime: element types both ways, engine tensors
//! into ORT values (one copy, into memory ORT owns), ORT outputs back into engine tensors.

use nereid_engine::{DataType, EngineError, Result, Tensor};
use ort::value::TensorElementType;
use ort::value::{DynValue, Tensor as OrtTensor};

use crate::options::internal;

/// The engine type of an ONNX element type, when the engine has one.
pub(crate) fn engine_type(element: TensorElementType) -> Option<DataType> {
    Some(match element {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// Runs `$body` with `$t` bound to the Rust type of a fixed-size numeric `DataType`; the
/// other arms handle BOOL and BYTES, whose ORT representation differs from the wire's.
macro_rules! numeric {
    ($dtype:expr, $t:ident => $body:expr, bool => $bool:expr, bytes => $bytes:expr) => {
        match $dtype {
            DataType::Uint8 => {
                type $t = u8;
                $body
            }
            DataType::Uint16 => {
                type $t = u16;
                $body
            }
            DataType::Uint32 => {
                type $t = u32;
                $body
            }
            DataType::Uint64 => {
                type $t = u64;
                $body
            }
            DataType::Int8 => {
                type $t = i8;
                $body
            }
            DataType::Int16 => {
                type $t = i16;
                $body
            }
            DataType::Int32 => {
                type $t = i32;
                $body
            }
            DataType::Int64 => {
                type $t = i64;
                $body
            }
            DataType::Fp16 => {
                type $t = half::f16;
                $body
            }
            DataType::Bf16 => {
                type $t = half::bf16;
                $body
            }
            DataType::Fp32 => {
                type $t = f32;
                $body
            }
            DataType::Fp64 => {
                type $t = f64;
                $body
            }
            DataType::Bool => $bool,
            DataType::Bytes => $bytes,
        }
    };
}

/// An engine tensor as an ORT value of the same type and shape.
pub(crate) fn to_value(tensor: &Tensor) -> Result<DynValue> {
    let shape = tensor.shape.clone();
    let value = numeric!(tensor.dtype,
        T => OrtTensor::<T>::from_array((shape, tensor.to_vec::<T>()?)).map(|t| t.into_dyn()),
        bool => {
            let flags: Vec<bool> = tensor.data.iter().map(|b| *b != 0).collect();
            OrtTensor::<bool>::from_array((shape, flags)).map(|t| t.into_dyn())
        },
        bytes => {
            let items = tensor
                .string_elements()?
                .iter()
                .map(|item| {
                    String::from_utf8(item.to_vec()).map_err(|_| {
                        EngineError::invalid(format!(
                            "input '{}': ONNX string tensors hold UTF-8 text; an element is not",
                            tensor.name
                        ))
                    })
                })
                .collect::<Result<Vec<String>>>()?;
            OrtTensor::from_string_array((shape, items.as_slice())).map(|t| t.into_dyn())
        }
    );
    value.map_err(|e| internal(format!("input '{}': {e}", tensor.name)))
}

/// An ORT output as the engine tensor `name` of type `dtype`.
pub(crate) fn from_value(name: &str, dtype: DataType, value: &DynValue) -> Result<Tensor> {
    let failed = |e: ort::Error| internal(format!("output '{name}': {e}"));
    Ok(numeric!(dtype,
        T => {
            let (shape, data) = value.try_extract_tensor::<T>().map_err(failed)?;
            Tensor::from_vec(name, dtype, shape.to_vec(), data.to_vec())
        },
        bool => {
            let (shape, data) = value.try_extract_tensor::<bool>().map_err(failed)?;
            let bytes: Vec<u8> = data.iter().map(|&b| u8::from(b)).collect();
            Tensor::new(name, dtype, shape.to_vec(), bytes.into())
        },
        bytes => {
            let (shape, items) = value.try_extract_strings().map_err(failed)?;
            Tensor::from_strings(name, shape.to_vec(), items)
        }
    ))
}
