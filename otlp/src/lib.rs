//! OpenTelemetry export for Nereid: [`TraceConfig`] reads Triton's `--trace-config` and
//! the `OTEL_*` variables; [`OtlpExporter`] takes the spans of traced requests from the
//! engine and sends them to a collector over OTLP (HTTP/protobuf, as Triton, or gRPC) in
//! batches, never blocking a request.
//!
//! ```
//! let config = nereid_otlp::TraceConfig::parse(
//!     &["level=TIMESTAMPS".into(), "opentelemetry,url=localhost:4318/v1/traces".into()],
//!     |_| None,
//! )
//! .unwrap();
//! assert_eq!(config.exporter.unwrap().endpoint, "http://localhost:4318/v1/traces");
//! ```

mod config;
mod exporter;
mod proto;

pub use config::{ExporterConfig, Protocol, TraceConfig};
pub use exporter::{OtlpExporter, SPANS_DROPPED};
