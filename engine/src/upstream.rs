//! Models served by other processes: the engine side of a gateway.
//!
//! An [`Engine`](crate::Engine) built with [`Engine::with_upstream`](crate::Engine::with_upstream)
//! owns no models. It learns what each model takes from its [`Upstream`] (which reads the
//! configs the serving engines report), validates and counts every request exactly as a
//! local engine does, so a bad request gets the same error at a gateway as at an engine,
//! then hands it to [`Upstream::forward`] with a [`Reply`] to answer through. Frontends
//! cannot tell the two apart.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid_proto::inference::ModelConfig;

use crate::sink::{RequestContext, Sink};
use crate::trace::TraceParent;
use crate::{InferRequest, InferResponse, ModelFacts, ModelStats, RepositoryEntry, Result};

/// A model version served upstream, with the statistics this process keeps of the
/// requests it forwarded there.
#[derive(Clone)]
pub struct UpstreamModel {
    /// What the model takes and gives, from the serving engine's config.
    pub facts: ModelFacts,
    /// Requests forwarded to it, as this process saw them (end to end, network included).
    pub stats: Arc<ModelStats>,
}

impl std::fmt::Debug for UpstreamModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamModel")
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

/// Where an upstream engine's requests run.
pub trait Upstream: Send + Sync + 'static {
    /// Whether requests can be forwarded now (some backend is healthy).
    fn is_ready(&self) -> bool;

    /// The newest ready (or the given) version of a model, or the error an engine would
    /// give for it (unknown model, version not ready).
    fn resolve(&self, name: &str, version: Option<i64>) -> Result<UpstreamModel>;

    /// Every ready version, optionally of one model only.
    fn ready_versions(&self, name: Option<&str>) -> Vec<UpstreamModel>;

    /// The repository index over every backend.
    fn index(&self, ready_only: bool) -> Vec<RepositoryEntry>;

    /// Loads (or reloads) a model wherever the upstream loads models, and returns once it
    /// is routable; the engines decide whether they allow it (their control mode).
    fn load(&self, name: &str, config: Option<ModelConfig>) -> ControlFuture;

    /// Unloads a model wherever the upstream serves it.
    fn unload(&self, name: &str) -> ControlFuture;

    /// Sends a validated request on its way; the outcome goes to `reply`. Called on the
    /// submitting (async) thread: it must not block, so it spawns what waits.
    fn forward(&self, request: InferRequest, reply: Reply);
}

/// The outcome of a model control call, awaited by the frontend that asked.
pub type ControlFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// How a forwarded request is answered: exactly once with [`Reply::finish`], after any
/// number of [`Reply::send`] for a decoupled model's streamed responses. Dropping it
/// unanswered fails the request.
pub struct Reply {
    sink: Option<Sink>,
    ctx: RequestContext,
    /// When the first attempt on an engine began.
    forwarded: Option<Instant>,
}

impl Reply {
    pub(crate) fn new(sink: Sink, ctx: RequestContext) -> Self {
        Self {
            sink: Some(sink),
            ctx,
            forwarded: None,
        }
    }

    /// Completes once the client has gone away; pending forever while it waits.
    pub async fn closed(&mut self) {
        match &mut self.sink {
            Some(Sink::Unary(tx)) => tx.closed().await,
            Some(Sink::Stream(tx)) => tx.closed().await,
            None => {}
        }
    }

    /// Starts an attempt on `backend` (its `forward` span when the request is traced) and
    /// gives the trace context to send it with: the attempt's own when traced, else the
    /// one the request came with.
    pub fn begin_attempt(&mut self, backend: &str, request: &InferRequest) -> Option<TraceParent> {
        self.forwarded.get_or_insert_with(Instant::now);
        match &mut self.ctx.trace {
            Some(trace) => Some(trace.begin_forward(backend)),
            None => request.origin.trace_parent,
        }
    }

    /// Ends the attempt begun last, with why it failed when it did.
    pub fn end_attempt(&mut self, error: Option<String>) {
        if let Some(trace) = &mut self.ctx.trace {
            trace.end_forward(error);
        }
    }

    /// Sends one non-final response of a streamed request, waiting for room in the
    /// client's buffer. False when the client has gone away (or the request is unary,
    /// which takes only its final response).
    pub async fn send(&mut self, response: InferResponse) -> bool {
        self.ctx.responding();
        match &self.sink {
            Some(Sink::Stream(tx)) => tx.send(Ok(response)).await.is_ok(),
            _ => false,
        }
    }

    /// Sends the final outcome and counts it. A forwarded request that succeeded also
    /// counts in the statistics' queue (its time here before the first attempt) and as
    /// one execution of batch size 1 whose compute is the engines' round trip: a gateway's
    /// statistics describe what it forwards, so tools that look for the version whose
    /// queue count grew (perf_analyzer) find it.
    pub async fn finish(mut self, outcome: Result<InferResponse>) {
        if let (Ok(_), Some(forwarded)) = (&outcome, self.forwarded) {
            let stats = &self.ctx.stats;
            stats.record_queue(forwarded.saturating_duration_since(self.ctx.received));
            stats.record_execution(1, 1, Duration::ZERO, forwarded.elapsed(), Duration::ZERO);
        }
        self.ctx.record(&outcome);
        match self.sink.take() {
            Some(Sink::Unary(tx)) => {
                let _ = tx.send(outcome);
            }
            // Streams wait for room: a decoupled request may have filled the buffer.
            Some(Sink::Stream(tx)) => {
                let _ = tx.send(outcome).await;
            }
            None => {}
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.finish(
                &mut self.ctx,
                Err(crate::EngineError::internal(
                    "the forwarded request ended without an answer",
                )),
            );
        }
    }
}
