//! Command-line flags, with Triton's names where Triton has the flag and `NEREID_*`
//! environment variables as fallbacks.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Nereid inference server.
#[derive(Parser, Debug)]
#[command(name = "nereid", version, about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Serve a model repository over HTTP/REST, gRPC and streaming.
    Serve(Box<ServeArgs>),
    /// Serve the same doors as `serve`, forwarding every request over KServe v2 gRPC to a
    /// fleet of engines (model-aware routing, health checks, retries).
    Gateway(Box<GatewayArgs>),
    /// Score tables (Parquet, JSONL, CSV) through a model, in-process or against a fleet;
    /// resumable and sharded.
    Batch(Box<nereid_batch::BatchArgs>),
    /// Load-test a running server (perf_analyzer style).
    Bench(Box<nereid_bench::BenchArgs>),
    /// Measure gRPC against REST on a live server and write the report into docs/.
    BenchReport(Box<nereid_bench::ReportArgs>),
    /// Manage model weights.
    #[command(subcommand)]
    Models(ModelsCommand),
}

/// `nereid models ...`
#[derive(Subcommand, Debug)]
pub(crate) enum ModelsCommand {
    /// Download the demo models' weights into the cache (default: all of them) and write
    /// the demo repository's configs there.
    Pull {
        /// Model names (minilm, smollm2).
        models: Vec<String>,
    },
}

/// How models are loaded.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlMode {
    /// Load every model at start.
    None,
    /// Load only `--load-model` models and what the load API asks for.
    Explicit,
    /// Load every model and re-scan the repository.
    Poll,
}

/// Which built-in demo models to serve when no repository is given.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DemoModels {
    /// The built-ins, minilm (also as minilm_rerank and as an ensemble of its stages) and
    /// smollm2 (weights fetched on first use).
    All,
    /// Only the weightless built-ins: simple, identity_fp32, repeat_int32.
    Builtin,
}

/// Log line format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Default of `--max-inflight`: far above what a node computes at once. What requests hold
/// in memory is at most this times their size, so lower it where bodies are large.
pub(crate) const DEFAULT_MAX_INFLIGHT: usize = 4096;

/// `nereid serve` flags.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Model repository folder (Triton layout). Without it, a demo repository is served.
    #[arg(long, env = "NEREID_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// Demo models to serve when no --model-repository is given.
    #[arg(long, env = "NEREID_DEMO_MODELS", value_enum, default_value = "all")]
    pub demo_models: DemoModels,
    /// Model control mode.
    #[arg(
        long,
        env = "NEREID_MODEL_CONTROL_MODE",
        value_enum,
        default_value = "none"
    )]
    pub model_control_mode: ControlMode,
    /// Model to load at start in explicit mode (repeatable; `*` loads all).
    #[arg(long = "load-model", env = "NEREID_LOAD_MODEL", value_delimiter = ',')]
    pub load_model: Vec<String>,
    /// Seconds between repository scans in poll mode.
    #[arg(long, env = "NEREID_REPOSITORY_POLL_SECS", default_value_t = 15)]
    pub repository_poll_secs: u64,
    /// Ready only when every model is ready (Triton's --strict-readiness).
    #[arg(long, env = "NEREID_STRICT_READINESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub strict_readiness: bool,
    /// The response cache, as Triton's flag: `local,size=BYTES` (repeatable). Models use it
    /// when their config has `response_cache { enable: true }`.
    #[arg(long = "cache-config", env = "NEREID_CACHE_CONFIG")]
    pub cache_config: Vec<String>,
    /// Listeners, limits, logging and the frontends' flags.
    #[command(flatten)]
    pub doors: DoorArgs,
}

/// `nereid gateway` flags.
#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// An engine's gRPC address, `host:port` (repeatable or comma-separated).
    #[arg(
        long = "backend",
        env = "NEREID_GATEWAY_BACKENDS",
        value_delimiter = ','
    )]
    pub backends: Vec<String>,
    /// A DNS name, `name:port`, whose every address is an engine (a Kubernetes headless
    /// Service, a Docker network alias); re-resolved every discovery interval.
    #[arg(long, env = "NEREID_GATEWAY_BACKEND_DNS")]
    pub backend_dns: Option<String>,
    /// Milliseconds between re-resolving the DNS name and re-reading the engines'
    /// repository indexes.
    #[arg(
        long,
        env = "NEREID_GATEWAY_DISCOVERY_INTERVAL_MS",
        default_value_t = 2000
    )]
    pub discovery_interval_ms: u64,
    /// Milliseconds between health checks of every engine (also each check's timeout, at
    /// least 1 s).
    #[arg(
        long,
        env = "NEREID_GATEWAY_HEALTH_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub health_interval_ms: u64,
    /// Failed calls in a row that eject an engine until its next good health check.
    #[arg(long, env = "NEREID_GATEWAY_EJECT_AFTER", default_value_t = 3)]
    pub eject_after: u32,
    /// Other engines a request is tried on when one could not answer it (UNAVAILABLE
    /// before any response was sent).
    #[arg(long, env = "NEREID_GATEWAY_RETRIES", default_value_t = 2)]
    pub retries: u32,
    /// The API key sent to the engines (their `--api-key`); printable ASCII.
    #[arg(long, env = "NEREID_GATEWAY_BACKEND_API_KEY", hide_env_values = true,
          value_parser = printable_ascii)]
    pub backend_api_key: Option<String>,
    /// PEM file of the CA the engines' gRPC certificates chain to: talk to them over TLS.
    #[arg(long, env = "NEREID_GATEWAY_BACKEND_CA_CERT", value_name = "PEM")]
    pub backend_ca_cert: Option<PathBuf>,
    /// PEM file of the gateway's client certificate, for engines that require one.
    #[arg(long, env = "NEREID_GATEWAY_BACKEND_CLIENT_CERT", value_name = "PEM",
          requires_all = ["backend_ca_cert", "backend_client_key"])]
    pub backend_client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's key.
    #[arg(
        long,
        env = "NEREID_GATEWAY_BACKEND_CLIENT_KEY",
        value_name = "PEM",
        requires = "backend_client_cert"
    )]
    pub backend_client_key: Option<PathBuf>,
    /// The name the engines' certificates carry, when it is not the host dialled
    /// (engines found by DNS are dialled by IP).
    #[arg(
        long,
        env = "NEREID_GATEWAY_BACKEND_TLS_DOMAIN",
        requires = "backend_ca_cert"
    )]
    pub backend_tls_domain: Option<String>,
    /// Listeners, limits, logging and the frontends' flags.
    #[command(flatten)]
    pub doors: DoorArgs,
}

/// What `serve` and `gateway` share: the doors clients use, their limits, and logging.
#[derive(Args, Debug)]
pub(crate) struct DoorArgs {
    /// Address every listener binds.
    #[arg(long, env = "NEREID_ADDRESS", default_value = "0.0.0.0")]
    pub address: String,
    /// HTTP/REST port (0 picks a free one).
    #[arg(long, env = "NEREID_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// gRPC port (0 picks a free one).
    #[arg(long, env = "NEREID_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,
    /// Prometheus metrics port (0 picks a free one).
    #[arg(long, env = "NEREID_METRICS_PORT", default_value_t = 8002)]
    pub metrics_port: u16,
    /// Serve the metrics port over TLS (HTTPS), with --metrics-server-cert and
    /// --metrics-server-key, or else the HTTP door's certificate and key.
    #[arg(long, env = "NEREID_METRICS_USE_SSL")]
    pub metrics_use_ssl: bool,
    /// PEM file of the metrics port's certificate chain (leaf first).
    #[arg(
        long,
        env = "NEREID_METRICS_SERVER_CERT",
        value_name = "PEM",
        requires = "metrics_server_key"
    )]
    pub metrics_server_cert: Option<PathBuf>,
    /// PEM file of the metrics port's private key.
    #[arg(
        long,
        env = "NEREID_METRICS_SERVER_KEY",
        value_name = "PEM",
        requires = "metrics_server_cert"
    )]
    pub metrics_server_key: Option<PathBuf>,
    /// Requests in flight across every model and door at most; past it a request is refused
    /// at once (HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED), so memory stays bounded
    /// whatever the mix of traffic. 0 removes the limit.
    #[arg(long, env = "NEREID_MAX_INFLIGHT", default_value_t = DEFAULT_MAX_INFLIGHT)]
    pub max_inflight: usize,
    /// Seconds to finish in-flight requests after SIGINT/SIGTERM.
    #[arg(long, env = "NEREID_EXIT_TIMEOUT_SECS", default_value_t = 30)]
    pub exit_timeout_secs: u64,
    /// An API key every door requires as `Authorization: Bearer <key>` (HTTP header or
    /// gRPC metadata), health routes and grpc.health.v1 excepted; repeatable or
    /// comma-separated. Without one the doors are open.
    #[arg(
        long = "api-key",
        env = "NEREID_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// A file of API keys, one per line (blank lines and lines starting with `#` skipped),
    /// accepted besides `--api-key`: keys stay out of the process list and the
    /// environment (a Kubernetes Secret mounted as a file).
    #[arg(long, env = "NEREID_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// Triton's trace configuration, repeatable: `level=OFF|TIMESTAMPS`, `rate=N` (1 request
    /// in N), `count=N` (traces to take, -1 no end), `log_frequency=0`, `mode=opentelemetry`,
    /// and the exporter's `opentelemetry,url=URL`, `opentelemetry,protocol=http/protobuf|grpc`,
    /// `opentelemetry,resource=KEY=VALUE`, `opentelemetry,bsp_schedule_delay=MS`,
    /// `opentelemetry,bsp_max_export_batch_size=N`, `opentelemetry,bsp_max_queue_size=N`.
    /// The OTEL_EXPORTER_OTLP_* and OTEL_SERVICE_NAME variables are read too; flags win.
    #[arg(long = "trace-config", value_name = "[opentelemetry,]KEY=VALUE")]
    pub trace_config: Vec<String>,
    /// Writes one log line per request (target `nereid::access`): door, route or RPC,
    /// model, status, duration, bytes in and out, request id, trace id.
    #[arg(long, env = "NEREID_ACCESS_LOG")]
    pub access_log: bool,
    /// Metrics configuration, repeatable: `duration_buckets=S,S,...` (seconds) sets the
    /// buckets of the request, queue and compute duration histograms.
    #[arg(long = "metrics-config", value_name = "KEY=VALUE")]
    pub metrics_config: Vec<String>,
    /// Log format.
    #[arg(long, env = "NEREID_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log verbosity (0 = info, 1 = debug, 2+ = trace); RUST_LOG overrides.
    #[arg(long, env = "NEREID_LOG_VERBOSE", default_value_t = 0)]
    pub log_verbose: u8,
    /// gRPC frontend flags.
    #[command(flatten)]
    pub grpc: nereid_grpc::GrpcArgs,
    /// HTTP/REST frontend flags.
    #[command(flatten)]
    pub rest: nereid_rest::RestArgs,
    /// OpenAI, TEI and WebSocket frontend flags.
    #[command(flatten)]
    pub stream: nereid_stream::StreamArgs,
}

/// A value that can travel in an HTTP header as is.
fn printable_ascii(value: &str) -> Result<String, String> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(value.to_string())
    } else {
        Err("must be printable ASCII without spaces".into())
    }
}
