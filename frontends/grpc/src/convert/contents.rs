//! Typed `InferTensorContents` to the raw little-endian bytes the engine keeps. Each
//! element is written once, straight into the buffer that becomes `Tensor.data`.

use bytes::{BufMut, Bytes, BytesMut};
use nereid_engine::{DataType, EngineError, Tensor};
use nereid_proto::InferTensorContents;

/// Whether no typed list holds anything (an absent or empty `contents`).
pub(crate) fn is_empty(c: &InferTensorContents) -> bool {
    c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty()
}

/// Builds the tensor `name` of `dtype` and `shape` from typed contents, checking that the
/// list the datatype travels in holds exactly one value per element. `what` is "input" or
/// "output", for messages.
pub(crate) fn tensor_from_contents(
    what: &str,
    name: String,
    dtype: DataType,
    shape: Vec<i64>,
    contents: InferTensorContents,
) -> Result<Tensor, EngineError> {
    let count = nereid_engine::tensor::element_count(&shape)
        .map_err(|e| EngineError::invalid(format!("{what} '{name}': {e}")))?;
    let bad_count = |list: &str, held: usize| {
        EngineError::invalid(format!(
            "{what} '{name}': shape {shape:?} has {count} elements but {list} holds {held} \
             ({dtype} travels in {list})"
        ))
    };
    // Fixed-size types whose typed list already has the element type: one move into
    // shared bytes (the engine copies at most once when alignments differ).
    macro_rules! exact {
        ($list:ident) => {{
            let values = contents.$list;
            if values.len() != count {
                return Err(bad_count(stringify!($list), values.len()));
            }
            Tensor::from_vec(name, dtype, shape, values)
        }};
    }
    // Narrower integer types travel widened (INT8 in int32, UINT16 in uint32...): range-check
    // each element instead of silently wrapping it.
    macro_rules! narrowed {
        ($list:ident, $ty:ty) => {{
            let values = &contents.$list;
            if values.len() != count {
                return Err(bad_count(stringify!($list), values.len()));
            }
            let mut out = BytesMut::with_capacity(count * std::mem::size_of::<$ty>());
            for (i, &v) in values.iter().enumerate() {
                let v = <$ty>::try_from(v).map_err(|_| {
                    EngineError::invalid(format!(
                        "{what} '{name}': element {i} of {} is {v}, out of range for {dtype}",
                        stringify!($list)
                    ))
                })?;
                out.put_slice(&v.to_le_bytes());
            }
            Tensor::new(name, dtype, shape, out.freeze())
        }};
    }
    let tensor = match dtype {
        DataType::Bool => {
            let values = &contents.bool_contents;
            if values.len() != count {
                return Err(bad_count("bool_contents", values.len()));
            }
            let bytes: Vec<u8> = values.iter().map(|&b| u8::from(b)).collect();
            Tensor::new(name, dtype, shape, Bytes::from(bytes))
        }
        DataType::Int8 => narrowed!(int_contents, i8),
        DataType::Int16 => narrowed!(int_contents, i16),
        DataType::Int32 => exact!(int_contents),
        DataType::Int64 => exact!(int64_contents),
        DataType::Uint8 => narrowed!(uint_contents, u8),
        DataType::Uint16 => narrowed!(uint_contents, u16),
        DataType::Uint32 => exact!(uint_contents),
        DataType::Uint64 => exact!(uint64_contents),
        DataType::Fp32 => exact!(fp32_contents),
        DataType::Fp64 => exact!(fp64_contents),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(EngineError::invalid(format!(
                "{what} '{name}' is {dtype}, which has no typed contents list: send it in \
                 raw_input_contents (little-endian bytes)"
            )))
        }
        DataType::Bytes => {
            let items = contents.bytes_contents;
            if items.len() != count {
                return Err(bad_count("bytes_contents", items.len()));
            }
            Tensor::from_strings(name, shape, items)
        }
    };
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> InferTensorContents {
        InferTensorContents::default()
    }

    #[test]
    fn each_type_reads_its_list() {
        let mut c = contents();
        c.int_contents = vec![1, -2];
        let t =
            tensor_from_contents("input", "X".into(), DataType::Int32, vec![2], c.clone()).unwrap();
        assert_eq!(t.to_vec::<i32>().unwrap(), vec![1, -2]);
        let t = tensor_from_contents("input", "X".into(), DataType::Int8, vec![1, 2], c.clone())
            .unwrap();
        assert_eq!(t.data.as_ref(), &[1u8, 0xfe]);
        let t = tensor_from_contents("input", "X".into(), DataType::Int16, vec![2], c).unwrap();
        assert_eq!(t.to_vec::<i16>().unwrap(), vec![1, -2]);

        let mut c = contents();
        c.bool_contents = vec![true, false, true];
        let t = tensor_from_contents("input", "B".into(), DataType::Bool, vec![3], c).unwrap();
        assert_eq!(t.data.as_ref(), &[1u8, 0, 1]);

        let mut c = contents();
        c.bytes_contents = vec![Bytes::from("ab"), Bytes::new()];
        let t = tensor_from_contents("input", "S".into(), DataType::Bytes, vec![2], c).unwrap();
        assert_eq!(
            t.string_elements().unwrap(),
            vec![Bytes::from("ab"), Bytes::new()]
        );

        let mut c = contents();
        c.fp64_contents = vec![0.5];
        let t = tensor_from_contents("input", "D".into(), DataType::Fp64, vec![1, 1], c).unwrap();
        assert_eq!(t.to_vec::<f64>().unwrap(), vec![0.5]);
    }

    #[test]
    fn mismatches_name_the_tensor() {
        let mut c = contents();
        c.fp32_contents = vec![1.0; 3];
        let err = tensor_from_contents("input", "X".into(), DataType::Int32, vec![3], c.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'X'") && err.contains("int_contents holds 0"),
            "{err}"
        );
        let err = tensor_from_contents("input", "X".into(), DataType::Fp32, vec![2, 2], c)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("4 elements") && err.contains("holds 3"),
            "{err}"
        );
        let mut c = contents();
        c.uint_contents = vec![256];
        let err = tensor_from_contents("input", "U".into(), DataType::Uint8, vec![1], c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'U'") && err.contains("out of range"), "{err}");
        let err = tensor_from_contents("input", "H".into(), DataType::Fp16, vec![1], contents())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'H'") && err.contains("raw_input_contents"),
            "{err}"
        );
        let err = tensor_from_contents("input", "N".into(), DataType::Fp32, vec![-1], contents())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'N'") && err.contains("negative"), "{err}");
    }
}
