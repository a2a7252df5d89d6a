//! What one traced request records as it goes (instants only: nothing is formatted or sent
//! until it ends) and the spans it becomes.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::context::{new_span_id, new_trace_id, TraceParent};
use super::{AttrValue, SpanData, SpanExporter, SpanKind};

/// The phases of one batch execution a request took part in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compute {
    pub start: Instant,
    pub input_end: Instant,
    pub infer_end: Instant,
    pub end: Instant,
    pub batch_size: usize,
}

/// One attempt of a gateway to have an engine answer.
#[derive(Debug)]
struct Forward {
    span_id: [u8; 8],
    backend: String,
    start: Instant,
    end: Option<Instant>,
    error: Option<String>,
}

/// The trace of one request in this process.
pub(crate) struct RequestTrace {
    exporter: Arc<dyn SpanExporter>,
    trace_id: [u8; 16],
    root: [u8; 8],
    parent: Option<[u8; 8]>,
    /// The wall clock at `received`: every instant is placed on it.
    wall: SystemTime,
    received: Instant,
    role: &'static str,
    model: Arc<str>,
    version: i64,
    request_id: String,
    enqueued: Option<Instant>,
    compute: Option<Compute>,
    first_response: Option<Instant>,
    forwards: Vec<Forward>,
}

impl RequestTrace {
    pub(crate) fn new(
        exporter: Arc<dyn SpanExporter>,
        parent: Option<&TraceParent>,
        received: Instant,
        role: &'static str,
        model: Arc<str>,
        version: i64,
        request_id: String,
    ) -> Self {
        let wall = SystemTime::now()
            .checked_sub(received.elapsed())
            .unwrap_or_else(SystemTime::now);
        Self {
            exporter,
            trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
            root: new_span_id(),
            parent: parent.map(|p| p.span_id),
            wall,
            received,
            role,
            model,
            version,
            request_id,
            enqueued: None,
            compute: None,
            first_response: None,
            forwards: Vec::new(),
        }
    }

    pub(crate) fn enqueued(&mut self, at: Instant) {
        self.enqueued = Some(at);
    }

    pub(crate) fn computed(&mut self, compute: Compute) {
        self.compute = Some(compute);
    }

    /// A decoupled model's sequence was admitted: its queue wait ends here.
    pub(crate) fn admitted(&mut self, at: Instant) {
        if self.compute.is_none() {
            self.compute = Some(Compute {
                start: at,
                input_end: at,
                infer_end: at,
                end: at,
                batch_size: 1,
            });
        }
    }

    pub(crate) fn responded(&mut self, at: Instant) {
        self.first_response.get_or_insert(at);
    }

    /// Starts a gateway's attempt on `backend`; the context to send it with.
    pub(crate) fn begin_forward(&mut self, backend: &str) -> TraceParent {
        let span_id = new_span_id();
        self.forwards.push(Forward {
            span_id,
            backend: backend.to_string(),
            start: Instant::now(),
            end: None,
            error: None,
        });
        TraceParent {
            trace_id: self.trace_id,
            span_id,
            sampled: true,
        }
    }

    /// Ends the latest attempt.
    pub(crate) fn end_forward(&mut self, error: Option<String>) {
        if let Some(forward) = self.forwards.last_mut().filter(|f| f.end.is_none()) {
            forward.end = Some(Instant::now());
            forward.error = error;
        }
    }

    /// The request ended (`error` when it failed): its spans go to the exporter.
    pub(crate) fn finish(self, error: Option<String>) {
        let end = Instant::now();
        let spans = self.spans(end, error);
        self.exporter.export(spans);
    }

    fn at(&self, instant: Instant) -> SystemTime {
        match instant.checked_duration_since(self.received) {
            Some(after) => self.wall + after,
            None => self.wall - self.received.duration_since(instant),
        }
    }

    fn span(&self, name: &'static str, parent: [u8; 8], start: Instant, end: Instant) -> SpanData {
        SpanData {
            trace_id: self.trace_id,
            span_id: new_span_id(),
            parent_span_id: Some(parent),
            name,
            kind: SpanKind::Internal,
            start: self.at(start),
            end: self.at(end.max(start)),
            attributes: Vec::new(),
            events: Vec::new(),
            error: None,
        }
    }

    fn spans(&self, end: Instant, error: Option<String>) -> Vec<SpanData> {
        let mut events = Vec::new();
        if let Some(first) = self.first_response {
            events.push(("first_response", self.at(first)));
            events.push(("final_response", self.at(end)));
        }
        let mut spans = vec![SpanData {
            trace_id: self.trace_id,
            span_id: self.root,
            parent_span_id: self.parent,
            name: "InferRequest",
            kind: SpanKind::Server,
            start: self.at(self.received),
            end: self.at(end),
            attributes: vec![
                ("nereid.model", AttrValue::Str(self.model.to_string())),
                ("nereid.model_version", AttrValue::Int(self.version)),
                ("nereid.request_id", AttrValue::Str(self.request_id.clone())),
                ("nereid.role", AttrValue::Str(self.role.to_string())),
            ],
            events,
            error,
        }];
        if let Some(enqueued) = self.enqueued {
            let queue_end = self.compute.map_or(end, |c| c.start);
            spans.push(self.span("queue", self.root, enqueued, queue_end));
        }
        if let Some(c) = self.compute {
            let compute_end = if self.first_response.is_some() {
                end
            } else {
                c.end
            };
            let mut compute = self.span("compute", self.root, c.start, compute_end);
            compute
                .attributes
                .push(("nereid.batch_size", AttrValue::Int(c.batch_size as i64)));
            let id = compute.span_id;
            spans.push(compute);
            if self.first_response.is_none() {
                spans.push(self.span("compute_input", id, c.start, c.input_end));
                spans.push(self.span("compute_infer", id, c.input_end, c.infer_end));
                spans.push(self.span("compute_output", id, c.infer_end, c.end));
            }
        }
        for f in &self.forwards {
            let mut span = self.span("forward", self.root, f.start, f.end.unwrap_or(end));
            span.span_id = f.span_id;
            span.kind = SpanKind::Client;
            span.attributes
                .push(("nereid.backend", AttrValue::Str(f.backend.clone())));
            span.error = f.error.clone();
            spans.push(span);
        }
        spans
    }
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("trace_id", &super::context::hex(&self.trace_id))
            .finish_non_exhaustive()
    }
}

/// The instant `ms` milliseconds ago, for tests.
#[cfg(test)]
fn ago(ms: u64) -> Instant {
    Instant::now() - std::time::Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<SpanData>>);

    impl SpanExporter for Collect {
        fn export(&self, spans: Vec<SpanData>) {
            self.0.lock().extend(spans);
        }
    }

    #[test]
    fn a_batched_request_becomes_a_root_with_queue_and_compute_phases() {
        let collect = Arc::new(Collect::default());
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let mut trace = RequestTrace::new(
            collect.clone(),
            parent.as_ref(),
            ago(50),
            "engine",
            Arc::from("simple"),
            1,
            "rid".into(),
        );
        trace.enqueued(ago(40));
        trace.computed(Compute {
            start: ago(30),
            input_end: ago(20),
            infer_end: ago(10),
            end: ago(5),
            batch_size: 4,
        });
        trace.finish(None);
        let spans = collect.0.lock();
        let names: Vec<_> = spans.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "InferRequest",
                "queue",
                "compute",
                "compute_input",
                "compute_infer",
                "compute_output"
            ]
        );
        let root = &spans[0];
        assert_eq!(root.trace_id, parent.unwrap().trace_id);
        assert_eq!(root.parent_span_id, Some(parent.unwrap().span_id));
        assert!(spans[1..3]
            .iter()
            .all(|s| s.parent_span_id == Some(root.span_id)));
        assert!(spans[3..]
            .iter()
            .all(|s| s.parent_span_id == Some(spans[2].span_id)));
        for s in spans.iter() {
            assert!(
                s.start <= s.end && s.start >= root.start && s.end <= root.end,
                "{s:?}"
            );
        }
        assert!(spans[1].end <= spans[2].start);
    }

    #[test]
    fn a_gateway_attempt_is_a_client_span_whose_id_the_engine_gets() {
        let collect = Arc::new(Collect::default());
        let mut trace = RequestTrace::new(
            collect.clone(),
            None,
            ago(5),
            "gateway",
            Arc::from("m"),
            1,
            "rid".into(),
        );
        let sent = trace.begin_forward("10.0.0.2:8001");
        trace.end_forward(Some("unavailable".into()));
        let sent_again = trace.begin_forward("10.0.0.3:8001");
        trace.end_forward(None);
        trace.finish(None);
        let spans = collect.0.lock();
        assert_eq!(spans.len(), 3);
        assert!(spans[0].parent_span_id.is_none());
        assert_eq!(spans[1].span_id, sent.span_id);
        assert_eq!(spans[2].span_id, sent_again.span_id);
        assert_eq!(spans[1].error.as_deref(), Some("unavailable"));
        assert!(matches!(spans[2].kind, SpanKind::Client));
        assert_eq!(sent.trace_id, spans[0].trace_id);
    }
}
