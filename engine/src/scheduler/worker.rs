//! Instance worker threads: assemble a batch into one tensor per input, run the model,
//! split outputs back per request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::watchdog::RunSlot;
use super::{Batch, Queued, Sequencer, Shared};
use crate::backend::BatchShare;
use crate::sink::Responder;
use crate::tensor::{bytes_elements_end, element_count};
use crate::trace::Compute;
use crate::{
    BatchedInstance, DecoupledInstance, EngineError, ExecBatch, InferResponse, Instance, ModelSpec,
    Result, Sequence, Tensor,
};

pub(super) type Delivery = Vec<(Queued, Result<InferResponse>)>;

pub(crate) struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub work_rx: Receiver<Batch>,
    pub idle_tx: Sender<usize>,
    pub sequencer: Option<Arc<Sequencer<Delivery>>>,
    /// Where the watchdog sees this thread's batch, and how long it may compute.
    pub watch: Option<(Arc<RunSlot>, Duration)>,
}

impl Worker {
    /// Runs `instance` on a thread of its own, named after the model and the instance.
    pub(crate) fn spawn(
        self,
        instance: Instance,
        slots: usize,
    ) -> Result<std::thread::JoinHandle<()>> {
        let name = format!("{}-inst{}", self.shared.spec.name(), self.index);
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || match instance {
                Instance::Batched(inst) => self.run_batched(inst),
                Instance::Decoupled(inst) => self.run_decoupled(inst, slots),
            })
            .map_err(|e| EngineError::internal(format!("cannot start thread '{name}': {e}")))
    }

    pub(crate) fn run_batched(self, mut instance: Box<dyn BatchedInstance>) {
        loop {
            if self.idle_tx.send(self.index).is_err() {
                return;
            }
            let Ok(batch) = self.work_rx.recv() else {
                return;
            };
            let watch = self
                .watch
                .as_ref()
                .map(|(slot, timeout)| (slot.as_ref(), batch.seq, *timeout));
            let Some(delivery) = execute(&self.shared, instance.as_mut(), batch.requests, watch)
            else {
                // The watchdog answered this batch and started a new instance in our place.
                return;
            };
            match &self.sequencer {
                Some(seq) => seq.complete(batch.seq, delivery, deliver),
                None => deliver(delivery),
            }
        }
    }

    pub(crate) fn run_decoupled(self, mut instance: Box<dyn DecoupledInstance>, slots: usize) {
        for _ in 0..slots {
            if self.idle_tx.send(self.index).is_err() {
                return;
            }
        }
        let spec = self.shared.spec.clone();
        let stats = self.shared.stats.clone();
        let mut open = true;
        loop {
            let live_before = instance.live();
            let held_before = instance.held();
            let mut incoming = Vec::new();
            if live_before == 0 {
                if !open {
                    return;
                }
                match self.work_rx.recv() {
                    Ok(b) => incoming.extend(b.requests),
                    Err(_) => return,
                }
            }
            loop {
                match self.work_rx.try_recv() {
                    Ok(b) => incoming.extend(b.requests),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let admitted = incoming.len();
            let now = Instant::now();
            for mut q in incoming {
                stats.record_queue(now - q.enqueued);
                if let Some(trace) = &mut q.ctx.trace {
                    trace.admitted(now);
                }
                let crate::sink::Sink::Stream(tx) = q.sink else {
                    unreachable!("submit gives decoupled requests a stream sink")
                };
                let responder = Responder::new(tx, q.ctx);
                let sequence = Sequence {
                    inputs: q.request.inputs,
                    parameters: q.request.parameters,
                    responder,
                };
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| instance.admit(sequence))) {
                    // Unless the model kept the sequence, the unwind dropped its responder,
                    // which fails the request.
                    model_panicked(&spec, panic.as_ref());
                }
            }
            let live = instance.live();
            if live > 0 {
                let started = Instant::now();
                let stepped = catch_unwind(AssertUnwindSafe(|| instance.step()));
                let failure = match stepped {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(panic) => Some(model_panicked(&spec, panic.as_ref())),
                };
                if let Some(error) = failure {
                    tracing::error!(model = spec.name(), "decode step failed: {error}");
                    instance.abort_all(error);
                }
                stats.record_execution(
                    0,
                    live as u64,
                    Default::default(),
                    started.elapsed(),
                    Default::default(),
                );
            }
            let live_now = instance.live();
            let kv_cache = instance
                .kv_cache()
                .map(|(held, context)| (held, context * slots));
            stats.record_decoupled(self.index, live_now, kv_cache);
            let freed = (held_before + admitted).saturating_sub(instance.held());
            for _ in 0..freed {
                if self.idle_tx.send(self.index).is_err() {
                    open = false;
                }
            }
        }
    }
}

/// Runs one batch on `instance` and pairs each request with its outcome. A panicking model
/// fails the batch, not the thread. Under an execution timeout (`watch`: the thread's slot,
/// the batch's sequence number, the bound) the requests wait in the slot while the model
/// computes; `None` means the watchdog failed them meanwhile.
pub(super) fn execute(
    shared: &Shared,
    instance: &mut dyn BatchedInstance,
    mut requests: Vec<Queued>,
    watch: Option<(&RunSlot, u64, Duration)>,
) -> Option<Delivery> {
    let spec = &shared.spec;
    let stats = &shared.stats;
    let start = Instant::now();
    for q in &requests {
        stats.record_queue(start - q.enqueued);
    }
    let batch = assemble(spec, &mut requests);
    let assembled = Instant::now();
    if let Some((slot, seq, timeout)) = watch {
        slot.begin(seq, assembled + timeout, std::mem::take(&mut requests));
    }
    let outputs = catch_unwind(AssertUnwindSafe(|| instance.execute(&batch)))
        .unwrap_or_else(|panic| Err(model_panicked(spec, panic.as_ref())));
    let computed = Instant::now();
    if let Some((slot, _, _)) = watch {
        requests = slot.end()?;
    }
    let per_request = outputs.and_then(|outs| split(spec, &requests, batch.batch_size, outs));
    let split_done = Instant::now();
    for q in requests.iter_mut() {
        if let Some(trace) = &mut q.ctx.trace {
            trace.computed(Compute {
                start,
                input_end: assembled,
                infer_end: computed,
                end: split_done,
                batch_size: batch.batch_size,
            });
        }
    }
    stats.record_execution(
        requests.len() as u64,
        batch.batch_size as u64,
        assembled - start,
        computed - assembled,
        split_done - computed,
    );
    Some(match per_request {
        Ok(outs) => requests
            .into_iter()
            .zip(outs)
            .map(|(q, outs)| {
                let response = q.ctx.response(outs, true);
                (q, Ok(response))
            })
            .collect(),
        Err(e) => requests.into_iter().map(|q| (q, Err(e.clone()))).collect(),
    })
}

/// Logs a panic caught around a model call and turns it into the error its requests get.
fn model_panicked(spec: &ModelSpec, panic: &(dyn std::any::Any + Send)) -> EngineError {
    let what = panic_message(panic);
    tracing::error!(model = spec.name(), "model panicked: {what}");
    EngineError::internal(format!("model '{}' panicked: {what}", spec.name()))
}

/// The text of a caught panic.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Answers every request of a finished batch.
pub(super) fn deliver(delivery: Delivery) {
    for (mut q, outcome) in delivery {
        q.sink.finish(&mut q.ctx, outcome);
    }
}

/// One tensor per input for the whole batch: shared as is for a lone request, else copied
/// once into a buffer concatenated along the batch dimension.
fn assemble(spec: &ModelSpec, requests: &mut [Queued]) -> ExecBatch {
    // Parameters and requested outputs move into the batch: nothing reads them from the
    // request after this (the response is filtered by the context's own list).
    let shares = requests
        .iter_mut()
        .map(|q| BatchShare {
            rows: q.batch_size,
            parameters: std::mem::take(&mut q.request.parameters),
            outputs: std::mem::take(&mut q.request.outputs),
        })
        .collect();
    if let [only] = requests {
        return ExecBatch {
            inputs: std::mem::take(&mut only.request.inputs),
            batch_size: only.batch_size,
            shares,
        };
    }
    let batch_size: usize = requests.iter().map(|q| q.batch_size).sum();
    let head = &requests[0].request;
    let inputs = head
        .inputs
        .iter()
        .map(|first| {
            let parts: Vec<&Tensor> = requests
                .iter()
                .map(|q| {
                    q.request
                        .input(&first.name)
                        .expect("batched requests are compatible")
                })
                .collect();
            let mut data = BytesMut::with_capacity(parts.iter().map(|t| t.data.len()).sum());
            for part in &parts {
                data.extend_from_slice(&part.data);
            }
            let mut shape = first.shape.clone();
            if spec.max_batch_size > 0 {
                shape[0] = batch_size as i64;
            }
            Tensor::new(first.name.clone(), first.dtype, shape, data.freeze())
        })
        .collect();
    ExecBatch {
        inputs,
        batch_size,
        shares,
    }
}

/// Splits batch outputs into each request's share along the batch dimension, without
/// copying, in config order.
fn split(
    spec: &ModelSpec,
    requests: &[Queued],
    total: usize,
    mut outputs: Vec<Tensor>,
) -> Result<Vec<Vec<Tensor>>> {
    let order = |t: &Tensor| {
        spec.outputs
            .iter()
            .position(|o| o.name == t.name)
            .unwrap_or(usize::MAX)
    };
    outputs.sort_by_key(order);
    let bad = |msg: String| EngineError::internal(format!("model '{}': {msg}", spec.name()));
    if spec.max_batch_size == 0 || requests.len() == 1 {
        for t in &outputs {
            if spec.max_batch_size > 0 && t.shape.first() != Some(&(total as i64)) {
                return Err(bad(format!(
                    "output '{}' has shape {:?}, expected batch {total} first",
                    t.name, t.shape
                )));
            }
        }
        return Ok(vec![outputs]);
    }
    let mut per_request: Vec<Vec<Tensor>> = requests
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for t in outputs {
        if t.shape.first() != Some(&(total as i64)) {
            return Err(bad(format!(
                "output '{}' has shape {:?}, expected batch {total} first",
                t.name, t.shape
            )));
        }
        let count = element_count(&t.shape)?;
        let per_item = count / total;
        let mut offset = 0usize;
        for (q, out) in requests.iter().zip(per_request.iter_mut()) {
            let len = match t.dtype.element_size() {
                Some(size) => per_item * q.batch_size * size,
                None => {
                    bytes_elements_end(&t.data[offset..], per_item * q.batch_size).map_err(&bad)?
                }
            };
            let end = offset + len;
            if end > t.data.len() {
                return Err(bad(format!(
                    "output '{}' holds fewer bytes than its shape",
                    t.name
                )));
            }
            let mut shape = t.shape.clone();
            shape[0] = q.batch_size as i64;
            out.push(Tensor::new(
                t.name.clone(),
                t.dtype,
                shape,
                t.data.slice(offset..end),
            ));
            offset = end;
        }
    }
    Ok(per_request)
}
