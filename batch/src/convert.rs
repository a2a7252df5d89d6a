//! Columns and tensors: how a column feeds an input tensor, and how output tensors become
//! a column.
//!
//! An input column is first *coerced* (Arrow's safe cast) to the one Arrow type that holds
//! the tensor's rows ([`input_type`]); a row the cast cannot carry becomes a row error, not
//! a failed job. Tensors are then cut out of the coerced column's buffers, one copy of the
//! bytes. Outputs go the other way through an [`OutputColumn`].

use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, FixedSizeListArray, ListArray, StringArray};
use arrow_buffer::{MutableBuffer, OffsetBuffer, ScalarBuffer};
use arrow_cast::cast::{can_cast_types, cast_with_options, CastOptions};
use arrow_schema::{DataType as ArrowType, Field, FieldRef};
use bytes::Bytes;
use nereid_engine::tensor::{decode_bytes_elements, encode_bytes_elements};
use nereid_engine::{DataType, Tensor, TensorSpec};

/// How many elements one row holds for a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowShape {
    /// One element: dims `[1]` (or `[]`).
    Scalar,
    /// A fixed number of elements: every dim known.
    Fixed(usize),
    /// Any number: a -1 among the dims.
    Variable,
}

impl RowShape {
    /// The shape of a row of a tensor with these dims (batch dimension excluded).
    pub(crate) fn of(dims: &[i64]) -> Self {
        if dims.iter().any(|d| *d < 0) {
            return Self::Variable;
        }
        match dims.iter().product::<i64>() as usize {
            1 => Self::Scalar,
            n => Self::Fixed(n),
        }
    }
}

/// The Arrow type of one element of `dtype` in an input column (BYTES as raw binary, since
/// a tensor's bytes need not be text; bfloat16, which Arrow lacks, as FP32).
pub(crate) fn element_type(dtype: DataType) -> ArrowType {
    match dtype {
        DataType::Bool => ArrowType::Boolean,
        DataType::Uint8 => ArrowType::UInt8,
        DataType::Uint16 => ArrowType::UInt16,
        DataType::Uint32 => ArrowType::UInt32,
        DataType::Uint64 => ArrowType::UInt64,
        DataType::Int8 => ArrowType::Int8,
        DataType::Int16 => ArrowType::Int16,
        DataType::Int32 => ArrowType::Int32,
        DataType::Int64 => ArrowType::Int64,
        DataType::Fp16 => ArrowType::Float16,
        DataType::Bf16 | DataType::Fp32 => ArrowType::Float32,
        DataType::Fp64 => ArrowType::Float64,
        DataType::Bytes => ArrowType::Binary,
    }
}

fn list_field(element: ArrowType) -> FieldRef {
    Arc::new(Field::new_list_field(element, true))
}

fn shaped(element: ArrowType, shape: RowShape) -> ArrowType {
    match shape {
        RowShape::Scalar => element,
        RowShape::Fixed(n) => ArrowType::FixedSizeList(list_field(element), n as i32),
        RowShape::Variable => ArrowType::List(list_field(element)),
    }
}

/// The Arrow type an input column is coerced to before tensors are cut from it.
pub(crate) fn input_type(spec: &TensorSpec) -> ArrowType {
    shaped(element_type(spec.dtype), RowShape::of(&spec.dims))
}

/// The Arrow type of the column an output tensor is written to (BYTES as UTF-8 text).
pub(crate) fn output_type(spec: &TensorSpec) -> ArrowType {
    let element = match spec.dtype {
        DataType::Bytes => ArrowType::Utf8,
        dtype => element_type(dtype),
    };
    shaped(element, RowShape::of(&spec.dims))
}

fn is_text(t: &ArrowType) -> bool {
    matches!(
        t,
        ArrowType::Utf8
            | ArrowType::LargeUtf8
            | ArrowType::Utf8View
            | ArrowType::Binary
            | ArrowType::LargeBinary
            | ArrowType::BinaryView
    )
}

/// Why a column of type `from` cannot feed tensor `spec`, if it cannot.
pub(crate) fn check_feeds(column: &str, from: &ArrowType, spec: &TensorSpec) -> Result<(), String> {
    let target = input_type(spec);
    let ok = if target == ArrowType::Binary && !is_text(from) {
        can_cast_types(from, &ArrowType::Utf8)
    } else {
        can_cast_types(from, &target)
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "column '{column}' ({from}) cannot feed input '{}' ({} {:?})",
            spec.name, spec.dtype, spec.dims
        ))
    }
}

/// Casts `array` to the column type of `spec`. Rows the cast cannot carry (a null, a
/// number out of range, a list of the wrong length, a list holding nulls) are marked in
/// `errors`, first reason kept.
pub(crate) fn coerce(
    array: &ArrayRef,
    column: &str,
    spec: &TensorSpec,
    errors: &mut [Option<String>],
) -> Result<ArrayRef, String> {
    let target = input_type(spec);
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let what = format!("column '{column}' for input '{}'", spec.name);
    let cast = |a: &ArrayRef, t: &ArrowType| {
        cast_with_options(a, t, &options).map_err(|e| format!("{what}: {e}"))
    };
    let out = if array.data_type() == &target {
        array.clone()
    } else if target == ArrowType::Binary && !is_text(array.data_type()) {
        cast(&cast(array, &ArrowType::Utf8)?, &target)?
    } else {
        cast(array, &target)?
    };
    for (row, error) in errors.iter_mut().enumerate() {
        if error.is_some() {
            continue;
        }
        if array.is_null(row) {
            *error = Some(format!("{what} is null"));
        } else if out.is_null(row) {
            *error = Some(format!(
                "{what}: the value cannot be read as {} {:?}",
                spec.dtype, spec.dims
            ));
        } else if let Some(values) = row_values(&out, row) {
            if values.null_count() > 0 {
                *error = Some(format!("{what}: the list holds nulls"));
            }
        }
    }
    Ok(out)
}

/// A list column's elements of one row.
fn row_values(array: &ArrayRef, row: usize) -> Option<ArrayRef> {
    match array.data_type() {
        ArrowType::FixedSizeList(..) => Some(array.as_fixed_size_list().value(row)),
        ArrowType::List(_) => Some(array.as_list::<i32>().value(row)),
        _ => None,
    }
}

/// Elements in `rows` of a coerced column (its element range).
fn element_range(array: &dyn Array, rows: &Range<usize>) -> (ArrayRef, Range<usize>) {
    match array.data_type() {
        ArrowType::FixedSizeList(_, n) => {
            let list = array.as_fixed_size_list();
            let n = *n as usize;
            (list.values().clone(), rows.start * n..rows.end * n)
        }
        ArrowType::List(_) => {
            let list = array.as_list::<i32>();
            let offsets = list.value_offsets();
            (
                list.values().clone(),
                offsets[rows.start] as usize..offsets[rows.end] as usize,
            )
        }
        _ => (arrow_array::make_array(array.to_data()), rows.clone()),
    }
}

/// The number of elements row `row` of a coerced column holds.
pub(crate) fn row_len(array: &dyn Array, row: usize) -> usize {
    element_range(array, &(row..row + 1)).1.len()
}

/// The tensor for rows `rows` of a coerced column: `[rows, dims...]` when the model
/// batches, `dims` (one row) when it does not; a -1 in dims is the row's length.
pub(crate) fn tensor(
    array: &dyn Array,
    spec: &TensorSpec,
    rows: Range<usize>,
    batches: bool,
) -> Tensor {
    let count = rows.len();
    let (elements, range) = element_range(array, &rows);
    let per_row = range.len() / count.max(1);
    let data = element_bytes(elements.as_ref(), range, spec.dtype);
    let known: i64 = spec.dims.iter().filter(|d| **d >= 0).product();
    let mut shape: Vec<i64> = spec
        .dims
        .iter()
        .map(|&d| {
            if d < 0 {
                per_row as i64 / known.max(1)
            } else {
                d
            }
        })
        .collect();
    if batches {
        shape.insert(0, count as i64);
    }
    Tensor::new(spec.name.clone(), spec.dtype, shape, data)
}

/// The raw tensor bytes of `elements[range]`.
fn element_bytes(elements: &dyn Array, range: Range<usize>, dtype: DataType) -> Bytes {
    match dtype {
        DataType::Bytes => {
            let strings = elements.as_binary::<i32>();
            encode_bytes_elements(range.map(|i| strings.value(i)))
        }
        DataType::Bool => {
            let bools = elements.as_boolean();
            range
                .map(|i| u8::from(bools.value(i)))
                .collect::<Vec<_>>()
                .into()
        }
        DataType::Bf16 => {
            let floats = elements.as_primitive::<arrow_array::types::Float32Type>();
            let mut out = Vec::with_capacity(range.len() * 2);
            for i in range {
                out.extend_from_slice(&half::bf16::from_f32(floats.value(i)).to_le_bytes());
            }
            out.into()
        }
        _ => {
            let width = dtype.element_size().expect("fixed-size dtype");
            let data = elements.to_data();
            let start = (data.offset() + range.start) * width;
            let end = (data.offset() + range.end) * width;
            Bytes::copy_from_slice(&data.buffers()[0].as_slice()[start..end])
        }
    }
}

/// The rows of one output column as they arrive, built into an Arrow array at the end of
/// a chunk.
pub(crate) struct OutputColumn {
    spec: TensorSpec,
    shape: RowShape,
    /// Little-endian elements of fixed-size dtypes (bfloat16 widened to FP32).
    raw: MutableBuffer,
    /// BYTES elements, as text.
    strings: Vec<String>,
    /// Element offsets of each row, for variable-length rows.
    offsets: Vec<i32>,
    elements: usize,
}

impl OutputColumn {
    /// An empty column for output tensor `spec`.
    pub(crate) fn new(spec: TensorSpec) -> Self {
        Self {
            shape: RowShape::of(&spec.dims),
            spec,
            raw: MutableBuffer::new(0),
            strings: Vec::new(),
            offsets: vec![0],
            elements: 0,
        }
    }

    /// Why a tensor holding `rows` rows cannot be appended, if it cannot; else the
    /// elements each row holds.
    pub(crate) fn check(&self, tensor: &Tensor, rows: usize) -> Result<usize, String> {
        let name = &self.spec.name;
        if tensor.dtype != self.spec.dtype {
            return Err(format!(
                "output '{name}' is {}, the model's config says {}",
                tensor.dtype, self.spec.dtype
            ));
        }
        let total = tensor.element_count().map_err(|e| e.to_string())?;
        if rows == 0 || total % rows != 0 {
            return Err(format!(
                "output '{name}' of shape {:?} does not split into {rows} rows",
                tensor.shape
            ));
        }
        let per_row = total / rows;
        match self.shape {
            RowShape::Scalar if per_row != 1 => Err(format!(
                "output '{name}' holds {per_row} elements per row, not 1"
            )),
            RowShape::Fixed(n) if per_row != n => Err(format!(
                "output '{name}' holds {per_row} elements per row, not {n}"
            )),
            _ if tensor.dtype == DataType::Bytes => {
                let items = decode_bytes_elements(&tensor.data)?;
                match items.iter().all(|item| std::str::from_utf8(item).is_ok()) {
                    true => Ok(per_row),
                    false => Err(format!("output '{name}' is not UTF-8 text")),
                }
            }
            _ => Ok(per_row),
        }
    }

    /// Appends the rows of a tensor that holds `rows` rows; nothing is appended when it
    /// does not fit the column (the reason is returned, for those rows' errors).
    pub(crate) fn push(&mut self, tensor: &Tensor, rows: usize) -> Result<(), String> {
        let per_row = self.check(tensor, rows)?;
        if tensor.dtype == DataType::Bytes {
            let items = decode_bytes_elements(&tensor.data)?;
            self.strings.extend(
                items
                    .iter()
                    .map(|item| String::from_utf8_lossy(item).into_owned()),
            );
        } else if tensor.dtype == DataType::Bf16 {
            for pair in tensor.data.chunks_exact(2) {
                let value = half::bf16::from_le_bytes([pair[0], pair[1]]).to_f32();
                self.raw.extend_from_slice(&value.to_le_bytes());
            }
        } else {
            self.raw.extend_from_slice(&tensor.data);
        }
        for _ in 0..rows {
            self.elements += per_row;
            self.offsets.push(self.elements as i32);
        }
        Ok(())
    }

    /// The rows appended so far, as an array of [`output_type`]; the column is then empty.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        let elements: ArrayRef = match self.spec.dtype {
            DataType::Bytes => Arc::new(StringArray::from_iter_values(self.strings.drain(..))),
            DataType::Bool => {
                let raw = std::mem::replace(&mut self.raw, MutableBuffer::new(0));
                Arc::new(BooleanArray::from_iter(
                    raw.as_slice().iter().map(|b| Some(*b != 0)),
                ))
            }
            dtype => {
                let raw = std::mem::replace(&mut self.raw, MutableBuffer::new(0));
                let data = arrow_data::ArrayData::builder(element_type(dtype))
                    .len(self.elements)
                    .add_buffer(raw.into())
                    .build()
                    .expect("pushed rows are whole elements of the dtype");
                arrow_array::make_array(data)
            }
        };
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        self.elements = 0;
        let element_type = elements.data_type().clone();
        match self.shape {
            RowShape::Scalar => elements,
            RowShape::Fixed(n) => Arc::new(FixedSizeListArray::new(
                list_field(element_type),
                n as i32,
                elements,
                None,
            )),
            RowShape::Variable => Arc::new(ListArray::new(
                list_field(element_type),
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                elements,
                None,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array};

    fn spec(name: &str, dtype: DataType, dims: Vec<i64>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            dims,
            optional: false,
        }
    }

    #[test]
    fn a_list_of_doubles_feeds_a_fixed_fp32_tensor_and_bad_rows_are_marked() {
        let lists =
            arrow_array::ListArray::from_iter_primitive::<arrow_array::types::Float64Type, _, _>(
                vec![
                    Some(vec![Some(1.0), Some(2.0)]),
                    Some(vec![Some(3.0)]),
                    None,
                    Some(vec![Some(5.0), None]),
                    Some(vec![Some(7.0), Some(8.0)]),
                ],
            );
        let array: ArrayRef = Arc::new(lists);
        let spec = spec("IN", DataType::Fp32, vec![2]);
        let mut errors = vec![None; 5];
        let coerced = coerce(&array, "vec", &spec, &mut errors).unwrap();
        assert!(errors[0].is_none() && errors[4].is_none());
        assert!(errors[1]
            .as_deref()
            .unwrap()
            .contains("cannot be read as FP32"));
        assert!(errors[2].as_deref().unwrap().contains("is null"));
        assert!(errors[3].as_deref().unwrap().contains("holds nulls"));
        let t = tensor(coerced.as_ref(), &spec, 4..5, true);
        assert_eq!(t.shape, vec![1, 2]);
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![7.0, 8.0]);
    }

    #[test]
    fn numbers_feed_a_bytes_tensor_as_their_text() {
        let array: ArrayRef = Arc::new(Int64Array::from(vec![12, 34]));
        let spec = spec("TEXT", DataType::Bytes, vec![1]);
        check_feeds("n", array.data_type(), &spec).unwrap();
        let mut errors = vec![None; 2];
        let coerced = coerce(&array, "n", &spec, &mut errors).unwrap();
        let t = tensor(coerced.as_ref(), &spec, 0..2, true);
        assert_eq!(t.shape, vec![2, 1]);
        assert_eq!(
            t.string_elements().unwrap(),
            vec![Bytes::from("12"), Bytes::from("34")]
        );
    }

    #[test]
    fn a_variable_dim_takes_the_rows_length_and_an_unbatched_model_gets_no_batch_dim() {
        let lists =
            arrow_array::ListArray::from_iter_primitive::<arrow_array::types::Int32Type, _, _>(
                vec![Some(vec![Some(1), Some(2), Some(3)])],
            );
        let array: ArrayRef = Arc::new(lists);
        let spec = spec("IN", DataType::Int32, vec![-1]);
        let mut errors = vec![None; 1];
        let coerced = coerce(&array, "v", &spec, &mut errors).unwrap();
        assert_eq!(row_len(coerced.as_ref(), 0), 3);
        let t = tensor(coerced.as_ref(), &spec, 0..1, false);
        assert_eq!(t.shape, vec![3]);
    }

    #[test]
    fn a_text_column_cannot_feed_a_vector_and_the_message_names_both() {
        let spec = spec("IN", DataType::Fp32, vec![4]);
        let err = check_feeds("title", &ArrowType::Boolean, &spec).unwrap_err();
        assert!(err.contains("'title'") && err.contains("'IN'"), "{err}");
        assert!(check_feeds("x", &ArrowType::Float64, &spec).is_err());
        let array: ArrayRef = Arc::new(Float64Array::from(vec![1.5]));
        assert!(check_feeds(
            "x",
            array.data_type(),
            &self::spec("S", DataType::Fp32, vec![1])
        )
        .is_ok());
    }

    #[test]
    fn output_tensors_become_fixed_lists_scalars_and_text() {
        let mut vectors = OutputColumn::new(spec("E", DataType::Fp32, vec![2]));
        vectors
            .push(
                &Tensor::from_vec("E", DataType::Fp32, vec![2, 2], vec![1f32, 2., 3., 4.]),
                2,
            )
            .unwrap();
        vectors
            .push(
                &Tensor::from_vec("E", DataType::Fp32, vec![1, 2], vec![5f32, 6.]),
                1,
            )
            .unwrap();
        let array = vectors.finish();
        assert_eq!(array.len(), 3);
        assert_eq!(
            array.data_type(),
            &output_type(&spec("E", DataType::Fp32, vec![2]))
        );
        let mut text = OutputColumn::new(spec("T", DataType::Bytes, vec![1]));
        text.push(&Tensor::from_strings("T", vec![1, 1], ["héllo"]), 1)
            .unwrap();
        assert!(text
            .push(&Tensor::from_strings("T", vec![1, 1], [[0xffu8]]), 1)
            .is_err());
        assert!(text
            .push(&Tensor::from_strings("T", vec![1, 2], ["a", "b"]), 1)
            .is_err());
        let array = text.finish();
        assert_eq!(array.as_string::<i32>().value(0), "héllo");
        assert_eq!(array.len(), 1);
    }
}
