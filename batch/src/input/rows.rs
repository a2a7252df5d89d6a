//! JSONL and CSV input, read row by row: a line that is not a JSON object, or a cell that
//! is not what its tensor takes, fails that row only.
//!
//! Cells are first gathered in their natural Arrow type (integers as Int64, numbers as
//! Float64, text as raw binary, arrays as lists) and then coerced like Parquet columns,
//! so both paths share one set of rules. A JSONL line is a row unless it is blank; a CSV
//! file has a header row. A CSV cell feeding a text tensor is taken as raw bytes; one
//! feeding a number or a vector is read as JSON (`3`, `0.5`, `[1, 2]`).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType as ArrowType, Field};
use nereid_engine::{DataType, TensorSpec};
use serde_json::Value;

use super::{row_numbers, Block, Columns, Format, InputFile};
use crate::convert::{self, RowShape};

/// The Arrow type cells are gathered in before coercion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bytes,
    Text,
    Int,
    Float,
    Bool,
}

impl Kind {
    fn for_tensor(dtype: DataType) -> Self {
        match dtype {
            DataType::Bytes => Self::Bytes,
            DataType::Bool => Self::Bool,
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => Self::Float,
            _ => Self::Int,
        }
    }

    /// The kind of a key column, from its first value.
    fn for_key(value: &Value) -> Self {
        match value {
            Value::Bool(_) => Self::Bool,
            Value::Number(n) if n.is_i64() => Self::Int,
            Value::Number(_) => Self::Float,
            _ => Self::Text,
        }
    }

    fn arrow(self) -> ArrowType {
        match self {
            Self::Bytes => ArrowType::Binary,
            Self::Text => ArrowType::Utf8,
            Self::Int => ArrowType::Int64,
            Self::Float => ArrowType::Float64,
            Self::Bool => ArrowType::Boolean,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Bytes | Self::Text => "text",
            Self::Int => "an integer",
            Self::Float => "a number",
            Self::Bool => "a boolean",
        }
    }
}

#[derive(Clone, Debug)]
enum Scalar {
    Bytes(Vec<u8>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// One cell as the file holds it.
enum Cell<'a> {
    Missing,
    Json(&'a Value),
    Text(&'a [u8]),
}

/// Converts a JSON value to one element of `kind`.
fn scalar(value: &Value, kind: Kind) -> Result<Scalar, String> {
    let mismatch = || format!("expected {}, got {value}", kind.name());
    match (kind, value) {
        (Kind::Bytes | Kind::Text, Value::String(s)) => Ok(Scalar::Bytes(s.as_bytes().to_vec())),
        (Kind::Bytes | Kind::Text, other) => Ok(Scalar::Bytes(other.to_string().into_bytes())),
        (Kind::Int, Value::Number(n)) => n.as_i64().map(Scalar::Int).ok_or_else(mismatch),
        (Kind::Float, Value::Number(n)) => n.as_f64().map(Scalar::Float).ok_or_else(mismatch),
        (Kind::Bool, Value::Bool(b)) => Ok(Scalar::Bool(*b)),
        _ => Err(mismatch()),
    }
}

/// A cell as the elements of one row (`None`: null), for a column of `kind` and `shape`.
fn cell_elements(cell: &Cell, kind: Kind, shape: RowShape) -> Result<Option<Vec<Scalar>>, String> {
    let parsed;
    let value = match cell {
        Cell::Missing => return Ok(None),
        Cell::Text([]) => return Ok(None),
        Cell::Text(raw) if kind == Kind::Bytes && shape == RowShape::Scalar => {
            return Ok(Some(vec![Scalar::Bytes(raw.to_vec())]))
        }
        Cell::Text(raw) if kind == Kind::Text => {
            let text = std::str::from_utf8(raw).map_err(|_| "the cell is not UTF-8".to_string())?;
            return Ok(Some(vec![Scalar::Bytes(text.as_bytes().to_vec())]));
        }
        Cell::Text(raw) => {
            parsed = serde_json::from_slice::<Value>(raw).map_err(|_| {
                format!(
                    "expected {} (as JSON), got '{}'",
                    kind.name(),
                    String::from_utf8_lossy(raw)
                )
            })?;
            &parsed
        }
        Cell::Json(value) => value,
    };
    if value.is_null() {
        return Ok(None);
    }
    if shape == RowShape::Scalar {
        return scalar(value, kind).map(|s| Some(vec![s]));
    }
    let mut out = Vec::new();
    flatten(value, kind, &mut out)?;
    Ok(Some(out))
}

fn flatten(value: &Value, kind: Kind, out: &mut Vec<Scalar>) -> Result<(), String> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, kind, out)),
        other => {
            out.push(scalar(other, kind)?);
            Ok(())
        }
    }
}

/// Cells of one column over a block, built into an array of the natural type.
struct Gather {
    kind: Kind,
    list: bool,
    rows: Vec<Option<Vec<Scalar>>>,
}

impl Gather {
    fn new(kind: Kind, list: bool) -> Self {
        Self {
            kind,
            list,
            rows: Vec::new(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        let rows = std::mem::take(&mut self.rows);
        let flat = rows.iter().flat_map(|r| r.iter().flatten());
        let elements: ArrayRef = match self.kind {
            Kind::Bytes => Arc::new(BinaryArray::from_iter_values(flat.map(|s| match s {
                Scalar::Bytes(b) => b.clone(),
                _ => Vec::new(),
            }))),
            Kind::Text => Arc::new(StringArray::from_iter_values(flat.map(|s| match s {
                Scalar::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            }))),
            Kind::Int => Arc::new(Int64Array::from_iter_values(flat.map(|s| match s {
                Scalar::Int(i) => *i,
                _ => 0,
            }))),
            Kind::Float => Arc::new(Float64Array::from_iter_values(flat.map(|s| match s {
                Scalar::Float(f) => *f,
                Scalar::Int(i) => *i as f64,
                _ => 0.0,
            }))),
            Kind::Bool => Arc::new(BooleanArray::from_iter(
                flat.map(|s| Some(matches!(s, Scalar::Bool(true)))),
            )),
        };
        let nulls = NullBuffer::from_iter(rows.iter().map(Option::is_some));
        if !self.list {
            // Scalars: one element per present row; nulls are re-spread over the rows.
            let indices = arrow_array::UInt32Array::from_iter(rows.iter().scan(0u32, |next, r| {
                Some(r.as_ref().map(|_| {
                    *next += 1;
                    *next - 1
                }))
            }));
            return arrow_select::take::take(&elements, &indices, None)
                .expect("indices are within the gathered elements");
        }
        let lengths = rows.iter().map(|r| r.as_ref().map_or(0, Vec::len));
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(self.kind.arrow(), true)),
            OffsetBuffer::from_lengths(lengths),
            elements,
            Some(nulls),
        ))
    }
}

/// Rows of a JSONL or CSV file, each as its cells for the wanted columns.
enum RowReader {
    Jsonl(BufReader<File>, Vec<u8>),
    Csv(csv::Reader<File>, Vec<Option<usize>>, csv::ByteRecord),
}

/// One row: the wanted columns' cells, or why the row cannot be read.
enum Row {
    Json(Result<serde_json::Map<String, Value>, String>),
    Csv(Result<(), String>),
}

impl RowReader {
    fn open(path: &Path, format: Format, wanted: &[&str]) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
                let header = reader
                    .byte_headers()
                    .map_err(|e| format!("CSV header: {e}"))?
                    .clone();
                let index = wanted
                    .iter()
                    .map(|w| header.iter().position(|h| h == w.as_bytes()))
                    .collect();
                Ok(Self::Csv(reader, index, csv::ByteRecord::new()))
            }
            _ => Ok(Self::Jsonl(
                BufReader::with_capacity(1 << 20, file),
                Vec::new(),
            )),
        }
    }

    /// The next row, `None` at the end of the file.
    fn next(&mut self) -> Result<Option<Row>, String> {
        match self {
            Self::Jsonl(reader, line) => loop {
                line.clear();
                if reader.read_until(b'\n', line).map_err(|e| e.to_string())? == 0 {
                    return Ok(None);
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(Row::Json(
                    serde_json::from_slice(line)
                        .map_err(|e| format!("the line is not a JSON object: {e}")),
                )));
            },
            Self::Csv(reader, _, record) => match reader.read_byte_record(record) {
                Ok(true) => Ok(Some(Row::Csv(Ok(())))),
                Ok(false) => Ok(None),
                Err(e) if e.is_io_error() => Err(e.to_string()),
                Err(e) => Ok(Some(Row::Csv(Err(format!(
                    "the CSV record cannot be read: {e}"
                ))))),
            },
        }
    }

    /// Cell `i` of the wanted columns in the row just read.
    fn cell<'a>(&'a self, row: &'a Row, name: &str, i: usize) -> Cell<'a> {
        match (self, row) {
            (_, Row::Json(Ok(map))) => map.get(name).map_or(Cell::Missing, Cell::Json),
            (Self::Csv(_, index, record), Row::Csv(Ok(()))) => index[i]
                .and_then(|at| record.get(at))
                .map_or(Cell::Missing, Cell::Text),
            _ => Cell::Missing,
        }
    }
}

fn row_error(row: &Row) -> Option<String> {
    match row {
        Row::Json(Err(e)) | Row::Csv(Err(e)) => Some(e.clone()),
        _ => None,
    }
}

fn wanted(columns: &Columns) -> Vec<&str> {
    columns
        .inputs
        .iter()
        .map(|(c, _)| c.as_str())
        .chain(columns.keys.iter().map(String::as_str))
        .collect()
}

/// Rows, and the key fields: from the first object that has each key (JSONL), text (CSV).
fn inspect(path: &Path, format: Format, columns: &Columns) -> Result<(u64, Vec<Field>), String> {
    let wanted = wanted(columns);
    let mut reader = RowReader::open(path, format, &wanted)?;
    if let RowReader::Csv(_, index, _) = &reader {
        if let Some(missing) = wanted.iter().zip(index).find(|(_, i)| i.is_none()) {
            return Err(format!("no column '{}' in the CSV header", missing.0));
        }
    }
    let mut key_kinds: Vec<Option<Kind>> = vec![None; columns.keys.len()];
    if format == Format::Csv {
        key_kinds.fill(Some(Kind::Text));
    }
    let (mut rows, mut first_object) = (0u64, true);
    while let Some(row) = reader.next()? {
        rows += 1;
        if let Row::Json(Ok(map)) = &row {
            if first_object {
                first_object = false;
                if let Some(missing) = wanted.iter().find(|w| !map.contains_key(**w)) {
                    let names: Vec<_> = map.keys().map(String::as_str).collect();
                    return Err(format!(
                        "no column '{missing}' in the first row (it has: {})",
                        names.join(", ")
                    ));
                }
            }
            for (kind, key) in key_kinds.iter_mut().zip(&columns.keys) {
                if kind.is_none() {
                    *kind = map.get(key).filter(|v| !v.is_null()).map(Kind::for_key);
                }
            }
        }
    }
    let keys = columns
        .keys
        .iter()
        .zip(key_kinds)
        .map(|(k, kind)| Field::new(k, kind.unwrap_or(Kind::Text).arrow(), true))
        .collect();
    Ok((rows, keys))
}

pub(super) fn inspect_jsonl(path: &Path, columns: &Columns) -> Result<(u64, Vec<Field>), String> {
    inspect(path, Format::Jsonl, columns)
}

pub(super) fn inspect_csv(path: &Path, columns: &Columns) -> Result<(u64, Vec<Field>), String> {
    inspect(path, Format::Csv, columns)
}

pub(super) fn read(
    file: &InputFile,
    range: Range<u64>,
    columns: &Columns,
    block_rows: usize,
    sink: &mut dyn FnMut(Block) -> bool,
) -> Result<(), String> {
    let wanted = wanted(columns);
    let mut reader = RowReader::open(&file.path, file.format, &wanted)?;
    for _ in 0..range.start {
        if reader.next()?.is_none() {
            return Err("the file has fewer rows than when the job was planned".into());
        }
    }
    let shapes: Vec<(&TensorSpec, RowShape)> = columns
        .inputs
        .iter()
        .map(|(_, spec)| (spec, RowShape::of(&spec.dims)))
        .collect();
    let mut inputs: Vec<Gather> = shapes
        .iter()
        .map(|(spec, shape)| Gather::new(Kind::for_tensor(spec.dtype), *shape != RowShape::Scalar))
        .collect();
    let key_kinds: Vec<Kind> = file
        .key_fields
        .iter()
        .map(|f| match f.data_type() {
            ArrowType::Int64 => Kind::Int,
            ArrowType::Float64 => Kind::Float,
            ArrowType::Boolean => Kind::Bool,
            _ => Kind::Text,
        })
        .collect();
    let mut keys: Vec<Gather> = key_kinds.iter().map(|k| Gather::new(*k, false)).collect();
    let mut errors: Vec<Option<String>> = Vec::new();
    let mut first_row = range.start;
    let mut at = range.start;
    while at < range.end {
        let Some(row) = reader.next()? else {
            return Err("the file has fewer rows than when the job was planned".into());
        };
        at += 1;
        let mut error = row_error(&row);
        for (i, ((column, _), (gather, (_, shape)))) in columns
            .inputs
            .iter()
            .zip(inputs.iter_mut().zip(&shapes))
            .enumerate()
        {
            let cell = reader.cell(&row, column, i);
            gather
                .rows
                .push(match cell_elements(&cell, gather.kind, *shape) {
                    Ok(elements) => elements,
                    Err(e) => {
                        error.get_or_insert(format!("column '{column}': {e}"));
                        None
                    }
                });
        }
        let offset = columns.inputs.len();
        for (i, (key, gather)) in columns.keys.iter().zip(keys.iter_mut()).enumerate() {
            let cell = reader.cell(&row, key, offset + i);
            gather
                .rows
                .push(match cell_elements(&cell, gather.kind, RowShape::Scalar) {
                    Ok(elements) => elements,
                    Err(e) => {
                        error.get_or_insert(format!("key column '{key}': {e}"));
                        None
                    }
                });
        }
        errors.push(error);
        if errors.len() == block_rows || at == range.end {
            let n = errors.len();
            let mut block_errors = std::mem::take(&mut errors);
            let mut arrays = Vec::with_capacity(inputs.len());
            for ((column, spec), gather) in columns.inputs.iter().zip(inputs.iter_mut()) {
                let natural = gather.finish();
                arrays.push(convert::coerce(&natural, column, spec, &mut block_errors)?);
            }
            let key_arrays = if columns.keys.is_empty() {
                vec![row_numbers(first_row, n)]
            } else {
                keys.iter_mut().map(Gather::finish).collect()
            };
            let block = Block {
                first_row,
                keys: key_arrays,
                inputs: arrays,
                errors: block_errors,
            };
            first_row += n as u64;
            if !sink(block) {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn cells_become_elements_of_their_tensor_kind() {
        let v = serde_json::json!([[1, 2], [3, 4]]);
        let got = cell_elements(&Cell::Json(&v), Kind::Float, RowShape::Fixed(4))
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 4);
        assert!(cell_elements(
            &Cell::Json(&serde_json::json!("x")),
            Kind::Int,
            RowShape::Scalar
        )
        .is_err());
        assert!(cell_elements(
            &Cell::Json(&serde_json::json!(1.5)),
            Kind::Int,
            RowShape::Scalar
        )
        .is_err());
        let raw = cell_elements(&Cell::Text(b"\xffabc"), Kind::Bytes, RowShape::Scalar)
            .unwrap()
            .unwrap();
        assert!(matches!(&raw[0], Scalar::Bytes(b) if b == b"\xffabc"));
        let vector = cell_elements(&Cell::Text(b"[0.5, 1]"), Kind::Float, RowShape::Variable)
            .unwrap()
            .unwrap();
        assert_eq!(vector.len(), 2);
        assert!(cell_elements(&Cell::Text(b""), Kind::Int, RowShape::Scalar)
            .unwrap()
            .is_none());
    }

    #[test]
    fn gathered_scalars_keep_their_rows_with_nulls_in_place() {
        let mut g = Gather::new(Kind::Int, false);
        g.rows = vec![Some(vec![Scalar::Int(1)]), None, Some(vec![Scalar::Int(3)])];
        let a = g.finish();
        let ints = a.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ints.len(), 3);
        assert!(ints.is_null(1));
        assert_eq!(ints.value(2), 3);
    }
}
