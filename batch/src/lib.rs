//! `nereid batch`: scores tables of rows through one model and writes a column of results
//! next to their keys.
//!
//! A job reads Parquet, JSONL or CSV files, maps columns to the model's input tensors by
//! name, and writes every requested output (vectors as fixed-size lists, text, numbers)
//! with the rows' key columns to Parquet or JSONL. It runs on an [`Engine`]: the binary
//! gives it an in-process one over the same model repository as `nereid serve`, or one
//! whose upstream is a fleet of running engines (`--server`), so validation, batching
//! and retries are the engine's and the gateway's own.
//!
//! The input is split into parts of `--part-rows` rows ([`plan`]); each part is one output
//! file, written under a temporary name and renamed when complete, so a job killed at
//! any moment is continued by `--resume` with no row lost or written twice. Part `i`
//! belongs to shard `i % --shard-count`, so the pods of a Kubernetes Indexed Job cover
//! the input exactly once. Rows that fail go to the part's `.errors.jsonl` with their key
//! and the reason (`--on-error skip`), or stop the job (`--on-error fail`).

mod convert;
mod input;
mod job;
mod output;
mod plan;
mod progress;
mod score;

use std::path::PathBuf;

pub use input::{Format, ROW_COLUMN};
pub use job::run;
pub use progress::Summary;

/// Output table format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Apache Parquet, Snappy-compressed.
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

/// What to do with a row the model (or the reader) refuses.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Write it to the part's errors file with its key and the reason, and go on.
    Skip,
    /// Stop the job with the first one (parts already committed stay, for `--resume`).
    Fail,
}

/// `nereid batch` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchArgs {
    /// The model to score with.
    #[arg(long)]
    pub model: String,
    /// The model version (default: the newest ready).
    #[arg(long)]
    pub model_version: Option<i64>,
    /// Input files, folders (searched recursively) or globs of .parquet, .jsonl, .csv.
    #[arg(long = "input", required = true, value_name = "PATH")]
    pub inputs: Vec<String>,
    /// Output folder: one file per part, plus errors files and the job's manifest.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Output table format.
    #[arg(long, value_enum, default_value = "parquet")]
    pub output_format: OutputFormat,
    /// Feed input tensor TENSOR from column COL (default: the column named like the
    /// tensor, for every input that is not optional).
    #[arg(long = "input-column", value_name = "COL=TENSOR")]
    pub input_columns: Vec<String>,
    /// Write output tensor TENSOR as column COL (default: every output, by its name).
    #[arg(long = "output-column", value_name = "TENSOR=COL")]
    pub output_columns: Vec<String>,
    /// Columns copied to the output with each row (default: `_row`, the row's index in
    /// its input file).
    #[arg(long = "key-column", value_name = "COL")]
    pub key_columns: Vec<String>,
    /// A request parameter sent with every request (`max_tokens=64`, `temperature=0`).
    #[arg(long = "parameter", value_name = "KEY=VALUE")]
    pub parameters: Vec<String>,
    /// Score against running engines or a gateway over KServe v2 gRPC (`host:port`,
    /// repeatable) instead of in-process.
    #[arg(long = "server", value_name = "HOST:PORT")]
    pub servers: Vec<String>,
    /// Seconds to wait for a `--server` to serve the model before giving up (a Job may
    /// start before its servers).
    #[arg(long, default_value_t = 30)]
    pub server_wait_secs: u64,
    /// API key for `--server`.
    #[arg(long, env = "NEREID_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// This shard's index (a Kubernetes Indexed Job sets `JOB_COMPLETION_INDEX`).
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    pub shard_index: u32,
    /// How many shards split the input.
    #[arg(long, env = "NEREID_SHARD_COUNT", default_value_t = 1)]
    pub shard_count: u32,
    /// Continue a job that stopped: parts already in `--output` are kept.
    #[arg(long)]
    pub resume: bool,
    /// Rows per request (default: the model's max_batch_size; 1 for generators and
    /// models that do not batch).
    #[arg(long)]
    pub batch_rows: Option<usize>,
    /// Requests in flight (default: twice what the model's instances run at once, at
    /// least 4).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Rows per output part: the unit of checkpointing and of sharding.
    #[arg(long, default_value_t = 65536)]
    pub part_rows: u64,
    /// What a row that fails does to the job.
    #[arg(long, value_enum, default_value = "skip")]
    pub on_error: OnError,
    /// Model repository for in-process scoring (default: the demo models).
    #[arg(long, value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    /// Tries after the first of a request the engine could not take (UNAVAILABLE).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = 10)]
    pub progress_interval_secs: u64,
}
