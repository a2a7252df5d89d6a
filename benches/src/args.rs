//! Command-line flags of `nereid bench` and `nereid bench-report`, with perf_analyzer's
//! names where perf_analyzer has the flag.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

/// The wire protocol a load is sent over (perf_analyzer's `-i`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// KServe v2 gRPC (`inference.GRPCInferenceService`).
    Grpc,
    /// KServe v2 HTTP/REST.
    Http,
}

/// How tensors travel in an HTTP request or response body (perf_analyzer's
/// `--input-tensor-format` / `--output-tensor-format`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorFormat {
    /// Tensors as JSON arrays inside the body.
    Json,
    /// The binary tensor extension: a JSON header, then raw little-endian tensors.
    Binary,
}

/// The HTTP version of REST requests.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// HTTP/1.1, one connection per in-flight request.
    #[value(name = "1.1", alias = "1", alias = "http1")]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c), requests multiplexed.
    #[value(name = "2", alias = "http2", alias = "h2c")]
    Http2,
}

/// How request start times are spread in request-rate (open loop) mode.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Distribution {
    /// Evenly spaced.
    #[default]
    Constant,
    /// Exponential gaps (a Poisson process).
    Poisson,
}

/// `start:end:step`, perf_analyzer's range syntax; `end` defaults to `start`, `step` to 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range<T> {
    /// First value.
    pub start: T,
    /// Last value (inclusive).
    pub end: T,
    /// Increment.
    pub step: T,
}

impl<T> FromStr for Range<T>
where
    T: FromStr + Copy + PartialOrd + Default + From<u8>,
    T::Err: fmt::Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.is_empty() || parts.len() > 3 {
            return Err(format!("'{s}' is not start[:end[:step]]"));
        }
        let parse = |p: &str| {
            p.trim()
                .parse::<T>()
                .map_err(|e| format!("'{p}' in '{s}': {e}"))
        };
        let start = parse(parts[0])?;
        let end = if parts.len() > 1 {
            parse(parts[1])?
        } else {
            start
        };
        let step = if parts.len() > 2 {
            parse(parts[2])?
        } else {
            T::from(1u8)
        };
        if step <= T::default() {
            return Err(format!("step of '{s}' must be positive"));
        }
        if end < start || start <= T::default() {
            return Err(format!("'{s}' needs 0 < start <= end"));
        }
        Ok(Self { start, end, step })
    }
}

impl Range<u64> {
    /// Every value of the range.
    pub fn values(&self) -> Vec<u64> {
        (self.start..=self.end)
            .step_by(self.step as usize)
            .collect()
    }
}

impl Range<f64> {
    /// Every value of the range.
    pub fn values(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut v = self.start;
        while v <= self.end * (1.0 + 1e-9) {
            out.push(v);
            v += self.step;
        }
        out
    }
}

/// `--input-data`: what the tensors hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputData {
    /// Uniform random values (printable strings for BYTES).
    Random,
    /// Zeros (empty strings for BYTES).
    Zero,
    /// A perf_analyzer-style JSON file: `{"data": [{"INPUT0": [...], ...}, ...]}`.
    File(PathBuf),
}

impl FromStr for InputData {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "random" => Self::Random,
            "zero" => Self::Zero,
            path => Self::File(PathBuf::from(path)),
        })
    }
}

/// `--shape NAME:d1,d2`: the shape of an input with variable dimensions, without the
/// batch dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeArg {
    /// Input name.
    pub name: String,
    /// Dimensions.
    pub dims: Vec<i64>,
}

impl FromStr for ShapeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, dims) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("'{s}' is not NAME:d1,d2,..."))?;
        let dims = dims
            .split(',')
            .map(|d| {
                d.trim()
                    .parse::<i64>()
                    .map_err(|e| format!("dimension '{d}' of '{s}': {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if name.is_empty() || dims.iter().any(|&d| d < 0) {
            return Err(format!("'{s}' needs a name and non-negative dimensions"));
        }
        Ok(Self {
            name: name.to_string(),
            dims,
        })
    }
}

/// `nereid bench` flags (perf_analyzer's names where it has them).
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Model to load (perf_analyzer's -m).
    #[arg(short = 'm', long = "model-name")]
    pub model: String,
    /// Model version; empty means the newest ready one.
    #[arg(short = 'x', long = "model-version", default_value = "")]
    pub model_version: String,
    /// Server address, host:port or http://host:port (default localhost:8001 for gRPC,
    /// localhost:8000 for HTTP).
    #[arg(short = 'u', long = "url")]
    pub url: Option<String>,
    /// Protocol.
    #[arg(short = 'i', long = "protocol", value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// How HTTP requests carry input tensors.
    #[arg(long = "input-tensor-format", value_enum, default_value = "binary")]
    pub input_tensor_format: TensorFormat,
    /// How HTTP responses carry output tensors (default: as the inputs).
    #[arg(long = "output-tensor-format", value_enum)]
    pub output_tensor_format: Option<TensorFormat>,
    /// HTTP version of REST requests (2 is h2c with prior knowledge).
    #[arg(long = "http-version", value_enum, default_value = "1.1")]
    pub http_version: HttpVersion,
    /// Connections to open; default one per in-flight request for HTTP/1.1, one shared
    /// multiplexed connection for HTTP/2 and gRPC.
    #[arg(long = "connections")]
    pub connections: Option<usize>,
    /// Closed loop: concurrent requests, start:end:step (default 1).
    #[arg(long = "concurrency-range", conflicts_with = "request_rate_range")]
    pub concurrency_range: Option<Range<u64>>,
    /// Open loop: requests per second, start:end:step.
    #[arg(long = "request-rate-range")]
    pub request_rate_range: Option<Range<f64>>,
    /// How open-loop request times are spread.
    #[arg(long = "request-distribution", value_enum, default_value = "constant")]
    pub request_distribution: Distribution,
    /// Most requests outstanding at once in open loop; later ones wait and count as delayed.
    #[arg(long = "max-threads", default_value_t = 256)]
    pub max_threads: usize,
    /// Length of one measurement window in milliseconds.
    #[arg(short = 'p', long = "measurement-interval", default_value_t = 5000)]
    pub measurement_interval: u64,
    /// Windows are stable when throughput and latency of the last three are within this
    /// percentage of their mean.
    #[arg(short = 's', long = "stability-percentage", default_value_t = 10.0)]
    pub stability_percentage: f64,
    /// Most windows per level before giving up on stability.
    #[arg(short = 'r', long = "max-trials", default_value_t = 10)]
    pub max_trials: usize,
    /// Latency percentile used for stability and the headline (default: average).
    #[arg(long = "percentile", value_parser = clap::value_parser!(u8).range(1..=99))]
    pub percentile: Option<u8>,
    /// Input values: random, zero, or a JSON file in perf_analyzer's format.
    #[arg(long = "input-data", default_value = "random")]
    pub input_data: InputData,
    /// Shape of a variable-size input without the batch dimension: NAME:d1,d2 (repeatable).
    #[arg(long = "shape")]
    pub shape: Vec<ShapeArg>,
    /// Batch size of each request (models with max_batch_size > 0).
    #[arg(short = 'b', long = "batch-size", default_value_t = 1)]
    pub batch_size: usize,
    /// Send requests over gRPC ModelStreamInfer (needed for decoupled models).
    #[arg(long = "streaming")]
    pub streaming: bool,
    /// Milliseconds a request may take before it counts as failed.
    #[arg(long = "request-timeout", default_value_t = 30_000)]
    pub request_timeout: u64,
    /// Write the results as CSV (perf_analyzer's columns, microseconds).
    #[arg(short = 'f', long = "filename")]
    pub filename: Option<PathBuf>,
    /// Hide the live progress display.
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

impl BenchArgs {
    /// The base URL (`http://host:port`) to connect to.
    pub fn base_url(&self) -> String {
        let default = match self.protocol {
            Protocol::Grpc => "localhost:8001",
            Protocol::Http => "localhost:8000",
        };
        normalize_url(self.url.as_deref().unwrap_or(default))
    }

    /// Checks flag combinations clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.streaming && self.protocol != Protocol::Grpc {
            bail!("--streaming needs -i grpc");
        }
        if self.streaming && self.request_rate_range.is_some() {
            bail!("--streaming runs in concurrency mode only");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if self.measurement_interval < 50 {
            bail!("--measurement-interval must be at least 50 ms");
        }
        if let InputData::File(path) = &self.input_data {
            std::fs::metadata(path).with_context(|| format!("--input-data {}", path.display()))?;
        }
        Ok(())
    }
}

/// `host:port` or a URL to `scheme://host:port` without a trailing slash.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// `nereid bench-report` flags: the protocol comparison on the live server.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Markdown file whose generated section is replaced (created if missing).
    #[arg(long = "markdown", default_value = "docs/BENCHMARKS.md")]
    pub markdown: PathBuf,
    /// Folder for the SVG plots.
    #[arg(long = "svg-dir", default_value = "docs")]
    pub svg_dir: PathBuf,
    /// Measured milliseconds per scenario (after warm-up).
    #[arg(long = "duration-ms", default_value_t = 1500)]
    pub duration_ms: u64,
    /// Warm-up milliseconds per scenario, not measured.
    #[arg(long = "warmup-ms", default_value_t = 300)]
    pub warmup_ms: u64,
    /// Elements of the large `identity_fp32` payload.
    #[arg(long = "large-elements", default_value_t = 150_528)]
    pub large_elements: usize,
    /// High concurrency of the comparison.
    #[arg(long = "high-concurrency", default_value_t = 64)]
    pub high_concurrency: usize,
    /// Worker threads of each in-process server's runtime (default: the machine's cores).
    #[arg(long = "server-threads")]
    pub server_threads: Option<usize>,
    /// Measure a running Nereid's gRPC endpoint instead of an in-process one.
    #[arg(long = "grpc-url", requires = "http_url")]
    pub grpc_url: Option<String>,
    /// Measure a running Nereid's HTTP endpoint instead of an in-process one.
    #[arg(long = "http-url", requires = "grpc_url")]
    pub http_url: Option<String>,
    /// Print the section instead of writing files.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Hide the live progress display.
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_perf_analyzer() {
        let r: Range<u64> = "1:8:2".parse().unwrap();
        assert_eq!(r.values(), vec![1, 3, 5, 7]);
        let r: Range<u64> = "4".parse().unwrap();
        assert_eq!(r.values(), vec![4]);
        let r: Range<f64> = "100:300:100".parse().unwrap();
        assert_eq!(r.values(), vec![100.0, 200.0, 300.0]);
        assert!("0:4".parse::<Range<u64>>().is_err());
        assert!("4:2".parse::<Range<u64>>().is_err());
        assert!("1:2:0".parse::<Range<u64>>().is_err());
    }

    #[test]
    fn shapes_and_data_parse() {
        let s: ShapeArg = "INPUT0:1,768".parse().unwrap();
        assert_eq!(
            s,
            ShapeArg {
                name: "INPUT0".into(),
                dims: vec![1, 768]
            }
        );
        assert!("INPUT0".parse::<ShapeArg>().is_err());
        assert_eq!("zero".parse::<InputData>().unwrap(), InputData::Zero);
        assert_eq!(
            "x.json".parse::<InputData>().unwrap(),
            InputData::File("x.json".into())
        );
        assert_eq!(normalize_url("localhost:8001/"), "http://localhost:8001");
    }
}
