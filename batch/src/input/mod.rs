//! Input tables: which files a job reads, how many rows each holds, and reading a range of
//! rows as [`Block`]s whose input columns are already coerced to their tensors' types.
//!
//! Parquet is read through Arrow in record batches (only the columns a job uses, only the
//! row groups a range touches). JSONL and CSV are read row by row, so one malformed line
//! is one row error rather than a failed file.

mod parquet;
mod rows;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, UInt64Array};
use arrow_schema::{DataType as ArrowType, Field, SchemaRef};
use nereid_engine::TensorSpec;

/// The column carrying each row's index in its input file when no `--key-column` is given.
pub const ROW_COLUMN: &str = "_row";

/// A table format, from the file's extension.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
    /// One JSON object per line (`.jsonl`, `.ndjson`, `.json`).
    Jsonl,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
}

impl Format {
    fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Self::Parquet),
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// Which columns a job reads and what each becomes.
#[derive(Clone, Debug)]
pub(crate) struct Columns {
    /// (column, the input tensor it feeds).
    pub inputs: Vec<(String, TensorSpec)>,
    /// Columns copied to the output as they are; empty means [`ROW_COLUMN`].
    pub keys: Vec<String>,
}

/// One input file, inspected.
#[derive(Clone, Debug)]
pub(crate) struct InputFile {
    pub path: PathBuf,
    pub format: Format,
    pub rows: u64,
    /// The output fields of the key columns, in `Columns::keys` order.
    pub key_fields: Vec<Field>,
}

/// Rows read from one file, ready to score.
pub(crate) struct Block {
    /// Index in the file of the block's first row.
    pub first_row: u64,
    /// Key columns (or [`ROW_COLUMN`]).
    pub keys: Vec<ArrayRef>,
    /// Input columns, coerced: one per `Columns::inputs`.
    pub inputs: Vec<ArrayRef>,
    /// Why a row cannot be scored, per row; `None` for rows that can.
    pub errors: Vec<Option<String>>,
}

/// The files named by `--input`: files as given, folders searched recursively for
/// tables (names starting with `.` or `_` skipped, as Spark writes them), globs expanded.
/// Sorted and deduplicated, so every shard of a job sees the same list. Nothing under
/// `output` is an input, so a job's output folder may sit inside its input folder.
pub(crate) fn list(inputs: &[String], output: &Path) -> Result<Vec<(PathBuf, Format)>, String> {
    let output = std::path::absolute(output).map_err(|e| format!("--output: {e}"))?;
    let mut found = Vec::new();
    for input in inputs {
        if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).map_err(|e| format!("--input '{input}': {e}"))?;
            let before = found.len();
            for path in paths {
                let path = path.map_err(|e| format!("--input '{input}': {e}"))?;
                let inside_output =
                    std::path::absolute(&path).is_ok_and(|p| p.starts_with(&output));
                if path.is_file() && !inside_output {
                    if let Some(format) = Format::of(&path) {
                        found.push((path, format));
                    }
                }
            }
            if found.len() == before {
                return Err(format!(
                    "--input '{input}' matches no .parquet, .jsonl or .csv file"
                ));
            }
        } else {
            let path = PathBuf::from(input);
            if path.is_dir() {
                let before = found.len();
                walk(&path, &output, &mut found).map_err(|e| format!("--input '{input}': {e}"))?;
                if found.len() == before {
                    return Err(format!(
                        "--input '{input}' holds no .parquet, .jsonl or .csv file"
                    ));
                }
            } else if path.is_file() {
                let format = Format::of(&path).ok_or_else(|| {
                    format!("--input '{input}': unknown format (use .parquet, .jsonl or .csv)")
                })?;
                found.push((path, format));
            } else {
                return Err(format!("--input '{input}': no such file or folder"));
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn walk(dir: &Path, output: &Path, found: &mut Vec<(PathBuf, Format)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if std::path::absolute(&path)? == output {
            continue;
        }
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, output, found)?;
        } else if let Some(format) = Format::of(&path) {
            found.push((path, format));
        }
    }
    Ok(())
}

/// Counts a file's rows and checks that it has every column the job reads.
pub(crate) fn inspect(path: &Path, format: Format, columns: &Columns) -> Result<InputFile, String> {
    let shown = path.display();
    let (rows, key_fields) = match format {
        Format::Parquet => parquet::inspect(path, columns),
        Format::Jsonl => rows::inspect_jsonl(path, columns),
        Format::Csv => rows::inspect_csv(path, columns),
    }
    .map_err(|e| format!("{shown}: {e}"))?;
    Ok(InputFile {
        path: path.to_path_buf(),
        format,
        rows,
        key_fields: if columns.keys.is_empty() {
            vec![Field::new(ROW_COLUMN, ArrowType::UInt64, false)]
        } else {
            key_fields
        },
    })
}

/// Reads rows `range` of `file` in blocks of up to `block_rows`, handing each to `sink`
/// until it returns false.
pub(crate) fn read(
    file: &InputFile,
    range: std::ops::Range<u64>,
    columns: &Columns,
    block_rows: usize,
    sink: &mut dyn FnMut(Block) -> bool,
) -> Result<(), String> {
    let result = match file.format {
        Format::Parquet => parquet::read(file, range, columns, block_rows, sink),
        Format::Jsonl | Format::Csv => rows::read(file, range, columns, block_rows, sink),
    };
    result.map_err(|e| format!("{}: {e}", file.path.display()))
}

/// The `_row` column of a block.
fn row_numbers(first_row: u64, rows: usize) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(
        first_row..first_row + rows as u64,
    ))
}

/// The schema of an output part: key fields then output fields.
pub(crate) fn output_schema(keys: &[Field], outputs: &[Field]) -> SchemaRef {
    Arc::new(arrow_schema::Schema::new(
        keys.iter().chain(outputs).cloned().collect::<Vec<_>>(),
    ))
}
