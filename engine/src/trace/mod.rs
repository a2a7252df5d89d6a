//! Request tracing. Which requests are traced follows Triton's trace settings (level, rate,
//! count; globally and per model, changed at run time); a request may also arrive with a
//! W3C `traceparent` whose caller sampled it. A traced request records instants as it
//! goes and, when it ends, becomes spans: `InferRequest` (the request in this process),
//! `queue`, `compute` with `compute_input`, `compute_infer` and `compute_output` on an
//! engine, `forward` per attempt on a gateway. They go to a [`SpanExporter`] (the binary
//! installs an OTLP one); untraced requests cost one atomic load.

mod context;
mod record;
mod settings;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

pub use context::{
    accept_request_id, hex, new_request_id, new_span_id, new_trace_id, TraceParent, REQUEST_ID,
    TRACEPARENT,
};
pub(crate) use record::{Compute, RequestTrace};
use settings::TraceTable;
pub use settings::{TraceLevel, TraceSettings, TraceUpdate, TRACE_MODE};

/// Where a request came from, as the door saw it: what traces and logs tell it by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The request id (`X-Request-ID`): the client's, or one the door made up.
    pub request_id: String,
    /// The trace context the request arrived with, if any.
    pub trace_parent: Option<TraceParent>,
}

impl Origin {
    /// The origin of a request that came with these `x-request-id` and `traceparent`
    /// values (header or metadata bytes): the client's id when it is a usable one, else a
    /// fresh one; the trace context when it is valid W3C, else none.
    pub fn received(request_id: Option<&[u8]>, traceparent: Option<&[u8]>) -> Self {
        let request_id = request_id
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(accept_request_id)
            .map_or_else(new_request_id, str::to_string);
        let trace_parent = traceparent
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(TraceParent::parse);
        Self {
            request_id,
            trace_parent,
        }
    }
}

/// A span's kind, as OpenTelemetry has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside the process.
    Internal,
    /// A request this process serves.
    Server,
    /// A call this process makes.
    Client,
}

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Text.
    Str(String),
    /// An integer.
    Int(i64),
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanData {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// The span it is part of; `None` for a trace's first.
    pub parent_span_id: Option<[u8; 8]>,
    /// What it is.
    pub name: &'static str,
    /// Its kind.
    pub kind: SpanKind,
    /// Start.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
    /// Attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Named instants within it.
    pub events: Vec<(&'static str, SystemTime)>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Takes finished spans away. Called on the thread that finished the request (a model's
/// worker, a Tokio task): it must not block, so it hands them on and returns.
pub trait SpanExporter: Send + Sync + 'static {
    /// Exports the spans of one request.
    fn export(&self, spans: Vec<SpanData>);
}

/// The process's tracing: the settings, and where finished spans go.
pub(crate) struct Tracer {
    table: Mutex<TraceTable>,
    /// Whether any setting has tracing on, read by every request.
    on: AtomicBool,
    exporter: RwLock<Option<Arc<dyn SpanExporter>>>,
    /// "engine" or "gateway", for the spans.
    role: &'static str,
}

impl Tracer {
    pub(crate) fn new(settings: TraceSettings, role: &'static str) -> Self {
        let table = TraceTable::new(settings);
        Self {
            on: AtomicBool::new(table.any_on()),
            table: Mutex::new(table),
            exporter: RwLock::new(None),
            role,
        }
    }

    pub(crate) fn set_exporter(&self, exporter: Arc<dyn SpanExporter>) {
        *self.exporter.write() = Some(exporter);
    }

    pub(crate) fn settings(&self, model: Option<&str>) -> TraceSettings {
        self.table.lock().get(model)
    }

    pub(crate) fn update(&self, model: Option<&str>, update: &TraceUpdate) -> crate::Result<()> {
        let mut table = self.table.lock();
        table.update(model, update)?;
        self.on.store(table.any_on(), Ordering::Release);
        Ok(())
    }

    /// The trace of a request to `model` when it is to be traced.
    pub(crate) fn begin(
        &self,
        origin: &Origin,
        received: Instant,
        model: &Arc<str>,
        version: i64,
    ) -> Option<Box<RequestTrace>> {
        let caller_sampled = origin.trace_parent.is_some_and(|p| p.sampled);
        if !caller_sampled && !self.on.load(Ordering::Acquire) {
            return None;
        }
        let exporter = self.exporter.read().clone()?;
        if !self.table.lock().sample(model, caller_sampled) {
            return None;
        }
        Some(Box::new(RequestTrace::new(
            exporter,
            origin.trace_parent.as_ref(),
            received,
            self.role,
            model.clone(),
            version,
            origin.request_id.clone(),
        )))
    }
}

/// One request as the access log records it (`--access-log`): written by the door that
/// answered it, at the head of its response.
#[derive(Debug)]
pub struct Access<'a> {
    /// `http` or `grpc`.
    pub door: &'static str,
    /// The route's path or the RPC.
    pub route: &'a str,
    /// The model, when the door knows it.
    pub model: Option<&'a str>,
    /// HTTP status, or gRPC code name.
    pub status: &'a str,
    /// From the request's arrival to its response's head.
    pub duration: std::time::Duration,
    /// Body bytes received, when declared.
    pub bytes_in: Option<u64>,
    /// Body bytes sent, when declared (a stream declares none).
    pub bytes_out: Option<u64>,
    /// Request id and trace context.
    pub origin: &'a Origin,
}

impl Access<'_> {
    /// Writes the line (target `nereid::access`, level INFO).
    pub fn log(&self) {
        let bytes = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
        let trace_id = self
            .origin
            .trace_parent
            .map(|p| hex(&p.trace_id))
            .unwrap_or_default();
        tracing::info!(
            target: "nereid::access",
            door = %self.door,
            route = %self.route,
            model = %self.model.unwrap_or("-"),
            status = %self.status,
            duration_ms = format_args!("{:.3}", self.duration.as_secs_f64() * 1e3),
            bytes_in = %bytes(self.bytes_in),
            bytes_out = %bytes(self.bytes_out),
            request_id = %self.origin.request_id,
            trace_id = %trace_id,
            "access"
        );
    }
}
