//! Where responses go: a one-shot for unary calls, a bounded channel for streams, and the
//! [`Responder`] through which decoupled models answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::{EngineError, InferResponse, ModelStats, Parameters, Result, Tensor};

/// Responses of one streamed request, ending with one marked final (or an error).
pub type ResponseStream = mpsc::Receiver<Result<InferResponse>>;

/// Capacity of a stream's response channel: a slow reader holds at most this many responses
/// before its own sequence stops advancing; other streams are unaffected.
pub const STREAM_BUFFER: usize = 32;

/// Counts requests accepted but not yet answered, so shutdown can wait for them.
#[derive(Debug, Default)]
pub(crate) struct InflightCounter(AtomicUsize);

impl InflightCounter {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Held by a request until it is answered or dropped.
pub(crate) struct InflightGuard {
    counter: Arc<InflightCounter>,
    released: AtomicBool,
}

impl InflightGuard {
    pub(crate) fn new(counter: &Arc<InflightCounter>) -> Self {
        counter.0.fetch_add(1, Ordering::AcqRel);
        Self {
            counter: counter.clone(),
            released: AtomicBool::new(false),
        }
    }

    /// Stops counting the request; called before its final answer leaves, so a client that
    /// has its answer never sees it still counted.
    pub(crate) fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.counter.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// What every response of a request carries, and how its outcome is counted.
pub(crate) struct RequestContext {
    pub model_name: Arc<str>,
    pub model_version: i64,
    pub id: String,
    /// Requested output names; empty means all.
    pub requested: Vec<String>,
    pub stats: Arc<ModelStats>,
    pub received: Instant,
    pub inflight: InflightGuard,
}

impl RequestContext {
    pub(crate) fn response(&self, outputs: Vec<Tensor>, is_final: bool) -> InferResponse {
        let outputs = if self.requested.is_empty() {
            outputs
        } else {
            outputs
                .into_iter()
                .filter(|t| self.requested.contains(&t.name))
                .collect()
        };
        InferResponse {
            model_name: self.model_name.to_string(),
            model_version: self.model_version,
            id: self.id.clone(),
            outputs,
            parameters: Parameters::new(),
            is_final,
        }
    }

    /// Counts the final outcome; the request stops counting as in flight.
    pub(crate) fn record(&self, outcome: &Result<InferResponse>) {
        self.inflight.release();
        let elapsed = self.received.elapsed();
        match outcome {
            Ok(_) => self.stats.record_success(elapsed),
            Err(e) => self.stats.record_failure(elapsed, e.failure_reason()),
        }
    }
}

/// The client end a queued request answers to.
pub(crate) enum Sink {
    Unary(oneshot::Sender<Result<InferResponse>>),
    Stream(mpsc::Sender<Result<InferResponse>>),
}

impl Sink {
    /// Whether the client has gone away.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Self::Unary(tx) => tx.is_closed(),
            Self::Stream(tx) => tx.is_closed(),
        }
    }

    /// Sends the one and only response of a non-decoupled request.
    pub(crate) fn finish(self, ctx: &RequestContext, outcome: Result<InferResponse>) {
        ctx.record(&outcome);
        match self {
            Self::Unary(tx) => {
                let _ = tx.send(outcome);
            }
            Self::Stream(tx) => {
                // A fresh stream of a non-decoupled request always has room for its one
                // response; a closed one means the client left.
                let _ = tx.try_send(outcome);
            }
        }
    }
}

/// How a decoupled model answers one sequence: any number of responses, the last final.
/// Dropping a responder that sent no final response fails the request.
pub struct Responder {
    tx: mpsc::Sender<Result<InferResponse>>,
    ctx: RequestContext,
    done: bool,
}

impl Responder {
    pub(crate) fn new(tx: mpsc::Sender<Result<InferResponse>>, ctx: RequestContext) -> Self {
        Self {
            tx,
            ctx,
            done: false,
        }
    }

    /// The request id.
    pub fn id(&self) -> &str {
        &self.ctx.id
    }

    /// Whether the client went away; the model should drop the sequence.
    pub fn is_cancelled(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether a response can be sent now without waiting for the reader.
    pub fn has_capacity(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// Whether the final response (or an error) was sent.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Sends a response. Returns false when it could not be delivered (client gone, or
    /// buffer full: check [`Responder::has_capacity`] before producing a response).
    pub fn send(&mut self, outputs: Vec<Tensor>, is_final: bool) -> bool {
        if self.done {
            return false;
        }
        let response = Ok(self.ctx.response(outputs, is_final));
        if is_final {
            self.done = true;
            self.ctx.record(&response);
        }
        self.tx.try_send(response).is_ok()
    }

    /// Ends the sequence with an error response.
    pub fn fail(&mut self, error: EngineError) {
        if self.done {
            return;
        }
        self.done = true;
        let outcome = Err(error);
        self.ctx.record(&outcome);
        let _ = self.tx.try_send(outcome);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            let error = if self.is_cancelled() {
                EngineError::Cancelled("the client went away".into())
            } else {
                EngineError::internal("the model ended the request without a final response")
            };
            self.fail(error);
        }
    }
}
