//! Where responses go: a one-shot for unary calls, a bounded channel for streams, and the
//! [`Responder`] through which decoupled models answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::cache::{CacheKey, ResponseCache};
use crate::trace::RequestTrace;
use crate::{EngineError, InferResponse, ModelStats, Parameters, Result, Tensor};

/// Responses of one streamed request, ending with one marked final (or an error), and
/// whether the model is decoupled (so may answer many times, or end without outputs).
/// Dropping it cancels the request.
#[derive(Debug)]
pub struct ResponseStream {
    rx: mpsc::Receiver<Result<InferResponse>>,
    decoupled: bool,
}

impl ResponseStream {
    pub(crate) fn new(rx: mpsc::Receiver<Result<InferResponse>>, decoupled: bool) -> Self {
        Self { rx, decoupled }
    }

    /// Whether the model that answers is decoupled: any number of responses, the final one
    /// possibly without outputs. Otherwise exactly one response comes, final.
    pub fn is_decoupled(&self) -> bool {
        self.decoupled
    }

    /// The next response; `None` once the engine has nothing more to send.
    pub async fn recv(&mut self) -> Option<Result<InferResponse>> {
        self.rx.recv().await
    }

    /// The next response, blocking the thread (never call it on an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Result<InferResponse>> {
        self.rx.blocking_recv()
    }

    /// Polls for the next response (for hand-written streams).
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<InferResponse>>> {
        self.rx.poll_recv(cx)
    }
}

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
    #[cfg(test)]
    pub(crate) fn new(counter: &Arc<InflightCounter>) -> Self {
        Self::admit(counter, None).expect("no limit")
    }

    /// Counts a request in, unless `max` are in flight already.
    pub(crate) fn admit(counter: &Arc<InflightCounter>, max: Option<usize>) -> Result<Self> {
        let before = counter.0.fetch_add(1, Ordering::AcqRel);
        let guard = Self {
            counter: counter.clone(),
            released: AtomicBool::new(false),
        };
        match max {
            // Dropping the guard takes this request's count back.
            Some(max) if before >= max => Err(EngineError::ResourceExhausted(format!(
                "the server has {max} requests in flight, its limit (--max-inflight); retry later"
            ))),
            _ => Ok(guard),
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
    /// Set when the request is traced.
    pub trace: Option<Box<RequestTrace>>,
    /// A response went out already (decoupled models).
    pub responded: bool,
    /// Set when the request missed the response cache: its response is kept there.
    pub cache_fill: Option<CacheFill>,
    /// Set when the request is its sequence's turn: answering it (or dropping it) passes
    /// the turn on.
    pub turn: Option<crate::sequence::Turn>,
}

/// Where a request that missed the response cache keeps its response.
pub(crate) struct CacheFill {
    pub cache: Arc<ResponseCache>,
    pub key: CacheKey,
}

impl RequestContext {
    /// A response is about to go out: the first one is counted (time to first response)
    /// and marked in the trace.
    pub(crate) fn responding(&mut self) {
        if !self.responded {
            self.responded = true;
            self.stats.record_first_response(self.received.elapsed());
            if let Some(trace) = &mut self.trace {
                trace.responded(Instant::now());
            }
        }
    }

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

    /// Counts the final outcome (and ends its trace); the request stops counting as in
    /// flight.
    pub(crate) fn record(&mut self, outcome: &Result<InferResponse>) {
        if let Some(trace) = self.trace.take() {
            trace.finish(outcome.as_ref().err().map(ToString::to_string));
        }
        if let (Some(fill), Ok(response)) = (self.cache_fill.take(), outcome) {
            let started = Instant::now();
            fill.cache.insert(fill.key, response);
            self.stats.record_cache_miss(0, started.elapsed());
        }
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

    /// Resolves when the client has gone away.
    pub(crate) async fn closed(&mut self) {
        match self {
            Self::Unary(tx) => tx.closed().await,
            Self::Stream(tx) => tx.closed().await,
        }
    }

    /// Sends the one and only response of a non-decoupled request.
    pub(crate) fn finish(self, ctx: &mut RequestContext, mut outcome: Result<InferResponse>) {
        // The sequence's next request is released only after this response is out, so a
        // stream's answers leave in their sequence's order.
        let turn = ctx.turn.take().map(|mut turn| {
            turn.take_state(&mut outcome);
            turn
        });
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
        drop(turn);
    }
}

/// How a decoupled model answers one sequence: any number of responses, the last final.
/// Dropping a responder that sent no final response fails the request.
///
/// A response is sent through a [`ResponsePermit`], which holds a slot of the reader's
/// buffer: a model reserves before it computes, so nothing it computes can be lost to a
/// full buffer. One slot is kept back from the start for the end of the sequence, so an
/// error (or a final response sent on it) always has room, however far the reader is
/// behind.
pub struct Responder {
    tx: mpsc::Sender<Result<InferResponse>>,
    /// The slot kept back for the end; `None` once used, or when the client had already
    /// gone at admission.
    last: Option<mpsc::OwnedPermit<Result<InferResponse>>>,
    ctx: RequestContext,
    done: bool,
}

impl Responder {
    pub(crate) fn new(tx: mpsc::Sender<Result<InferResponse>>, ctx: RequestContext) -> Self {
        let last = tx.clone().try_reserve_owned().ok();
        Self {
            tx,
            last,
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

    /// Whether the final response (or an error) was sent.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reserves room for one response. `None` when the reader's buffer is full (the
    /// sequence should wait without advancing), the client went away, or the sequence is
    /// done. Dropping the permit unused gives the slot back.
    pub fn try_reserve(&mut self) -> Option<ResponsePermit<'_>> {
        if self.done {
            return None;
        }
        let Self { tx, ctx, done, .. } = self;
        let slot = tx.try_reserve().ok()?;
        Some(ResponsePermit { slot, ctx, done })
    }

    /// Ends the sequence with a final response at once, on the slot kept back for the end:
    /// for a sequence that finishes without computing (one asking for no tokens, say).
    pub fn finish(&mut self, outputs: Vec<Tensor>) {
        if !self.done {
            let response = Ok(self.ctx.response(outputs, true));
            self.end(response);
        }
    }

    /// Ends the sequence with an error response.
    pub fn fail(&mut self, error: EngineError) {
        if !self.done {
            self.end(Err(error));
        }
    }

    /// Counts the outcome, then sends it on the slot kept back for it.
    fn end(&mut self, outcome: Result<InferResponse>) {
        self.done = true;
        self.ctx.record(&outcome);
        match self.last.take() {
            Some(slot) => {
                slot.send(outcome);
            }
            // Only when the client had gone before admission: nobody is left to tell.
            None => {
                let _ = self.tx.try_send(outcome);
            }
        }
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

/// Room for one response in the reader's buffer, reserved by [`Responder::try_reserve`].
/// Sending on it cannot fail.
#[must_use = "a reserved slot does nothing until a response is sent on it"]
pub struct ResponsePermit<'a> {
    slot: mpsc::Permit<'a, Result<InferResponse>>,
    ctx: &'a mut RequestContext,
    done: &'a mut bool,
}

impl ResponsePermit<'_> {
    /// Sends a response; a final one ends the sequence (and stops it counting as in
    /// flight before the client can see the answer).
    pub fn send(self, outputs: Vec<Tensor>, is_final: bool) {
        self.ctx.responding();
        let response = Ok(self.ctx.response(outputs, is_final));
        if is_final {
            *self.done = true;
            self.ctx.record(&response);
        }
        self.slot.send(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reader = mpsc::Receiver<Result<InferResponse>>;

    fn responder() -> (Responder, Reader, Arc<InflightCounter>, Arc<ModelStats>) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let counter = Arc::new(InflightCounter::default());
        let stats = Arc::new(ModelStats::new("m", 1));
        let ctx = RequestContext {
            model_name: Arc::from("m"),
            model_version: 1,
            id: "r".into(),
            requested: Vec::new(),
            stats: stats.clone(),
            received: Instant::now(),
            inflight: InflightGuard::new(&counter),
            trace: None,
            responded: false,
            cache_fill: None,
            turn: None,
        };
        (Responder::new(tx, ctx), rx, counter, stats)
    }

    #[test]
    fn a_full_buffer_refuses_a_permit_but_keeps_room_for_the_error() {
        let (mut r, mut rx, counter, stats) = responder();
        let mut sent = 0;
        while let Some(permit) = r.try_reserve() {
            permit.send(Vec::new(), false);
            sent += 1;
        }
        assert_eq!(sent, STREAM_BUFFER - 1, "one slot is kept for the end");
        r.fail(EngineError::internal("step failed"));
        assert_eq!(counter.get(), 0);
        for _ in 0..sent {
            assert!(!rx.blocking_recv().unwrap().unwrap().is_final);
        }
        let end = rx.blocking_recv().unwrap().unwrap_err();
        assert_eq!(end, EngineError::internal("step failed"));
        assert_eq!(stats.snapshot().inference_stats.fail.count, 1);
        drop(r);
        assert!(
            rx.blocking_recv().is_none(),
            "the stream ends after the error"
        );
    }

    #[test]
    fn a_final_response_is_counted_before_the_reader_sees_it() {
        let (mut r, mut rx, counter, stats) = responder();
        r.try_reserve().unwrap().send(Vec::new(), false);
        r.try_reserve().unwrap().send(Vec::new(), true);
        assert!(r.is_done() && r.try_reserve().is_none());
        assert_eq!(counter.get(), 0);
        assert_eq!(stats.snapshot().inference_stats.success.count, 1);
        assert!(!rx.blocking_recv().unwrap().unwrap().is_final);
        assert!(rx.blocking_recv().unwrap().unwrap().is_final);
        drop(r);
        assert!(rx.blocking_recv().is_none());
    }

    #[test]
    fn finish_answers_at_once_and_a_dropped_responder_fails_the_request() {
        let (mut r, mut rx, _, _) = responder();
        r.finish(Vec::new());
        assert!(rx.blocking_recv().unwrap().unwrap().is_final);

        let (r, mut rx, counter, _) = responder();
        drop(r);
        let err = rx.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(err, EngineError::Internal(_)), "{err:?}");
        assert_eq!(counter.get(), 0);

        let (mut r, rx, _, stats) = responder();
        drop(rx);
        assert!(r.is_cancelled() && r.try_reserve().is_none());
        drop(r);
        let fail = stats.snapshot().inference_stats.fail.count;
        assert_eq!(fail, 1, "a client that left is counted as a failure");
    }
}
