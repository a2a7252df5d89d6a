//! Parquet input: record batches of the projected columns, only from the row groups a
//! range of rows touches.

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use arrow_array::RecordBatch;
use arrow_schema::Field;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{row_numbers, Block, Columns, InputFile};
use crate::convert;

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format!("not a Parquet file: {e}"))
}

/// Rows (from the footer) and key fields; every column must exist and be able to feed
/// its tensor.
pub(super) fn inspect(path: &Path, columns: &Columns) -> Result<(u64, Vec<Field>), String> {
    let builder = open(path)?;
    let schema = builder.schema();
    let field = |name: &str| {
        schema.field_with_name(name).map_err(|_| {
            let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!("no column '{name}' (columns: {})", names.join(", "))
        })
    };
    for (column, spec) in &columns.inputs {
        convert::check_feeds(column, field(column)?.data_type(), spec)?;
    }
    let keys = columns
        .keys
        .iter()
        .map(|k| field(k).map(|f| f.clone().with_nullable(true)))
        .collect::<Result<_, _>>()?;
    Ok((builder.metadata().file_metadata().num_rows() as u64, keys))
}

pub(super) fn read(
    file: &InputFile,
    range: Range<u64>,
    columns: &Columns,
    block_rows: usize,
    sink: &mut dyn FnMut(Block) -> bool,
) -> Result<(), String> {
    let builder = open(&file.path)?;
    let schema = builder.schema().clone();
    let wanted: Vec<&str> = columns
        .inputs
        .iter()
        .map(|(c, _)| c.as_str())
        .chain(columns.keys.iter().map(String::as_str))
        .collect();
    let roots: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    // Whole row groups outside the range are never decoded.
    let (mut groups, mut first_group_row, mut at) = (Vec::new(), None, 0u64);
    for (i, group) in builder.metadata().row_groups().iter().enumerate() {
        let n = group.num_rows() as u64;
        if at + n > range.start && at < range.end {
            groups.push(i);
            first_group_row.get_or_insert(at);
        }
        at += n;
    }
    let Some(first_group_row) = first_group_row else {
        return Ok(());
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_row_groups(groups)
        .with_offset((range.start - first_group_row) as usize)
        .with_limit((range.end - range.start) as usize)
        .with_batch_size(block_rows)
        .build()
        .map_err(|e| e.to_string())?;
    let mut next_row = range.start;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let block = block(&batch, columns, next_row)?;
        next_row += batch.num_rows() as u64;
        if !sink(block) {
            break;
        }
    }
    Ok(())
}

fn block(batch: &RecordBatch, columns: &Columns, first_row: u64) -> Result<Block, String> {
    let mut errors = vec![None; batch.num_rows()];
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("no column '{name}'"))
    };
    let mut inputs = Vec::with_capacity(columns.inputs.len());
    for (name, spec) in &columns.inputs {
        inputs.push(convert::coerce(&column(name)?, name, spec, &mut errors)?);
    }
    let keys = if columns.keys.is_empty() {
        vec![row_numbers(first_row, batch.num_rows())]
    } else {
        columns
            .keys
            .iter()
            .map(|k| column(k))
            .collect::<Result<_, _>>()?
    };
    Ok(Block {
        first_row,
        keys,
        inputs,
        errors,
    })
}
