//! A job: every check before work starts, then the pipeline.
//!
//! The pipeline overlaps its three stages. A reader thread decodes parts into blocks; the
//! async stage scores blocks with a bounded number of requests in flight and hands them
//! on in input order; a writer thread appends them to the part's file and commits it.
//! Every channel between them is bounded, so memory holds a few blocks whatever the size
//! of the input.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use arrow_schema::{Field, SchemaRef};
use futures::StreamExt;
use nereid_engine::{Engine, ParamValue, Parameters, TensorSpec};
use tokio::sync::{mpsc, Semaphore};

use crate::input::{self, Block, Columns, InputFile};
use crate::output::{FailedRow, PartWriter};
use crate::plan::{self, Manifest, Part};
use crate::progress::{Progress, Summary};
use crate::score::{self, Fatal, Scorer};
use crate::{convert, BatchArgs, Format, OnError, OutputFormat};

/// Checks the job, then scores this shard's parts that are not yet done.
///
/// Every bad invocation (an unknown model, a column that is missing or cannot feed its
/// tensor, an output folder that is not writable or holds another job) fails here, before
/// any row is scored.
pub async fn run(engine: Engine, args: &BatchArgs) -> anyhow::Result<Summary> {
    let job = Job::plan(engine, args)?;
    job.execute().await
}

struct Job {
    scorer: Arc<Scorer>,
    columns: Columns,
    files: Vec<InputFile>,
    /// This shard's parts not yet committed.
    pending: Vec<Part>,
    rows_total: u64,
    rows_resumed: u64,
    output_fields: Vec<Field>,
    output: std::path::PathBuf,
    format: Format,
    block_rows: usize,
    blocks_in_flight: usize,
    on_error: OnError,
    progress_interval: Duration,
}

/// `A=B` as (A, B); `flag` names the flag in the error.
fn pair<'a>(text: &'a str, flag: &str, shape: &str) -> anyhow::Result<(&'a str, &'a str)> {
    text.split_once('=')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| anyhow!("{flag} '{text}' is not {shape}"))
}

/// A parameter value as typed as it looks: a bool, an integer, a number, else text.
fn parameter(value: &str) -> ParamValue {
    if let Ok(b) = value.parse::<bool>() {
        ParamValue::Bool(b)
    } else if let Ok(i) = value.parse::<i64>() {
        ParamValue::Int(i)
    } else if let Ok(f) = value.parse::<f64>() {
        ParamValue::Double(f)
    } else {
        ParamValue::String(value.to_string())
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Job {
    fn plan(engine: Engine, args: &BatchArgs) -> anyhow::Result<Self> {
        let facts = engine
            .model(&args.model, args.model_version)
            .map_err(|e| anyhow!("--model: {e}"))?;
        let spec = facts.spec.clone();
        let generation = if spec.decoupled {
            Some(facts.generation().map_err(|e| {
                anyhow!("--model '{}' is decoupled and not a text generator ({e}); batch scores request-response models and text generators", args.model)
            })?)
        } else {
            None
        };

        // Columns to tensors.
        let mut fed: Vec<(String, TensorSpec)> = Vec::new();
        for text in &args.input_columns {
            let (column, tensor) = pair(text, "--input-column", "COL=TENSOR")?;
            let input = spec
                .inputs
                .iter()
                .find(|i| i.name == tensor)
                .ok_or_else(|| {
                    anyhow!(
                        "--input-column '{text}': model '{}' has no input '{tensor}' (inputs: {})",
                        args.model,
                        names(&spec.inputs)
                    )
                })?;
            if fed.iter().any(|(_, s)| s.name == tensor) {
                bail!("--input-column '{text}': input '{tensor}' is fed twice");
            }
            fed.push((column.to_string(), input.clone()));
        }
        for input in spec.inputs.iter().filter(|i| !i.optional) {
            if !fed.iter().any(|(_, s)| s.name == input.name) {
                fed.push((input.name.clone(), input.clone()));
            }
        }
        if let Some((_, s)) = fed
            .iter()
            .find(|(_, s)| s.dims.iter().filter(|d| **d < 0).count() > 1)
        {
            bail!(
                "input '{}' has dims {:?}: batch reads one variable dimension per tensor at most",
                s.name,
                s.dims
            );
        }
        let mut outputs: Vec<(TensorSpec, String)> = Vec::new();
        for text in &args.output_columns {
            let (tensor, column) = pair(text, "--output-column", "TENSOR=COL")?;
            let output = spec.outputs.iter().find(|o| o.name == tensor).ok_or_else(|| {
                anyhow!("--output-column '{text}': model '{}' has no output '{tensor}' (outputs: {})", args.model, names(&spec.outputs))
            })?;
            outputs.push((output.clone(), column.to_string()));
        }
        if outputs.is_empty() {
            outputs = spec
                .outputs
                .iter()
                .map(|o| (o.clone(), o.name.clone()))
                .collect();
        }
        let key_names: Vec<&str> = if args.key_columns.is_empty() {
            vec![input::ROW_COLUMN]
        } else {
            args.key_columns.iter().map(String::as_str).collect()
        };
        let mut written: Vec<&str> = key_names.clone();
        for (_, column) in &outputs {
            if written.contains(&column.as_str()) {
                bail!("output column '{column}' is written twice (keys and outputs share one table); rename it with --output-column");
            }
            written.push(column);
        }
        let output_fields: Vec<Field> = outputs
            .iter()
            .map(|(spec, column)| Field::new(column, convert::output_type(spec), false))
            .collect();

        // Requests.
        let batches = spec.max_batch_size > 0;
        let one_row_each = spec.decoupled || !batches;
        let request_rows = match (one_row_each, args.batch_rows) {
            (true, Some(n)) if n != 1 => bail!(
                "--batch-rows {n}: model '{}' takes one row per request ({})",
                args.model,
                if spec.decoupled {
                    "a generator"
                } else {
                    "max_batch_size 0"
                }
            ),
            (true, _) => 1,
            (false, Some(n)) if n == 0 || n > spec.max_batch_size => bail!(
                "--batch-rows {n}: model '{}' takes 1 to {} rows per request (max_batch_size)",
                args.model,
                spec.max_batch_size
            ),
            (false, Some(n)) => n,
            (false, None) => spec.max_batch_size,
        };
        let slots = spec.instances.len().max(1)
            * if spec.decoupled {
                spec.max_sequences
            } else {
                1
            };
        let concurrency = match args.concurrency {
            Some(0) => bail!("--concurrency must be at least 1"),
            Some(n) => n,
            None => (2 * slots).max(4),
        };
        let (block_rows, requests_per_block) = if one_row_each {
            (concurrency.max(16), concurrency.max(16))
        } else {
            (request_rows * 4, 4)
        };
        let blocks_in_flight = concurrency.div_ceil(requests_per_block) + 1;
        let mut parameters = Parameters::new();
        for text in &args.parameters {
            let (key, value) = pair(text, "--parameter", "KEY=VALUE")?;
            parameters.insert(key.to_string(), parameter(value));
        }

        // Shards.
        if args.shard_count == 0 || args.shard_index >= args.shard_count {
            bail!(
                "--shard-index {} is not below --shard-count {}",
                args.shard_index,
                args.shard_count
            );
        }
        if args.part_rows == 0 {
            bail!("--part-rows must be at least 1");
        }

        // Inputs.
        let columns = Columns {
            inputs: fed.clone(),
            keys: args.key_columns.clone(),
        };
        let listed = input::list(&args.inputs, &args.output).map_err(anyhow::Error::msg)?;
        let mut files = Vec::with_capacity(listed.len());
        for (path, format) in listed {
            files.push(input::inspect(&path, format, &columns).map_err(anyhow::Error::msg)?);
        }
        let all = plan::parts(&files, args.part_rows);
        let mine = plan::shard(all, args.shard_index, args.shard_count);
        let format = match args.output_format {
            OutputFormat::Parquet => Format::Parquet,
            OutputFormat::Jsonl => Format::Jsonl,
        };
        let manifest = Manifest {
            model: args.model.clone(),
            model_version: facts.version,
            inputs: files.iter().map(|f| (f.path.clone(), f.rows)).collect(),
            input_columns: fed
                .iter()
                .map(|(c, s)| (c.clone(), s.name.clone()))
                .collect(),
            output_columns: outputs
                .iter()
                .map(|(s, c)| (s.name.clone(), c.clone()))
                .collect(),
            key_columns: args.key_columns.clone(),
            parameters: args
                .parameters
                .iter()
                .map(|p| pair(p, "", "").map(|(k, v)| (k.to_string(), v.to_string())))
                .collect::<anyhow::Result<_>>()?,
            part_rows: args.part_rows,
            shard_index: args.shard_index,
            shard_count: args.shard_count,
            output_format: format,
        };
        manifest
            .claim(&args.output, args.resume, &mine)
            .map_err(anyhow::Error::msg)?;
        let done = |p: &Part| {
            args.output
                .join(format!("{}.{}", p.name, format.extension()))
                .exists()
        };
        let rows_total = mine.iter().map(|p| p.rows.end - p.rows.start).sum();
        let rows_resumed = mine
            .iter()
            .filter(|p| done(p))
            .map(|p| p.rows.end - p.rows.start)
            .sum();
        let pending: Vec<Part> = mine.into_iter().filter(|p| !done(p)).collect();

        let scorer = Scorer {
            engine,
            model: args.model.clone(),
            version: facts.version,
            inputs: fed.into_iter().map(|(_, s)| s).collect(),
            outputs,
            batches,
            request_rows,
            generation,
            parameters,
            retries: args.retries,
            permits: Arc::new(Semaphore::new(concurrency)),
        };
        tracing::info!(
            model = %args.model,
            version = facts.version,
            files = files.len(),
            parts = pending.len(),
            rows = rows_total - rows_resumed,
            resumed = rows_resumed,
            request_rows,
            concurrency,
            "batch job planned"
        );
        Ok(Self {
            scorer: Arc::new(scorer),
            columns,
            files,
            pending,
            rows_total,
            rows_resumed,
            output_fields,
            output: args.output.clone(),
            format,
            block_rows,
            blocks_in_flight,
            on_error: args.on_error,
            progress_interval: Duration::from_secs(args.progress_interval_secs.max(1)),
        })
    }

    async fn execute(self) -> anyhow::Result<Summary> {
        let progress = Progress::new(self.rows_total, self.rows_resumed, self.progress_interval);
        let schemas: Vec<SchemaRef> = self
            .files
            .iter()
            .map(|f| input::output_schema(&f.key_fields, &self.output_fields))
            .collect();

        // Reader: parts to blocks.
        let (blocks_tx, blocks_rx) = mpsc::channel::<Read>(self.blocks_in_flight * 2);
        let reader = {
            let (files, parts, columns) = (
                self.files.clone(),
                self.pending.clone(),
                self.columns.clone(),
            );
            let block_rows = self.block_rows;
            std::thread::Builder::new()
                .name("batch-reader".into())
                .spawn(move || read_parts(&files, &parts, &columns, block_rows, &blocks_tx))?
        };

        // Writer: scored blocks to committed parts.
        let (scored_tx, scored_rx) = mpsc::channel::<Scored>(self.blocks_in_flight * 2);
        let writer = {
            let (dir, format) = (self.output.clone(), self.format);
            let (files, parts, schemas) =
                (self.files.clone(), self.pending.clone(), schemas.clone());
            std::thread::Builder::new()
                .name("batch-writer".into())
                .spawn(move || {
                    write_parts(&dir, format, &files, &parts, &schemas, scored_rx, progress)
                })?
        };

        // Scoring, in input order.
        let scorer = self.scorer.clone();
        let parts = self.pending.clone();
        let files = self.files.clone();
        let mut scored = tokio_stream::wrappers::ReceiverStream::new(blocks_rx)
            .map(|read| {
                let (scorer, schemas, parts) = (scorer.clone(), schemas.clone(), parts.clone());
                async move {
                    match read {
                        Read::Block(part, block) => {
                            let schema = schemas[parts[part].file].clone();
                            scorer
                                .score(block, schema)
                                .await
                                .map(|s| Scored::Block(part, s))
                        }
                        Read::End(part) => Ok(Scored::End(part)),
                        Read::Failed(e) => Err(Fatal(e)),
                    }
                }
            })
            .buffered(self.blocks_in_flight);
        let mut stop: Option<anyhow::Error> = None;
        while let Some(next) = scored.next().await {
            match next {
                Err(Fatal(e)) => {
                    stop = Some(anyhow!(e));
                    break;
                }
                Ok(Scored::Block(part, s))
                    if self.on_error == OnError::Fail && !s.failed.is_empty() =>
                {
                    let (row, reason) = &s.failed[0];
                    let file = &files[parts[part].file];
                    let key = crate::output::key_json(&schemas[parts[part].file], &s.keys, *row);
                    stop = Some(anyhow!(
                        "{} row {} (key {}): {reason} (--on-error fail)",
                        file.path.display(),
                        s.first_row + *row as u64,
                        serde_json::Value::Object(key)
                    ));
                    break;
                }
                Ok(item) => {
                    if scored_tx.send(item).await.is_err() {
                        break; // The writer failed; its error is below.
                    }
                }
            }
        }
        drop(scored);
        drop(scored_tx);
        let summary = writer
            .join()
            .map_err(|_| anyhow!("the writer thread panicked"))?;
        // The reader stops at its next block once the channel is gone.
        let _ = reader.join();
        let summary = summary?;
        match stop {
            Some(e) => Err(e.context(format!(
                "the job stopped after {} parts; --resume continues it",
                summary.parts_written
            ))),
            None => Ok(summary),
        }
    }
}

/// What the reader hands on: a block of part `usize`, the end of a part, or why reading
/// stopped.
enum Read {
    Block(usize, Block),
    End(usize),
    Failed(String),
}

/// What the scoring stage hands on, in input order.
enum Scored {
    Block(usize, score::Scored),
    End(usize),
}

fn read_parts(
    files: &[InputFile],
    parts: &[Part],
    columns: &Columns,
    block_rows: usize,
    tx: &mpsc::Sender<Read>,
) {
    for (i, part) in parts.iter().enumerate() {
        let mut open = true;
        let result = input::read(
            &files[part.file],
            part.rows.clone(),
            columns,
            block_rows,
            &mut |block| {
                open = tx.blocking_send(Read::Block(i, block)).is_ok();
                open
            },
        );
        if !open {
            return;
        }
        let next = match result {
            Ok(()) => Read::End(i),
            Err(e) => Read::Failed(e),
        };
        let failed = matches!(next, Read::Failed(_));
        if tx.blocking_send(next).is_err() || failed {
            return;
        }
    }
}

fn write_parts(
    dir: &Path,
    format: Format,
    files: &[InputFile],
    parts: &[Part],
    schemas: &[SchemaRef],
    mut rx: mpsc::Receiver<Scored>,
    mut progress: Progress,
) -> anyhow::Result<Summary> {
    let mut current: Option<(usize, PartWriter)> = None;
    let key_schemas: Vec<SchemaRef> = files
        .iter()
        .map(|f| input::output_schema(&f.key_fields, &[]))
        .collect();
    while let Some(item) = rx.blocking_recv() {
        match item {
            Scored::Block(part, scored) => {
                let file = parts[part].file;
                if current.as_ref().is_none_or(|(p, _)| *p != part) {
                    let writer = PartWriter::create(
                        dir,
                        &parts[part].name,
                        format,
                        schemas[file].clone(),
                        &files[file].path,
                    )
                    .map_err(anyhow::Error::msg)?;
                    current = Some((part, writer));
                }
                let (_, writer) = current.as_mut().expect("opened above");
                writer.write(&scored.batch).map_err(anyhow::Error::msg)?;
                let failed: Vec<FailedRow> = score::failed_keys(&scored, &key_schemas[file]);
                let (written, failures) = (scored.batch.num_rows() as u64, failed.len() as u64);
                failed.into_iter().for_each(|row| writer.fail(row));
                progress.rows(written, failures, scored.tokens);
            }
            Scored::End(part) => {
                match current.take() {
                    Some((p, writer)) if p == part => {
                        writer.commit().map_err(anyhow::Error::msg)?;
                    }
                    _ => anyhow::bail!("part {} ended without rows", parts[part].name),
                }
                progress.part();
            }
        }
    }
    if let Some((_, writer)) = current {
        writer.abandon();
    }
    Ok(progress.finish())
}
