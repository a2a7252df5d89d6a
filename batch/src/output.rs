//! Output parts: rows written under a temporary name, then committed by a rename, so an
//! output file that exists is complete. Rows that failed go to the part's errors file,
//! committed before the part itself.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType as ArrowType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use crate::input::Format;

/// Rows a Parquet row group holds: the writer buffers one group in memory.
const ROW_GROUP_ROWS: usize = 8192;

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `dir/.name.tmp` for `dir/name`: hidden, so readers of the folder skip it.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

enum Rows {
    Parquet(ArrowWriter<File>),
    Jsonl(arrow_json::LineDelimitedWriter<BufWriter<File>>),
}

/// One row that could not be scored.
pub(crate) struct FailedRow {
    /// Index of the row in its input file.
    pub row: u64,
    /// The row's key columns, as JSON.
    pub key: serde_json::Map<String, Value>,
    pub reason: String,
}

/// An output part being written.
pub(crate) struct PartWriter {
    path: PathBuf,
    tmp: PathBuf,
    rows: Rows,
    errors: Vec<FailedRow>,
    input: String,
}

impl PartWriter {
    /// Starts part `name` in `dir`; `input` names the input file in the errors file.
    pub(crate) fn create(
        dir: &Path,
        name: &str,
        format: Format,
        schema: SchemaRef,
        input: &Path,
    ) -> Result<Self, String> {
        let path = dir.join(format!("{name}.{}", format.extension()));
        let tmp = temporary(&path);
        let file =
            File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        let rows = match format {
            Format::Jsonl => {
                Rows::Jsonl(arrow_json::LineDelimitedWriter::new(BufWriter::new(file)))
            }
            _ => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                Rows::Parquet(
                    ArrowWriter::try_new(file, schema, Some(properties))
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        Ok(Self {
            path,
            tmp,
            rows,
            errors: Vec::new(),
            input: input.display().to_string(),
        })
    }

    /// Appends scored rows.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let result = match &mut self.rows {
            Rows::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            Rows::Jsonl(w) => w.write(batch).map_err(|e| e.to_string()),
        };
        result.map_err(|e| format!("cannot write {}: {e}", self.tmp.display()))
    }

    /// Records a row that failed.
    pub(crate) fn fail(&mut self, row: FailedRow) {
        self.errors.push(row);
    }

    /// Completes the part: the errors file (if any row failed) and then the rows are
    /// renamed into place. Returns how many rows failed.
    pub(crate) fn commit(self) -> Result<usize, String> {
        let shown = self.tmp.display().to_string();
        let io = |e: &dyn std::fmt::Display| format!("cannot write {shown}: {e}");
        let file = match self.rows {
            Rows::Parquet(w) => w.into_inner().map_err(|e| io(&e))?,
            Rows::Jsonl(mut w) => {
                w.finish().map_err(|e| io(&e))?;
                w.into_inner().into_inner().map_err(|e| io(&e))?
            }
        };
        file.sync_all().map_err(|e| io(&e))?;
        let failed = self.errors.len();
        let errors_path = self.path.with_extension("errors.jsonl");
        if failed > 0 {
            let mut text = Vec::new();
            for e in &self.errors {
                let line = serde_json::json!({
                    "input": self.input,
                    "row": e.row,
                    "key": e.key,
                    "error": e.reason,
                });
                serde_json::to_writer(&mut text, &line).expect("JSON serialises");
                text.push(b'\n');
            }
            write_atomically(&errors_path, &text).map_err(|e| io(&e))?;
        } else if errors_path.exists() {
            // Left by an attempt that died between the two renames.
            std::fs::remove_file(&errors_path).map_err(|e| io(&e))?;
        }
        std::fs::rename(&self.tmp, &self.path).map_err(|e| io(&e))?;
        if let Some(dir) = self.path.parent() {
            // The renames reach the disk with the folder's entry.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(failed)
    }

    /// Drops an unfinished part and its temporary file.
    pub(crate) fn abandon(self) {
        drop(self.rows);
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// One row of key columns as JSON, for the errors file.
pub(crate) fn key_json(
    fields: &SchemaRef,
    keys: &[ArrayRef],
    row: usize,
) -> serde_json::Map<String, Value> {
    fields
        .fields()
        .iter()
        .zip(keys)
        .map(|(field, array)| (field.name().clone(), cell_json(array.as_ref(), row)))
        .collect()
}

fn cell_json(array: &dyn Array, row: usize) -> Value {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        ArrowType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        ArrowType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        ArrowType::Float64 => array.as_primitive::<Float64Type>().value(row).into(),
        ArrowType::Boolean => array.as_boolean().value(row).into(),
        ArrowType::Utf8 => array.as_string::<i32>().value(row).into(),
        _ => arrow_cast::display::array_value_to_string(array, row)
            .map(Value::String)
            .unwrap_or(Value::Null),
    }
}
