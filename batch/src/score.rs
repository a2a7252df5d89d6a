//! Scoring a block: its good rows cut into requests, sent to the engine with a bounded
//! number in flight, retried while the engine is unavailable, and a refused batch split
//! into single rows so that one bad row fails alone.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use nereid_engine::generation::GenerationIo;
use nereid_engine::{
    Engine, EngineError, InferRequest, Parameters, RequestedOutput, Tensor, TensorSpec,
};
use tokio::sync::Semaphore;

use crate::convert::{self, OutputColumn};
use crate::input::Block;

/// How the rows of a job become requests.
pub(crate) struct Scorer {
    pub engine: Engine,
    pub model: String,
    pub version: i64,
    /// Input tensors, one per coerced column of a block, in the same order.
    pub inputs: Vec<TensorSpec>,
    /// (output tensor, column name).
    pub outputs: Vec<(TensorSpec, String)>,
    /// Whether requests carry a batch dimension.
    pub batches: bool,
    /// Rows one request holds.
    pub request_rows: usize,
    /// The generation contract, for a decoupled text generator.
    pub generation: Option<GenerationIo>,
    pub parameters: Parameters,
    /// Further tries of a request the engine could not take (UNAVAILABLE, RESOURCE_EXHAUSTED).
    pub retries: u32,
    /// Requests in flight across every block.
    pub permits: Arc<Semaphore>,
}

/// A block, scored.
pub(crate) struct Scored {
    /// Key columns and outputs of the rows that succeeded, in input order.
    pub batch: RecordBatch,
    /// (row index within the block, reason) of the rows that failed.
    pub failed: Vec<(usize, String)>,
    /// The block's key columns, all rows (for the errors file).
    pub keys: Vec<ArrayRef>,
    pub first_row: u64,
    /// Completion tokens generated.
    pub tokens: u64,
}

/// Why a job stops: the engine cannot serve it, whatever the row.
#[derive(Debug)]
pub(crate) struct Fatal(pub String);

/// What one request brought back.
type Answer = Result<Vec<Tensor>, EngineError>;

impl Scorer {
    /// Scores a block; rows already failed by the reader stay failed.
    pub(crate) async fn score(&self, block: Block, schema: SchemaRef) -> Result<Scored, Fatal> {
        let mut failed: Vec<Option<String>> = block.errors;
        let runs = self.runs(&block.inputs, &failed);
        let answers = futures::future::join_all(
            runs.iter()
                .map(|rows| self.answer(&block.inputs, rows.clone())),
        )
        .await;
        let mut columns: Vec<OutputColumn> = self
            .outputs
            .iter()
            .map(|(spec, _)| OutputColumn::new(spec.clone()))
            .collect();
        let mut tokens = 0;
        for answer in answers {
            for (rows, answer) in answer? {
                let outcome = answer
                    .map_err(|e| e.to_string())
                    .and_then(|tensors| self.place(&tensors, rows.len(), &mut columns));
                match outcome {
                    Ok(generated) => tokens += generated,
                    Err(reason) => {
                        for row in rows {
                            failed[row] = Some(reason.clone());
                        }
                    }
                }
            }
        }
        let keep = BooleanArray::from_iter(failed.iter().map(|f| Some(f.is_none())));
        let mut arrays = Vec::with_capacity(schema.fields().len());
        for key in &block.keys {
            arrays.push(
                arrow_select::filter::filter(key.as_ref(), &keep)
                    .map_err(|e| Fatal(format!("cannot select key rows: {e}")))?,
            );
        }
        arrays.extend(columns.iter_mut().map(OutputColumn::finish));
        let batch = RecordBatch::try_new(schema, arrays)
            .map_err(|e| Fatal(format!("the scored rows do not fit the output schema: {e}")))?;
        Ok(Scored {
            batch,
            failed: failed
                .into_iter()
                .enumerate()
                .filter_map(|(i, f)| f.map(|f| (i, f)))
                .collect(),
            keys: block.keys,
            first_row: block.first_row,
            tokens,
        })
    }

    /// Rows still good, cut into requests: consecutive, at most `request_rows`, and of one
    /// shape for inputs of variable length.
    fn runs(&self, inputs: &[ArrayRef], failed: &[Option<String>]) -> Vec<Range<usize>> {
        let variable: Vec<&ArrayRef> = inputs
            .iter()
            .zip(&self.inputs)
            .filter(|(_, spec)| spec.dims.iter().any(|d| *d < 0))
            .map(|(a, _)| a)
            .collect();
        let shape = |row: usize| -> Vec<usize> {
            variable
                .iter()
                .map(|a| convert::row_len(a.as_ref(), row))
                .collect()
        };
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (row, _) in failed.iter().enumerate().filter(|(_, f)| f.is_none()) {
            match runs.last_mut() {
                Some(run)
                    if run.end == row
                        && run.len() < self.request_rows
                        && (variable.is_empty() || shape(run.start) == shape(row)) =>
                {
                    run.end += 1
                }
                _ => runs.push(row..row + 1),
            }
        }
        runs
    }

    /// Answers for `rows`: one, or one per row when the engine refused them together.
    async fn answer(
        &self,
        inputs: &[ArrayRef],
        rows: Range<usize>,
    ) -> Result<Vec<(Range<usize>, Answer)>, Fatal> {
        let answer = self.request(inputs, rows.clone()).await?;
        if answer.is_ok() || rows.len() == 1 {
            return Ok(vec![(rows, answer)]);
        }
        let singles =
            futures::future::join_all(rows.clone().map(|r| self.request(inputs, r..r + 1))).await;
        rows.map(|r| r..r + 1)
            .zip(singles)
            .map(|(r, a)| a.map(|a| (r, a)))
            .collect()
    }

    /// One request, retried while the engine cannot take it; errors that are not about
    /// the rows stop the job.
    async fn request(&self, inputs: &[ArrayRef], rows: Range<usize>) -> Result<Answer, Fatal> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let tensors: Vec<Tensor> = inputs
            .iter()
            .zip(&self.inputs)
            .map(|(array, spec)| convert::tensor(array.as_ref(), spec, rows.clone(), self.batches))
            .collect();
        let mut backoff = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            let mut request = InferRequest::new(self.model.clone(), tensors.clone());
            request.model_version = Some(self.version);
            request.parameters = self.parameters.clone();
            request.outputs = self
                .outputs
                .iter()
                .map(|(spec, _)| RequestedOutput {
                    name: spec.name.clone(),
                    parameters: Parameters::new(),
                })
                .collect();
            let result = if self.generation.is_some() {
                self.generate(request).await
            } else {
                self.engine.infer(request).await.map(|r| r.outputs)
            };
            match result {
                Err(EngineError::Unavailable(_) | EngineError::ResourceExhausted(_))
                    if tries < self.retries =>
                {
                    tries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(
                    e @ (EngineError::Unavailable(_)
                    | EngineError::ResourceExhausted(_)
                    | EngineError::NotFound(_)
                    | EngineError::Unimplemented(_)
                    | EngineError::Cancelled(_)),
                ) => return Err(Fatal(format!("model '{}': {e}", self.model))),
                other => return Ok(other),
            }
        }
    }

    /// A generation's responses folded into one: the text pieces joined, the counts and
    /// the finish reason as last reported.
    async fn generate(&self, request: InferRequest) -> Result<Vec<Tensor>, EngineError> {
        let io = self.generation.as_ref().expect("a generator");
        let mut stream = self.engine.infer_stream(request)?;
        let mut text = Vec::new();
        let mut last: Vec<Option<Tensor>> = vec![None; self.outputs.len()];
        let mut pieces = 0u64;
        while let Some(response) = stream.recv().await {
            let response = response?;
            for (slot, (spec, _)) in last.iter_mut().zip(&self.outputs) {
                if let Some(t) = response.output(&spec.name) {
                    if spec.name == io.text_output.name {
                        let before = text.len();
                        for piece in t.string_elements()? {
                            text.extend_from_slice(&piece);
                        }
                        pieces += u64::from(text.len() > before);
                    } else {
                        *slot = Some(t.clone());
                    }
                }
            }
            if response.is_final {
                break;
            }
        }
        let shape = if self.batches { vec![1, 1] } else { vec![1] };
        let mut tensors = Vec::with_capacity(self.outputs.len());
        for ((spec, _), slot) in self.outputs.iter().zip(last) {
            if spec.name == io.text_output.name {
                tensors.push(Tensor::from_strings(
                    spec.name.clone(),
                    shape.clone(),
                    [&text],
                ));
            } else {
                tensors.push(slot.ok_or_else(|| {
                    EngineError::internal(format!("the model sent no '{}'", spec.name))
                })?);
            }
        }
        // The pieces count stands in when the model reports no completion tokens.
        let counted = io
            .completion_tokens
            .as_ref()
            .and_then(|c| tensors.iter().find(|t| t.name == c.name))
            .and_then(nereid_engine::generation::read_count);
        tensors.push(Tensor::from_vec(
            TOKENS_TENSOR,
            nereid_engine::DataType::Uint64,
            vec![1],
            vec![counted.unwrap_or(pieces)],
        ));
        Ok(tensors)
    }

    /// Appends one answer's outputs to the columns, all or none; returns the tokens it
    /// generated.
    fn place(
        &self,
        tensors: &[Tensor],
        rows: usize,
        columns: &mut [OutputColumn],
    ) -> Result<u64, String> {
        let mut found = Vec::with_capacity(columns.len());
        for ((spec, _), column) in self.outputs.iter().zip(columns.iter()) {
            let tensor = tensors
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| format!("the model returned no output '{}'", spec.name))?;
            column.check(tensor, rows)?;
            found.push(tensor);
        }
        for (column, tensor) in columns.iter_mut().zip(found) {
            column.push(tensor, rows)?;
        }
        Ok(tensors
            .iter()
            .find(|t| t.name == TOKENS_TENSOR)
            .and_then(|t| t.to_vec::<u64>().ok())
            .map_or(0, |v| v[0]))
    }
}

/// The tensor a generation's token count travels in between [`Scorer::generate`] and
/// [`Scorer::place`]; never a model's.
const TOKENS_TENSOR: &str = "\0tokens";

/// Keys and failures of a block, one line each for the errors file.
pub(crate) fn failed_keys(
    scored: &Scored,
    key_schema: &SchemaRef,
) -> Vec<crate::output::FailedRow> {
    scored
        .failed
        .iter()
        .map(|(i, reason)| crate::output::FailedRow {
            row: scored.first_row + *i as u64,
            key: crate::output::key_json(key_schema, &scored.keys, *i),
            reason: reason.clone(),
        })
        .collect()
}
